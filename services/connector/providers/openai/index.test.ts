import { create } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type ChatChunk,
  ChatParamsSchema,
  EmbedParamsSchema,
  FinishReason,
  MessageSchema,
  RequestContextSchema,
  Role,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import {
  collect,
  failure,
  requestsArrived,
  within,
} from "../../../../test/helpers/provider-calls.js";
import {
  fakeEmbedding,
  type OpenAIUpstream,
  startOpenAIUpstream,
} from "../../../../test/upstreams/openai-upstream.js";
import type { ProviderConfig } from "../../../lib/config/types.js";
import { Failure } from "../../../lib/errors.js";
import type { ChatCall, EmbedCall, Provider } from "../provider.js";
import { assemble } from "./fixtures/fixtures.js";
import { createOpenAIProvider } from "./index.js";

const KEY = "sk-local-test-key-0123456789";

let upstream: OpenAIUpstream;
const providers: Provider[] = [];

beforeAll(async () => {
  upstream = await startOpenAIUpstream();
});
afterAll(async () => {
  await upstream.close();
});
afterEach(async () => {
  upstream.requests.length = 0;
  upstream.setBehavior({ kind: "answer" });
  await Promise.all(providers.splice(0).map((p) => p.close()));
});

function provider(overrides: Partial<ProviderConfig> = {}): Provider {
  const p = createOpenAIProvider("local", {
    type: "openai",
    base_url: upstream.url,
    api_key: KEY,
    ...overrides,
  });
  providers.push(p);
  return p;
}

function call(stream: boolean, signal = AbortSignal.timeout(10_000)): ChatCall {
  return {
    provider: "local",
    model: "upstream-model",
    params: create(ChatParamsSchema, {
      model: "public",
      stream,
      messages: [
        create(MessageSchema, {
          role: Role.USER,
          contentIsText: true,
          content: [{ part: { case: "text", value: "Say hello" } }],
        }),
      ],
    }),
    context: create(RequestContextSchema, { requestId: "req-1" }),
    signal,
  };
}

