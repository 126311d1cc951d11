import OpenAI from "openai";
import type { ResponseInputItem, ResponseStreamEvent } from "openai/resources/responses/responses";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashKey } from "../services/lib/config/keys.js";
import {
  ARGS,
  type EveryUpstream,
  startEveryUpstream,
  TEXT,
  type UpstreamKind,
} from "./helpers/every-upstream.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";

// The OpenAI Responses API (`POST /v1/responses`) through one gateway process, read by the
// official openai client (`responses.create`, streamed and not, and `responses.stream`), with
// OpenAI, Anthropic and Gemini upstreams behind it.
const KEY = "sk-responses-test-key";
const NARROW_KEY = "sk-responses-narrow-key";

let fakes: EveryUpstream;
let gw: RunningFabric;
let client: OpenAI;

const UPSTREAMS: UpstreamKind[] = ["openai", "anthropic", "gemini"];

beforeAll(async () => {
  fakes = await startEveryUpstream();
  gw = await startOneProcess(
    testConfig(`
providers:
${fakes.providers}
models:
${fakes.models}
tenants:
  t-all: { keys: ["${hashKey(KEY)}"] }
  t-narrow: { keys: ["${hashKey(NARROW_KEY)}"], models: [m-gemini] }
routing: { retries: 0 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
  client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEY, maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await fakes?.close();
});

const weatherTool = {
  type: "function" as const,
  name: "get_weather",
  description: "Weather for a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
    additionalProperties: false,
  },
  strict: true,
};

async function collect(stream: AsyncIterable<ResponseStreamEvent>): Promise<ResponseStreamEvent[]> {
  const events: ResponseStreamEvent[] = [];
  for await (const e of stream) events.push(e);
  return events;
}

describe.each(UPSTREAMS)("upstream %s", (up) => {
  const model = `m-${up}`;

  it("answers text as a completed Response with usage and the routing headers", async () => {
    fakes.answerWith(up, false);
    const { data, response } = await client.responses
      .create({ model, instructions: "You are terse.", input: "What is the answer?" })
      .withResponse();
    expect(data.object).toBe("response");
    expect(data.id).toMatch(/^resp_/);
    expect(data.status).toBe("completed");
    expect(data.output_text).toBe(TEXT);
    const message = data.output.find((o) => o.type === "message");
    expect(message).toMatchObject({ role: "assistant", status: "completed" });
    expect(message?.id).toMatch(/^msg_/);
    expect(data.usage?.input_tokens).toBeGreaterThan(0);
    expect(data.usage?.output_tokens).toBeGreaterThan(0);
    expect(data.usage?.total_tokens).toBe(
      (data.usage?.input_tokens ?? 0) + (data.usage?.output_tokens ?? 0),
    );
    expect(data.tool_choice).toBe("auto");
    expect(response.headers.get("x-switchyard-provider")).toBe(
      { openai: "oa", azure: "az", anthropic: "an", gemini: "ge" }[up],
    );
    expect(response.headers.get("x-switchyard-attempts")).toBe("1");
    expect(response.headers.get("x-request-id")).toBeTruthy();
    // The instructions reached the upstream as its system prompt.
    expect(JSON.stringify(fakes.lastBody(up))).toContain("You are terse.");
  });

  it("streams text as typed events ending in response.completed", async () => {
    fakes.answerWith(up, false);
    const events = await collect(
      await client.responses.create({ model, input: "What is the answer?", stream: true }),
    );
    const types = events.map((e) => e.type);
    expect(types.slice(0, 2)).toEqual(["response.created", "response.in_progress"]);
    expect(types.at(-1)).toBe("response.completed");
    for (const t of [
      "response.output_item.added",
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
    ]) {
      expect(types).toContain(t);
    }
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    const text = events
      .filter((e) => e.type === "response.output_text.delta")
      .map((e) => (e as { delta: string }).delta)
      .join("");
    expect(text).toBe(TEXT);
    const done = events.at(-1);
    if (done?.type !== "response.completed") throw new Error("no response.completed");
    expect(done.response.status).toBe("completed");
    expect(done.response.usage?.output_tokens).toBeGreaterThan(0);
    expect(done.response.output).toHaveLength(1);
  });

  it("accumulates through responses.stream() into the final response", async () => {
    fakes.answerWith(up, false);
    const stream = client.responses.stream({ model, input: "What is the answer?" });
    let deltas = "";
    stream.on("response.output_text.delta", (e) => {
      deltas += e.delta;
    });
    const final = await stream.finalResponse();
    expect(deltas).toBe(TEXT);
    expect(final.output_text).toBe(TEXT);
    expect(final.status).toBe("completed");
  });

  it("round-trips a function tool: function_call, then function_call_output", async () => {
    fakes.answerWith(up, true);
    const first = await client.responses.create({
      model,
      input: "Weather in Paris?",
      tools: [weatherTool],
    });
    const call = first.output.find((o) => o.type === "function_call");
    if (call?.type !== "function_call") throw new Error("no function_call item");
    expect(call.name).toBe("get_weather");
    expect(JSON.parse(call.arguments)).toEqual({ city: "Paris" });
    expect(call.id).toMatch(/^fc_/);
    expect(call.call_id).toBeTruthy();
    expect(first.tools).toMatchObject([{ type: "function", name: "get_weather" }]);

    fakes.answerWith(up, false);
    const second = await client.responses.create({
      model,
      tools: [weatherTool],
      input: [
        { role: "user", content: "Weather in Paris?" },
        {
          type: "function_call",
          call_id: call.call_id,
          name: call.name,
          arguments: call.arguments,
        },
        { type: "function_call_output", call_id: call.call_id, output: "sunny, 21C" },
      ],
    });
    expect(second.output_text).toBe(TEXT);
    // The tool's result reached the upstream in its own dialect.
    expect(JSON.stringify(fakes.lastBody(up))).toContain("sunny, 21C");
  });

  it("streams a function call's arguments", async () => {
    fakes.answerWith(up, true);
    const events = await collect(
      await client.responses.create({
        model,
        input: "Weather in Paris?",
        tools: [weatherTool],
        stream: true,
      }),
    );
    const done = events.find((e) => e.type === "response.function_call_arguments.done");
    if (done?.type !== "response.function_call_arguments.done") throw new Error("no args done");
    expect(JSON.parse(done.arguments)).toEqual({ city: "Paris" });
    const deltas = events
      .filter((e) => e.type === "response.function_call_arguments.delta")
      .map((e) => (e as { delta: string }).delta)
      .join("");
    expect(JSON.parse(deltas)).toEqual({ city: "Paris" });
    expect(events.at(-1)?.type).toBe("response.completed");
  });
});

describe("Anthropic's reasoning blocks in encrypted_content, sent to another upstream", () => {
  it.each<UpstreamKind>(["openai", "gemini"])(
    "are left out for %s, which takes no Anthropic thinking",
    async (up) => {
      const WHY = "Need the weather tool.";
      fakes.anthropic.setBehavior({
        kind: "answer",
        thinking: WHY,
        text: "",
        toolUses: [{ id: "toolu_1", name: "get_weather", input: ARGS }],
      });
      const first = await client.responses.create({
        model: "m-anthropic",
        input: "Weather in Paris?",
        tools: [weatherTool],
        reasoning: { effort: "low" },
        include: ["reasoning.encrypted_content"],
        store: false,
      });
      expect(first.output[0]).toHaveProperty("encrypted_content");

      fakes.answerWith(up, false);
      const second = await client.responses.create({
        model: `m-${up}`,
        tools: [weatherTool],
        include: ["reasoning.encrypted_content"],
        store: false,
        input: [
          { role: "user", content: "Weather in Paris?" },
          ...(first.output as ResponseInputItem[]),
          { type: "function_call_output", call_id: "toolu_1", output: "sunny, 21C" },
        ],
      });
      expect(second.output_text).toBe(TEXT);
      const sent = JSON.stringify(fakes.lastBody(up));
      expect(sent).toContain("sunny, 21C");
      expect(sent).not.toContain(WHY);
      expect(sent).not.toContain("thinking");
    },
  );
});

describe("OpenAI upstream specifics", () => {
  it("sends text.format json_schema on as response_format, and parses the answer", async () => {
    fakes.openai.setBehavior({ kind: "answer", text: '{"answer":42}' });
    const schema = {
      type: "object",
      properties: { answer: { type: "number" } },
      required: ["answer"],
      additionalProperties: false,
    };
    const res = await client.responses.create({
      model: "m-openai",
      input: "What is the answer?",
      text: { format: { type: "json_schema", name: "answer", schema, strict: true } },
    });
    expect(JSON.parse(res.output_text)).toEqual({ answer: 42 });
    expect(res.text?.format).toMatchObject({ type: "json_schema", name: "answer" });
    expect(fakes.lastBody("openai").response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "answer", schema, strict: true },
    });
  });

  it("reports the upstream's usage exactly", async () => {
    fakes.openai.setBehavior({
      kind: "answer",
      text: TEXT,
      usage: { prompt_tokens: 11, completion_tokens: 7 },
    });
    const res = await client.responses.create({ model: "m-openai", input: "hi" });
    expect(res.usage).toMatchObject({
      input_tokens: 11,
      output_tokens: 7,
      total_tokens: 18,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens_details: { reasoning_tokens: 0 },
    });
  });

  it("maps max_output_tokens, and a cut answer is incomplete (max_output_tokens)", async () => {
    fakes.openai.setBehavior({ kind: "answer", text: "The answer", finishReason: "length" });
    const res = await client.responses.create({
      model: "m-openai",
      input: "hi",
      max_output_tokens: 16,
      reasoning: { effort: "low" },
    });
    expect(fakes.lastBody("openai")).toMatchObject({
      max_completion_tokens: 16,
      reasoning_effort: "low",
    });
    expect(res.status).toBe("incomplete");
    expect(res.incomplete_details).toEqual({ reason: "max_output_tokens" });
    expect(res.max_output_tokens).toBe(16);

    const events = await collect(
      await client.responses.create({
        model: "m-openai",
        input: "hi",
        max_output_tokens: 16,
        stream: true,
      }),
    );
    const types = events.map((e) => e.type);
    expect(types).not.toContain("response.completed");
    const last = events.at(-1);
    if (last?.type !== "response.incomplete") throw new Error("no response.incomplete");
    expect(last.response.incomplete_details).toEqual({ reason: "max_output_tokens" });
  });

  it("ends a stream that fails midway with response.failed, never response.completed", async () => {
    fakes.openai.setBehavior({
      kind: "answer",
      text: "one two three four five six",
      chunks: 6,
      cutAfterChunks: 2,
      cutMode: "destroy",
    });
    const events: ResponseStreamEvent[] = [];
    const stream = await client.responses.create({ model: "m-openai", input: "hi", stream: true });
    const failure = await (async () => {
      for await (const e of stream) events.push(e);
    })().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(OpenAI.APIError);
    const types = events.map((e) => e.type);
    expect(types).toContain("response.output_text.delta");
    expect(types).toContain("response.failed");
    expect(types).not.toContain("response.completed");

    // The stream helper rejects too: its final response is never taken for a complete one.
    const helper = client.responses.stream({ model: "m-openai", input: "hi" });
    await expect(helper.finalResponse()).rejects.toThrow();
  });

  it("cancels the upstream request when the client goes away mid-stream", async () => {
    fakes.openai.setBehavior({ kind: "answer", text: TEXT, chunks: 40, chunkDelayMs: 200 });
    const before = fakes.openai.requests.length;
    const controller = new AbortController();
    const stream = await client.responses.create(
      { model: "m-openai", input: "hi", stream: true },
      { signal: controller.signal },
    );
    for await (const e of stream) {
      if (e.type === "response.output_text.delta") break;
    }
    controller.abort();
    const upstream = fakes.openai.requests[before];
    await upstream?.closed;
    expect(upstream?.aborted).toBe(true);
  });
});

describe("refusals", () => {
  it("refuses built-in tools by name", async () => {
    const err = await client.responses
      .create({ model: "m-openai", input: "hi", tools: [{ type: "web_search" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).message).toContain("web_search");
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("tools[0].type");
  });

  it("refuses previous_response_id, conversation and background: the gateway is stateless", async () => {
    for (const extra of [
      { previous_response_id: "resp_123" },
      { conversation: "conv_123" },
      { background: true },
    ]) {
      const err = await client.responses
        .create({ model: "m-openai", input: "hi", ...extra })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.BadRequestError);
      expect((err as Error).message).toMatch(/stateless/);
    }
    const err = await client.responses.retrieve("resp_123").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as Error).message).toMatch(/stateless/);
  });

  it("answers bad input, keys and models in OpenAI's envelope with their statuses", async () => {
    const bad = await fetch(`${gw.url}/v1/responses`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "m-openai", input: [{ type: "message", role: "tool" }] }),
    });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: Record<string, unknown> };
    expect(body.error).toMatchObject({ type: "invalid_request_error", param: "input[0].role" });

    const anonymous = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
    await expect(
      anonymous.responses.create({ model: "m-openai", input: "hi" }),
    ).rejects.toBeInstanceOf(OpenAI.AuthenticationError);

    const narrow = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: NARROW_KEY, maxRetries: 0 });
    await expect(
      narrow.responses.create({ model: "m-openai", input: "hi" }),
    ).rejects.toBeInstanceOf(OpenAI.PermissionDeniedError);

    await expect(
      client.responses.create({ model: "no-such-model", input: "hi" }),
    ).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('counts its requests under api="responses"', async () => {
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toMatch(/switchyard_requests_total\{[^}]*api="responses"[^}]*outcome="ok"/);
  });
});
