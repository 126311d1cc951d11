import { readFileSync } from "node:fs";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type ChatChunk,
  type ChatParamsSchema,
  EmbedParamsSchema,
  FinishReason,
  RequestContextSchema,
  Role,
  ToolChoice_Mode,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { chatCall, collect, failure } from "../../../../test/helpers/provider-calls.js";
import {
  describeProviderConduct,
  type ProviderRig,
  useProviderRig,
} from "../../../../test/helpers/provider-rig.js";
import {
  azureContentFilterError,
  fakeEmbedding,
  type OpenAIUpstream,
  startOpenAIUpstream,
  type UpstreamBehavior,
} from "../../../../test/upstreams/openai-upstream.js";
import type { OpenAIChatChunk, OpenAIChatCompletion } from "../../../lib/wire/openai.js";
import { assemble, openAIWire } from "../openai/fixtures/fixtures.js";
import { fromOpenAICompletion } from "../openai/from-response.js";
import { createOpenAIStreamTranslator } from "../openai/from-stream.js";
import type { ChatCall, EmbedCall } from "../provider.js";
import { SseParser } from "../sse.js";
import { azureDialect, azureEndpoint, createAzureOpenAIProvider } from "./index.js";

const KEY = "azure-local-test-key-0123456789abcdef";
const VERSION = "2024-10-21";

function fixture(name: string): string {
  return readFileSync(new URL(`./fixtures/${name}`, import.meta.url), "utf8");
}

function call(
  stream: boolean,
  options: {
    signal?: AbortSignal | undefined;
    deployment?: string;
    maxTokens?: number;
    tool?: boolean;
  } = {},
): ChatCall {
  const params: MessageInitShape<typeof ChatParamsSchema> = {};
  if (options.maxTokens !== undefined) params.maxTokens = options.maxTokens;
  if (options.tool) {
    params.tools = [{ name: "get_weather", parametersJson: '{"type":"object"}' }];
    params.toolChoice = { mode: ToolChoice_Mode.AUTO };
  }
  const target = { provider: "azure", model: options.deployment ?? "gpt-4o-prod" };
  return chatCall(target, stream, { text: "Tell me a story", signal: options.signal, params });
}

const rig: ProviderRig<OpenAIUpstream, UpstreamBehavior> = {
  name: "azure",
  key: KEY,
  start: () => startOpenAIUpstream({ models: ["gpt-4o", "text-embedding-3-small"] }),
  create: createAzureOpenAIProvider,
  config: (upstream) => ({
    type: "azure-openai",
    base_url: upstream.origin,
    api_key: KEY,
    api_version: VERSION,
  }),
  call: (stream, signal) => call(stream, { signal }),
  // OpenAI's wire on Azure's routes; Azure's own: the prompt-filter event and retry-after-ms.
  wire: {
    ...openAIWire("azure"),
    // Azure's prompt-filter event is one of the four sent, and yields nothing.
    cutAfterThreeChunks: (cutMode) => ({
      kind: "answer",
      text: "abcdef",
      chunks: 6,
      cutAfterChunks: 4,
      cutMode,
    }),
    // A 400 other than the content filter's (see below) keeps OpenAI's shape and meaning.
    invalidRequest: {
      body: {
        error: {
          message: "Invalid value for 'temperature'",
          type: "invalid_request_error",
          param: "temperature",
          code: "invalid_value",
        },
      },
      words: "Invalid value for 'temperature'",
      error: {
        param: "temperature",
        message: "provider azure rejected the request (400): Invalid value for 'temperature'",
      },
    },
    rateLimited: {
      delay: "retry-after-ms",
      behavior: {
        kind: "error",
        status: 429,
        headers: { "retry-after-ms": "1500", "retry-after": "2" },
        body: {
          error: {
            code: "429",
            message:
              "Requests to the ChatCompletions_Create Operation have exceeded the token rate limit.",
          },
        },
      },
      retryAfterMs: 1500,
    },
  },
};

const azure = useProviderRig(rig);
const { provider } = azure;

