import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type ChatChunk,
  type ChatParamsSchema,
  EmbedParamsSchema,
  FinishReason,
  MessageSchema,
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
  fakeVector,
  type GeminiBehavior,
  type GeminiUpstream,
  startGeminiUpstream,
} from "../../../../test/upstreams/gemini-upstream.js";
import { aggregate } from "../../../lib/chat/aggregate.js";
import type { ChatCall } from "../provider.js";
import { withoutCallNonces } from "./fixtures/call-ids.js";
import { createGeminiProvider } from "./index.js";

const KEY = "AIzaSy-local-test-key-0123456789";
const MODEL = "gemini-2.5-flash";

function call(
  stream: boolean,
  signal?: AbortSignal,
  params: MessageInitShape<typeof ChatParamsSchema> = {},
  model = MODEL,
): ChatCall {
  return chatCall({ provider: "google", model }, stream, { signal, params });
}

/** The answer the chunks add up to, without the clock. */
function whole(chunks: ChatChunk[]) {
  const completion = aggregate(chunks);
  completion.created = 0n;
  return completion;
}

/** One event of Google's stream, as its SSE frames it. */
const event = (data: object) => `data: ${JSON.stringify(data)}\r\n\r\n`;

const rig: ProviderRig<GeminiUpstream, GeminiBehavior> = {
  name: "google",
  key: KEY,
  start: () => startGeminiUpstream({ apiKey: KEY }),
  create: createGeminiProvider,
  config: (upstream) => ({ type: "gemini", base_url: upstream.url, api_key: KEY }),
  call,
  wire: {
    end: "every candidate finished",
    slowStream: { kind: "answer", text: "one two three four five", chunks: 5, chunkDelayMs: 100 },
    // Nothing marks the end of Google's stream but the finish reasons: no end can trail it.
    wholeStream: { kind: "answer" },
    cutAfterThreeChunks: (cutMode) => ({
      kind: "answer",
      text: "abcdef",
      chunks: 6,
      cutAfterChunks: 3,
      cutMode,
    }),
    // Cut even though the one candidate has finished: the body must end on a whole event.
    halfEvent: {
      chunks: [
        event({ candidates: [{ content: { parts: [{ text: "hi" }] }, finishReason: "STOP" }] }),
        'data: {"candidates": [{"content"',
      ],
      yielded: 1,
    },
    notJson: ["data: {oops\r\n\r\n"],
    errorEvent: {
      behavior: {
        kind: "raw",
        chunks: [
          event({ candidates: [{ content: { parts: [{ text: "hi" }] } }] }),
          event({
            error: { code: 500, message: "An internal error has occurred.", status: "INTERNAL" },
          }),
        ],
      },
      yielded: 1,
      error: {
        status: 502,
        kind: "upstream_error",
        code: "INTERNAL",
        message: expect.stringContaining("An internal error has occurred."),
      },
    },
    invalidRequest: {
      body: {
        error: {
          code: 400,
          message: "* GenerateContentRequest.contents: contents is not specified\n",
          status: "INVALID_ARGUMENT",
        },
      },
      words: "contents is not specified",
    },
    rateLimited: {
      delay: "google.rpc.RetryInfo",
      behavior: { kind: "error", status: 429, retryDelay: "7s" },
      retryAfterMs: 7000,
      error: { code: "RESOURCE_EXHAUSTED" },
    },
  },
};

const gemini = useProviderRig(rig);
const { provider } = gemini;

