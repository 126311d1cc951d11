import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { type GeminiUpstream, startGeminiUpstream } from "./upstreams/gemini-upstream.js";
import {
  azureContentFilterError,
  azureRateLimited,
  type OpenAIUpstream,
  startOpenAIUpstream,
} from "./upstreams/openai-upstream.js";

// What clients of the OpenAI and Anthropic APIs get when Gemini's or Azure OpenAI's safety
// machinery, usage details or rate limits speak: the official openai and @anthropic-ai/sdk
// clients through one gateway process to fakes that answer as the providers' API references
// describe (Gemini: Candidate.finishReason, promptFeedback.blockReason, usageMetadata, RetryInfo;
// Azure: the content filter's 400 and finish_reason, the prompt-filter chunk, retry-after-ms).

let gemini: GeminiUpstream;
let azure: OpenAIUpstream;
let openai: OpenAIUpstream;
let gw: RunningFabric;
let oai: OpenAI;
let claude: Anthropic;

beforeAll(async () => {
  gemini = await startGeminiUpstream({ apiKey: "ge-key" });
  azure = await startOpenAIUpstream();
  openai = await startOpenAIUpstream();
  gw = await startOneProcess(
    testConfig(`
providers:
  ge: { type: gemini, base_url: "${gemini.url}", api_key: ge-key }
  az: { type: azure-openai, base_url: "${azure.origin}", api_key: az-key, api_version: "2024-10-21" }
  oa: { type: openai, base_url: "${openai.url}", api_key: oa-key }
models:
  m-gemini: { targets: [{ provider: ge, model: gemini-up }] }
  m-azure: { targets: [{ provider: az, model: my-deployment }] }
  # A target of its own, first, with another behind it that takes its calls once its breaker opens.
  m-gemini-backed:
    targets: [{ provider: ge, model: gemini-backed }, { provider: az, model: backup-deployment }]
  m-openai-backed:
    targets: [{ provider: oa, model: gpt-backed }, { provider: ge, model: gemini-behind }]
  # Targets of their own for the 429s: each is paused for as long as its upstream says.
  m-gemini-paused: { targets: [{ provider: ge, model: gemini-paused }] }
  m-azure-paused: { targets: [{ provider: az, model: paused-deployment }] }
routing: { retries: 0 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
  oai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "x", maxRetries: 0 });
  claude = new Anthropic({ baseURL: gw.url, apiKey: "x", maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([gemini?.close(), azure?.close(), openai?.close()]);
});

afterEach(() => {
  gemini.setBehavior({ kind: "answer" });
  azure.setBehavior({ kind: "answer" });
  openai.setBehavior({ kind: "answer" });
});

const messages = [{ role: "user" as const, content: "Tell me a story." }];

/** An OpenAI client's streamed answer: its text, last finish reason, usage and chunk ids. */
async function openAIStream(model: string) {
  let text = "";
  let finish: string | null | undefined;
  let usage: OpenAI.CompletionUsage | null | undefined;
  const ids = new Set<string>();
  const models = new Set<string>();
  const stream = await oai.chat.completions.create({
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    ids.add(chunk.id);
    models.add(chunk.model);
    text += chunk.choices[0]?.delta.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
    usage = chunk.usage ?? usage;
  }
  return { text, finish, usage, ids, models };
}

/** An Anthropic client's streamed answer: its text, stop reason and the usage at start and end. */
async function anthropicStream(model: string) {
  let text = "";
  let stopReason: string | null | undefined;
  let startUsage: Anthropic.Usage | undefined;
  let endUsage: Anthropic.MessageDeltaUsage | undefined;
  const stream = await claude.messages.create({ model, max_tokens: 256, messages, stream: true });
  for await (const event of stream) {
    if (event.type === "message_start") startUsage = event.message.usage;
    if (event.type === "content_block_delta" && event.delta.type === "text_delta") {
      text += event.delta.text;
    }
    if (event.type === "message_delta") {
      stopReason = event.delta.stop_reason;
      endUsage = event.usage;
    }
  }
  return { text, stopReason, startUsage, endUsage };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail("the request succeeded"),
    (err: unknown) => err,
  );
}

describe("Gemini", () => {
  it.each([
    "SAFETY",
    "RECITATION",
    "PROHIBITED_CONTENT",
    "SPII",
    "LANGUAGE",
    "BLOCKLIST",
    "IMAGE_SAFETY",
    "MODEL_ARMOR",
  ])(
    "a candidate its filter stopped (%s) ends as content_filter for an openai client and refusal for an anthropic one",
    async (reason) => {
      gemini.setBehavior({ kind: "answer", text: "Once upon a time", finishReason: reason });
      const streamed = await openAIStream("m-gemini");
      // What passed the filter before it stopped the answer has reached the client.
      expect(streamed.text).toBe("Once upon a time");
      expect(streamed.finish).toBe("content_filter");
      const whole = await oai.chat.completions.create({ model: "m-gemini", messages });
      expect(whole.choices[0]?.finish_reason).toBe("content_filter");

      const message = await claude.messages.create({
        model: "m-gemini",
        max_tokens: 256,
        messages,
      });
      expect(message.stop_reason).toBe("refusal");
      expect((await anthropicStream("m-gemini")).stopReason).toBe("refusal");
    },
  );

  it("a candidate stopped before any text still ends as a refusal, with no text made up", async () => {
    gemini.setBehavior({ kind: "answer", text: "", finishReason: "SAFETY" });
    const whole = await oai.chat.completions.create({ model: "m-gemini", messages });
    expect(whole.choices[0]?.finish_reason).toBe("content_filter");
    expect(whole.choices[0]?.message.content).toBeNull();
    const message = await claude.messages.create({ model: "m-gemini", max_tokens: 256, messages });
    expect(message).toMatchObject({ stop_reason: "refusal", content: [] });
  });

  it.each([
    "MALFORMED_FUNCTION_CALL",
    "UNEXPECTED_TOOL_CALL",
    "TOO_MANY_TOOL_CALLS",
    "MALFORMED_RESPONSE",
    "OTHER",
    "NO_IMAGE",
  ])(
    "a turn that ended %s without content is a 502 naming it for either client, whole and streamed, not a finish reason",
    async (reason) => {
      gemini.setBehavior({ kind: "answer", text: "", finishReason: reason });
      for (const stream of [false, true]) {
        const error = await rejection(
          oai.chat.completions.create({ model: "m-gemini", messages, stream }),
        );
        expect(error).toBeInstanceOf(OpenAI.InternalServerError);
        expect(error).toMatchObject({ status: 502, code: reason, type: "server_error" });
        expect((error as Error).message).toContain(`provider ge's answer failed (${reason})`);
      }
      const whole = await rejection(
        claude.messages.create({ model: "m-gemini", max_tokens: 256, messages }),
      );
      const streamed = await rejection(anthropicStream("m-gemini"));
      for (const error of [whole, streamed]) {
        expect(error).toBeInstanceOf(Anthropic.InternalServerError);
        expect((error as InstanceType<typeof Anthropic.InternalServerError>).error).toMatchObject({
          error: { type: "api_error" },
        });
      }
    },
  );

  it("text before a malformed function call reaches a streaming client, then an error, never a clean end", async () => {
    gemini.setBehavior({
      kind: "answer",
      text: "Let me look that up.",
      finishReason: "MALFORMED_FUNCTION_CALL",
    });
    let text = "";
    const stream = await oai.chat.completions.create({ model: "m-gemini", messages, stream: true });
    const cut = await rejection(
      (async () => {
        for await (const chunk of stream) {
          text += chunk.choices[0]?.delta.content ?? "";
          expect(chunk.choices[0]?.finish_reason ?? null).toBeNull();
        }
      })(),
    );
    expect(text).toBe("Let me look that up.");
    expect(cut).toBeInstanceOf(OpenAI.APIError);
    expect((cut as Error).message).toContain("MALFORMED_FUNCTION_CALL");
    // Whole, the narration of a call never made is no answer either.
    const whole = await rejection(oai.chat.completions.create({ model: "m-gemini", messages }));
    expect(whole).toMatchObject({ status: 502, code: "MALFORMED_FUNCTION_CALL" });
    const fromAnthropic = await rejection(anthropicStream("m-gemini"));
    expect((fromAnthropic as Error).message).toContain("MALFORMED_FUNCTION_CALL");
  });

  it("failed turns are not held against the target: more of them than open a breaker, then an answer from it", async () => {
    gemini.setBehavior({ kind: "answer", text: "", finishReason: "MALFORMED_FUNCTION_CALL" });
    const calls = () => gemini.requests.filter((r) => r.model === "gemini-backed").length;
    const before = calls();
    const asked = () => calls() - before;
    // More than circuit_breaker.consecutive_failures (5 by default); no retries, so one call each.
    for (let i = 0; i < 6; i++) {
      await rejection(oai.chat.completions.create({ model: "m-gemini-backed", messages }));
    }
    expect(asked()).toBe(6);
    gemini.setBehavior({ kind: "answer", text: "Fine now." });
    // An open breaker would send this one to the Azure target behind it.
    const answer = await oai.chat.completions.create({ model: "m-gemini-backed", messages });
    expect(answer.choices[0]?.message.content).toBe("Fine now.");
    expect(asked()).toBe(7);
  });

  it("a conversation that lost a thought signature is the request's fault: a 400 for either client", async () => {
    gemini.setBehavior({ kind: "answer", text: "", finishReason: "MISSING_THOUGHT_SIGNATURE" });
    const fromOpenAI = await rejection(
      oai.chat.completions.create({ model: "m-gemini", messages }),
    );
    expect(fromOpenAI).toBeInstanceOf(OpenAI.BadRequestError);
    expect(fromOpenAI).toMatchObject({ code: "MISSING_THOUGHT_SIGNATURE", param: "messages" });
    const fromAnthropic = await rejection(
      claude.messages.create({ model: "m-gemini", max_tokens: 256, messages }),
    );
    expect(fromAnthropic).toBeInstanceOf(Anthropic.BadRequestError);
    expect((fromAnthropic as Error).message).toContain("thought signature");
  });

  it("a prompt its filter blocked is a 400 content_filter for an openai client, whole and streamed, as Azure's is", async () => {
    gemini.setBehavior({ kind: "answer", blockReason: "PROHIBITED_CONTENT" });
    azure.setBehavior({ kind: "error", status: 400, body: azureContentFilterError() });
    const fromAzure = await rejection(oai.chat.completions.create({ model: "m-azure", messages }));
    for (const stream of [false, true]) {
      const error = await rejection(
        oai.chat.completions.create({ model: "m-gemini", messages, stream }),
      );
      expect(error).toBeInstanceOf(OpenAI.BadRequestError);
      const bad = error as InstanceType<typeof OpenAI.BadRequestError>;
      expect(bad).toMatchObject({ code: "content_filter", param: "messages" });
      expect(bad).toMatchObject({
        code: (fromAzure as InstanceType<typeof OpenAI.BadRequestError>).code,
        param: (fromAzure as InstanceType<typeof OpenAI.BadRequestError>).param,
      });
      expect(bad.message).toContain("PROHIBITED_CONTENT");
    }
  });

  it("a prompt its filter blocked is an invalid_request_error for an anthropic client, whole and streamed", async () => {
    gemini.setBehavior({ kind: "answer", blockReason: "SAFETY" });
    const whole = await rejection(
      claude.messages.create({ model: "m-gemini", max_tokens: 256, messages }),
    );
    const streamed = await rejection(anthropicStream("m-gemini"));
    for (const error of [whole, streamed]) {
      expect(error).toBeInstanceOf(Anthropic.BadRequestError);
      const bad = error as InstanceType<typeof Anthropic.BadRequestError>;
      expect(bad.error).toMatchObject({
        type: "error",
        error: { type: "invalid_request_error" },
      });
      expect(bad.message).toContain("blocked the prompt (SAFETY)");
    }
  });

  it("reports thoughts as reasoning tokens and the cache as cached tokens, for either client", async () => {
    gemini.setBehavior({
      kind: "answer",
      thoughts: "Thinking it over.",
      text: "Done.",
      usage: {
        promptTokenCount: 100,
        candidatesTokenCount: 7,
        thoughtsTokenCount: 20,
        cachedContentTokenCount: 64,
      },
    });
    const expected = {
      prompt_tokens: 100,
      // OpenAI counts reasoning as completion tokens; Gemini keeps thoughts apart.
      completion_tokens: 27,
      total_tokens: 127,
      prompt_tokens_details: { cached_tokens: 64 },
      completion_tokens_details: { reasoning_tokens: 20 },
    };
    const whole = await oai.chat.completions.create({ model: "m-gemini", messages });
    expect(whole.usage).toMatchObject(expected);
    expect((await openAIStream("m-gemini")).usage).toMatchObject(expected);

    // Anthropic's input_tokens leave out the cache reads, which Gemini's prompt count includes.
    const message = await claude.messages.create({ model: "m-gemini", max_tokens: 256, messages });
    expect(message.usage).toMatchObject({
      input_tokens: 36,
      cache_read_input_tokens: 64,
      output_tokens: 27,
    });
    const streamed = await anthropicStream("m-gemini");
    // Gemini counts the cache in its first event already, so message_start splits it too.
    expect(streamed.startUsage).toMatchObject({ input_tokens: 36, cache_read_input_tokens: 64 });
    expect(streamed.endUsage).toMatchObject({ cache_read_input_tokens: 64, output_tokens: 27 });
  });

  it("a 429 waits as long as Google's RetryInfo says, for either client", async () => {
    gemini.setBehavior({ kind: "error", status: 429, retryDelay: "7s" });
    const fromOpenAI = await rejection(
      oai.chat.completions.create({ model: "m-gemini-paused", messages }),
    );
    expect(fromOpenAI).toBeInstanceOf(OpenAI.RateLimitError);
    expect(
      (fromOpenAI as InstanceType<typeof OpenAI.RateLimitError>).headers.get("retry-after"),
    ).toBe("7");
    const fromAnthropic = await rejection(
      claude.messages.create({ model: "m-gemini-paused", max_tokens: 256, messages }),
    );
    expect(fromAnthropic).toBeInstanceOf(Anthropic.RateLimitError);
  });

  it("is asked with the key in x-goog-api-key and streams with alt=sse", async () => {
    await openAIStream("m-gemini");
    const request = gemini.requests.at(-1);
    expect(request).toMatchObject({
      path: "/v1beta/models/gemini-up:streamGenerateContent",
      query: { alt: "sse" },
    });
    expect(request?.headers["x-goog-api-key"]).toBe("ge-key");
    expect(request?.headers.authorization).toBeUndefined();
  });
});