describe("azureDialect", () => {
  it.each([
    ["2024-06-01", "max_tokens", false],
    ["2024-08-01-preview", "max_tokens", false],
    ["2024-09-01-preview", "max_completion_tokens", true],
    ["2024-10-21", "max_tokens", true],
    ["2024-12-01-preview", "max_completion_tokens", true],
    ["2025-04-01-preview", "max_completion_tokens", true],
    ["preview", "max_completion_tokens", true],
  ])("api-version %s sends %s, stream usage %s", (version, field, streamUsage) => {
    expect(azureDialect(version)).toEqual({ maxTokensField: field, streamUsage });
  });
});

describe("an api_version without usage in streams", () => {
  it("is a caveat the connector logs at start; a later one is not", () => {
    expect(provider({ api_version: "2024-06-01" }).caveats).toEqual([
      expect.stringContaining("api_version 2024-06-01 predates usage in streams"),
    ]);
    expect(provider({ api_version: "2024-10-21" }).caveats).toBeUndefined();
  });
});

describe("azureEndpoint", () => {
  it.each([
    "https://res.openai.azure.com",
    "https://res.openai.azure.com/",
    "https://res.openai.azure.com/openai",
    "https://res.openai.azure.com/openai/",
  ])("puts the dated API under /openai for base_url %s", (base) => {
    const endpoint = azureEndpoint(base, "2024-10-21");
    expect(endpoint.baseUrl).toBe("https://res.openai.azure.com/openai?api-version=2024-10-21");
    expect(endpoint.routes.chat("gpt-4o prod/1")).toBe(
      "/deployments/gpt-4o%20prod%2F1/chat/completions",
    );
    expect(endpoint.routes.embeddings("emb")).toBe("/deployments/emb/embeddings");
    expect(endpoint.routes.models).toBe("/models");
  });

  it("keeps a gateway path in front of /openai", () => {
    expect(azureEndpoint("https://apim.example.com/llm", "2024-10-21").baseUrl).toBe(
      "https://apim.example.com/llm/openai?api-version=2024-10-21",
    );
  });

  it("uses the v1 API's own paths and no dated api-version under /openai/v1", () => {
    const endpoint = azureEndpoint("https://res.openai.azure.com/openai/v1/", "2024-10-21");
    expect(endpoint.baseUrl).toBe("https://res.openai.azure.com/openai/v1");
    expect(endpoint.routes.chat("dep")).toBe("/chat/completions");
    expect(endpoint.request.maxTokensField).toBe("max_completion_tokens");
    expect(azureEndpoint("https://res.openai.azure.com/openai/v1", "preview").baseUrl).toBe(
      "https://res.openai.azure.com/openai/v1?api-version=preview",
    );
    expect(azureEndpoint("https://res.openai.azure.com/openai/v1", undefined).baseUrl).toBe(
      "https://res.openai.azure.com/openai/v1",
    );
  });

  it("needs an api_version for the dated API", () => {
    expect(() => azureEndpoint("https://res.openai.azure.com", undefined)).toThrow(
      "api_version is required unless base_url ends in /openai/v1",
    );
  });
});

describe("Azure's recorded answers", () => {
  it("skip the prompt-filter chunk and the filter annotations, keeping the content filter finish", () => {
    const parser = new SseParser();
    const events = parser.push(new TextEncoder().encode(fixture("stream-content-filter.sse")));
    expect(parser.end().truncated).toBe(false);
    const translator = createOpenAIStreamTranslator("azure");
    const chunks: ChatChunk[] = [];
    for (const event of events) {
      if (event.data === "[DONE]") break;
      const chunk = translator.push(JSON.parse(event.data) as OpenAIChatChunk);
      if (chunk !== undefined) chunks.push(chunk);
    }
    expect(translator.end()).toBeUndefined();
    // role + 4 content + finish + usage; the two chunks with empty ids are gone.
    expect(chunks).toHaveLength(7);
    expect(chunks[0]?.start).toMatchObject({
      id: "chatcmpl-AaZkR7mQ2bTLx9Kq4Vd1",
      created: 1733256300n,
      upstreamModel: "gpt-4o-2024-08-06",
      provider: "azure",
    });
    const answer = assemble(chunks);
    expect(answer.starts).toBe(1);
    expect(answer.content).toBe("Once upon a time");
    expect(answer.finishReason).toBe(FinishReason.CONTENT_FILTER);
    expect(answer.rawFinishReason).toBe("content_filter");
    expect(answer.usage).toMatchObject({ promptTokens: 12, completionTokens: 5, totalTokens: 17 });
  });

  it("map a filtered whole answer to CONTENT_FILTER with no content", () => {
    const chunk = fromOpenAICompletion(
      JSON.parse(fixture("completion-content-filter.json")) as OpenAIChatCompletion,
      "azure",
    );
    expect(chunk.choices[0]).toMatchObject({
      role: Role.ASSISTANT,
      finishReason: FinishReason.CONTENT_FILTER,
      rawFinishReason: "content_filter",
    });
    expect(chunk.choices[0]?.content).toBeUndefined();
  });
});

