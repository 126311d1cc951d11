import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  EmbedParamsSchema,
  FinishReason,
  RequestContextSchema,
  Role,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import {
  chatCall,
  collect,
  failure,
  requestsArrived,
  within,
} from "../../../../test/helpers/provider-calls.js";
import {
  describeProviderConduct,
  type ProviderRig,
  useProviderRig,
} from "../../../../test/helpers/provider-rig.js";
import {
  fakeEmbedding,
  type OpenAIUpstream,
  startOpenAIUpstream,
  type UpstreamBehavior,
} from "../../../../test/upstreams/openai-upstream.js";
import { Failure } from "../../../lib/errors.js";
import type { ChatCall, EmbedCall } from "../provider.js";
import { assemble, openAIWire } from "./fixtures/fixtures.js";
import { createOpenAIProvider } from "./index.js";

const KEY = "sk-local-test-key-0123456789";

const call = (stream: boolean, signal?: AbortSignal): ChatCall =>
  chatCall({ provider: "local", model: "upstream-model" }, stream, { signal });

const rig: ProviderRig<OpenAIUpstream, UpstreamBehavior> = {
  name: "local",
  key: KEY,
  start: () => startOpenAIUpstream(),
  create: createOpenAIProvider,
  config: (upstream) => ({ type: "openai", base_url: upstream.url, api_key: KEY }),
  call,
  wire: openAIWire("local"),
};

const openai = useProviderRig(rig);
const { provider } = openai;

describe("openai provider over HTTP", () => {
  it("streams an answer and sends the request the way OpenAI expects", async () => {
    openai.upstream.setBehavior({ kind: "answer", text: "Hello there, friend!", chunks: 4 });
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

    const [request] = openai.upstream.requests;
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
    openai.upstream.setBehavior({ kind: "answer", text: "Whole answer." });
    const chunks = await collect(provider().chat(call(false)));
    expect(chunks).toHaveLength(1);
    expect(chunks[0]?.start?.id).toMatch(/^chatcmpl-fake\d+$/);
    expect(chunks[0]?.choices[0]).toMatchObject({
      role: Role.ASSISTANT,
      content: "Whole answer.",
      finishReason: FinishReason.STOP,
    });
    expect(chunks[0]?.usage?.totalTokens).toBe(13);
    expect(openai.upstream.requests[0]?.body).not.toHaveProperty("stream");
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
    openai.upstream.setBehavior({ kind: "raw", chunks: reads, chunkDelayMs: 30 });
    const plain = await collect(provider().chat(call(true)));
    openai.upstream.setBehavior({ kind: "raw", chunks: reads, chunkDelayMs: 30 });
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
    openai.upstream.setBehavior({
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
    const p = createOpenAIProvider("keyless", { type: "openai", base_url: openai.upstream.url });
    await collect(p.chat(call(false))).finally(() => p.close());
    expect(openai.upstream.requests[0]?.headers.authorization).toBeUndefined();
  });

  it("maps an upstream 500 to a retryable upstream_error before yielding anything", async () => {
    openai.upstream.setBehavior({
      kind: "error",
      status: 500,
      body: { error: { message: "kaput" } },
    });
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

  it("takes a stream that ends whole without [DONE] once every choice has finished (TGI, llama.cpp forks)", async () => {
    const chunk = (delta: object, finish: string | null) =>
      `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":${JSON.stringify(delta)},"finish_reason":${JSON.stringify(finish)}}]}\n\n`;
    openai.upstream.setBehavior({
      kind: "raw",
      chunks: [chunk({ role: "assistant", content: "hi" }, null), chunk({}, "stop")],
    });
    const chunks = await collect(provider().chat(call(true)));
    expect(assemble(chunks).finishReason).toBe(FinishReason.STOP);
    // Without the finish reason it stays a stream cut short.
    openai.upstream.setBehavior({
      kind: "raw",
      chunks: [chunk({ role: "assistant", content: "hi" }, null)],
    });
    const { error } = await failure(provider().chat(call(true)));
    expect(error.message).toMatch(/ended early/);
  });

  it("accepts a JSON answer from a server that ignored stream: true", async () => {
    openai.upstream.setBehavior({
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
});

describe("openai provider probe", () => {
  it("lists models by default", async () => {
    await provider().probe("upstream-model", AbortSignal.timeout(5000));
    expect(openai.upstream.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      "GET /v1/models",
    ]);
    expect(openai.upstream.requests[0]?.headers.authorization).toBe(`Bearer ${KEY}`);
  });

  it("asks for one token when probe is completion", async () => {
    await provider({ probe: "completion" }).probe("upstream-model", AbortSignal.timeout(5000));
    expect(openai.upstream.requests[0]?.path).toBe("/v1/chat/completions");
    expect(openai.upstream.requests[0]?.body).toMatchObject({
      model: "upstream-model",
      max_tokens: 1,
    });
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

    const [request] = openai.upstream.requests;
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
    openai.upstream.setBehavior({
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
    openai.upstream.setBehavior({
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
    openai.upstream.setBehavior({ kind: "hang" });
    const controller = new AbortController();
    const pending = provider()
      .embed?.(embedCall(["x"], { signal: controller.signal }))
      .catch((e: unknown) => e);
    await requestsArrived(openai.upstream.requests, 1);
    controller.abort();
    expect(await pending).toMatchObject({ status: 499, kind: "cancelled" });
    await within(openai.upstream.requests[0]?.closed ?? Promise.reject(), 1000);
    expect(openai.upstream.requests[0]?.aborted).toBe(true);
  });
});

describeProviderConduct("openai provider", rig, openai);
