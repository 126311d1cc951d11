import { describe, expect, it } from "vitest";
import { type ChatChunk, FinishReason, Role } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { aggregate } from "../../../lib/chat/aggregate.js";
import { Failure } from "../../../lib/errors.js";
import { SseParser } from "../sse.js";
import { withoutCallNonces } from "./fixtures/call-ids.js";
import { readFixture, readJsonFixture } from "./fixtures/fixtures.js";
import { fromGeminiResponse, type TranslateOptions } from "./from-response.js";
import { GeminiStream } from "./from-stream.js";

const OPTIONS: TranslateOptions = {
  provider: "google",
  model: "gemini-2.5-flash",
  fallbackId: "gemini-req-1",
  now: 1_758_000_000,
};

/** Runs a recorded SSE stream through the parser and the translation, as the provider does. */
function translate(fixture: string): ChatChunk[] {
  const parser = new SseParser();
  const events = parser.push(new TextEncoder().encode(readFixture(fixture)));
  expect(parser.end().truncated).toBe(false);
  const stream = new GeminiStream(OPTIONS);
  const chunks: ChatChunk[] = [];
  for (const event of events) {
    const chunk = stream.push(JSON.parse(event.data));
    if (chunk !== undefined) chunks.push(chunk);
  }
  stream.end();
  return chunks;
}

function failureOf(run: () => unknown): Failure {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(Failure);
    return err as Failure;
  }
  throw new Error("no failure");
}

const event = (candidates: unknown[], extra: Record<string, unknown> = {}) => ({
  candidates,
  modelVersion: "gemini-2.5-flash",
  responseId: "r1",
  ...extra,
});

