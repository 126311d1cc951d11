import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type ChatChunk,
  type ChatParams,
  ChatParamsSchema,
  FinishReason,
  MessageSchema,
  RequestContextSchema,
  Role,
  ToolChoice_Mode,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { collect } from "../../../../test/helpers/provider-calls.js";
import type { ProviderConfig } from "../../../lib/config/types.js";
import { Failure } from "../../../lib/errors.js";
import { assemble } from "../openai/fixtures/fixtures.js";
import type { ChatCall } from "../provider.js";
import { createMockProvider, mockAnswerTokens } from "./index.js";

const fast: ProviderConfig = { type: "mock", first_token_ms: 0, token_interval_ms: 0, tokens: 12 };

function say(role: Role, text: string) {
  return create(MessageSchema, {
    role,
    contentIsText: true,
    content: [{ part: { case: "text", value: text } }],
  });
}

function params(init: MessageInitShape<typeof ChatParamsSchema> = {}): ChatParams {
  return create(ChatParamsSchema, {
    model: "demo",
    stream: true,
    messages: [say(Role.SYSTEM, "Be nice."), say(Role.USER, "What is Switchyard?")],
    ...init,
  });
}

function call(p: ChatParams, signal = AbortSignal.timeout(10_000)): ChatCall {
  return {
    provider: "demo",
    model: "mock-1",
    params: p,
    context: create(RequestContextSchema, {}),
    signal,
  };
}