describe("azure-openai provider over HTTP", () => {
  it("streams from the deployment's path with api-version and the api-key header", async () => {
    azure.upstream.setBehavior({
      kind: "answer",
      text: "Once upon a time.",
      model: "gpt-4o-2024-08-06",
    });
    const chunks = await collect(provider().chat(call(true)));

    const answer = assemble(chunks);
    expect(answer.content).toBe("Once upon a time.");
    expect(answer.finishReason).toBe(FinishReason.STOP);
    expect(answer.starts).toBe(1);
    // The start comes from the first real chunk, not Azure's prompt-filter chunk.
    expect(chunks[0]?.start).toMatchObject({
      id: expect.stringMatching(/^chatcmpl-fake\d+$/),
      upstreamModel: "gpt-4o-2024-08-06",
      provider: "azure",
    });
    expect(chunks[0]?.start?.created).toBeGreaterThan(0n);
    expect(answer.usage).toMatchObject({ promptTokens: 10, completionTokens: 3 });

    const [request] = azure.upstream.requests;
    expect(request?.method).toBe("POST");
    expect(request?.path).toBe(
      `/openai/deployments/gpt-4o-prod/chat/completions?api-version=${VERSION}`,
    );
    expect(request?.deployment).toBe("gpt-4o-prod");
    expect(request?.query).toEqual({ "api-version": VERSION });
    expect(request?.headers["api-key"]).toBe(KEY);
    expect(request?.headers.authorization).toBeUndefined();
    expect(request?.body).toEqual({
      model: "gpt-4o-prod",
      messages: [{ role: "user", content: "Tell me a story" }],
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it("answers a non-streamed call with one whole chunk", async () => {
    azure.upstream.setBehavior({ kind: "answer", text: "Whole story." });
    const chunks = await collect(provider().chat(call(false)));
    expect(chunks).toHaveLength(1);
    expect(chunks[0]?.start?.upstreamModel).toBe("gpt-4o-prod");
    expect(chunks[0]?.choices[0]).toMatchObject({
      content: "Whole story.",
      finishReason: FinishReason.STOP,
    });
    expect(chunks[0]?.usage?.totalTokens).toBe(13);
    expect(azure.upstream.requests[0]?.body).not.toHaveProperty("stream");
  });

  it("sends tools and reassembles streamed tool-call fragments exactly", async () => {
    const args = '{"city": "Zürich", "days": [1, 2]}';
    azure.upstream.setBehavior({
      kind: "answer",
      text: "",
      toolCalls: [{ id: "call_az", name: "get_weather", arguments: args, fragments: 5 }],
    });
    const answer = assemble(await collect(provider().chat(call(true, { tool: true }))));
    expect(answer.toolCalls).toEqual([{ id: "call_az", name: "get_weather", arguments: args }]);
    expect(answer.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(azure.upstream.requests[0]?.body).toMatchObject({
      tools: [
        { type: "function", function: { name: "get_weather", parameters: { type: "object" } } },
      ],
      tool_choice: "auto",
    });
  });

  it("speaks an older api-version's dialect: max_tokens and no stream_options", async () => {
    // The fake, like Azure, answers 400 to either newer field on this version.
    const chunks = await collect(
      provider({ api_version: "2024-06-01" }).chat(call(true, { maxTokens: 50 })),
    );
    expect(assemble(chunks).content).toBe("Hello from the fake upstream.");
    const body = azure.upstream.requests[0]?.body;
    expect(body).toMatchObject({ max_tokens: 50, stream: true });
    expect(body).not.toHaveProperty("stream_options");
    expect(azure.upstream.requests[0]?.query).toEqual({ "api-version": "2024-06-01" });
  });

  it("sends max_completion_tokens on versions that know it", async () => {
    await collect(
      provider({ api_version: "2024-12-01-preview" }).chat(call(false, { maxTokens: 50 })),
    );
    expect(azure.upstream.requests[0]?.body).toMatchObject({ max_completion_tokens: 50 });
    expect(azure.upstream.requests[0]?.body).not.toHaveProperty("max_tokens");
  });

  it("ends a streamed answer the content filter cut with CONTENT_FILTER", async () => {
    azure.upstream.setBehavior({
      kind: "answer",
      text: "Once upon",
      finishReason: "content_filter",
    });
    const answer = assemble(await collect(provider().chat(call(true))));
    expect(answer.content).toBe("Once upon");
    expect(answer.finishReason).toBe(FinishReason.CONTENT_FILTER);
    expect(answer.rawFinishReason).toBe("content_filter");
  });

  it("replays a recorded Azure stream faithfully", async () => {
    azure.upstream.setBehavior({ kind: "raw", chunks: [fixture("stream-content-filter.sse")] });
    const chunks = await collect(provider().chat(call(true)));
    expect(chunks).toHaveLength(7);
    expect(chunks.every((c) => c.choices.every((d) => d.index === 0))).toBe(true);
    expect(assemble(chunks)).toMatchObject({
      content: "Once upon a time",
      finishReason: FinishReason.CONTENT_FILTER,
      starts: 1,
    });
  });

  it("refuses a prompt Azure's content filter blocked with a 400 that names the filter", async () => {
    azure.upstream.setBehavior({
      kind: "error",
      status: 400,
      body: azureContentFilterError("hate", "medium"),
    });
    const { error, yielded } = await failure(provider().chat(call(true)));
    expect(yielded).toEqual([]);
    expect(error).toMatchObject({
      status: 400,
      kind: "invalid_request",
      retryable: false,
      code: "content_filter",
      param: "messages",
      upstreamStatus: 400,
      provider: "azure",
    });
    expect(error.message).toMatch(/^provider azure's content filter blocked the prompt \(400\): /);
    expect(error.message).toContain("content management policy");
  });

  it("maps a recorded content-filter error the same way", async () => {
    azure.upstream.setBehavior({
      kind: "error",
      status: 400,
      body: JSON.parse(fixture("error-content-filter.json")),
    });
    const { error } = await failure(provider().chat(call(false)));
    expect(error).toMatchObject({ status: 400, code: "content_filter" });
    expect(error.message).toContain("content filter blocked the prompt");
  });

  it("maps a wrong key to auth and never shows the key", async () => {
    azure.upstream.setBehavior({
      kind: "error",
      status: 401,
      body: {
        error: { code: "401", message: `Access denied due to invalid subscription key ${KEY}` },
      },
    });
    const { error } = await failure(provider().chat(call(false)));
    expect(error).toMatchObject({ status: 502, kind: "auth", retryable: true });
    expect(error.message).not.toContain(KEY);
  });

  it("maps an unknown deployment to a retryable 404 failure naming it", async () => {
    azure.upstream.setBehavior({
      kind: "error",
      status: 404,
      body: {
        error: {
          code: "DeploymentNotFound",
          message: "The API deployment for this resource does not exist.",
        },
      },
    });
    const { error } = await failure(provider().chat(call(false, { deployment: "nope" })));
    expect(error).toMatchObject({ status: 502, kind: "upstream_error", retryable: true });
    expect(error.message).toContain('model "nope"');
  });

  it("speaks the v1 API when base_url ends in /openai/v1", async () => {
    azure.upstream.setBehavior({ kind: "answer", text: "v1 answer" });
    const p = provider({ base_url: `${azure.upstream.origin}/openai/v1` });
    const chunks = await collect(p.chat(call(true, { maxTokens: 20 })));
    expect(assemble(chunks).content).toBe("v1 answer");
    const [request] = azure.upstream.requests;
    expect(request?.path).toBe("/openai/v1/chat/completions");
    expect(request?.query).toEqual({});
    expect(request?.headers["api-key"]).toBe(KEY);
    expect(request?.headers.authorization).toBeUndefined();
    expect(request?.body).toMatchObject({
      model: "gpt-4o-prod",
      max_completion_tokens: 20,
      stream_options: { include_usage: true },
    });
  });

  it("refuses at construction a config without base_url", () => {
    expect(() =>
      createAzureOpenAIProvider("azure", { type: "azure-openai", api_version: VERSION }),
    ).toThrow("provider azure: type azure-openai needs base_url");
    expect(() =>
      createAzureOpenAIProvider("azure", { type: "azure-openai", base_url: azure.upstream.origin }),
    ).toThrow("provider azure: api_version is required");
  });
});

describe("azure-openai embeddings", () => {
  function embedCall(inputs: string[], dimensions?: number): EmbedCall {
    const params = create(EmbedParamsSchema, { model: "public-emb", inputs });
    if (dimensions !== undefined) params.dimensions = dimensions;
    return {
      provider: "azure",
      model: "emb-prod",
      params,
      context: create(RequestContextSchema, { requestId: "req-e" }),
      signal: AbortSignal.timeout(10_000),
    };
  }

  it("posts to the deployment's embeddings path and reads the vectors", async () => {
    const result = await provider().embed?.(embedCall(["hello world", "bye"], 4));
    expect(result?.embeddings.map((e) => e.values)).toEqual([
      fakeEmbedding("hello world", 4),
      fakeEmbedding("bye", 4),
    ]);
    expect(result?.usage).toMatchObject({ promptTokens: 3, totalTokens: 3 });
    expect(result).toMatchObject({ upstreamModel: "emb-prod", provider: "azure" });
    const [request] = azure.upstream.requests;
    expect(request?.path).toBe(`/openai/deployments/emb-prod/embeddings?api-version=${VERSION}`);
    expect(request?.headers["api-key"]).toBe(KEY);
    expect(request?.headers.authorization).toBeUndefined();
    expect(request?.body).toEqual({
      model: "emb-prod",
      input: ["hello world", "bye"],
      encoding_format: "float",
      dimensions: 4,
    });
  });

  it("maps an upstream error through the same failure mapping as chat", async () => {
    azure.upstream.setBehavior({ kind: "error", status: 503, headers: { "retry-after": "1" } });
    await expect(provider().embed?.(embedCall(["x"]))).rejects.toMatchObject({
      status: 503,
      kind: "upstream_unavailable",
      retryable: true,
      retryAfterMs: 1000,
    });
  });
});

describe("azure-openai probe", () => {
  it("lists the resource's models with the api-version", async () => {
    await provider().probe("gpt-4o-prod", AbortSignal.timeout(5000));
    expect(azure.upstream.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      `GET /openai/models?api-version=${VERSION}`,
    ]);
    expect(azure.upstream.requests[0]?.headers["api-key"]).toBe(KEY);
  });

  it("asks the deployment for one token when probe is completion", async () => {
    await provider({ probe: "completion" }).probe("gpt-4o-prod", AbortSignal.timeout(5000));
    expect(azure.upstream.requests[0]?.path).toBe(
      `/openai/deployments/gpt-4o-prod/chat/completions?api-version=${VERSION}`,
    );
    expect(azure.upstream.requests[0]?.body).toMatchObject({ max_tokens: 1 });
  });

  it("keeps a query of base_url (e.g. a gateway's) beside the api-version", async () => {
    const p = provider({ base_url: `${azure.upstream.origin}/?x=1` });
    await p.probe("gpt-4o-prod", AbortSignal.timeout(5000));
    expect(azure.upstream.requests[0]?.query).toEqual({ x: "1", "api-version": VERSION });
  });
});

describeProviderConduct("azure-openai provider", rig, azure);