describe("gemini provider over HTTP", () => {
  it("streams an answer and sends the request the way Gemini expects", async () => {
    gemini.upstream.setBehavior({ kind: "answer", text: "Hello there, friend!", chunks: 4 });
    const p = provider({ headers: { "X-Goog-User-Project": "proj-1" } });
    const chunks = await collect(p.chat(call(true)));

    expect(chunks).toHaveLength(4);
    expect(chunks[0]?.start).toMatchObject({
      id: "fake-response-1",
      upstreamModel: `${MODEL}-001`,
      provider: "google",
    });
    const answer = aggregate(chunks);
    expect(answer.choices[0]?.message?.content[0]?.part.value).toBe("Hello there, friend!");
    expect(answer.choices[0]?.finishReason).toBe(FinishReason.STOP);
    expect(answer.usage).toMatchObject({ promptTokens: 10, completionTokens: 4, totalTokens: 14 });

    const [request] = gemini.upstream.requests;
    expect(request?.method).toBe("POST");
    expect(request?.path).toBe(`/v1beta/models/${MODEL}:streamGenerateContent`);
    expect(request?.query).toEqual({ alt: "sse" });
    expect(request?.headers["x-goog-api-key"]).toBe(KEY);
    expect(request?.headers["x-goog-user-project"]).toBe("proj-1");
    expect(request?.headers["content-type"]).toBe("application/json");
    expect(request?.body).toEqual({ contents: [{ role: "user", parts: [{ text: "Say hello" }] }] });
  });

  it("answers a non-streamed call with one whole chunk", async () => {
    gemini.upstream.setBehavior({ kind: "answer", text: "Whole answer." });
    const chunks = await collect(provider().chat(call(false)));
    expect(chunks).toHaveLength(1);
    expect(chunks[0]?.choices[0]).toMatchObject({
      role: Role.ASSISTANT,
      content: "Whole answer.",
      finishReason: FinishReason.STOP,
    });
    expect(gemini.upstream.requests[0]?.path).toBe(`/v1beta/models/${MODEL}:generateContent`);
    expect(gemini.upstream.requests[0]?.query).toEqual({});
  });

  it("keeps a choice's first function call only, streamed and whole, when the client forbade parallel calls", async () => {
    gemini.upstream.setBehavior({
      kind: "answer",
      text: "Checking both.",
      chunks: 3,
      functionCalls: [
        { name: "get_weather", args: { city: "Zürich" } },
        { name: "get_time", args: { tz: "Asia/Tokyo" } },
      ],
    });
    const p = provider();
    const params = {
      tools: [{ name: "get_weather" }, { name: "get_time" }],
      parallelToolCalls: false,
    };
    for (const stream of [true, false]) {
      const answer = whole(await collect(p.chat(call(stream, undefined, params))));
      expect(answer.choices[0]?.message?.toolCalls.map((c) => c.name)).toEqual(["get_weather"]);
      expect(answer.choices[0]?.finishReason).toBe(FinishReason.TOOL_CALLS);
    }
    // Gemini got the tools and nothing about parallel calls, which it has no field for.
    expect(gemini.upstream.requests.at(-1)?.body).not.toHaveProperty("toolConfig");
  });

  it("gives the same answer streamed and whole: text, thoughts, tool calls, candidates", async () => {
    gemini.upstream.setBehavior({
      kind: "answer",
      text: "Checking both.",
      chunks: 3,
      thoughts: "The user wants weather and time.",
      candidates: 2,
      functionCalls: [
        {
          name: "get_weather",
          args: { city: "Zürich", days: [1, 2, 3] },
          thoughtSignature: "c2ln",
        },
        { name: "get_time", args: { tz: "Asia/Tokyo" } },
      ],
      usage: { promptTokenCount: 30, candidatesTokenCount: 12, thoughtsTokenCount: 8 },
    });
    const p = provider();
    const streamed = whole(await collect(p.chat(call(true))));
    const single = whole(await collect(p.chat(call(false))));
    // The fake numbers its answers; everything else must match.
    streamed.id = single.id;
    // Synthetic call ids are random per answer: compared without their nonce.
    expect(withoutCallNonces(streamed)).toEqual(withoutCallNonces(single));

    const first = single.choices[0];
    expect(first?.reasoning).toBe("The user wants weather and time.");
    expect(
      withoutCallNonces(first?.message?.toolCalls.map((c) => [c.id, c.name, c.arguments])),
    ).toEqual([
      ["call_*_0__thought__c2ln", "get_weather", '{"city":"Zürich","days":[1,2,3]}'],
      ["call_*_1", "get_time", '{"tz":"Asia/Tokyo"}'],
    ]);
    expect(first?.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(single.choices[1]?.message?.content[0]?.part.value).toBe("Checking both. #1");
    expect(withoutCallNonces(single.choices[1]?.message?.toolCalls[0]?.id)).toBe(
      "call_*_0__thought__c2ln",
    );
    expect(single.usage).toMatchObject({
      promptTokens: 30,
      completionTokens: 20,
      reasoningTokens: 8,
      totalTokens: 50,
    });
  });

  it("sends tools and tool choice, and the conversation's earlier calls and results", async () => {
    gemini.upstream.setBehavior({
      kind: "answer",
      functionCalls: [{ name: "lookup", args: { q: "x" } }],
    });
    const chunks = await collect(
      provider().chat(
        call(true, AbortSignal.timeout(10_000), {
          tools: [{ name: "lookup", parametersJson: '{"type":"object"}' }],
          toolChoice: { mode: ToolChoice_Mode.FUNCTION, functionName: "lookup" },
          messages: [
            create(MessageSchema, {
              role: Role.USER,
              content: [{ part: { case: "text", value: "find x" } }],
            }),
            create(MessageSchema, {
              role: Role.ASSISTANT,
              toolCalls: [{ id: "toolu_1", name: "lookup", arguments: '{"q":"w"}' }],
            }),
            create(MessageSchema, {
              role: Role.TOOL,
              toolCallId: "toolu_1",
              content: [{ part: { case: "text", value: "nothing" } }],
            }),
          ],
        }),
      ),
    );
    expect(aggregate(chunks).choices[0]?.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(gemini.upstream.requests[0]?.body).toMatchObject({
      tools: [
        { functionDeclarations: [{ name: "lookup", parametersJsonSchema: { type: "object" } }] },
      ],
      toolConfig: { functionCallingConfig: { mode: "ANY", allowedFunctionNames: ["lookup"] } },
      contents: [
        { role: "user", parts: [{ text: "find x" }] },
        { role: "model", parts: [{ functionCall: { name: "lookup", args: { q: "w" } } }] },
        {
          role: "user",
          parts: [{ functionResponse: { name: "lookup", response: { output: "nothing" } } }],
        },
      ],
    });
  });

  it("reaches a model named models/… and a base_url that already names the API version", async () => {
    const p = provider({ base_url: `${gemini.upstream.url}/v1beta/` });
    await collect(p.chat(call(false, AbortSignal.timeout(10_000), {}, "models/gemini-2.0-flash")));
    expect(gemini.upstream.requests[0]?.path).toBe(
      "/v1beta/models/gemini-2.0-flash:generateContent",
    );
  });

  it("maps a 503 to a retryable upstream_unavailable", async () => {
    gemini.upstream.setBehavior({ kind: "error", status: 503 });
    const { error } = await failure(provider().chat(call(false)));
    expect(error).toMatchObject({
      status: 503,
      kind: "upstream_unavailable",
      retryable: true,
      code: "UNAVAILABLE",
      message: "provider google is unavailable (503): fake upstream error 503",
    });
  });

  it("reports a wrong key as the gateway's credentials, never showing that key", async () => {
    const { error } = await failure(provider({ api_key: "AIza-wrong-key" }).chat(call(false)));
    expect(error).toMatchObject({ status: 502, kind: "auth", code: "API_KEY_INVALID" });
    expect(error.message).not.toContain("AIza-wrong-key");
  });

  it("refuses a blocked prompt with a 400 before yielding anything", async () => {
    gemini.upstream.setBehavior({ kind: "answer", blockReason: "SAFETY" });
    const { error, yielded } = await failure(provider().chat(call(true)));
    expect(yielded).toEqual([]);
    expect(error).toMatchObject({ status: 400, kind: "invalid_request", code: "content_filter" });
  });

  it("accepts a stream sent as one JSON array", async () => {
    const events = [
      { candidates: [{ content: { parts: [{ text: "o" }] } }] },
      { candidates: [{ content: { parts: [{ text: "k" }] }, finishReason: "STOP" }] },
    ];
    gemini.upstream.setBehavior({
      kind: "raw",
      headers: { "content-type": "application/json" },
      chunks: [JSON.stringify(events)],
    });
    const chunks = await collect(provider().chat(call(true)));
    expect(chunks.map((c) => c.choices[0]?.content)).toEqual(["o", "k"]);
  });
});

describe("gemini provider embeddings", () => {
  it("embeds every input in one batch and returns the vectors in order", async () => {
    const result = await provider().embed?.({
      provider: "google",
      model: "gemini-embedding-001",
      params: create(EmbedParamsSchema, { model: "emb", inputs: ["a", "bcd"], dimensions: 3 }),
      context: create(RequestContextSchema, { requestId: "req-2" }),
      signal: AbortSignal.timeout(5000),
    });
    expect(result?.embeddings.map((e) => [e.index, e.values])).toEqual([
      [0, fakeVector("a", 3)],
      [1, fakeVector("bcd", 3)],
    ]);
    expect(result).toMatchObject({ upstreamModel: "gemini-embedding-001", provider: "google" });
    const [request] = gemini.upstream.requests;
    expect(request?.path).toBe("/v1beta/models/gemini-embedding-001:batchEmbedContents");
    expect(request?.body).toEqual({
      requests: [
        {
          model: "models/gemini-embedding-001",
          content: { parts: [{ text: "a" }] },
          outputDimensionality: 3,
        },
        {
          model: "models/gemini-embedding-001",
          content: { parts: [{ text: "bcd" }] },
          outputDimensionality: 3,
        },
      ],
    });
  });

  it("refuses token ids as unsupported without calling Gemini, which embeds text only", async () => {
    const before = gemini.upstream.requests.length;
    await expect(
      provider().embed?.({
        provider: "google",
        model: "gemini-embedding-001",
        params: create(EmbedParamsSchema, { model: "emb", tokenInputs: [{ ids: [1, 2] }] }),
        context: create(RequestContextSchema),
        signal: AbortSignal.timeout(5000),
      }),
    ).rejects.toMatchObject({
      status: 400,
      kind: "unsupported",
      param: "input",
      provider: "google",
      message: expect.stringMatching(/cannot embed token ids/),
    });
    expect(gemini.upstream.requests.length).toBe(before);
  });

  it("sends more than 100 inputs in batches of 100 and answers them as one, in order", async () => {
    const inputs = Array.from({ length: 250 }, (_, i) => "x".repeat(i + 1));
    const result = await provider().embed?.({
      provider: "google",
      model: "gemini-embedding-001",
      params: create(EmbedParamsSchema, { model: "emb", inputs, dimensions: 2 }),
      context: create(RequestContextSchema),
      signal: AbortSignal.timeout(5000),
    });
    expect(result?.embeddings.map((e) => [e.index, e.values])).toEqual(
      inputs.map((text, i) => [i, fakeVector(text, 2)]),
    );
    const batches = gemini.upstream.requests.map(
      (r) =>
        (r.body as { requests: Array<{ content: { parts: Array<{ text: string }> } }> }).requests,
    );
    expect(batches.map((b) => b.length)).toEqual([100, 100, 50]);
    expect(batches.flat().map((r) => r.content.parts[0]?.text)).toEqual(inputs);
  });

  it("answers the first failing batch's error", async () => {
    gemini.upstream.setBehavior((request) =>
      request.action === "batchEmbedContents" &&
      (request.body as { requests: unknown[] }).requests.length === 50
        ? { kind: "error", status: 400 }
        : { kind: "answer" },
    );
    await expect(
      provider().embed?.({
        provider: "google",
        model: "gemini-embedding-001",
        params: create(EmbedParamsSchema, { inputs: Array.from({ length: 250 }, () => "a") }),
        context: create(RequestContextSchema),
        signal: AbortSignal.timeout(5000),
      }),
    ).rejects.toMatchObject({ status: 400, kind: "invalid_request" });
  });

  it("maps an upstream error", async () => {
    gemini.upstream.setBehavior({ kind: "error", status: 429, retryDelay: "1.5s" });
    await expect(
      provider().embed?.({
        provider: "google",
        model: "gemini-embedding-001",
        params: create(EmbedParamsSchema, { inputs: ["a"] }),
        context: create(RequestContextSchema),
        signal: AbortSignal.timeout(5000),
      }),
    ).rejects.toMatchObject({ status: 429, retryAfterMs: 1500 });
  });
});

describe("gemini provider probe", () => {
  it("gets the model by default", async () => {
    await provider().probe(MODEL, AbortSignal.timeout(5000));
    expect(gemini.upstream.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      `GET /v1beta/models/${MODEL}`,
    ]);
    expect(gemini.upstream.requests[0]?.headers["x-goog-api-key"]).toBe(KEY);
  });

  it("fails when the upstream does not know the model", async () => {
    gemini.upstream.setBehavior({ kind: "error", status: 404 });
    await expect(provider().probe("gemini-9", AbortSignal.timeout(5000))).rejects.toMatchObject({
      status: 502,
      kind: "upstream_error",
      code: "NOT_FOUND",
    });
  });

  it("asks for one token when probe is completion", async () => {
    await provider({ probe: "completion" }).probe(MODEL, AbortSignal.timeout(5000));
    expect(gemini.upstream.requests[0]?.path).toBe(`/v1beta/models/${MODEL}:generateContent`);
    expect(gemini.upstream.requests[0]?.body).toMatchObject({
      generationConfig: { maxOutputTokens: 1 },
    });
  });
});

describeProviderConduct("gemini provider", rig, gemini);
