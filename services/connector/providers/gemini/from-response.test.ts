import { describe, expect, it } from "vitest";
import { FinishReason, Role } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../../lib/errors.js";
import { withoutCallNonces } from "./fixtures/call-ids.js";
import { readFixture, readJsonFixture } from "./fixtures/fixtures.js";
import {
  durationMs,
  failureFromGoogle,
  finishReason,
  fromGeminiResponse,
  type TranslateOptions,
} from "./from-response.js";

const OPTIONS: TranslateOptions = {
  provider: "google",
  model: "gemini-2.5-flash",
  fallbackId: "gemini-req-1",
  now: 1_758_000_000,
};

function failureOf(run: () => unknown): Failure {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(Failure);
    return err as Failure;
  }
  throw new Error("no failure");
}

describe("fromGeminiResponse", () => {
  it("turns a text answer into one chunk with start, message, finish and usage", () => {
    const chunk = fromGeminiResponse(readJsonFixture("response-text.json"), OPTIONS);
    expect(chunk.start).toMatchObject({
      id: "mKzWaPm3LZ2GgLUPwcnWgAs",
      created: 1_758_000_000n,
      upstreamModel: "gemini-2.0-flash-001",
      provider: "google",
    });
    expect(chunk.choices).toHaveLength(1);
    const choice = chunk.choices[0];
    expect(choice).toMatchObject({
      index: 0,
      role: Role.ASSISTANT,
      content: "Bonjour ! Comment puis-je vous aider aujourd'hui ? 🥐",
      finishReason: FinishReason.STOP,
      rawFinishReason: "STOP",
    });
    expect(choice?.reasoning).toBeUndefined();
    expect(choice?.toolCalls).toEqual([]);
    // promptTokenCount already includes the cached share.
    expect(chunk.usage).toMatchObject({
      promptTokens: 40112,
      completionTokens: 15,
      totalTokens: 40127,
      cachedPromptTokens: 32768,
    });
    expect(chunk.usage?.reasoningTokens).toBeUndefined();
  });

  it("gives thoughts as reasoning and each function call whole, with ids of their own", () => {
    const chunk = fromGeminiResponse(readJsonFixture("response-tool-calls.json"), OPTIONS);
    const choice = chunk.choices[0];
    expect(choice?.content).toBe("Let me look that up.");
    expect(choice?.reasoning).toBe(
      "**Planning the lookups**\n\nThe user wants the weather and the local time in Paris, so I will call both functions at once.",
    );
    expect(
      withoutCallNonces(
        choice?.toolCalls.map(({ index, id, name, arguments: args }) => ({
          index,
          id,
          name,
          args,
        })),
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
    // Gemini says STOP after calling functions; the client must hear tool_calls.
    expect(choice?.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(choice?.rawFinishReason).toBe("STOP");
    // Thoughts count as completion tokens (OpenAI's convention) and as reasoning tokens.
    expect(chunk.usage).toMatchObject({
      promptTokens: 112,
      completionTokens: 41 + 137,
      totalTokens: 290,
      reasoningTokens: 137,
    });
  });

  it("keeps a function call's own id when Gemini sends one", () => {
    const chunk = fromGeminiResponse(
      {
        candidates: [
          {
            content: {
              role: "model",
              parts: [{ functionCall: { id: "fc-7", name: "f", args: { a: 1 } } }],
            },
            finishReason: "STOP",
          },
        ],
      },
      OPTIONS,
    );
    expect(chunk.choices[0]?.toolCalls[0]).toMatchObject({ id: "fc-7", arguments: '{"a":1}' });
  });

  it("gives unsigned calls without an id ids no other answer repeats", () => {
    // Gemini's models without thinking sign no call and send no id. Ids numbered only by
    // position came back the same in every turn: moved to Anthropic, such a conversation is
    // refused ("tool_use ids must be unique"), and clients that key results by id mix them up.
    const answer = {
      candidates: [0, 1].map((index) => ({
        index,
        content: {
          role: "model",
          parts: [
            { functionCall: { name: "weather", args: {} } },
            { functionCall: { name: "time", args: {} } },
          ],
        },
        finishReason: "STOP",
      })),
    };
    const turns = [1, 2, 3].map(() =>
      fromGeminiResponse(answer, OPTIONS).choices.flatMap((c) => c.toolCalls.map((t) => t.id)),
    );
    const ids = turns.flat();
    expect(ids).toHaveLength(12);
    expect(new Set(ids).size).toBe(12);
    for (const id of ids) expect(id).toMatch(/^call_[0-9a-f]{12}_[01]$/);
  });

  it("keeps each choice's first function call only when the client forbade parallel calls", () => {
    const answer = {
      candidates: [
        {
          content: {
            role: "model",
            parts: [
              { text: "Both at once." },
              { functionCall: { name: "weather", args: { city: "Oslo" } } },
              { functionCall: { name: "time", args: {} } },
            ],
          },
          finishReason: "STOP",
        },
      ],
    };
    const one = fromGeminiResponse(answer, { ...OPTIONS, oneToolCall: true }).choices[0];
    expect(one?.toolCalls.map((t) => [t.index, t.name, t.arguments])).toEqual([
      [0, "weather", '{"city":"Oslo"}'],
    ]);
    expect(one?.content).toBe("Both at once.");
    expect(one?.finishReason).toBe(FinishReason.TOOL_CALLS);
    const both = fromGeminiResponse(answer, OPTIONS).choices[0];
    expect(both?.toolCalls.map((t) => t.name)).toEqual(["weather", "time"]);
  });

  it("answers each candidate as its own choice", () => {
    const chunk = fromGeminiResponse(readJsonFixture("response-candidates.json"), OPTIONS);
    expect(
      chunk.choices.map(({ index, content, finishReason, rawFinishReason }) => ({
        index,
        content,
        finishReason,
        rawFinishReason,
      })),
    ).toEqual([
      {
        index: 0,
        content: "Roses are red, the sky is blue.",
        finishReason: FinishReason.STOP,
        rawFinishReason: "STOP",
      },
      {
        index: 1,
        content: "Violets are",
        finishReason: FinishReason.LENGTH,
        rawFinishReason: "MAX_TOKENS",
      },
    ]);
    expect(chunk.usage).toMatchObject({ promptTokens: 8, completionTokens: 14, totalTokens: 22 });
  });

  it("reports a candidate stopped by the safety filter as content_filter with no content", () => {
    const chunk = fromGeminiResponse(readJsonFixture("response-candidate-safety.json"), OPTIONS);
    expect(chunk.choices[0]).toMatchObject({
      role: Role.ASSISTANT,
      finishReason: FinishReason.CONTENT_FILTER,
      rawFinishReason: "SAFETY",
    });
    expect(chunk.choices[0]?.content).toBeUndefined();
    expect(chunk.usage).toMatchObject({ promptTokens: 17, completionTokens: 0, totalTokens: 17 });
  });

  it("refuses a blocked prompt with a 400 content_filter, as Azure's filter does, naming the reason", () => {
    const error = failureOf(() =>
      fromGeminiResponse(readJsonFixture("response-prompt-blocked.json"), OPTIONS),
    );
    expect(error).toMatchObject({
      status: 400,
      kind: "invalid_request",
      retryable: false,
      code: "content_filter",
      param: "messages",
      provider: "google",
      message: "provider google's safety filter blocked the prompt (PROHIBITED_CONTENT)",
    });
  });

  it("names the answer after the request when Gemini sends no id or model version", () => {
    const chunk = fromGeminiResponse(
      { candidates: [{ content: { parts: [{ text: "ok" }] }, finishReason: "STOP" }] },
      OPTIONS,
    );
    expect(chunk.start).toMatchObject({ id: "gemini-req-1", upstreamModel: "gemini-2.5-flash" });
    expect(chunk.usage).toBeUndefined();
  });

  // The model version reaches the client's x-switchyard-model header: a lone surrogate there
  // made a 500, a 100 KB one a header no client accepts.
  it("names the answer after the request when the model version is no header value", () => {
    for (const modelVersion of ["\ud800", "x".repeat(100 * 1024), "gemini\r\nx-evil: 1"]) {
      const chunk = fromGeminiResponse(
        {
          candidates: [{ content: { parts: [{ text: "ok" }] }, finishReason: "STOP" }],
          modelVersion,
        },
        OPTIONS,
      );
      expect(chunk.start?.upstreamModel).toBe("gemini-2.5-flash");
    }
  });

  it("throws an error body as a Failure and a candidate-less answer as malformed", () => {
    expect(
      failureOf(() =>
        fromGeminiResponse(
          { error: { code: 503, message: "overloaded", status: "UNAVAILABLE" } },
          OPTIONS,
        ),
      ),
    ).toMatchObject({ status: 503, kind: "upstream_unavailable", code: "UNAVAILABLE" });
    expect(failureOf(() => fromGeminiResponse({ modelVersion: "m" }, OPTIONS))).toMatchObject({
      status: 502,
      kind: "upstream_error",
      message: "answer from provider google was malformed: no candidates",
    });
    expect(failureOf(() => fromGeminiResponse("nope", OPTIONS)).message).toMatch(/not an object/);
  });
});

describe("finishReason", () => {
  it.each([
    ["STOP", false, FinishReason.STOP],
    ["STOP", true, FinishReason.TOOL_CALLS],
    ["MAX_TOKENS", false, FinishReason.LENGTH],
    ["MAX_TOKENS", true, FinishReason.LENGTH],
    ["SAFETY", false, FinishReason.CONTENT_FILTER],
    ["RECITATION", false, FinishReason.CONTENT_FILTER],
    ["BLOCKLIST", false, FinishReason.CONTENT_FILTER],
    ["PROHIBITED_CONTENT", false, FinishReason.CONTENT_FILTER],
    ["SPII", false, FinishReason.CONTENT_FILTER],
    ["LANGUAGE", false, FinishReason.CONTENT_FILTER],
    ["IMAGE_SAFETY", false, FinishReason.CONTENT_FILTER],
    ["IMAGE_PROHIBITED_CONTENT", false, FinishReason.CONTENT_FILTER],
    ["IMAGE_RECITATION", false, FinishReason.CONTENT_FILTER],
    ["MODEL_ARMOR", false, FinishReason.CONTENT_FILTER],
  ])("maps %s (called tools: %s)", (raw, calledTools, expected) => {
    expect(finishReason(raw, calledTools, "google")).toBe(expected);
  });

  it.each([
    "MALFORMED_FUNCTION_CALL",
    "UNEXPECTED_TOOL_CALL",
    "TOO_MANY_TOOL_CALLS",
    "MALFORMED_RESPONSE",
    "NO_IMAGE",
    "IMAGE_OTHER",
    "OTHER",
    "A_WORD_GOOGLE_ADDS_LATER",
  ])("fails a turn that ended %s with a 502 that names it, charged to no target", (raw) => {
    expect(failureOf(() => finishReason(raw, true, "google"))).toMatchObject({
      status: 502,
      kind: "upstream_error",
      retryable: false,
      code: raw,
      provider: "google",
      message: expect.stringContaining(`provider google's answer failed (${raw}): `),
    });
  });

  it("refuses a conversation that lost a thought signature with a 400", () => {
    expect(
      failureOf(() => finishReason("MISSING_THOUGHT_SIGNATURE", false, "google")),
    ).toMatchObject({
      status: 400,
      kind: "invalid_request",
      retryable: false,
      code: "MISSING_THOUGHT_SIGNATURE",
      param: "messages",
    });
  });
});

describe("failureFromGoogle", () => {
  it("reads the retry delay of a 429 from RetryInfo, since Gemini sends no Retry-After", () => {
    const error = failureFromGoogle("google", 429, {}, readFixture("error-rate-limited.json"));
    expect(error).toMatchObject({
      status: 429,
      kind: "rate_limited",
      retryable: true,
      retryAfterMs: 43_000,
      upstreamStatus: 429,
      code: "RESOURCE_EXHAUSTED",
    });
    expect(error.message).toMatch(
      /^provider google is rate limiting the gateway \(429\): You exceeded/,
    );
  });

  it("prefers a Retry-After header when there is one", () => {
    const error = failureFromGoogle(
      "google",
      429,
      { "retry-after": "2" },
      readFixture("error-rate-limited.json"),
    );
    expect(error.retryAfterMs).toBe(2000);
  });

  it("treats an invalid API key as the gateway's credentials, not the client's request", () => {
    const error = failureFromGoogle("google", 400, {}, readFixture("error-api-key-invalid.json"));
    expect(error).toMatchObject({
      status: 502,
      kind: "auth",
      retryable: true,
      upstreamStatus: 400,
      code: "API_KEY_INVALID",
    });
  });

  it("lets another target try when the account cannot be served from here", () => {
    const error = failureFromGoogle("google", 400, {}, readFixture("error-location.json"));
    expect(error).toMatchObject({
      status: 502,
      kind: "upstream_error",
      retryable: true,
      code: "FAILED_PRECONDITION",
    });
    expect(error.message).toContain("User location is not supported");
  });

  it("keeps the upstream's words for a bad request, and scrubs the key from them", () => {
    const body = JSON.stringify({
      error: {
        code: 400,
        message: "Invalid value at 'contents[0].parts[0]' (key AIzaSECRET)",
        status: "INVALID_ARGUMENT",
      },
    });
    const error = failureFromGoogle("google", 400, {}, body, { secrets: ["AIzaSECRET"] });
    expect(error).toMatchObject({
      status: 400,
      kind: "invalid_request",
      retryable: false,
      code: "INVALID_ARGUMENT",
    });
    expect(error.message).toBe(
      "provider google rejected the request (400): Invalid value at 'contents[0].parts[0]' (key [redacted])",
    );
  });

  it("falls back to the shared mapping for bodies that are not Google's envelope", () => {
    expect(failureFromGoogle("google", 503, {}, "<html>Service Unavailable</html>")).toMatchObject({
      status: 503,
      kind: "upstream_unavailable",
      retryable: true,
    });
  });
});

describe("durationMs", () => {
  it("reads protobuf durations", () => {
    expect(durationMs("43s")).toBe(43_000);
    expect(durationMs("0.250s")).toBe(250);
    expect(durationMs("soon")).toBeUndefined();
    expect(durationMs(5)).toBeUndefined();
  });
});
