import OpenAI, { AzureOpenAI } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  azureContentFilterError,
  azureRateLimited,
  fakeEmbedding,
  type OpenAIUpstream,
  startOpenAIUpstream,
} from "./openai-upstream.js";

// The official SDK is the judge of whether the fake speaks OpenAI's wire format.
let upstream: OpenAIUpstream;
let client: OpenAI;

beforeAll(async () => {
  upstream = await startOpenAIUpstream();
  client = new OpenAI({ baseURL: upstream.url, apiKey: "sk-fake", maxRetries: 0 });
});
afterAll(async () => {
  await upstream.close();
});

describe("fake OpenAI upstream", () => {
  it("streams text and tool calls the SDK reassembles", async () => {
    upstream.setBehavior({
      kind: "answer",
      text: "Hi there",
      chunks: 2,
      toolCalls: [{ name: "f", arguments: '{"a":1}', fragments: 3 }],
    });
    const stream = client.chat.completions.stream({
      model: "m",
      messages: [{ role: "user", content: "x" }],
      stream_options: { include_usage: true },
    });
    const completion = await stream.finalChatCompletion();
    const message = completion.choices[0]?.message;
    expect(message?.content).toBe("Hi there");
    expect(message?.tool_calls?.[0]).toMatchObject({
      id: "call_1",
      function: { name: "f", arguments: '{"a":1}' },
    });
    expect(completion.choices[0]?.finish_reason).toBe("tool_calls");
    expect(completion.usage?.total_tokens).toBe(15);
    expect(upstream.requests.at(-1)?.headers.authorization).toBe("Bearer sk-fake");
  });

  it("answers without streaming and lists models", async () => {
    upstream.setBehavior({ kind: "answer", text: "Whole" });
    const completion = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "x" }],
    });
    expect(completion.choices[0]?.message.content).toBe("Whole");
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["fake-model"]);
  });

  it("sends errors with their status, body and headers", async () => {
    upstream.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "1" } });
    const error = await client.chat.completions
      .create({ model: "m", messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    expect((error as InstanceType<typeof OpenAI.RateLimitError>).headers.get("retry-after")).toBe(
      "1",
    );
  });
});

describe("fake OpenAI upstream embeddings", () => {
  it("answers the SDK's default base64 request with the deterministic vectors", async () => {
    upstream.setBehavior({ kind: "answer" });
    const response = await client.embeddings.create({
      model: "text-embedding-3-small",
      input: ["one two", "three"],
      dimensions: 12,
    });
    expect(response.data.map((d) => d.embedding)).toEqual([
      fakeEmbedding("one two", 12),
      fakeEmbedding("three", 12),
    ]);
    expect(response.model).toBe("text-embedding-3-small");
    expect(response.usage).toEqual({ prompt_tokens: 3, total_tokens: 3 });
  });

  it("answers floats when asked for floats", async () => {
    const response = await client.embeddings.create({
      model: "m",
      input: "solo",
      encoding_format: "float",
    });
    expect(response.data[0]?.embedding).toEqual(fakeEmbedding("solo"));
    expect(response.data[0]?.embedding).toHaveLength(8);
  });
});

