import { describe, expect, it } from "vitest";
import { type ChatChunk, FinishReason, Role } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { aggregate, CompletionBuilder } from "../../../lib/chat/aggregate.js";
import { Failure } from "../../../lib/errors.js";
import { SseParser } from "../sse.js";
import { readFixture, readJsonFixture, translateStream } from "./fixtures/fixtures.js";
import { fromAnthropicMessage } from "./from-response.js";
import { AnthropicStreamTranslator } from "./from-stream.js";
import type { AnthropicMessage } from "./wire.js";

const NOW = 1_760_000_000;

describe("AnthropicStreamTranslator", () => {
  it("opens with start, role and prompt usage, streams text and ends with final usage", () => {
    const { chunks, done } = translateStream("stream-text.sse", { provider: "claude", now: NOW });
    expect(done).toBe(true);
    // message_start, two text deltas, message_delta; ping and block start/stop carry nothing.
    expect(chunks).toHaveLength(4);
    const [first, ...rest] = chunks;
    expect(first?.start).toMatchObject({
      id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
      created: BigInt(NOW),
      upstreamModel: "claude-sonnet-4-5-20250929",
      provider: "claude",
    });
    expect(first?.choices).toMatchObject([{ index: 0, role: Role.ASSISTANT }]);
    expect(first?.choices[0]?.content).toBeUndefined();
    expect(first?.usage).toMatchObject({ promptTokens: 25, completionTokens: 1 });
    expect(rest.every((c) => c.start === undefined)).toBe(true);
    expect(chunks.map((c) => c.choices[0]?.content)).toEqual([undefined, "Hello", "!", undefined]);
    expect(chunks[1]?.choices[0]?.role).toBe(Role.UNSPECIFIED);

    const last = chunks.at(-1);
    expect(last?.choices[0]).toMatchObject({
      finishReason: FinishReason.STOP,
      rawFinishReason: "end_turn",
    });
    // message_delta's output_tokens is the total, not an increment.
    expect(last?.usage).toMatchObject({ promptTokens: 25, completionTokens: 15, totalTokens: 40 });
  });

  it("passes tool input fragments through so the call reassembles byte for byte", () => {
    const { chunks } = translateStream("stream-tool-use.sse", { provider: "claude", now: NOW });
    const fragments = chunks.flatMap((c) => c.choices[0]?.toolCalls ?? []);
    expect(fragments[0]).toMatchObject({
      index: 0,
      id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
      name: "get_weather",
      arguments: "",
    });
    // Later fragments carry arguments only; the empty first input_json_delta is skipped.
    expect(fragments.slice(1).map((f) => [f.index, f.id, f.name, f.arguments])).toEqual([
      [0, undefined, undefined, '{"location":'],
      [0, undefined, undefined, ' "San Fra'],
      [0, undefined, undefined, "ncisc"],
      [0, undefined, undefined, "o,"],
      [0, undefined, undefined, ' CA"'],
      [0, undefined, undefined, ", "],
      [0, undefined, undefined, '"unit": "fah'],
      [0, undefined, undefined, 'renheit"}'],
    ]);
    const answer = aggregate(chunks).choices[0];
    expect(answer?.message?.toolCalls).toMatchObject([
      {
        id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        name: "get_weather",
        arguments: '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
      },
    ]);
    expect(answer?.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(answer?.rawFinishReason).toBe("tool_use");
  });

  it("gives a call whose input streamed nothing the arguments {}, not an empty string", () => {
    const t = new AnthropicStreamTranslator({ provider: "claude" });
    const events = [
      { type: "message_start", message: { id: "msg_1", model: "m", usage: { input_tokens: 3 } } },
      {
        type: "content_block_start",
        index: 0,
        content_block: { type: "tool_use", id: "toolu_E", name: "get_time", input: {} },
      },
      {
        type: "content_block_delta",
        index: 0,
        delta: { type: "input_json_delta", partial_json: "" },
      },
      { type: "content_block_stop", index: 0 },
      { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 5 } },
      { type: "message_stop" },
    ];
    const chunks = events.flatMap((e) => t.push(e) ?? []);
    const call = aggregate(chunks).choices[0]?.message?.toolCalls[0];
    expect([call?.id, call?.name, call?.arguments]).toEqual(["toolu_E", "get_time", "{}"]);
  });

  it("keeps the service tier from message_start and the server tool counts message_delta updates", () => {
    const t = new AnthropicStreamTranslator({ provider: "claude" });
    const events = [
      {
        type: "message_start",
        message: {
          id: "msg_1",
          model: "m",
          usage: {
            input_tokens: 3,
            output_tokens: 1,
            service_tier: "standard",
            server_tool_use: { web_search_requests: 0 },
          },
        },
      },
      {
        type: "message_delta",
        delta: { stop_reason: "end_turn" },
        usage: { output_tokens: 9, server_tool_use: { web_search_requests: 1 } },
      },
      { type: "message_stop" },
    ];
    const chunks = events.flatMap((e) => t.push(e) ?? []);
    expect(chunks[0]?.usage).toMatchObject({
      serviceTier: "standard",
      serverToolUseJson: '{"web_search_requests":0}',
    });
    expect(chunks.at(-1)?.usage).toMatchObject({
      completionTokens: 9,
      serviceTier: "standard",
      serverToolUseJson: '{"web_search_requests":1}',
    });
  });

  it("numbers tool calls by their order among tool_use blocks, not by block index", () => {
    const { chunks } = translateStream("stream-thinking-tool-use.sse", {
      provider: "claude",
      now: NOW,
    });
    const starts = chunks
      .flatMap((c) => c.choices[0]?.toolCalls ?? [])
      .filter((f) => f.id !== undefined);
    expect(starts.map((f) => [f.index, f.id])).toEqual([
      [0, "toolu_01A09q90qw90lq917835lq9"],
      [1, "toolu_01B7tx3Gm5Jd2YkVx9qP4rLm"],
    ]);
    const answer = aggregate(chunks).choices[0];
    expect(answer?.reasoning).toBe(
      "The user wants the weather in two cities. I'll call get_weather for each.",
    );
    // The signed thinking block and the redacted one travel whole, for the next turn, and
    // neither the signature nor the encrypted data is shown as reasoning.
    expect(chunks.some((c) => c.choices[0]?.reasoning?.startsWith("E"))).toBe(false);
    expect(
      answer?.message?.reasoningBlocks.map(({ text, signature, redactedData }) => ({
        text,
        signature,
        redactedData,
      })),
    ).toEqual([
      {
        text: "The user wants the weather in two cities. I'll call get_weather for each.",
        signature: "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
        redactedData: "",
      },
      {
        text: "",
        signature: "",
        redactedData:
          "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB5URj2pgMuoGmmsxhRMAV==",
      },
    ]);
    expect(chunks.at(-1)?.usage).toMatchObject({
      promptTokens: 472 + 1024 + 2048,
      cachedPromptTokens: 2048,
      completionTokens: 161,
    });
    expect(chunks[0]?.usage).toMatchObject({ promptTokens: 3544, completionTokens: 3 });
  });

  it("streams the JSON-mode tool's input as content that finishes normally", () => {
    const { chunks } = translateStream("stream-json-mode.sse", {
      provider: "claude",
      jsonTool: "json_response",
      now: NOW,
    });
    expect(chunks.every((c) => c.choices[0]?.toolCalls.length === 0)).toBe(true);
    expect(chunks.map((c) => c.choices[0]?.content).filter((t) => t !== undefined)).toEqual([
      '{"name":"Ada ',
      'Lovelace","born":18',
      '15,"fields":["mathematics","comp',
      'uting"]}',
    ]);
    expect(chunks.at(-1)?.choices[0]).toMatchObject({ finishReason: FinishReason.STOP });
    expect(chunks.at(-1)?.choices[0]?.rawFinishReason).toBeUndefined();
  });

  it("throws a retryable upstream error for an error event, after what came before", () => {
    const translator = new AnthropicStreamTranslator({
      provider: "claude",
      secrets: ["Overloaded"],
    });
    const parser = new SseParser();
    const chunks: ChatChunk[] = [];
    let error: unknown;
    try {
      for (const event of parser.push(new TextEncoder().encode(readFixture("stream-error.sse")))) {
        const chunk = translator.push(JSON.parse(event.data));
        if (chunk !== undefined) chunks.push(chunk);
      }
    } catch (err) {
      error = err;
    }
    expect(chunks.map((c) => c.choices[0]?.content)).toEqual([undefined, "Once upon"]);
    expect(error).toBeInstanceOf(Failure);
    // overloaded_error mid-stream is Anthropic's 529: no capacity, a 503 as over HTTP.
    expect(error).toMatchObject({
      status: 503,
      kind: "upstream_unavailable",
      retryable: true,
      provider: "claude",
      code: "overloaded_error",
      // Secrets are scrubbed even from the upstream's own words.
      message: "stream from provider claude failed: [redacted]",
    });
    expect(translator.done).toBe(false);
  });

  it("takes cumulative input counts from message_delta when it has them", () => {
    const translator = new AnthropicStreamTranslator({ provider: "p", now: NOW });
    translator.push({
      type: "message_start",
      message: { id: "m", model: "c", usage: { input_tokens: 10, output_tokens: 1 } },
    });
    const last = translator.push({
      type: "message_delta",
      delta: { stop_reason: "max_tokens", stop_sequence: null },
      usage: { input_tokens: 30, cache_read_input_tokens: 5, output_tokens: 7 },
    });
    expect(last?.usage).toMatchObject({
      promptTokens: 35,
      cachedPromptTokens: 5,
      completionTokens: 7,
      totalTokens: 42,
    });
    expect(last?.choices[0]).toMatchObject({
      finishReason: FinishReason.LENGTH,
      rawFinishReason: "max_tokens",
    });
  });

  it("keeps the split of cache writes by lifetime from message_start", () => {
    const translator = new AnthropicStreamTranslator({ provider: "p", now: NOW });
    translator.push({
      type: "message_start",
      message: {
        id: "m",
        model: "c",
        usage: {
          input_tokens: 25,
          cache_creation_input_tokens: 1200,
          cache_read_input_tokens: 0,
          cache_creation: { ephemeral_5m_input_tokens: 200, ephemeral_1h_input_tokens: 1000 },
          output_tokens: 1,
        },
      },
    });
    const last = translator.push({
      type: "message_delta",
      delta: { stop_reason: "end_turn", stop_sequence: null },
      usage: { output_tokens: 17 },
    });
    expect(last?.usage).toMatchObject({
      promptTokens: 1225,
      cacheWritePromptTokens: 1200,
      cacheWrite1hPromptTokens: 1000,
      completionTokens: 17,
    });
  });

  it("still opens with start when a stream skips message_start", () => {
    const translator = new AnthropicStreamTranslator({ provider: "p", now: NOW });
    translator.push({ type: "content_block_start", index: 0, content_block: { type: "text" } });
    const chunk = translator.push({
      type: "content_block_delta",
      index: 0,
      delta: { type: "text_delta", text: "hi" },
    });
    expect(chunk?.start).toMatchObject({ id: "", provider: "p" });
    expect(chunk?.choices[0]).toMatchObject({ role: Role.ASSISTANT, content: "hi" });
  });

  it("ignores pings and event types it does not know", () => {
    const translator = new AnthropicStreamTranslator({ provider: "p" });
    expect(translator.push({ type: "ping" })).toBeUndefined();
    expect(translator.push({ type: "brand_new_event", index: 0 })).toBeUndefined();
    expect(translator.done).toBe(false);
    expect(translator.push({ type: "message_stop" })).toBeUndefined();
    expect(translator.done).toBe(true);
  });
});