describe("GeminiStream", () => {
  it("translates a streamed answer event for event, with start and role only first", () => {
    const chunks = translate("stream-text.sse");
    expect(chunks).toHaveLength(3);
    expect(chunks[0]?.start).toMatchObject({
      id: "mKzWaPm3LZ2GgLUPwcnWgAs",
      created: 1_758_000_000n,
      upstreamModel: "gemini-2.0-flash-001",
      provider: "google",
    });
    expect(chunks.slice(1).every((c) => c.start === undefined)).toBe(true);
    expect(chunks[0]?.choices[0]).toMatchObject({
      index: 0,
      role: Role.ASSISTANT,
      content: "Bonjour",
    });
    expect(chunks[1]?.choices[0]?.role).toBe(Role.UNSPECIFIED);
    expect(chunks[1]?.choices[0]?.finishReason).toBe(FinishReason.UNSPECIFIED);

    const answer = aggregate(chunks);
    expect(answer.choices[0]?.message?.content[0]?.part).toEqual({
      case: "text",
      value: "Bonjour ! Comment puis-je vous aider aujourd'hui ? 🥐",
    });
    expect(answer.choices[0]?.finishReason).toBe(FinishReason.STOP);
  });

  it("carries cumulative usage on every event, the last one final", () => {
    const chunks = translate("stream-text.sse");
    expect(chunks[0]?.usage).toMatchObject({ promptTokens: 40112, completionTokens: 0 });
    expect(chunks.at(-1)?.usage).toMatchObject({
      promptTokens: 40112,
      completionTokens: 15,
      totalTokens: 40127,
      cachedPromptTokens: 32768,
    });
  });

  it.each([
    ["stream-text.sse", "response-text.json"],
    ["stream-tool-calls.sse", "response-tool-calls.json"],
  ])("adds up %s to exactly the whole answer %s", (streamed, whole) => {
    // Synthetic call ids are random per translation: compared without their nonce.
    expect(withoutCallNonces(aggregate(translate(streamed)))).toEqual(
      withoutCallNonces(aggregate([fromGeminiResponse(readJsonFixture(whole), OPTIONS)])),
    );
  });

  it("streams thoughts as reasoning and each function call as one whole tool-call delta", () => {
    const chunks = translate("stream-tool-calls.sse");
    expect(chunks[0]?.choices[0]?.reasoning).toBe(
      "**Planning the lookups**\n\nThe user wants the weather and the local time in Paris, ",
    );
    expect(chunks[0]?.choices[0]?.content).toBeUndefined();
    const calls = chunks.flatMap((c) => c.choices.flatMap((d) => d.toolCalls));
    expect(
      withoutCallNonces(
        calls.map(({ index, id, name, arguments: args }) => ({ index, id, name, args })),
      ),
    ).toEqual([
      {
        index: 0,
        // The call's thought signature (the fixture's, base64url), for the next step.
        id: "call_*_0__thought__CiwBVKhc7nFq0dD1nMi8mRvdNXCPb0VAvn_mzJHzqX7ytV3Eaa0v0KAmjTE0jQ",
        name: "get_weather",
        args: '{"location":"Paris, France","unit":"celsius"}',
      },
      {
        index: 1,
        id: "call_*_1",
        name: "get_time",
        args: '{"tz":"Europe/Paris","format":{"hours":24,"seconds":false}}',
      },
    ]);
    // The call and STOP arrive in different events; the finish still says tool_calls.
    expect(chunks.at(-1)?.choices[0]).toMatchObject({
      finishReason: FinishReason.TOOL_CALLS,
      rawFinishReason: "STOP",
    });
    expect(chunks.at(-1)?.usage).toMatchObject({ completionTokens: 178, reasoningTokens: 137 });
  });

  it("keeps candidates apart, each with its own role, calls and finish", () => {
    const stream = new GeminiStream(OPTIONS);
    const chunks = [
      event([
        { content: { parts: [{ text: "A" }] } },
        { content: { parts: [{ functionCall: { name: "f", args: {} } }] }, index: 1 },
      ]),
      event([
        { content: { parts: [{ text: "B" }] }, finishReason: "STOP" },
        {
          content: { parts: [{ functionCall: { name: "g", args: { x: 1 } } }] },
          finishReason: "STOP",
          index: 1,
        },
      ]),
    ].map((e) => stream.push(e));
    stream.end();
    const answer = aggregate(chunks.filter((c): c is ChatChunk => c !== undefined));
    expect(answer.choices.map((c) => [c.index, c.finishReason])).toEqual([
      [0, FinishReason.STOP],
      [1, FinishReason.TOOL_CALLS],
    ]);
    const ids = answer.choices[1]?.message?.toolCalls.map((c) => c.id) ?? [];
    expect(
      withoutCallNonces(answer.choices[1]?.message?.toolCalls.map((c) => [c.id, c.name])),
    ).toEqual([
      ["call_*_0", "f"],
      ["call_*_1", "g"],
    ]);
    // One choice's calls share their nonce across events.
    expect(new Set(ids.map((id) => id.split("_")[1])).size).toBe(1);
    expect(chunks[0]?.choices.map((d) => d.role)).toEqual([Role.ASSISTANT, Role.ASSISTANT]);
  });

  it("says the stream ended early when a candidate never finished", () => {
    const stream = new GeminiStream(OPTIONS);
    stream.push(event([{ content: { parts: [{ text: "Half an ans" }] } }]));
    expect(failureOf(() => stream.end())).toMatchObject({
      status: 502,
      kind: "upstream_error",
      retryable: true,
      message: "stream from provider google ended early",
    });
    expect(failureOf(() => new GeminiStream(OPTIONS).end()).message).toMatch(/ended early/);
  });

  it("throws an error event and a blocked prompt as Failures", () => {
    const stream = new GeminiStream(OPTIONS);
    stream.push(event([{ content: { parts: [{ text: "Hi" }] } }]));
    expect(
      failureOf(() =>
        stream.push({
          error: { code: 500, message: "An internal error has occurred.", status: "INTERNAL" },
        }),
      ),
    ).toMatchObject({ status: 502, kind: "upstream_error", code: "INTERNAL", upstreamStatus: 500 });
    expect(
      failureOf(() =>
        new GeminiStream(OPTIONS).push({ promptFeedback: { blockReason: "SAFETY" } }),
      ),
    ).toMatchObject({ status: 400, kind: "invalid_request", code: "content_filter" });
  });

  it("skips events that hold nothing for the client, but never the first", () => {
    const stream = new GeminiStream(OPTIONS);
    const first = stream.push(event([]));
    expect(first?.start?.id).toBe("r1");
    expect(stream.push(event([{ content: { parts: [{ text: "x" }] } }]))?.choices[0]).toMatchObject(
      { role: Role.ASSISTANT, content: "x" },
    );
    expect(stream.push(event([{ content: { parts: [{ text: "" }] } }]))).toBeUndefined();
    expect(stream.push({ usageMetadata: { promptTokenCount: 3 } })?.usage?.promptTokens).toBe(3);
  });
});