describe("fake Azure OpenAI upstream", () => {
  function azure(apiVersion = "2024-10-21"): AzureOpenAI {
    return new AzureOpenAI({
      endpoint: upstream.origin,
      apiKey: "azure-fake-key",
      apiVersion,
      maxRetries: 0,
    });
  }

  it("streams from a deployment's path the SDK reassembles, past the prompt-filter chunk", async () => {
    upstream.setBehavior({ kind: "answer", text: "Hi from Azure", chunks: 3 });
    const stream = azure().chat.completions.stream({
      model: "gpt-4o-prod",
      messages: [{ role: "user", content: "x" }],
      stream_options: { include_usage: true },
    });
    const completion = await stream.finalChatCompletion();
    expect(completion.choices[0]?.message.content).toBe("Hi from Azure");
    expect(completion.choices[0]?.finish_reason).toBe("stop");
    expect(completion.usage?.total_tokens).toBe(13);
    const request = upstream.requests.at(-1);
    expect(request?.path).toBe(
      "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21",
    );
    expect(request?.style).toBe("azure");
    expect(request?.deployment).toBe("gpt-4o-prod");
    expect(request?.query).toEqual({ "api-version": "2024-10-21" });
    expect(request?.headers["api-key"]).toBe("azure-fake-key");
    expect(request?.headers.authorization).toBeUndefined();
  });

  it("answers whole, names the deployment as model and adds filter results", async () => {
    upstream.setBehavior({ kind: "answer", text: "Whole" });
    const completion = await azure().chat.completions.create({
      model: "gpt-4o-prod",
      messages: [{ role: "user", content: "x" }],
    });
    expect(completion.model).toBe("gpt-4o-prod");
    expect(completion.choices[0]?.message.content).toBe("Whole");
    expect(completion).toHaveProperty("prompt_filter_results");
    expect(completion.choices[0]).toHaveProperty("content_filter_results");
  });

  it("embeds through a deployment and lists models", async () => {
    upstream.setBehavior({ kind: "answer" });
    const response = await azure().embeddings.create({ model: "emb-prod", input: ["a b c"] });
    expect(response.data[0]?.embedding).toEqual(fakeEmbedding("a b c"));
    expect(upstream.requests.at(-1)?.path).toBe(
      "/openai/deployments/emb-prod/embeddings?api-version=2024-10-21",
    );
    const models = await azure().models.list();
    expect(models.data.map((m) => m.id)).toEqual(["fake-model"]);
    expect(upstream.requests.at(-1)?.path).toBe("/openai/models?api-version=2024-10-21");
  });

  it("refuses a request without api-version, and newer fields on older versions", async () => {
    const response = await fetch(`${upstream.origin}/openai/deployments/d/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [] }),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: { code: "MissingApiVersionParameter" } });

    const error = await azure("2024-06-01")
      .chat.completions.create({
        model: "d",
        messages: [{ role: "user", content: "x" }],
        stream: true,
        stream_options: { include_usage: true },
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as Error).message).toContain("stream_options");
  });

  it("sends Azure's content-filter error body", async () => {
    upstream.setBehavior({ kind: "error", status: 400, body: azureContentFilterError() });
    const error = await azure()
      .chat.completions.create({ model: "d", messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as InstanceType<typeof OpenAI.BadRequestError>).code).toBe("content_filter");
  });

  it("ends an answer its output filter stopped as Azure does: no content whole, the verdict named", async () => {
    upstream.setBehavior({ kind: "answer", text: "Once upon", finishReason: "content_filter" });
    const ask = { model: "d", messages: [{ role: "user" as const, content: "x" }] };
    const whole = await azure().chat.completions.create(ask);
    const choice = whole.choices[0] as (typeof whole.choices)[number] & {
      content_filter_results?: Record<string, { filtered: boolean }>;
    };
    expect(choice.finish_reason).toBe("content_filter");
    expect(choice.message.content ?? null).toBeNull();
    expect(choice.content_filter_results?.violence?.filtered).toBe(true);

    let text = "";
    let finish: string | null | undefined;
    for await (const chunk of await azure().chat.completions.create({ ...ask, stream: true })) {
      text += chunk.choices[0]?.delta?.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe("Once upon");
    expect(finish).toBe("content_filter");
  });

  it("sends Azure's 429, whose wait the SDK reads from retry-after-ms", async () => {
    upstream.setBehavior(azureRateLimited(6));
    const error = await azure()
      .chat.completions.create({ model: "d", messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    const headers = (error as InstanceType<typeof OpenAI.RateLimitError>).headers;
    expect(headers.get("retry-after")).toBe("6");
    expect(headers.get("retry-after-ms")).toBe("6000");
    expect((error as Error).message).toContain("Please retry after 6 seconds");
  });

  it("serves the v1 API under /openai/v1 without api-version", async () => {
    upstream.setBehavior({ kind: "answer", text: "v1" });
    const v1 = new OpenAI({
      baseURL: `${upstream.origin}/openai/v1`,
      apiKey: "azure-fake-key",
      maxRetries: 0,
    });
    const completion = await v1.chat.completions.create({
      model: "gpt-4o-prod",
      messages: [{ role: "user", content: "x" }],
    });
    expect(completion.choices[0]?.message.content).toBe("v1");
    expect(upstream.requests.at(-1)).toMatchObject({
      path: "/openai/v1/chat/completions",
      style: "azure-v1",
      query: {},
    });
  });
});