describe("Azure OpenAI", () => {
  it("is asked at the deployment's path with the api-version and the api-key header", async () => {
    await oai.chat.completions.create({ model: "m-azure", messages });
    const request = azure.requests.at(-1);
    expect(request).toMatchObject({
      style: "azure",
      deployment: "my-deployment",
      query: { "api-version": "2024-10-21" },
    });
    expect(request?.headers["api-key"]).toBe("az-key");
    expect(request?.headers.authorization).toBeUndefined();
  });

  it("a prompt its content filter blocked is a 400 content_filter for an openai client and invalid_request_error for an anthropic one", async () => {
    azure.setBehavior({ kind: "error", status: 400, body: azureContentFilterError("hate") });
    for (const stream of [false, true]) {
      const error = await rejection(
        oai.chat.completions.create({ model: "m-azure", messages, stream }),
      );
      expect(error).toBeInstanceOf(OpenAI.BadRequestError);
      expect(error).toMatchObject({ status: 400, code: "content_filter", param: "messages" });
      expect((error as Error).message).toContain("content management policy");
    }
    const error = await rejection(
      claude.messages.create({ model: "m-azure", max_tokens: 256, messages }),
    );
    expect(error).toBeInstanceOf(Anthropic.BadRequestError);
    expect((error as InstanceType<typeof Anthropic.BadRequestError>).error).toMatchObject({
      error: { type: "invalid_request_error" },
    });
  });

  it("an answer its filter stopped ends as content_filter / refusal, past the prompt-filter chunk", async () => {
    azure.setBehavior({ kind: "answer", text: "Once upon a time", finishReason: "content_filter" });
    const streamed = await openAIStream("m-azure");
    expect(streamed.text).toBe("Once upon a time");
    expect(streamed.finish).toBe("content_filter");
    // Azure's first chunk (empty id and model, `created` 0) names nothing of the answer.
    expect(streamed.ids.size).toBe(1);
    expect([...streamed.ids][0]).toMatch(/^chatcmpl-fake\d+$/);
    expect([...streamed.models]).toEqual(["my-deployment"]);
    const whole = await oai.chat.completions.create({ model: "m-azure", messages });
    expect(whole.choices[0]?.finish_reason).toBe("content_filter");

    const message = await claude.messages.create({ model: "m-azure", max_tokens: 256, messages });
    expect(message.stop_reason).toBe("refusal");
    const fromAnthropic = await anthropicStream("m-azure");
    expect(fromAnthropic).toMatchObject({ text: "Once upon a time", stopReason: "refusal" });
  });

  it("an answer its filter stopped before any text has content null, as Azure's own has, and no text for an anthropic client", async () => {
    azure.setBehavior({ kind: "answer", text: "", finishReason: "content_filter" });
    const whole = await oai.chat.completions.create({ model: "m-azure", messages });
    expect(whole.choices[0]?.finish_reason).toBe("content_filter");
    expect(whole.choices[0]?.message.content).toBeNull();
    const streamed = await openAIStream("m-azure");
    expect(streamed).toMatchObject({ text: "", finish: "content_filter" });

    const message = await claude.messages.create({ model: "m-azure", max_tokens: 256, messages });
    expect(message).toMatchObject({ stop_reason: "refusal", content: [] });

    // An answer with text keeps it, as before.
    azure.setBehavior({ kind: "answer", text: "Once", finishReason: "content_filter" });
    const withText = await oai.chat.completions.create({ model: "m-azure", messages });
    expect(withText.choices[0]?.message.content).toBe("Once");
  });

  it("a 429 waits as long as retry-after-ms says, for either client", async () => {
    azure.setBehavior(azureRateLimited(6));
    const fromOpenAI = await rejection(
      oai.chat.completions.create({ model: "m-azure-paused", messages }),
    );
    expect(fromOpenAI).toBeInstanceOf(OpenAI.RateLimitError);
    expect(
      (fromOpenAI as InstanceType<typeof OpenAI.RateLimitError>).headers.get("retry-after"),
    ).toBe("6");
    const fromAnthropic = await rejection(
      claude.messages.create({ model: "m-azure-paused", max_tokens: 256, messages }),
    );
    expect(fromAnthropic).toBeInstanceOf(Anthropic.RateLimitError);
    expect(
      (fromAnthropic as InstanceType<typeof Anthropic.RateLimitError>).headers.get("retry-after"),
    ).toBe("6");
  });
});

