import { describe, expect, it } from "vitest";
import { FinishReason, Role } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { readJsonFixture } from "./fixtures/fixtures.js";
import { fromAnthropicMessage } from "./from-response.js";
import type { AnthropicMessage } from "./wire.js";

const NOW = 1_760_000_000;

describe("fromAnthropicMessage", () => {
  it("turns a text answer into one chunk with start, message, finish and usage", () => {
    const chunk = fromAnthropicMessage(readJsonFixture<AnthropicMessage>("message-text.json"), {
      provider: "claude",
      now: NOW,
    });
    expect(chunk.start).toMatchObject({
      id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
      created: BigInt(NOW),
      upstreamModel: "claude-sonnet-4-5-20250929",
      provider: "claude",
    });
    expect(chunk.choices).toHaveLength(1);
    const choice = chunk.choices[0];
    expect(choice).toMatchObject({
      index: 0,
      role: Role.ASSISTANT,
      content: "Hello!",
      finishReason: FinishReason.STOP,
      rawFinishReason: "end_turn",
    });
    expect(choice?.reasoning).toBeUndefined();
    expect(choice?.toolCalls).toEqual([]);
    expect(chunk.usage).toMatchObject({
      promptTokens: 25,
      completionTokens: 15,
      totalTokens: 40,
      cachedPromptTokens: 0,
    });
  });

  it("stamps the time of translation when none is given", () => {
    const before = Math.floor(Date.now() / 1000);
    const chunk = fromAnthropicMessage(readJsonFixture<AnthropicMessage>("message-text.json"), {
      provider: "claude",
    });
    expect(Number(chunk.start?.created)).toBeGreaterThanOrEqual(before);
    expect(Number(chunk.start?.created)).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
  });

  it("maps thinking to reasoning, tool_use blocks to whole tool calls, and cached usage", () => {
    const chunk = fromAnthropicMessage(
      readJsonFixture<AnthropicMessage>("message-thinking-tool-use.json"),
      { provider: "claude", now: NOW },
    );
    const choice = chunk.choices[0];
    // redacted_thinking is encrypted: no reasoning text, but a block to send back.
    expect(choice?.reasoning).toBe(
      "The user wants the weather in two cities. I'll call get_weather for each.",
    );
    expect(choice?.reasoningBlocks.map((b) => [b.text, b.signature, b.redactedData])).toEqual([
      [
        "The user wants the weather in two cities. I'll call get_weather for each.",
        "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
        "",
      ],
      [
        "",
        "",
        "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB5URj2pgMuoGmmsxhRMAV==",
      ],
    ]);
    expect(choice?.content).toBe("I'll check the weather in both cities.");
    expect(
      choice?.toolCalls.map(({ index, id, name, arguments: args }) => ({ index, id, name, args })),
    ).toEqual([
      {
        index: 0,
        id: "toolu_01A09q90qw90lq917835lq9",
        name: "get_weather",
        args: '{"location":"San Francisco, CA","unit":"celsius"}',
      },
      {
        index: 1,
        id: "toolu_01B7tx3Gm5Jd2YkVx9qP4rLm",
        name: "get_weather",
        args: '{"location":"Zürich","unit":"celsius"}',
      },
    ]);
    expect(choice).toMatchObject({
      finishReason: FinishReason.TOOL_CALLS,
      rawFinishReason: "tool_use",
    });
    // Prompt tokens count the uncached input and both kinds of cache use.
    expect(chunk.usage).toMatchObject({
      promptTokens: 472 + 1024 + 2048,
      cachedPromptTokens: 2048,
      completionTokens: 161,
      totalTokens: 472 + 1024 + 2048 + 161,
    });
  });

  it("hands the JSON-mode tool's input to the client as content that finished normally", () => {
    const chunk = fromAnthropicMessage(
      readJsonFixture<AnthropicMessage>("message-json-mode.json"),
      { provider: "claude", jsonTool: "json_response", now: NOW },
    );
    const choice = chunk.choices[0];
    expect(choice?.content).toBe(
      '{"name":"Ada Lovelace","born":1815,"fields":["mathematics","computing"]}',
    );
    expect(choice?.toolCalls).toEqual([]);
    expect(choice?.finishReason).toBe(FinishReason.STOP);
    expect(choice?.rawFinishReason).toBeUndefined();
  });

  it("keeps the client's own tool calls in JSON mode, and their finish reason", () => {
    const message = readJsonFixture<AnthropicMessage>("message-thinking-tool-use.json");
    const chunk = fromAnthropicMessage(message, {
      provider: "claude",
      jsonTool: "json_response",
      now: NOW,
    });
    const choice = chunk.choices[0];
    expect(choice?.toolCalls).toHaveLength(2);
    // Only the JSON tool's input is the answer in JSON mode; stray text is not.
    expect(choice?.content).toBeUndefined();
    expect(choice?.finishReason).toBe(FinishReason.TOOL_CALLS);
  });

  it("reads no tool call as JSON-mode content without JSON mode", () => {
    const message = readJsonFixture<AnthropicMessage>("message-json-mode.json");
    const choice = fromAnthropicMessage(message, { provider: "claude", now: NOW }).choices[0];
    expect(choice?.content).toBeUndefined();
    expect(choice?.toolCalls[0]?.name).toBe("json_response");
    expect(choice?.finishReason).toBe(FinishReason.TOOL_CALLS);
  });

  it.each([
    ["end_turn", FinishReason.STOP],
    ["stop_sequence", FinishReason.STOP],
    ["max_tokens", FinishReason.LENGTH],
    ["model_context_window_exceeded", FinishReason.LENGTH],
    ["tool_use", FinishReason.TOOL_CALLS],
    ["refusal", FinishReason.CONTENT_FILTER],
    ["pause_turn", FinishReason.OTHER],
    ["something_new", FinishReason.OTHER],
  ] as const)("maps stop_reason %s and keeps the word", (stopReason, expected) => {
    const message = readJsonFixture<AnthropicMessage>("message-text.json");
    const choice = fromAnthropicMessage(
      { ...message, stop_reason: stopReason as AnthropicMessage["stop_reason"] },
      { provider: "claude", now: NOW },
    ).choices[0];
    expect(choice).toMatchObject({ finishReason: expected, rawFinishReason: stopReason });
  });

  it("tolerates an answer with missing fields", () => {
    const sloppy = JSON.parse('{"content":[{"type":"text"},{"type":"tool_use"}]}');
    const chunk = fromAnthropicMessage(sloppy as AnthropicMessage, { provider: "p", now: NOW });
    expect(chunk.start).toMatchObject({ id: "", upstreamModel: "", provider: "p" });
    expect(chunk.choices[0]?.content).toBeUndefined();
    expect(chunk.choices[0]?.toolCalls[0]).toMatchObject({ index: 0, arguments: "{}" });
    expect(chunk.choices[0]?.finishReason).toBe(FinishReason.UNSPECIFIED);
    expect(chunk.usage).toBeUndefined();
  });
});

describe("the upstream's model name", () => {
  // The name reaches the client's x-switchyard-model header: a lone surrogate there made a 500,
  // a 100 KB one a header no client accepts.
  it("is left empty when a header could not carry it", () => {
    const message = readJsonFixture<AnthropicMessage>("message-text.json");
    for (const model of ["\ud800", "x".repeat(100 * 1024), "claude\r\nx-evil: 1"]) {
      const chunk = fromAnthropicMessage({ ...message, model }, { provider: "anthropic" });
      expect(chunk.start?.upstreamModel).toBe("");
      expect(chunk.choices[0]?.content).toBe("Hello!");
    }
  });
});