describe("openai provider over HTTP", () => {
  it("streams an answer and sends the request the way OpenAI expects", async () => {
    upstream.setBehavior({ kind: "answer", text: "Hello there, friend!", chunks: 4 });
    const p = provider({ headers: { "OpenAI-Organization": "org-1" } });
    const chunks = await collect(p.chat(call(true)));

    const answer = assemble(chunks);
    expect(answer.content).toBe("Hello there, friend!");
    expect(answer.finishReason).toBe(FinishReason.STOP);
    expect(answer.starts).toBe(1);
    expect(chunks[0]?.start).toMatchObject({
      id: expect.stringMatching(/^chatcmpl-fake\d+$/),
      upstreamModel: "upstream-model",
      provider: "local",
    });
    expect(answer.usage).toMatchObject({ promptTokens: 10, completionTokens: 4, totalTokens: 14 });

    const [request] = upstream.requests;
    expect(request?.method).toBe("POST");
    expect(request?.path).toBe("/v1/chat/completions");
    expect(request?.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(request?.headers["openai-organization"]).toBe("org-1");
    expect(request?.headers["content-type"]).toBe("application/json");
    expect(request?.body).toEqual({
      model: "upstream-model",
      messages: [{ role: "user", content: "Say hello" }],
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it("answers a non-streamed call with one whole chunk", async () => {
    upstream.setBehavior({ kind: "answer", text: "Whole answer." });
    const chunks = await collect(provider().chat(call(false)));
    expect(chunks).toHaveLength(1);
    expect(chunks[0]?.start?.id).toMatch(/^chatcmpl-fake\d+$/);
    expect(chunks[0]?.choices[0]).toMatchObject({
      role: Role.ASSISTANT,
      content: "Whole answer.",
      finishReason: FinishReason.STOP,
    });
    expect(chunks[0]?.usage?.totalTokens).toBe(13);
    expect(upstream.requests[0]?.body).not.toHaveProperty("stream");
  });

  it("merges what one network read brings when the caller merges anyway", async () => {
    const event = (delta: object, finish: string | null = null, usage?: object) =>
      `data: ${JSON.stringify({
        id: "chatcmpl-read",
        object: "chat.completion.chunk",
        created: 1_700_000_000,
        model: "upstream-model",
        choices: usage ? [] : [{ index: 0, delta, finish_reason: finish }],
        ...(usage && { usage }),
      })}\n\n`;
    // Two network reads: the role chunk and two words, then the rest of the answer.
    const reads = [
      event({ role: "assistant", content: "" }) +
        event({ content: "Hel" }) +
        event({ content: "lo" }),
      event({ content: ", wor" }) +
        event({ content: "ld" }) +
        event({}, "stop") +
        event({}, null, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 }) +
        "data: [DONE]\n\n",
    ];
    upstream.setBehavior({ kind: "raw", chunks: reads, chunkDelayMs: 30 });
    const plain = await collect(provider().chat(call(true)));
    upstream.setBehavior({ kind: "raw", chunks: reads, chunkDelayMs: 30 });
    const merged = await collect(provider().chat({ ...call(true), merge: true }));

    // The first chunk alone (the first-token clock), then one chunk per read.
    expect(plain).toHaveLength(7);
    expect(merged).toHaveLength(3);
    expect(merged[0]?.start?.id).toBe("chatcmpl-read");
    expect(merged[1]?.choices[0]?.content).toBe("Hello");
    const [a, b] = [assemble(plain), assemble(merged)];
    expect(b).toEqual(a);
    expect(b).toMatchObject({ content: "Hello, world", finishReason: FinishReason.STOP });
    expect(b.usage?.totalTokens).toBe(7);
  });

  it("reassembles streamed tool-call fragments exactly", async () => {
    const weather = '{"city": "Zürich", "unit": "celsius", "days": [1, 2, 3]}';
    const time = '{"tz":"Asia/Tokyo"}';
    upstream.setBehavior({
      kind: "answer",
      text: "",
      toolCalls: [
        { id: "call_w", name: "get_weather", arguments: weather, fragments: 7 },
        { id: "call_t", name: "get_time", arguments: time, fragments: 4 },
      ],
    });
    const answer = assemble(await collect(provider().chat(call(true))));
    expect(answer.toolCalls).toEqual([
      { id: "call_w", name: "get_weather", arguments: weather },
      { id: "call_t", name: "get_time", arguments: time },
    ]);
    expect(answer.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(answer.content).toBe("");
  });

  it("sends no Authorization header when the provider has no key", async () => {
    const p = createOpenAIProvider("keyless", { type: "openai", base_url: upstream.url });
    providers.push(p);
    await collect(p.chat(call(false)));
    expect(upstream.requests[0]?.headers.authorization).toBeUndefined();
  });

  it("maps an upstream 500 to a retryable upstream_error before yielding anything", async () => {
    upstream.setBehavior({ kind: "error", status: 500, body: { error: { message: "kaput" } } });
    const { error, yielded } = await failure(provider().chat(call(true)));
    expect(yielded).toEqual([]);
    expect(error).toMatchObject({
      status: 502,
      kind: "upstream_error",
      retryable: true,
      upstreamStatus: 500,
      provider: "local",
      message: "provider local failed (500): kaput",
    });
  });

  it("maps an upstream 429 to rate_limited with Retry-After", async () => {
    upstream.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "3" } });
    const { error } = await failure(provider().chat(call(true)));
    expect(error).toMatchObject({
      status: 429,
      kind: "rate_limited",
      retryable: true,
      retryAfterMs: 3000,
    });
  });

  it("maps an upstream 400 to invalid_request with the upstream's words", async () => {
    upstream.setBehavior({
      kind: "error",
      status: 400,
      body: {
        error: {
          message: "Invalid 'messages[0].content': string too long.",
          type: "invalid_request_error",
          param: "messages[0].content",
          code: "string_above_max_length",
        },
      },
    });
    const { error } = await failure(provider().chat(call(false)));
    expect(error).toMatchObject({
      status: 400,
      kind: "invalid_request",
      retryable: false,
      param: "messages[0].content",
      code: "string_above_max_length",
    });
    expect(error.message).toContain("string too long");
  });

  it("never lets the API key into an error message", async () => {
    upstream.setBehavior({ kind: "error", status: 502, body: `proxy got key ${KEY}` });
    const { error } = await failure(provider().chat(call(false)));
    expect(error.message).not.toContain(KEY);
    expect(error.message).toContain("[redacted]");
  });

  it.each(["end", "destroy"] as const)(
    "throws when the stream stops without [DONE] (cut by %s)",
    async (cutMode) => {
      upstream.setBehavior({
        kind: "answer",
        text: "abcdef",
        chunks: 6,
        cutAfterChunks: 3,
        cutMode,
      });
      const { error, yielded } = await failure(provider().chat(call(true)));
      expect(yielded).toHaveLength(3);
      expect(error).toMatchObject({ status: 502, kind: "upstream_error", retryable: true });
      expect(error.message).toMatch(/^stream from provider local ended early/);
    },
  );

  it("takes a stream that ends whole without [DONE] once every choice has finished (TGI, llama.cpp forks)", async () => {
    const chunk = (delta: object, finish: string | null) =>
      `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":${JSON.stringify(delta)},"finish_reason":${JSON.stringify(finish)}}]}\n\n`;
    upstream.setBehavior({
      kind: "raw",
      chunks: [chunk({ role: "assistant", content: "hi" }, null), chunk({}, "stop")],
    });
    const chunks = await collect(provider().chat(call(true)));
    expect(assemble(chunks).finishReason).toBe(FinishReason.STOP);
    // Without the finish reason it stays a stream cut short.
    upstream.setBehavior({
      kind: "raw",
      chunks: [chunk({ role: "assistant", content: "hi" }, null)],
    });
    const { error } = await failure(provider().chat(call(true)));
    expect(error.message).toMatch(/ended early/);
  });

  it("throws when the stream stops in the middle of an event", async () => {
    upstream.setBehavior({
      kind: "raw",
      chunks: [
        'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n',
        'data: {"id":"c","object":"chat.compl',
      ],
    });
    const { error, yielded } = await failure(provider().chat(call(true)));
    expect(yielded).toHaveLength(1);
    expect(error.message).toMatch(/ended early/);
  });

  it("throws the upstream's words when an error object arrives as an event", async () => {
    upstream.setBehavior({
      kind: "raw",
      chunks: [
        'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n',
        'data: {"error":{"message":"The server had an error while processing your request.","type":"server_error","code":"server_error"}}\n\n',
      ],
    });
    const { error, yielded } = await failure(provider().chat(call(true)));
    expect(yielded).toHaveLength(1);
    expect(error).toMatchObject({ status: 502, kind: "upstream_error", code: "server_error" });
    expect(error.message).toBe(
      "stream from provider local failed: The server had an error while processing your request.",
    );
  });

  it("throws when an event is not JSON", async () => {
    upstream.setBehavior({ kind: "raw", chunks: ["data: {oops\n\n", "data: [DONE]\n\n"] });
    const { error } = await failure(provider().chat(call(true)));
    expect(error.message).toBe("stream from provider local was malformed: invalid JSON");
  });

  it("accepts a JSON answer from a server that ignored stream: true", async () => {
    upstream.setBehavior({
      kind: "raw",
      headers: { "content-type": "application/json" },
      chunks: [
        JSON.stringify({
          id: "x",
          object: "chat.completion",
          created: 1,
          model: "m",
          choices: [
            { index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" },
          ],
        }),
      ],
    });
    const chunks = await collect(provider().chat(call(true)));
    expect(assemble(chunks).content).toBe("ok");
  });

  it("cancels the upstream request when the signal aborts before headers", async () => {
    upstream.setBehavior({ kind: "hang" });
    const controller = new AbortController();
    const pending = failure(provider().chat(call(true, controller.signal)));
    await requestsArrived(upstream.requests, 1);
    controller.abort();
    const { error } = await pending;
    expect(error).toMatchObject({ status: 499, kind: "cancelled" });
    await within(upstream.requests[0]?.closed ?? Promise.reject(), 1000);
    expect(upstream.requests[0]?.aborted).toBe(true);
  });

  it("cancels the upstream request when the signal aborts mid-stream", async () => {
    upstream.setBehavior({
      kind: "answer",
      text: "one two three four five",
      chunks: 5,
      chunkDelayMs: 100,
    });
    const controller = new AbortController();
    const chunks = provider().chat(call(true, controller.signal));
    const yielded: ChatChunk[] = [];
    const error = await (async () => {
      try {
        for await (const chunk of chunks) {
          yielded.push(chunk);
          controller.abort();
        }
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    expect(yielded).toHaveLength(1);
    expect(error).toMatchObject({ status: 499, kind: "cancelled" });
    await within(upstream.requests[0]?.closed ?? Promise.reject(), 1000);
    expect(upstream.requests[0]?.aborted).toBe(true);
  });

  it("cancels the upstream request when the caller stops reading", async () => {
    upstream.setBehavior({
      kind: "answer",
      text: "one two three four five",
      chunks: 5,
      chunkDelayMs: 100,
    });
    for await (const chunk of provider().chat(call(true))) {
      expect(chunk.start).toBeDefined();
      break;
    }
    await within(upstream.requests[0]?.closed ?? Promise.reject(), 1000);
    expect(upstream.requests[0]?.aborted).toBe(true);
  });

  it("keeps its connection after a complete stream, even when the body's end trails [DONE]", async () => {
    upstream.setBehavior({ kind: "answer", endDelayMs: 20 });
    const p = provider();
    const before = upstream.connections;
    for (let i = 0; i < 4; i++) {
      const chunks = await collect(p.chat(call(true)));
      expect(assemble(chunks).finishReason).toBe(FinishReason.STOP);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(upstream.connections - before).toBe(1);
  });
});

describe("openai provider probe", () => {
  it("lists models by default", async () => {
    await provider().probe("upstream-model", AbortSignal.timeout(5000));
    expect(upstream.requests.map((r) => `${r.method} ${r.path}`)).toEqual(["GET /v1/models"]);
    expect(upstream.requests[0]?.headers.authorization).toBe(`Bearer ${KEY}`);
  });

  it("fails when the upstream rejects the gateway's key", async () => {
    upstream.setBehavior({ kind: "error", status: 401 });
    await expect(provider().probe("m", AbortSignal.timeout(5000))).rejects.toMatchObject({
      kind: "auth",
      status: 502,
    });
  });

  it("asks for one token when probe is completion", async () => {
    await provider({ probe: "completion" }).probe("upstream-model", AbortSignal.timeout(5000));
    expect(upstream.requests[0]?.path).toBe("/v1/chat/completions");
    expect(upstream.requests[0]?.body).toMatchObject({ model: "upstream-model", max_tokens: 1 });
  });

  it("does nothing when probe is none", async () => {
    upstream.setBehavior({ kind: "error", status: 500 });
    await provider({ probe: "none" }).probe("m", AbortSignal.timeout(5000));
    expect(upstream.requests).toEqual([]);
  });
});

describe("openai provider embeddings", () => {
  function embedCall(
    inputs: string[],
    options: { dimensions?: number; extraJson?: string; signal?: AbortSignal } = {},
  ): EmbedCall {
    const params = create(EmbedParamsSchema, { model: "public-emb", inputs });
    if (options.dimensions !== undefined) params.dimensions = options.dimensions;
    if (options.extraJson !== undefined) params.extraJson = options.extraJson;
    return {
      provider: "local",
      model: "text-embedding-3-small",
      params,
      context: create(RequestContextSchema, { requestId: "req-e" }),
      signal: options.signal ?? AbortSignal.timeout(10_000),
    };
  }

  it("posts to /embeddings and returns one vector per input, in order, with usage", async () => {
    const result = await provider().embed?.(
      embedCall(["the quick brown fox", "jumps"], {
        dimensions: 16,
        extraJson: '{"user":"u-9","encoding_format":"base64"}',
      }),
    );
    expect(result?.embeddings.map((e) => e.index)).toEqual([0, 1]);
    expect(result?.embeddings[0]?.values).toEqual(fakeEmbedding("the quick brown fox", 16));
    expect(result?.embeddings[1]?.values).toEqual(fakeEmbedding("jumps", 16));
    expect(result?.usage).toMatchObject({ promptTokens: 5, completionTokens: 0, totalTokens: 5 });
    expect(result).toMatchObject({ upstreamModel: "text-embedding-3-small", provider: "local" });

    const [request] = upstream.requests;
    expect(`${request?.method} ${request?.path}`).toBe("POST /v1/embeddings");
    expect(request?.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(request?.body).toEqual({
      model: "text-embedding-3-small",
      input: ["the quick brown fox", "jumps"],
      encoding_format: "float",
      dimensions: 16,
      user: "u-9",
    });
  });

  it("maps an upstream 400 to invalid_request with the upstream's words", async () => {
    upstream.setBehavior({
      kind: "error",
      status: 400,
      body: {
        error: {
          message: "This model does not support specifying dimensions.",
          type: "invalid_request_error",
          param: "dimensions",
          code: null,
        },
      },
    });
    const error = await provider()
      .embed?.(embedCall(["x"], { dimensions: 3 }))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Failure);
    expect(error).toMatchObject({ status: 400, kind: "invalid_request", param: "dimensions" });
    expect((error as Failure).message).toContain("does not support specifying dimensions");
  });

  it("fails retryably when the answer lacks a vector", async () => {
    upstream.setBehavior({
      kind: "raw",
      headers: { "content-type": "application/json" },
      chunks: [
        JSON.stringify({
          object: "list",
          data: [{ object: "embedding", index: 0, embedding: [0.5] }],
          model: "m",
          usage: { prompt_tokens: 2, total_tokens: 2 },
        }),
      ],
    });
    await expect(provider().embed?.(embedCall(["a", "b"]))).rejects.toMatchObject({
      status: 502,
      kind: "upstream_error",
      retryable: true,
      message: "answer from provider local was malformed: 1 embeddings for 2 inputs",
    });
  });

  it("cancels the upstream request when the signal aborts", async () => {
    upstream.setBehavior({ kind: "hang" });
    const controller = new AbortController();
    const pending = provider()
      .embed?.(embedCall(["x"], { signal: controller.signal }))
      .catch((e: unknown) => e);
    await requestsArrived(upstream.requests, 1);
    controller.abort();
    expect(await pending).toMatchObject({ status: 499, kind: "cancelled" });
    await within(upstream.requests[0]?.closed ?? Promise.reject(), 1000);
    expect(upstream.requests[0]?.aborted).toBe(true);
  });
});
