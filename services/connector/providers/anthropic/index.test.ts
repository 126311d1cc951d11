import type { MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type ChatParamsSchema,
  FinishReason,
  ResponseFormat_Type,
  Role,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { chatCall, collect, failure } from "../../../../test/helpers/provider-calls.js";
import {
  describeProviderConduct,
  type ProviderRig,
  useProviderRig,
} from "../../../../test/helpers/provider-rig.js";
import {
  type AnthropicUpstream,
  startAnthropicUpstream,
  type UpstreamBehavior,
} from "../../../../test/upstreams/anthropic-upstream.js";
import { aggregate } from "../../../lib/chat/aggregate.js";
import type { ChatCall } from "../provider.js";
import { readFixture, readJsonFixture } from "./fixtures/fixtures.js";
import { createAnthropicProvider } from "./index.js";

const KEY = "sk-ant-local-test-key-0123456789";

function call(
  stream: boolean,
  signal?: AbortSignal,
  params: MessageInitShape<typeof ChatParamsSchema> = {},
): ChatCall {
  return chatCall({ provider: "claude", model: "claude-upstream" }, stream, { signal, params });
}

/** The recorded stream up to its second text delta, and that delta's first bytes. */
function recordedStreamCutInSecondDelta(): string[] {
  const sse = readFixture("stream-text.sse");
  const cut = sse.lastIndexOf("event: content_block_delta");
  return [sse.slice(0, cut), sse.slice(cut, cut + 60)];
}

const rig: ProviderRig<AnthropicUpstream, UpstreamBehavior> = {
  name: "claude",
  key: KEY,
  start: () => startAnthropicUpstream(),
  create: createAnthropicProvider,
  config: (upstream) => ({ type: "anthropic", base_url: upstream.url, api_key: KEY }),
  call,
  wire: {
    end: "message_stop",
    slowStream: { kind: "answer", text: "one two three", chunks: 3, eventDelayMs: 100 },
    wholeStream: { kind: "answer", endDelayMs: 20 },
    // message_start, content_block_start, ping, two text deltas: three chunks for the client.
    cutAfterThreeChunks: (cutMode) => ({
      kind: "answer",
      text: "abcdef",
      chunks: 3,
      cutAfterEvents: 5,
      cutMode,
    }),
    halfEvent: { chunks: recordedStreamCutInSecondDelta(), yielded: 2 },
    notJson: ["event: message_start\ndata: {oops\n\n"],
    // Anthropic's default stream error is overloaded_error, a 503 like its HTTP 529.
    errorEvent: {
      behavior: { kind: "answer", text: "abc", chunks: 3, errorAfterEvents: 4 },
      yielded: 2,
      error: {
        status: 503,
        kind: "upstream_unavailable",
        retryable: true,
        code: "overloaded_error",
        message: "stream from provider claude failed: Overloaded",
      },
    },
    invalidRequest: {
      body: readJsonFixture("error-invalid-request.json"),
      words: "roles must alternate",
    },
    rateLimited: {
      delay: "Retry-After",
      behavior: { kind: "error", status: 429, headers: { "retry-after": "3" } },
      retryAfterMs: 3000,
    },
  },
};

const anthropic = useProviderRig(rig);
const { provider } = anthropic;

describe("anthropic provider over HTTP", () => {
  it("merges what one network read brings when the caller merges anyway", async () => {
    // The recorded stream in two network reads, split before its second text delta.
    const sse = readFixture("stream-text.sse");
    const cut = sse.lastIndexOf("event: content_block_delta");
    const reads = [sse.slice(0, cut), sse.slice(cut)];
    anthropic.upstream.setBehavior({ kind: "raw", chunks: reads, chunkDelayMs: 30 });
    const plain = await collect(provider().chat(call(true)));
    anthropic.upstream.setBehavior({ kind: "raw", chunks: reads, chunkDelayMs: 30 });
    const merged = await collect(provider().chat({ ...call(true), merge: true }));

    // At most the first chunk alone, then one per read; the same answer either way (but for
    // `created`, the time of each call: Anthropic answers carry none).
    for (const chunk of [...plain, ...merged]) if (chunk.start) chunk.start.created = 0n;
    expect(merged.length).toBeLessThanOrEqual(3);
    expect(merged.length).toBeLessThan(plain.length);
    expect(merged[0]?.start).toEqual(plain[0]?.start);
    expect(aggregate(merged)).toEqual(aggregate(plain));
    expect(aggregate(merged).choices[0]?.message?.content).toEqual([
      expect.objectContaining({ part: { case: "text", value: "Hello!" } }),
    ]);
  });

  it("adds the client's beta features to the ones its config sets, each once", async () => {
    const p = provider({ headers: { "Anthropic-Beta": "a-2025-01-01, b-2025-01-01" } });
    await collect(
      p.chat(call(false, undefined, { anthropicBeta: ["b-2025-01-01", "c-2025-01-01"] })),
    );
    expect(anthropic.upstream.requests[0]?.headers["anthropic-beta"]).toBe(
      "a-2025-01-01,b-2025-01-01,c-2025-01-01",
    );
  });

  it("streams an answer and sends the request the way Anthropic expects", async () => {
    anthropic.upstream.setBehavior({ kind: "answer", text: "Hello there, friend!", chunks: 4 });
    const p = provider({ headers: { "Anthropic-Beta": "some-feature-2025-01-01" } });
    const chunks = await collect(p.chat(call(true)));

    const answer = aggregate(chunks);
    expect(answer.choices[0]?.message?.content.map((c) => c.part)).toEqual([
      { case: "text", value: "Hello there, friend!" },
    ]);
    expect(answer.choices[0]?.finishReason).toBe(FinishReason.STOP);
    expect(answer.choices[0]?.rawFinishReason).toBe("end_turn");
    expect(chunks.filter((c) => c.start !== undefined)).toHaveLength(1);
    expect(chunks[0]?.start).toMatchObject({
      id: expect.stringMatching(/^msg_fake\d+$/),
      upstreamModel: "claude-upstream",
      provider: "claude",
    });
    expect(answer.usage).toMatchObject({ promptTokens: 10, completionTokens: 4, totalTokens: 14 });

    const [request] = anthropic.upstream.requests;
    expect(request?.method).toBe("POST");
    expect(request?.path).toBe("/v1/messages");
    expect(request?.headers["x-api-key"]).toBe(KEY);
    expect(request?.headers["anthropic-version"]).toBe("2023-06-01");
    expect(request?.headers["anthropic-beta"]).toBe("some-feature-2025-01-01");
    expect(request?.headers["content-type"]).toBe("application/json");
    expect(request?.headers.authorization).toBeUndefined();
    expect(request?.body).toEqual({
      model: "claude-upstream",
      max_tokens: 4096,
      messages: [{ role: "user", content: "Say hello" }],
      stream: true,
    });
  });

  it("answers a non-streamed call with one whole chunk", async () => {
    anthropic.upstream.setBehavior({ kind: "answer", text: "Whole answer.", thinking: "Hmm." });
    const chunks = await collect(provider().chat(call(false)));
    expect(chunks).toHaveLength(1);
    expect(chunks[0]?.start?.id).toMatch(/^msg_fake\d+$/);
    expect(chunks[0]?.choices[0]).toMatchObject({
      role: Role.ASSISTANT,
      content: "Whole answer.",
      reasoning: "Hmm.",
      finishReason: FinishReason.STOP,
    });
    expect(chunks[0]?.usage).toMatchObject({ promptTokens: 10, completionTokens: 5 });
    expect(anthropic.upstream.requests[0]?.body).not.toHaveProperty("stream");
  });

  it("reassembles streamed tool input fragments exactly, and matches the whole answer", async () => {
    const weather = '{"city":"Zürich","unit":"celsius","days":[1,2,3]}';
    const time = '{"tz":"Asia/Tokyo"}';
    anthropic.upstream.setBehavior({
      kind: "answer",
      text: "Let me look.",
      thinking: "Two lookups.",
      toolUses: [
        { id: "toolu_w", name: "get_weather", input: weather, fragments: 7 },
        { id: "toolu_t", name: "get_time", input: time, fragments: 4 },
      ],
    });
    const params = {
      tools: [
        { name: "get_weather", parametersJson: '{"type":"object"}' },
        { name: "get_time", description: "Clock" },
      ],
    };
    const p = provider();
    const streamed = aggregate(await collect(p.chat(call(true, undefined, params))));
    expect(streamed.choices[0]?.message?.toolCalls.map((c) => [c.id, c.name, c.arguments])).toEqual(
      [
        ["toolu_w", "get_weather", weather],
        ["toolu_t", "get_time", time],
      ],
    );
    expect(streamed.choices[0]?.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(anthropic.upstream.requests[0]?.body).toMatchObject({
      tools: [
        { name: "get_weather", input_schema: { type: "object" } },
        { name: "get_time", description: "Clock", input_schema: { type: "object" } },
      ],
    });

    const whole = aggregate(await collect(p.chat(call(false, undefined, params))));
    // Only the upstream's message id and the clock may differ.
    expect({ ...whole, id: "", created: 0n }).toEqual({ ...streamed, id: "", created: 0n });
  });

  it("emulates JSON mode: the forced tool's input reaches the client as text", async () => {
    const json = '{"name":"Ada","tags":["math"]}';
    anthropic.upstream.setBehavior({
      kind: "answer",
      text: "",
      toolUses: [{ name: "json_response", input: json, fragments: 5 }],
    });
    const params = { responseFormat: { type: ResponseFormat_Type.JSON_OBJECT } };
    const chunks = await collect(provider().chat(call(true, undefined, params)));
    const choice = aggregate(chunks).choices[0];
    expect(choice?.message?.toolCalls).toEqual([]);
    expect(choice?.message?.content[0]?.part).toEqual({ case: "text", value: json });
    expect(choice?.finishReason).toBe(FinishReason.STOP);
    expect(anthropic.upstream.requests[0]?.body).toMatchObject({
      tools: [{ name: "json_response", input_schema: { type: "object" } }],
      tool_choice: { type: "tool", name: "json_response" },
    });
  });

  it("refuses what Anthropic cannot do before calling it", async () => {
    const { error } = await failure(provider().chat(call(true, undefined, { n: 3 })));
    expect(error).toMatchObject({ status: 400, kind: "unsupported", param: "n" });
    expect(anthropic.upstream.requests).toEqual([]);
  });

  it("maps an upstream 500 to a retryable upstream_error with Anthropic's words", async () => {
    anthropic.upstream.setBehavior({ kind: "error", status: 500 });
    const { error, yielded } = await failure(provider().chat(call(true)));
    expect(yielded).toEqual([]);
    expect(error).toMatchObject({
      status: 502,
      kind: "upstream_error",
      retryable: true,
      upstreamStatus: 500,
      provider: "claude",
      message: "provider claude failed (500): fake upstream error 500",
    });
  });

  it("maps 529 overloaded to a retryable 503", async () => {
    anthropic.upstream.setBehavior({ kind: "error", status: 529, headers: { "retry-after": "2" } });
    const { error } = await failure(provider().chat(call(false)));
    expect(error).toMatchObject({
      status: 503,
      kind: "upstream_unavailable",
      retryable: true,
      retryAfterMs: 2000,
      upstreamStatus: 529,
      provider: "claude",
    });
    expect(error.message).toContain("Overloaded");
  });

  it("maps a rejected key to an auth failure", async () => {
    anthropic.upstream.setBehavior({ kind: "error", status: 401 });
    const { error } = await failure(provider().chat(call(false)));
    expect(error).toMatchObject({ status: 502, kind: "auth", retryable: true });
  });

  it("throws when the stream stops after the final usage but before message_stop", async () => {
    // message_start, content_block_start, ping, delta, content_block_stop, message_delta.
    anthropic.upstream.setBehavior({ kind: "answer", text: "ab", chunks: 1, cutAfterEvents: 6 });
    const { error, yielded } = await failure(provider().chat(call(true)));
    expect(yielded.at(-1)?.choices[0]?.finishReason).toBe(FinishReason.STOP);
    expect(error.message).toBe("stream from provider claude ended early");
  });

  it("keeps any other error event an upstream error (502)", async () => {
    anthropic.upstream.setBehavior({
      kind: "answer",
      text: "abc",
      chunks: 3,
      errorAfterEvents: 4,
      streamError: { type: "api_error", message: "Internal server error" },
    });
    const { error } = await failure(provider().chat(call(true)));
    expect(error).toMatchObject({ status: 502, kind: "upstream_error", code: "api_error" });
  });
});

describe("anthropic provider probe", () => {
  it("lists models by default", async () => {
    await provider().probe("claude-upstream", AbortSignal.timeout(5000));
    expect(anthropic.upstream.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      "GET /v1/models",
    ]);
    expect(anthropic.upstream.requests[0]?.headers["x-api-key"]).toBe(KEY);
    expect(anthropic.upstream.requests[0]?.headers["anthropic-version"]).toBe("2023-06-01");
  });

  it("reports an overloaded upstream as unavailable", async () => {
    anthropic.upstream.setBehavior({ kind: "error", status: 529 });
    await expect(provider().probe("m", AbortSignal.timeout(5000))).rejects.toMatchObject({
      status: 503,
      kind: "upstream_unavailable",
      retryable: true,
    });
  });

  it("asks for one token when probe is completion, and reports overload", async () => {
    const p = provider({ probe: "completion" });
    await p.probe("claude-upstream", AbortSignal.timeout(5000));
    expect(anthropic.upstream.requests[0]?.path).toBe("/v1/messages");
    expect(anthropic.upstream.requests[0]?.body).toEqual({
      model: "claude-upstream",
      max_tokens: 1,
      messages: [{ role: "user", content: "ping" }],
    });
    anthropic.upstream.setBehavior({ kind: "error", status: 529 });
    await expect(p.probe("claude-upstream", AbortSignal.timeout(5000))).rejects.toMatchObject({
      status: 503,
      kind: "upstream_unavailable",
    });
  });
});

describeProviderConduct("anthropic provider", rig, anthropic);