describe("an answer with a web search", () => {
  it("keeps every block in its place: text blocks apart with their citations, the server tool's blocks whole", () => {
    const { chunks } = translateStream("stream-web-search.sse", { provider: "claude", now: NOW });
    const whole = readJsonFixture<AnthropicMessage>("message-web-search.json");
    const [intro, search, result, routes, failover] = whole.content as unknown as Array<
      Record<string, unknown>
    >;
    const message = aggregate(chunks).choices[0]?.message;
    expect(
      message?.content.map((p) => [p.blockIndex, p.part.value, p.citationsJson || undefined]),
    ).toEqual([
      [0, intro?.text, undefined],
      [3, routes?.text, JSON.stringify(routes?.citations)],
      [4, failover?.text, JSON.stringify(failover?.citations)],
    ]);
    expect(message?.anthropicBlocks.map((b) => [b.blockIndex, JSON.parse(b.json)])).toEqual([
      [1, search],
      [2, result],
    ]);
    // A block that carries a server tool's call or result is some of the answer.
    expect(chunks.filter((c) => c.choices[0]?.anthropicBlock !== undefined)).toHaveLength(2);
    expect(chunks.at(-1)?.usage).toMatchObject({
      serviceTier: "standard",
      serverToolUseJson: '{"web_search_requests":1}',
    });
  });
});

