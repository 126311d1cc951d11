import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import OpenAI from "openai";
import type {
  Response,
  ResponseInputItem,
  ResponseStreamEvent,
} from "openai/resources/responses/responses";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ChatParamsSchema, Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import {
  type AnswerBehavior,
  type AnthropicUpstream,
  signThinking,
  startAnthropicUpstream,
} from "./upstreams/anthropic-upstream.js";

// `reasoning_effort` (Chat Completions), `reasoning.effort` (Responses API) and the same hint in
// GatewayService's `extra_json` turn on Anthropic's extended thinking: the official openai
// client and connect-node through one gateway process to the fake Anthropic upstream, which
// refuses thinking beside what Anthropic refuses it with (see thinkingSettingsError), so every
// request answered below is one Anthropic would take.

const THINKING = "The user wants a number; 42 it is.";
const TEXT = "The answer is 42.";
const DEFAULT_MAX_TOKENS = 4096;

let upstream: AnthropicUpstream;
let gw: RunningFabric;
let oai: OpenAI;

beforeAll(async () => {
  upstream = await startAnthropicUpstream();
  gw = await startOneProcess(
    testConfig(`
providers:
  an: { type: anthropic, base_url: "${upstream.url}", api_key: an-key }
models:
  claude: { targets: [{ provider: an, model: claude-up }] }
routing: { retries: 0 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
  oai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "x", maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await upstream?.close();
});

const thinkingAnswer: AnswerBehavior = { kind: "answer", thinking: THINKING, text: TEXT };

afterEach(() => {
  upstream.setBehavior(thinkingAnswer);
});

/** The body of the last Messages request the upstream received. */
function sent(): Record<string, unknown> {
  const messages = upstream.requests.filter((r) => r.path === "/v1/messages");
  return (messages.at(-1)?.body ?? {}) as Record<string, unknown>;
}

const question: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "A number?" }];

type ReasoningMessage = OpenAI.ChatCompletionMessage & {
  reasoning_content?: string;
  thinking_blocks?: unknown[];
};

/** A chat completion's answer text and reasoning, streamed (the deltas joined) or whole. */
async function ask(
  stream: boolean,
  body: Omit<OpenAI.ChatCompletionCreateParamsNonStreaming, "model" | "messages"> &
    Record<string, unknown>,
): Promise<{ text: string; reasoning: string }> {
  const request = { model: "claude", messages: question, ...body };
  if (!stream) {
    const whole = await oai.chat.completions.create(request);
    const message = whole.choices[0]?.message as ReasoningMessage;
    return { text: message.content ?? "", reasoning: message.reasoning_content ?? "" };
  }
  let text = "";
  let reasoning = "";
  for await (const chunk of await oai.chat.completions.create({ ...request, stream: true })) {
    const delta = chunk.choices[0]?.delta as { content?: string; reasoning_content?: string };
    text += delta?.content ?? "";
    reasoning += delta?.reasoning_content ?? "";
  }
  return { text, reasoning };
}

describe.each([
  ["streamed", true],
  ["whole", false],
])("an openai client's reasoning_effort, %s", (_, stream) => {
  it.each([
    ["minimal", 1024],
    ["low", 1024],
    ["medium", 2048],
    ["high", 4096],
  ])(
    "%s turns thinking on with a budget of %i, and the reasoning comes back",
    async (effort, budget) => {
      upstream.setBehavior(thinkingAnswer);
      const answer = await ask(stream, { reasoning_effort: effort as OpenAI.ReasoningEffort });
      expect(answer).toEqual({ text: TEXT, reasoning: THINKING });
      const body = sent();
      expect(body.thinking).toEqual({ type: "enabled", budget_tokens: budget });
      expect(body.max_tokens).toBe(budget + DEFAULT_MAX_TOKENS);
      expect(body).not.toHaveProperty("temperature");
      expect(body).not.toHaveProperty("reasoning_effort");
    },
  );

  it("none turns nothing on", async () => {
    upstream.setBehavior({ kind: "answer", text: TEXT });
    expect(await ask(stream, { reasoning_effort: "none" })).toEqual({ text: TEXT, reasoning: "" });
    expect(sent()).not.toHaveProperty("thinking");
    expect(sent().max_tokens).toBe(DEFAULT_MAX_TOKENS);
  });
});

describe("reasoning_effort beside what thinking cannot go with", () => {
  const tools: OpenAI.ChatCompletionTool[] = [
    { type: "function", function: { name: "get_weather", parameters: { type: "object" } } },
  ];

  const jsonAnswer: AnswerBehavior = {
    kind: "answer",
    text: "",
    toolUses: [{ name: "json_response", input: "{}" }],
  };
  it.each<[string, Record<string, unknown>, Record<string, unknown>]>([
    ["temperature other than 1", { temperature: 0.3 }, { temperature: 0.3 }],
    ["top_p under 0.95", { top_p: 0.5 }, { top_p: 0.5 }],
    ["top_k", { top_k: 5 }, { top_k: 5 }],
    ["a forced tool choice", { tools, tool_choice: "required" }, { tool_choice: { type: "any" } }],
    [
      "a named tool choice",
      { tools, tool_choice: { type: "function", function: { name: "get_weather" } } },
      { tool_choice: { type: "tool", name: "get_weather" } },
    ],
    [
      "JSON mode without a schema",
      { response_format: { type: "json_object" } },
      { tool_choice: { type: "tool", name: "json_response" } },
    ],
    ["a max_tokens of 1,024 or less", { max_tokens: 1024 }, { max_tokens: 1024 }],
  ])("goes without thinking rather than fail: %s", async (_, settings, expected) => {
    // JSON mode's answer is the input of the tool the gateway forces; the others answer in text.
    upstream.setBehavior(
      "response_format" in settings ? jsonAnswer : { kind: "answer", text: "{}" },
    );
    const answer = await ask(false, { reasoning_effort: "high", ...settings });
    expect(answer.text).toBe("{}");
    expect(sent()).not.toHaveProperty("thinking");
    expect(sent()).toMatchObject(expected);
  });

  it("takes at most half of the client's max_tokens, so the answer keeps room", async () => {
    await ask(false, { reasoning_effort: "high", max_tokens: 3000 });
    expect(sent()).toMatchObject({
      max_tokens: 3000,
      thinking: { type: "enabled", budget_tokens: 1500 },
    });
    await ask(false, { reasoning_effort: "low", max_tokens: 1100 });
    expect(sent()).toMatchObject({
      max_tokens: 1100,
      thinking: { type: "enabled", budget_tokens: 1024 },
    });
  });

  it("keeps what thinking takes: temperature 1, top_p from 0.95, tool_choice auto", async () => {
    await ask(false, { reasoning_effort: "medium", temperature: 1, top_p: 0.95, tools });
    expect(sent()).toMatchObject({
      temperature: 1,
      top_p: 0.95,
      thinking: { type: "enabled", budget_tokens: 2048 },
    });
  });

  it("serves json_schema through Anthropic's own structured outputs", async () => {
    upstream.setBehavior({ kind: "answer", thinking: THINKING, text: '{"n":42}' });
    const schema = { type: "object", properties: { n: { type: "integer" } } };
    const answer = await ask(false, {
      reasoning_effort: "low",
      response_format: { type: "json_schema", json_schema: { name: "n", schema } },
    });
    expect(answer).toEqual({ text: '{"n":42}', reasoning: THINKING });
    expect(sent()).toMatchObject({
      thinking: { type: "enabled", budget_tokens: 1024 },
      output_config: { format: { type: "json_schema", schema } },
    });
    expect(sent()).not.toHaveProperty("tool_choice");
  });
});

describe("a thinking of the client's own", () => {
  it("wins over reasoning_effort", async () => {
    const own = { type: "enabled", budget_tokens: 3000 };
    await ask(false, { reasoning_effort: "low", thinking: own });
    expect(sent()).toMatchObject({ thinking: own, max_tokens: 3000 + DEFAULT_MAX_TOKENS });

    upstream.setBehavior({ kind: "answer", text: TEXT });
    await ask(true, { reasoning_effort: "high", thinking: { type: "disabled" } });
    expect(sent().thinking).toEqual({ type: "disabled" });
  });
});

describe("an effort OpenAI does not know", () => {
  it("is refused with OpenAI's 400, and nothing reaches the upstream", async () => {
    const before = upstream.requests.length;
    const error = await oai.chat.completions
      .create({
        model: "claude",
        messages: question,
        reasoning_effort: "extreme" as OpenAI.ReasoningEffort,
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error).toMatchObject({
      status: 400,
      code: "invalid_value",
      param: "reasoning_effort",
      type: "invalid_request_error",
    });
    expect((error as Error).message).toContain("'extreme'");
    expect(upstream.requests.length).toBe(before);
  });
});

describe("a tool loop with reasoning_effort", () => {
  const tools: OpenAI.ChatCompletionTool[] = [
    {
      type: "function",
      function: {
        name: "get_weather",
        parameters: { type: "object", properties: { city: { type: "string" } } },
      },
    },
  ];
  const callsTheTool: AnswerBehavior = {
    kind: "answer",
    thinking: "Need the weather tool.",
    text: "",
    toolUses: [{ id: "toolu_1", name: "get_weather", input: '{"city":"Paris"}' }],
  };

  async function firstStep(): Promise<ReasoningMessage> {
    upstream.setBehavior(callsTheTool);
    const first = await oai.chat.completions.create({
      model: "claude",
      messages: question,
      tools,
      reasoning_effort: "high",
    });
    expect(sent().thinking).toEqual({ type: "enabled", budget_tokens: 4096 });
    const message = first.choices[0]?.message as ReasoningMessage;
    expect(message.tool_calls?.[0]?.id).toBe("toolu_1");
    expect(message.thinking_blocks).toHaveLength(1);
    return message;
  }

  const next = (assistant: OpenAI.ChatCompletionMessageParam, extra: object = {}) =>
    oai.chat.completions.create({
      model: "claude",
      messages: [
        ...question,
        assistant,
        { role: "tool", tool_call_id: "toolu_1", content: "sunny" },
      ],
      tools,
      reasoning_effort: "high",
      ...extra,
    });

  it("goes on without thinking for a client that keeps no thinking blocks", async () => {
    const { role, content, tool_calls } = await firstStep();
    upstream.setBehavior(thinkingAnswer);
    const second = await next({ role, content, tool_calls } as OpenAI.ChatCompletionMessageParam);
    expect(second.choices[0]?.message.content).toBe(TEXT);
    expect(sent()).not.toHaveProperty("thinking");
  });

  it("goes on thinking for a client that sends its thinking_blocks back", async () => {
    const assistant = await firstStep();
    upstream.setBehavior(thinkingAnswer);
    const second = await next(assistant as OpenAI.ChatCompletionMessageParam);
    expect(second.choices[0]?.message.content).toBe(TEXT);
    expect(sent().thinking).toEqual({ type: "enabled", budget_tokens: 4096 });
    const turn = (sent().messages as Array<{ content: Array<{ type: string }> }>)[1];
    expect(turn?.content.map((b) => b.type)).toEqual(["thinking", "tool_use"]);
  });

  it("sends a client's own thinking as it is, and Anthropic's refusal comes back", async () => {
    const { role, content, tool_calls } = await firstStep();
    const error = await next({ role, content, tool_calls } as OpenAI.ChatCompletionMessageParam, {
      thinking: { type: "enabled", budget_tokens: 1024 },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as Error).message).toContain("must start with a thinking block");
  });
});

describe("the Responses API's reasoning.effort", () => {
  it("turns thinking on, and the reasoning comes back as a reasoning item", async () => {
    upstream.setBehavior(thinkingAnswer);
    const response = await oai.responses.create({
      model: "claude",
      input: "A number?",
      reasoning: { effort: "medium" },
    });
    expect(sent().thinking).toEqual({ type: "enabled", budget_tokens: 2048 });
    expect(response.output[0]).toMatchObject({
      type: "reasoning",
      summary: [{ type: "summary_text", text: THINKING }],
    });
    expect(response.output_text).toBe(TEXT);
    expect(response.reasoning?.effort).toBe("medium");
  });

  it("streams the reasoning as reasoning summary events", async () => {
    upstream.setBehavior(thinkingAnswer);
    const events: ResponseStreamEvent[] = [];
    for await (const event of await oai.responses.create({
      model: "claude",
      input: "A number?",
      reasoning: { effort: "low" },
      max_output_tokens: 5000,
      stream: true,
    })) {
      events.push(event);
    }
    expect(sent()).toMatchObject({
      max_tokens: 5000,
      thinking: { type: "enabled", budget_tokens: 1024 },
    });
    const summary = events
      .filter((e) => e.type === "response.reasoning_summary_text.delta")
      .map((e) => e.delta)
      .join("");
    expect(summary).toBe(THINKING);
    const done = events.find((e) => e.type === "response.completed");
    expect(done?.response.output[0]).toMatchObject({
      type: "reasoning",
      summary: [{ type: "summary_text", text: THINKING }],
    });
    expect(done?.response.output[1]).toMatchObject({
      type: "message",
      content: [{ type: "output_text", text: TEXT }],
    });
  });

  it("goes on without thinking after a tool call, whose thinking the API cannot carry back", async () => {
    upstream.setBehavior({
      kind: "answer",
      thinking: "Need the weather tool.",
      text: "",
      toolUses: [{ id: "toolu_1", name: "get_weather", input: '{"city":"Paris"}' }],
    });
    const tools = [
      {
        type: "function" as const,
        name: "get_weather",
        parameters: { type: "object", properties: { city: { type: "string" } } },
        strict: false,
      },
    ];
    const first = await oai.responses.create({
      model: "claude",
      input: "Weather in Paris?",
      tools,
      reasoning: { effort: "high" },
    });
    expect(sent().thinking).toEqual({ type: "enabled", budget_tokens: 4096 });
    const call = first.output.find((item) => item.type === "function_call");
    expect(call?.call_id).toBe("toolu_1");
    // Not asked for: the reasoning item is as before, summary only.
    expect(first.output[0]).toMatchObject({ type: "reasoning" });
    expect(first.output[0]).not.toHaveProperty("encrypted_content");

    upstream.setBehavior(thinkingAnswer);
    const input: ResponseInputItem[] = [
      { role: "user", content: "Weather in Paris?" },
      ...(first.output as ResponseInputItem[]),
      { type: "function_call_output", call_id: "toolu_1", output: "sunny" },
    ];
    const second = await oai.responses.create({
      model: "claude",
      input,
      tools,
      reasoning: { effort: "high" },
    });
    expect(second.output_text).toBe(TEXT);
    expect(sent()).not.toHaveProperty("thinking");
  });

  it("refuses an effort OpenAI does not know, naming reasoning.effort", async () => {
    const error = await oai.responses
      .create({
        model: "claude",
        input: "A number?",
        reasoning: { effort: "extreme" as OpenAI.ReasoningEffort },
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error).toMatchObject({ code: "invalid_value", param: "reasoning.effort" });
  });
});

describe("the Responses API's reasoning.encrypted_content in a tool loop", () => {
  const WHY = "Need the weather tool.";
  const REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4a";
  const tools = [
    {
      type: "function" as const,
      name: "get_weather",
      parameters: { type: "object", properties: { city: { type: "string" } } },
      strict: false,
    },
  ];
  const callsTheTool: AnswerBehavior = {
    kind: "answer",
    thinking: WHY,
    redactedThinking: REDACTED,
    text: "",
    toolUses: [{ id: "toolu_1", name: "get_weather", input: '{"city":"Paris"}' }],
  };
  const ask = { role: "user" as const, content: "Weather in Paris?" };

  /** One step of the loop, as a stateless client makes it; the finished Response. */
  async function step(stream: boolean, input: ResponseInputItem[]): Promise<Response> {
    const request = {
      model: "claude",
      input,
      tools,
      reasoning: { effort: "high" as const },
      include: ["reasoning.encrypted_content" as const],
      store: false,
    };
    if (!stream) return oai.responses.create(request);
    const events: ResponseStreamEvent[] = [];
    for await (const event of await oai.responses.create({ ...request, stream: true })) {
      events.push(event);
    }
    const completed = events.find((e) => e.type === "response.completed");
    if (completed?.type !== "response.completed") throw new Error("no response.completed");
    // The item as output_item.done gives it is the one to send back (OpenAI: `added` may
    // carry it incomplete); the final response carries the same.
    const done = events.flatMap((e) =>
      e.type === "response.output_item.done" && e.item.type === "reasoning" ? [e.item] : [],
    );
    expect(done).toHaveLength(1);
    expect(completed.response.output[0]).toEqual(done[0]);
    return completed.response;
  }

  it.each([
    ["streamed", true],
    ["whole", false],
  ])(
    "keeps thinking on for the next step, the blocks back byte for byte, %s",
    async (_, stream) => {
      upstream.setBehavior(callsTheTool);
      const first = await step(stream, [ask]);
      expect(sent().thinking).toEqual({ type: "enabled", budget_tokens: 4096 });
      const reasoning = first.output[0];
      expect(reasoning).toMatchObject({
        type: "reasoning",
        summary: [{ type: "summary_text", text: WHY }],
        encrypted_content: expect.stringMatching(/^sy1\./),
      });
      expect(first.output.find((item) => item.type === "function_call")?.call_id).toBe("toolu_1");

      upstream.setBehavior(thinkingAnswer);
      const second = await step(stream, [
        ask,
        ...(first.output as ResponseInputItem[]),
        { type: "function_call_output", call_id: "toolu_1", output: "sunny" },
      ]);
      // A streamed Response has no output_text (the SDK adds it to whole ones only).
      expect(second.output.find((item) => item.type === "message")?.content).toMatchObject([
        { type: "output_text", text: TEXT },
      ]);
      const body = sent();
      expect(body.thinking).toEqual({ type: "enabled", budget_tokens: 4096 });
      const turns = body.messages as Array<{ role: string; content: unknown[] }>;
      expect(turns[1]?.role).toBe("assistant");
      expect(turns[1]?.content).toEqual([
        { type: "thinking", thinking: WHY, signature: signThinking(WHY) },
        { type: "redacted_thinking", data: REDACTED },
        { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Paris" } },
      ]);
    },
  );

  it("ignores an encrypted_content it did not make, and goes on without thinking", async () => {
    upstream.setBehavior(callsTheTool);
    const first = await step(false, [ask]);
    const input = (first.output as ResponseInputItem[]).map((item) =>
      item.type === "reasoning"
        ? { ...item, encrypted_content: "gAAAAABo-openai-ciphertext" }
        : item,
    );
    upstream.setBehavior(thinkingAnswer);
    const second = await step(false, [
      ask,
      ...input,
      { type: "function_call_output", call_id: "toolu_1", output: "sunny" },
    ]);
    expect(second.output_text).toBe(TEXT);
    expect(sent()).not.toHaveProperty("thinking");
    const turns = sent().messages as Array<{ content: Array<{ type: string }> }>;
    expect(turns[1]?.content.map((b) => b.type)).toEqual(["tool_use"]);
  });
});

describe("GatewayService's reasoning_effort in extra_json", () => {
  const params = (effort: string, stream: boolean) =>
    create(ChatParamsSchema, {
      model: "claude",
      messages: [
        {
          role: Role.USER,
          content: [{ part: { case: "text", value: "A number?" } }],
          contentIsText: true,
        },
      ],
      stream,
      extraJson: JSON.stringify({ reasoning_effort: effort }),
    });
  const client = () =>
    createClient(GatewayService, createConnectTransport({ baseUrl: gw.url, httpVersion: "2" }));

  it("turns thinking on, streamed and whole, and the reasoning comes back", async () => {
    upstream.setBehavior(thinkingAnswer);
    const { completion } = await client().chat({ params: params("high", false) });
    expect(sent().thinking).toEqual({ type: "enabled", budget_tokens: 4096 });
    expect(completion?.choices[0]?.reasoning).toBe(THINKING);
    expect(completion?.choices[0]?.message?.content[0]?.part).toEqual({
      case: "text",
      value: TEXT,
    });

    let reasoning = "";
    for await (const { chunk } of client().chatStream({ params: params("medium", true) })) {
      reasoning += chunk?.choices[0]?.reasoning ?? "";
    }
    expect(sent().thinking).toEqual({ type: "enabled", budget_tokens: 2048 });
    expect(reasoning).toBe(THINKING);
  });

  it("refuses an effort OpenAI does not know as an invalid argument", async () => {
    const error = await client()
      .chat({ params: params("extreme", false) })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.InvalidArgument);
  });
});