describe("mock provider", () => {
  it("streams the deterministic answer one token per chunk, with usage at the end", async () => {
    const chunks = await collect(createMockProvider("demo", fast).chat(call(params())));
    // 12 token chunks and one final chunk.
    expect(chunks).toHaveLength(13);
    const answer = assemble(chunks);
    expect(answer.content).toBe(
      "This is a mock answer from Switchyard to: What is Switchyard? alpha",
    );
    expect(answer.starts).toBe(1);
    expect(answer.start).toMatchObject({ upstreamModel: "mock-1", provider: "demo" });
    expect(answer.start?.id).toMatch(/^chatcmpl-mock-\d+$/);
    expect(answer.start?.created).toBeGreaterThan(1_700_000_000n);
    expect(chunks[0]?.choices[0]).toMatchObject({ role: Role.ASSISTANT, content: "This " });
    expect(chunks[10]?.choices[0]?.content).toBe("Switchyard? ");
    expect(chunks[11]?.choices[0]?.content).toBe("alpha");
    expect(answer.finishReason).toBe(FinishReason.STOP);
    expect(answer.rawFinishReason).toBe("stop");
    // Prompt: "Be nice." (2 words) + "What is Switchyard?" (3 words).
    expect(answer.usage).toMatchObject({ promptTokens: 5, completionTokens: 12, totalTokens: 17 });
    expect(chunks.at(-1)?.usage).toBeDefined();
    expect(chunks.slice(0, -1).every((c) => c.usage === undefined)).toBe(true);
  });

  it("cuts a long question to exactly the configured number of tokens", () => {
    const tokens = mockAnswerTokens(params({ messages: [say(Role.USER, "a b c d e f g h")] }), 10);
    expect(tokens).toEqual([
      "This ",
      "is ",
      "a ",
      "mock ",
      "answer ",
      "from ",
      "Switchyard ",
      "to: ",
      "a ",
      "b",
    ]);
  });

  it("answers the last user message", async () => {
    const p = params({
      messages: [say(Role.USER, "first"), say(Role.ASSISTANT, "reply"), say(Role.USER, "second")],
    });
    const answer = assemble(await collect(createMockProvider("demo", fast).chat(call(p))));
    expect(answer.content).toMatch(/^This is a mock answer from Switchyard to: second alpha/);
  });

  it("stops at max_tokens with finish reason length", async () => {
    const p = params({ maxTokens: 4 });
    const answer = assemble(await collect(createMockProvider("demo", fast).chat(call(p))));
    expect(answer.content).toBe("This is a mock ");
    expect(answer.finishReason).toBe(FinishReason.LENGTH);
    expect(answer.usage?.completionTokens).toBe(4);
  });

  it("answers a non-streamed call with one whole chunk", async () => {
    const chunks = await collect(
      createMockProvider("demo", fast).chat(call(params({ stream: false }))),
    );
    expect(chunks).toHaveLength(1);
    expect(chunks[0]?.start).toBeDefined();
    expect(chunks[0]?.choices[0]).toMatchObject({
      role: Role.ASSISTANT,
      content: "This is a mock answer from Switchyard to: What is Switchyard? alpha",
      finishReason: FinishReason.STOP,
    });
    expect(chunks[0]?.usage?.completionTokens).toBe(12);
  });

  it("calls the forced function with {} in two fragments", async () => {
    const tools = [{ name: "get_weather", parametersJson: "{}" }, { name: "get_time" }];
    const forced = params({
      tools,
      toolChoice: { mode: ToolChoice_Mode.FUNCTION, functionName: "get_time" },
    });
    const chunks = await collect(createMockProvider("demo", fast).chat(call(forced)));
    expect(chunks.map((c) => c.choices[0]?.toolCalls[0]?.arguments)).toEqual(["{", "}", undefined]);
    const answer = assemble(chunks);
    expect(answer.toolCalls).toEqual([
      { id: expect.stringMatching(/^call_mock_\d+$/), name: "get_time", arguments: "{}" },
    ]);
    expect(answer.content).toBeUndefined();
    expect(answer.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(answer.usage?.completionTokens).toBe(2);

    const required = params({
      stream: false,
      tools,
      toolChoice: { mode: ToolChoice_Mode.REQUIRED },
    });
    const whole = await collect(createMockProvider("demo", fast).chat(call(required)));
    expect(whole).toHaveLength(1);
    expect(assemble(whole).toolCalls[0]).toMatchObject({ name: "get_weather", arguments: "{}" });
  });

  it("gives n identical choices, streamed and whole, counting every choice's tokens", async () => {
    const provider = createMockProvider("demo", fast);
    const streamed = await collect(provider.chat(call(params({ n: 3 }))));
    expect(streamed).toHaveLength(13);
    for (const chunk of streamed) expect(chunk.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    const texts = [0, 1, 2].map((i) =>
      streamed.map((c) => c.choices.find((d) => d.index === i)?.content ?? "").join(""),
    );
    const one = assemble(streamed).content;
    expect(texts).toEqual([one, one, one]);
    expect(streamed.at(-1)?.choices.map((c) => c.finishReason)).toEqual([
      FinishReason.STOP,
      FinishReason.STOP,
      FinishReason.STOP,
    ]);
    expect(streamed.at(-1)?.usage?.completionTokens).toBe(36);

    const whole = await collect(provider.chat(call(params({ n: 2, stream: false }))));
    expect(whole).toHaveLength(1);
    expect(whole[0]?.choices.map((c) => [c.index, c.content])).toEqual([
      [0, one],
      [1, one],
    ]);
    expect(whole[0]?.usage?.completionTokens).toBe(24);

    const forced = params({
      n: 2,
      tools: [{ name: "t" }],
      toolChoice: { mode: ToolChoice_Mode.REQUIRED },
    });
    const calls = await collect(provider.chat(call(forced)));
    const ids = calls[0]?.choices.map((c) => c.toolCalls[0]?.id);
    expect(ids).toHaveLength(2);
    expect(new Set(ids).size).toBe(2);
    expect(calls.at(-1)?.choices.map((c) => c.finishReason)).toEqual([
      FinishReason.TOOL_CALLS,
      FinishReason.TOOL_CALLS,
    ]);
  });

  it("refuses more choices than OpenAI allows, as a 400", async () => {
    const err = await collect(
      createMockProvider("demo", fast).chat(call(params({ n: 129 }))),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Failure);
    expect(err).toMatchObject({ status: 400, kind: "invalid_request", param: "n" });
  });

  it("answers in text when tools are offered but not forced", async () => {
    const p = params({
      tools: [{ name: "t" }],
      toolChoice: { mode: ToolChoice_Mode.AUTO },
    });
    const answer = assemble(await collect(createMockProvider("demo", fast).chat(call(p))));
    expect(answer.toolCalls).toEqual([]);
    expect(answer.finishReason).toBe(FinishReason.STOP);
  });

  it("paces chunks by first_token_ms and token_interval_ms", async () => {
    const paced = createMockProvider("demo", {
      type: "mock",
      first_token_ms: 80,
      token_interval_ms: 30,
      tokens: 4,
    });
    const started = performance.now();
    const arrivals: number[] = [];
    for await (const _ of paced.chat(call(params()))) arrivals.push(performance.now() - started);
    expect(arrivals[0]).toBeGreaterThanOrEqual(75);
    expect(arrivals[3]).toBeGreaterThanOrEqual(75 + 3 * 28);
    expect(arrivals[0]).toBeLessThan(500);
  });

  it("stops at once with a cancelled Failure when the signal aborts", async () => {
    const slow = createMockProvider("demo", {
      type: "mock",
      first_token_ms: 0,
      token_interval_ms: 10_000,
      tokens: 5,
    });
    const controller = new AbortController();
    const started = performance.now();
    const seen: ChatChunk[] = [];
    const error = await (async () => {
      try {
        for await (const chunk of slow.chat(call(params(), controller.signal))) {
          seen.push(chunk);
          setTimeout(() => controller.abort(), 20);
        }
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    expect(seen).toHaveLength(1);
    expect(error).toBeInstanceOf(Failure);
    expect(error).toMatchObject({ status: 499, kind: "cancelled" });
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("probes and closes without doing anything", async () => {
    const p = createMockProvider("demo", fast);
    await expect(p.probe("mock-1", AbortSignal.timeout(1000))).resolves.toBeUndefined();
    await expect(p.close()).resolves.toBeUndefined();
  });
});