describe("an answer that ran code", () => {
  const container = { id: "container_011", expires_at: "2026-01-01T00:00:00Z", skills: null };

  it("keeps the container from message_delta, as a whole answer keeps it, through a merged chunk", () => {
    const translator = new AnthropicStreamTranslator({ provider: "claude", now: NOW });
    const events = [
      { type: "message_start", message: { id: "msg_1", model: "m", usage: { input_tokens: 5 } } },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Ran it." } },
      { type: "content_block_stop", index: 0 },
      {
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null, container },
        usage: { output_tokens: 3 },
      },
      { type: "message_stop" },
    ];
    const chunks = events.flatMap((e) => translator.push(e) ?? []);
    expect(chunks.at(-1)?.choices[0]?.anthropicContainerJson).toBe(JSON.stringify(container));
    const streamed = aggregate(chunks);
    expect(streamed.choices[0]?.anthropicContainerJson).toBe(JSON.stringify(container));

    const builder = new CompletionBuilder();
    for (const chunk of chunks) builder.add(chunk);
    expect(aggregate([builder.chunk()])).toEqual(streamed);

    const whole = fromAnthropicMessage(
      {
        id: "msg_1",
        type: "message",
        role: "assistant",
        model: "m",
        content: [{ type: "text", text: "Ran it." }],
        stop_reason: "end_turn",
        stop_sequence: null,
        container,
        usage: { input_tokens: 5, output_tokens: 3 },
      },
      { provider: "claude", now: NOW },
    );
    expect(aggregate([whole]).choices[0]?.anthropicContainerJson).toBe(JSON.stringify(container));
  });

  it("names no container when the answer used none", () => {
    const { chunks } = translateStream("stream-text.sse", { provider: "claude", now: NOW });
    expect(aggregate(chunks).choices[0]?.anthropicContainerJson).toBeUndefined();
  });
});

describe("streamed and whole answers", () => {
  it.each([
    ["stream-text.sse", "message-text.json", undefined],
    ["stream-thinking-tool-use.sse", "message-thinking-tool-use.json", undefined],
    ["stream-json-mode.sse", "message-json-mode.json", "json_response"],
    ["stream-web-search.sse", "message-web-search.json", undefined],
  ] as const)("%s adds up to what %s says at once", (stream, whole, jsonTool) => {
    const options = { provider: "claude", jsonTool, now: NOW };
    const streamed = translateStream(stream, options);
    expect(streamed.done).toBe(true);
    const once = fromAnthropicMessage(readJsonFixture<AnthropicMessage>(whole), options);
    expect(aggregate(streamed.chunks)).toEqual(aggregate([once]));
  });
});