describe("an Anthropic client's stop_sequences on OpenAI-type targets", () => {
  // Anthropic takes many stop sequences, OpenAI and Azure at most 4 (the fakes refuse more as
  // they do); other OpenAI-compatible servers differ, so the upstream judges.
  const stopSequences = ["\n\nHuman:", "END", "STOP", "###", "</answer>"];

  it.each([
    ["openai", "m-openai-backed"],
    ["azure-openai", "m-azure"],
  ])(
    "more than the %s upstream takes are a 400 invalid_request_error naming stop_sequences, whole and streamed, none dropped",
    async (_type, model) => {
      const upstream = model === "m-azure" ? azure : openai;
      const before = upstream.requests.length;
      const whole = await rejection(
        claude.messages.create({ model, max_tokens: 256, messages, stop_sequences: stopSequences }),
      );
      const streamed = await rejection(
        claude.messages.create({
          model,
          max_tokens: 256,
          messages,
          stop_sequences: stopSequences,
          stream: true,
        }),
      );
      for (const error of [whole, streamed]) {
        expect(error).toBeInstanceOf(Anthropic.BadRequestError);
        const bad = error as InstanceType<typeof Anthropic.BadRequestError>;
        expect(bad.error).toMatchObject({ error: { type: "invalid_request_error" } });
        expect(bad.message).toContain("rejected stop_sequences");
        // The upstream's own words stay: they say what the limit is.
        expect(bad.message).toContain("maximum length 4");
      }
      // Each request reached the upstream whole, every stop sequence in it.
      const sent = upstream.requests.slice(before).map((r) => (r.body as { stop?: unknown }).stop);
      expect(sent).toEqual([stopSequences, stopSequences]);
    },
  );

  it("the upstream's refusal counts against no target: more of them than open a breaker, then an answer from it", async () => {
    const calls = () => openai.requests.filter((r) => r.style === "openai").length;
    const before = calls();
    // More than circuit_breaker.consecutive_failures (5 by default); no retries, so one call each.
    for (let i = 0; i < 6; i++) {
      await rejection(
        claude.messages.create({
          model: "m-openai-backed",
          max_tokens: 256,
          messages,
          stop_sequences: stopSequences,
        }),
      );
    }
    // An open breaker would send this one to the Gemini target behind it.
    const { response } = await claude.messages
      .create({ model: "m-openai-backed", max_tokens: 256, messages, stop_sequences: ["END"] })
      .withResponse();
    expect(response.headers.get("x-switchyard-provider")).toBe("oa");
    expect(calls() - before).toBe(7);
  });

  it("an OpenAI client's 400 about stop keeps the upstream's words and param", async () => {
    openai.setBehavior({
      kind: "error",
      status: 400,
      body: {
        error: {
          message: "Unsupported parameter: 'stop' is not supported with this model.",
          type: "invalid_request_error",
          param: "stop",
          code: "unsupported_parameter",
        },
      },
    });
    const error = await rejection(
      oai.chat.completions.create({ model: "m-openai-backed", messages, stop: ["END"] }),
    );
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error).toMatchObject({ param: "stop", code: "unsupported_parameter" });
    expect((error as Error).message).toContain("'stop' is not supported with this model");
  });
});
