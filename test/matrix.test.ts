import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withoutCallNonces } from "../services/connector/providers/gemini/fixtures/call-ids.js";
import {
  ARGS,
  type EveryUpstream,
  startEveryUpstream,
  TEXT,
  type UpstreamKind,
} from "./helpers/every-upstream.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { signThinking } from "./upstreams/anthropic-upstream.js";

// Every client API against every upstream type, streaming and not, with and without tools:
// the official openai and @anthropic-ai/sdk clients through one gateway process to local
// upstreams that speak OpenAI's, Azure's, Anthropic's and Gemini's wire formats.
const SYSTEM = "You are terse.";

let fakes: EveryUpstream;
let gw: RunningFabric;
let oai: OpenAI;
let claude: Anthropic;

const UPSTREAMS: UpstreamKind[] = ["openai", "azure", "anthropic", "gemini"];

/** What the upstream received last, reduced to where the system prompt went. */
function systemPromptSeen(up: UpstreamKind): unknown {
  const body = fakes.lastBody(up) as {
    messages?: unknown[];
    system?: unknown;
    systemInstruction?: unknown;
  };
  if (up === "anthropic") return body.system;
  if (up === "gemini") return body.systemInstruction;
  return body.messages?.[0];
}

const expectedSystem: Record<UpstreamKind, unknown> = {
  openai: { role: "system", content: SYSTEM },
  azure: { role: "system", content: SYSTEM },
  anthropic: SYSTEM,
  gemini: { parts: [{ text: SYSTEM }] },
};

beforeAll(async () => {
  fakes = await startEveryUpstream();
  gw = await startOneProcess(
    testConfig(`
providers:
${fakes.providers}
models:
${fakes.models}
  # A target of its own for a 429 with Retry-After: it is paused for as long as that says.
  m-anthropic-paused: { targets: [{ provider: an, model: claude-paused }] }
routing: { retries: 0 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
  oai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "x", maxRetries: 0 });
  claude = new Anthropic({ baseURL: gw.url, apiKey: "x", maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await fakes?.close();
});

const weatherTool = {
  name: "get_weather",
  description: "Weather for a city",
  schema: {
    type: "object" as const,
    properties: { city: { type: "string" } },
    required: ["city"],
  },
};

describe.each(UPSTREAMS)("upstream %s", (up) => {
  const model = `m-${up}`;

  describe("through the openai client", () => {
    const base = {
      model,
      messages: [
        { role: "system" as const, content: SYSTEM },
        { role: "user" as const, content: "What is the answer?" },
      ],
    };

    it("answers whole and streamed with the same text, finish reason and usage", async () => {
      fakes.answerWith(up, false);
      const whole = await oai.chat.completions.create(base);
      expect(whole.choices[0]?.message.content).toBe(TEXT);
      expect(whole.choices[0]?.finish_reason).toBe("stop");
      expect(whole.usage?.prompt_tokens).toBeGreaterThan(0);
      expect(systemPromptSeen(up)).toEqual(expectedSystem[up]);

      const stream = await oai.chat.completions.create({
        ...base,
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "";
      let finish: string | null | undefined;
      let usage: OpenAI.CompletionUsage | null | undefined;
      let chunks = 0;
      for await (const c of stream) {
        chunks++;
        text += c.choices[0]?.delta.content ?? "";
        finish = c.choices[0]?.finish_reason ?? finish;
        usage = c.usage ?? usage;
      }
      expect(text).toBe(TEXT);
      expect(chunks).toBeGreaterThan(2); // streamed in pieces, not one buffered answer
      expect(finish).toBe("stop");
      expect(usage?.total_tokens).toBe(whole.usage?.total_tokens);
    });

    it("calls tools, whole and streamed, with the arguments reassembled exactly", async () => {
      fakes.answerWith(up, true);
      const tools: OpenAI.ChatCompletionTool[] = [
        {
          type: "function",
          function: {
            name: weatherTool.name,
            description: weatherTool.description,
            parameters: weatherTool.schema,
          },
        },
      ];
      const whole = await oai.chat.completions.create({ ...base, tools });
      const call = whole.choices[0]?.message.tool_calls?.[0];
      expect(call?.type === "function" && call.function).toEqual({
        name: "get_weather",
        arguments: ARGS,
      });
      expect(whole.choices[0]?.finish_reason).toBe("tool_calls");

      const stream = await oai.chat.completions.create({ ...base, tools, stream: true });
      let args = "";
      let name = "";
      let id = "";
      let finish: string | null | undefined;
      for await (const c of stream) {
        for (const tc of c.choices[0]?.delta.tool_calls ?? []) {
          args += tc.function?.arguments ?? "";
          name += tc.function?.name ?? "";
          id += tc.id ?? "";
        }
        finish = c.choices[0]?.finish_reason ?? finish;
      }
      expect({ name, args, finish }).toEqual({
        name: "get_weather",
        args: ARGS,
        finish: "tool_calls",
      });
      // The same call, streamed or whole (Gemini's synthetic ids differ by a random nonce).
      expect(withoutCallNonces(id)).toBe(withoutCallNonces(call?.id));
    });
  });

  describe("through the anthropic client", () => {
    const base = {
      model,
      max_tokens: 256,
      system: SYSTEM,
      messages: [{ role: "user" as const, content: "What is the answer?" }],
    };

    it("answers whole and streamed with the same text, stop reason and usage", async () => {
      fakes.answerWith(up, false);
      const whole = await claude.messages.create(base);
      expect(whole.content).toEqual(
        [{ type: "text", text: TEXT, citations: null }].map(({ citations: _, ...b }) => b),
      );
      expect(whole.stop_reason).toBe("end_turn");
      expect(whole.usage.output_tokens).toBeGreaterThan(0);
      expect(systemPromptSeen(up)).toEqual(expectedSystem[up]);

      const events: string[] = [];
      const stream = claude.messages.stream(base);
      stream.on("streamEvent", (e) => events.push(e.type));
      const final = await stream.finalMessage();
      expect(final.content.map((b) => (b.type === "text" ? b.text : ""))).toEqual([TEXT]);
      expect(final.stop_reason).toBe("end_turn");
      expect(final.usage.output_tokens).toBe(whole.usage.output_tokens);
      expect(events[0]).toBe("message_start");
      expect(events).toContain("content_block_start");
      expect(events.filter((e) => e === "content_block_delta").length).toBeGreaterThan(1);
      expect(events.slice(-2)).toEqual(["message_delta", "message_stop"]);
    });

    it("calls tools, whole and streamed, with the input intact", async () => {
      fakes.answerWith(up, true);
      const tools = [
        {
          name: weatherTool.name,
          description: weatherTool.description,
          input_schema: weatherTool.schema,
        },
      ];
      const whole = await claude.messages.create({ ...base, tools });
      const use = whole.content.find((b) => b.type === "tool_use");
      expect(use?.type === "tool_use" && { name: use.name, input: use.input }).toEqual({
        name: "get_weather",
        input: { city: "Paris" },
      });
      expect(whole.stop_reason).toBe("tool_use");

      const final = await claude.messages.stream({ ...base, tools }).finalMessage();
      const streamed = final.content.find((b) => b.type === "tool_use");
      expect(
        streamed?.type === "tool_use" && {
          id: withoutCallNonces(streamed.id),
          input: streamed.input,
        },
      ).toEqual({
        id: withoutCallNonces(use?.type === "tool_use" ? use.id : ""),
        input: { city: "Paris" },
      });
      expect(final.stop_reason).toBe("tool_use");
    });
  });
});

describe("Gemini's thought signatures", () => {
  // Base64 with both characters base64url replaces and padding: it must come back byte for byte.
  const SIGNATURE = "CiwBVKhc7nFq0dD1nMi8mRvdNXCPb0VAvn/mzJHzqX7ytV3Eaa0v0KAmjTE0jQ==";
  const signedCall = () =>
    fakes.gemini.setBehavior({
      kind: "answer",
      text: "",
      functionCalls: [
        { name: "get_weather", args: { city: "Paris" }, thoughtSignature: SIGNATURE },
        { name: "get_time", args: { tz: "Europe/Paris" } },
      ],
    });
  /** The model turn of the last request Gemini received. */
  const modelTurnSent = () => {
    const body = fakes.gemini.requests.at(-1)?.body as { contents: Array<{ role: string }> };
    return body.contents.find((c) => c.role === "model");
  };
  const expectedModelTurn = {
    role: "model",
    parts: [
      {
        functionCall: { name: "get_weather", args: { city: "Paris" } },
        thoughtSignature: SIGNATURE,
      },
      { functionCall: { name: "get_time", args: { tz: "Europe/Paris" } } },
    ],
  };

  it("come back on their call when an openai client sends the conversation on", async () => {
    signedCall();
    const tools: OpenAI.ChatCompletionTool[] = ["get_weather", "get_time"].map((name) => ({
      type: "function",
      function: { name, parameters: { type: "object", properties: {} } },
    }));
    const asked = [{ role: "user" as const, content: "Weather and time in Paris?" }];
    const first = await oai.chat.completions.create({ model: "m-gemini", messages: asked, tools });
    const assistant = first.choices[0]?.message;
    const calls = assistant?.tool_calls ?? [];
    expect(calls).toHaveLength(2);
    const history: OpenAI.ChatCompletionMessageParam[] = [
      ...asked,
      assistant as OpenAI.ChatCompletionMessageParam,
      ...calls.map((c) => ({ role: "tool" as const, tool_call_id: c.id, content: "ok" })),
    ];

    fakes.gemini.setBehavior({ kind: "answer", text: TEXT });
    const second = await oai.chat.completions.create({
      model: "m-gemini",
      messages: history,
      tools,
    });
    expect(second.choices[0]?.message.content).toBe(TEXT);
    expect(modelTurnSent()).toEqual(expectedModelTurn);

    // The same conversation sent on to another provider: ids short enough for OpenAI (40), and
    // each result still answers its call.
    fakes.openai.setBehavior({ kind: "answer", text: TEXT });
    await oai.chat.completions.create({ model: "m-openai", messages: history, tools });
    const sent = fakes.openai.requests.at(-1)?.body as {
      messages: Array<{ tool_calls?: Array<{ id: string }>; tool_call_id?: string }>;
    };
    const ids = sent.messages[1]?.tool_calls?.map((c) => c.id) ?? [];
    expect(ids.every((id) => id.length <= 40)).toBe(true);
    expect(sent.messages.slice(2).map((m) => m.tool_call_id)).toEqual(ids);
  });

  it("come back on their call when an anthropic client streams and sends the conversation on", async () => {
    signedCall();
    const tools = ["get_weather", "get_time"].map((name) => ({
      name,
      input_schema: { type: "object" as const, properties: {} },
    }));
    const asked = [{ role: "user" as const, content: "Weather and time in Paris?" }];
    const base = { model: "m-gemini", max_tokens: 256, tools };
    const first = await claude.messages.stream({ ...base, messages: asked }).finalMessage();
    const uses = first.content.filter((b) => b.type === "tool_use");
    expect(uses).toHaveLength(2);

    fakes.gemini.setBehavior({ kind: "answer", text: TEXT });
    const second = await claude.messages.create({
      ...base,
      messages: [
        ...asked,
        { role: "assistant", content: first.content },
        {
          role: "user",
          content: uses.map((u) => ({
            type: "tool_result" as const,
            tool_use_id: u.type === "tool_use" ? u.id : "",
            content: "ok",
          })),
        },
      ],
    });
    expect(second.content[0]?.type === "text" && second.content[0].text).toBe(TEXT);
    expect(modelTurnSent()).toEqual(expectedModelTurn);
  });
});

describe("Anthropic's extended thinking in a tool-use loop", () => {
  // With thinking enabled, Anthropic refuses the turn after a tool call unless the call's
  // assistant turn starts with its thinking, signed as Anthropic issued it (the fake checks
  // both, in Anthropic's words).
  const THINKING = "The user wants Paris. I'll call get_weather.";
  const REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xl==";
  const base = {
    model: "m-anthropic",
    max_tokens: 2048,
    thinking: { type: "enabled" as const, budget_tokens: 1024 },
    tools: [{ name: "get_weather", input_schema: weatherTool.schema }],
  };
  const asked = [{ role: "user" as const, content: "Weather in Paris?" }];
  const callWithThinking = () =>
    fakes.anthropic.setBehavior({
      kind: "answer",
      thinking: THINKING,
      redactedThinking: REDACTED,
      text: "",
      toolUses: [{ id: "toolu_1", name: "get_weather", input: ARGS }],
    });
  /** The conversation sent on after the call, with the client's own copy of the answer. */
  const followUp = (content: Anthropic.ContentBlockParam[]) => [
    ...asked,
    { role: "assistant" as const, content },
    {
      role: "user" as const,
      content: [{ type: "tool_result" as const, tool_use_id: "toolu_1", content: "sunny" }],
    },
  ];
  const expectedAssistantTurn = {
    role: "assistant",
    content: [
      { type: "thinking", thinking: THINKING, signature: signThinking(THINKING) },
      { type: "redacted_thinking", data: REDACTED },
      { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Paris" } },
    ],
  };
  const assistantTurnSent = () =>
    (fakes.anthropic.requests.at(-1)?.body as { messages?: unknown[] } | undefined)?.messages?.[1];

  it.each([
    ["streamed", true],
    ["whole", false],
  ])("go on when the client sends its %s answer back as it got it", async (_, stream) => {
    callWithThinking();
    const first = stream
      ? await claude.messages.stream({ ...base, messages: asked }).finalMessage()
      : await claude.messages.create({ ...base, messages: asked });
    expect(first.content).toEqual(expectedAssistantTurn.content);

    fakes.anthropic.setBehavior({ kind: "answer", text: TEXT });
    const second = await claude.messages.create({ ...base, messages: followUp(first.content) });
    expect(second.content).toEqual([{ type: "text", text: TEXT }]);
    expect(assistantTurnSent()).toEqual(expectedAssistantTurn);
  });

  it("reach an openai client's stream helper whole, and go on when it sends them back", async () => {
    callWithThinking();
    const tools: OpenAI.ChatCompletionTool[] = [
      { type: "function", function: { name: "get_weather", parameters: weatherTool.schema } },
    ];
    const thinking = { thinking: base.thinking } as object;
    const first = await oai.chat.completions
      .stream({ model: "m-anthropic", messages: asked, tools, ...thinking })
      .finalChatCompletion();
    const assistant = first.choices[0]?.message as OpenAI.ChatCompletionMessage & {
      thinking_blocks?: unknown[];
    };
    expect(assistant.thinking_blocks).toEqual(expectedAssistantTurn.content.slice(0, 2));

    fakes.anthropic.setBehavior({ kind: "answer", text: TEXT });
    const { role, content, tool_calls, thinking_blocks } = assistant;
    await oai.chat.completions.create({
      model: "m-anthropic",
      messages: [
        ...asked,
        { role, content, tool_calls, thinking_blocks } as OpenAI.ChatCompletionMessageParam,
        { role: "tool", tool_call_id: "toolu_1", content: "sunny" },
      ],
      tools,
      ...thinking,
    });
    expect(assistantTurnSent()).toEqual(expectedAssistantTurn);
  });

  it("go on for an openai client that sends thinking_blocks back, and stay away from an openai upstream", async () => {
    callWithThinking();
    const tools: OpenAI.ChatCompletionTool[] = [
      { type: "function", function: { name: "get_weather", parameters: weatherTool.schema } },
    ];
    // `thinking` is not an OpenAI field: it passes through to the Anthropic upstream.
    const thinking = { thinking: base.thinking } as object;
    const first = await oai.chat.completions.create({
      model: "m-anthropic",
      messages: asked,
      tools,
      ...thinking,
    });
    const assistant = first.choices[0]?.message as OpenAI.ChatCompletionMessage & {
      reasoning_content?: string;
      thinking_blocks?: unknown[];
    };
    expect(assistant.reasoning_content).toBe(THINKING);
    expect(assistant.thinking_blocks).toEqual(expectedAssistantTurn.content.slice(0, 2));
    const history = [
      ...asked,
      assistant as OpenAI.ChatCompletionMessageParam,
      { role: "tool" as const, tool_call_id: "toolu_1", content: "sunny" },
    ];

    fakes.anthropic.setBehavior({ kind: "answer", text: TEXT });
    const second = await oai.chat.completions.create({
      model: "m-anthropic",
      messages: history,
      tools,
      ...thinking,
    });
    expect(second.choices[0]?.message.content).toBe(TEXT);
    expect(assistantTurnSent()).toEqual(expectedAssistantTurn);

    // The same conversation sent on to an OpenAI target: Anthropic's blocks are not its to see.
    fakes.openai.setBehavior({ kind: "answer", text: TEXT });
    await oai.chat.completions.create({ model: "m-openai", messages: history, tools });
    const sent = JSON.stringify(fakes.openai.requests.at(-1)?.body);
    expect(sent).toContain("toolu_1");
    expect(sent).not.toContain(REDACTED);
    expect(sent).not.toContain(signThinking(THINKING));
  });
});

describe("Anthropic's prompt-caching breakpoints", () => {
  const ephemeral = { type: "ephemeral" as const };
  const hour = { type: "ephemeral" as const, ttl: "1h" as const };
  const tool = { name: "get_weather", input_schema: weatherTool.schema, cache_control: hour };
  const lastBody = () => fakes.anthropic.requests.at(-1)?.body as Record<string, unknown>;

  it("reach an Anthropic upstream on the blocks an anthropic client marked", async () => {
    const messages: Anthropic.MessageParam[] = [
      {
        role: "user",
        content: [
          { type: "text", text: "A long document.", cache_control: ephemeral },
          { type: "text", text: "Weather in Paris?" },
        ],
      },
      {
        role: "assistant",
        content: [{ type: "tool_use", id: "toolu_1", name: "get_weather", input: {} }],
      },
      {
        role: "user",
        content: [
          {
            type: "tool_result",
            tool_use_id: "toolu_1",
            content: "sunny",
            cache_control: ephemeral,
          },
        ],
      },
    ];
    fakes.anthropic.setBehavior({ kind: "answer", text: TEXT });
    // Top-level: automatic caching of the whole prompt (newer than this SDK's types).
    const automatic = { cache_control: ephemeral } as object;
    await claude.messages.create({
      ...automatic,
      model: "m-anthropic",
      max_tokens: 64,
      system: [{ type: "text", text: SYSTEM, cache_control: hour }],
      tools: [tool],
      messages,
    });
    const body = lastBody();
    expect(body.cache_control).toEqual(ephemeral);
    expect(body.system).toEqual([{ type: "text", text: SYSTEM, cache_control: hour }]);
    expect(body.tools).toEqual([tool]);
    // Every block as the client wrote it, its marker included.
    expect(body.messages).toEqual(messages);
  });

  it("reach an Anthropic upstream from an openai client's content parts, and not an OpenAI one", async () => {
    const messages = [
      {
        role: "user" as const,
        content: [
          { type: "text" as const, text: "A long document.", cache_control: ephemeral },
          { type: "text" as const, text: "Summarise it." },
        ],
      },
    ];
    fakes.anthropic.setBehavior({ kind: "answer", text: TEXT });
    await oai.chat.completions.create({ model: "m-anthropic", messages });
    expect(lastBody().messages).toEqual([
      {
        role: "user",
        content: [
          { type: "text", text: "A long document.", cache_control: ephemeral },
          { type: "text", text: "Summarise it." },
        ],
      },
    ]);
    fakes.openai.setBehavior({ kind: "answer", text: TEXT });
    await oai.chat.completions.create({ model: "m-openai", messages });
    expect(JSON.stringify(fakes.openai.requests.at(-1)?.body)).not.toContain("cache_control");
  });
});

describe("embeddings", () => {
  it.each(["openai", "azure", "gemini"] as const)(
    "come back from %s in OpenAI's format",
    async (up) => {
      const res = await oai.embeddings.create({ model: `m-${up}`, input: ["hello", "hi there"] });
      expect(res.data.map((d) => d.index)).toEqual([0, 1]);
      expect(res.data[0]?.embedding.length).toBeGreaterThan(0);
      expect(res.data[0]?.embedding).not.toEqual(res.data[1]?.embedding);
    },
  );

  it("are refused with a 400 naming the provider where the upstream has none", async () => {
    const err = await oai.embeddings
      .create({ model: "m-anthropic", input: "hello" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(String((err as Error).message)).toMatch(/an.*does not offer embeddings/);
  });
});

describe("Anthropic's prompt cache in the usage", () => {
  it("tells cache writes and reads apart from the rest of the prompt, for either client", async () => {
    fakes.anthropic.setBehavior({
      kind: "answer",
      text: "ok",
      usage: {
        input_tokens: 12,
        cache_creation_input_tokens: 500,
        cache_read_input_tokens: 300,
        output_tokens: 7,
      },
    });
    try {
      const body = { model: "m-anthropic", messages: [{ role: "user" as const, content: "x" }] };
      for (const usage of [
        (await claude.messages.create({ ...body, max_tokens: 10 })).usage,
        (await claude.messages.stream({ ...body, max_tokens: 10 }).finalMessage()).usage,
      ]) {
        expect(usage).toMatchObject({
          input_tokens: 12,
          cache_creation_input_tokens: 500,
          cache_read_input_tokens: 300,
          output_tokens: 7,
        });
      }
      // OpenAI's usage counts every prompt token, the cache reads as cached_tokens.
      const openai = (await oai.chat.completions.create(body)).usage;
      expect(openai).toMatchObject({
        prompt_tokens: 812,
        prompt_tokens_details: { cached_tokens: 300 },
      });
    } finally {
      fakes.anthropic.setBehavior({ kind: "answer" });
    }
  });
});

describe("log probabilities", () => {
  it("reach an openai client from an OpenAI-compatible upstream, whole and streamed", async () => {
    fakes.openai.setBehavior({ kind: "answer", text: "one two three", chunks: 3 });
    const body = {
      model: "m-openai",
      logprobs: true,
      top_logprobs: 0,
      messages: [{ role: "user" as const, content: "count" }],
    };
    const whole = await oai.chat.completions.create(body);
    const tokens = whole.choices[0]?.logprobs?.content?.map((t) => [t.token, t.logprob]);
    expect(tokens).toEqual([
      ["one ", -0.1],
      ["two ", -0.2],
      ["three", -0.3],
    ]);
    const streamed: Array<[string, number]> = [];
    for await (const c of await oai.chat.completions.create({ ...body, stream: true })) {
      for (const t of c.choices[0]?.logprobs?.content ?? []) streamed.push([t.token, t.logprob]);
    }
    expect(streamed).toEqual(tokens);
    expect(fakes.openai.requests.at(-1)?.body).toMatchObject({ logprobs: true, top_logprobs: 0 });
  });
});

describe("the output-token limit", () => {
  it("reaches an OpenAI-compatible upstream under the name the openai client gave it", async () => {
    fakes.answerWith("openai", false);
    const messages = [{ role: "user" as const, content: "x" }];
    const seen = () => fakes.openai.requests.at(-1)?.body as Record<string, unknown>;
    await oai.chat.completions.create({ model: "m-openai", messages, max_completion_tokens: 33 });
    expect(seen()).toMatchObject({ max_completion_tokens: 33 });
    expect(seen()).not.toHaveProperty("max_tokens");
    await oai.chat.completions.create({ model: "m-openai", messages, max_tokens: 44 });
    expect(seen()).toMatchObject({ max_tokens: 44 });
    expect(seen()).not.toHaveProperty("max_completion_tokens");
  });
});

describe("the stop sequence that ended an answer", () => {
  it("reaches an anthropic client as the upstream named it, whole and streamed", async () => {
    fakes.anthropic.setBehavior({
      kind: "answer",
      text: "one two",
      stopReason: "stop_sequence",
      stopSequence: "THREE",
    });
    const body = {
      model: "m-anthropic",
      max_tokens: 10,
      stop_sequences: ["FOUR", "THREE"],
      messages: [{ role: "user" as const, content: "count" }],
    };
    try {
      const whole = await claude.messages.create(body);
      expect([whole.stop_reason, whole.stop_sequence]).toEqual(["stop_sequence", "THREE"]);
      const streamed = await claude.messages.stream(body).finalMessage();
      expect([streamed.stop_reason, streamed.stop_sequence]).toEqual(["stop_sequence", "THREE"]);
    } finally {
      fakes.anthropic.setBehavior({ kind: "answer" });
    }
  });
});

describe("structured output to an Anthropic target", () => {
  const schema = {
    type: "object",
    properties: { answer: { type: "integer" } },
    required: ["answer"],
    additionalProperties: false,
  };

  it("reaches it as Anthropic's own output_config, from an anthropic client with thinking and tools", async () => {
    fakes.anthropic.setBehavior({ kind: "answer", text: '{"answer":42}', chunks: 2 });
    const message = await claude.messages.create({
      model: "m-anthropic",
      max_tokens: 2048,
      thinking: { type: "enabled", budget_tokens: 1024 },
      tools: [{ name: "lookup", input_schema: { type: "object" } }],
      messages: [{ role: "user", content: "x" }],
      output_config: { format: { type: "json_schema", schema } },
    } as Anthropic.MessageCreateParamsNonStreaming);
    const sent = fakes.anthropic.requests.at(-1)?.body as Record<string, unknown>;
    expect(sent.output_config).toEqual({ format: { type: "json_schema", schema } });
    expect(sent).not.toHaveProperty("tool_choice");
    expect((sent.tools as Array<{ name: string }>).map((t) => t.name)).toEqual(["lookup"]);
    expect(message.content).toMatchObject([{ type: "text", text: '{"answer":42}' }]);
  });

  it("reaches it as output_config from an openai client with thinking, never as a forced tool", async () => {
    fakes.anthropic.setBehavior({ kind: "answer", text: '{"answer":42}', chunks: 2 });
    const completion = await oai.chat.completions.create({
      model: "m-anthropic",
      messages: [{ role: "user", content: "x" }],
      response_format: { type: "json_schema", json_schema: { name: "a", schema, strict: true } },
      // @ts-expect-error Anthropic's thinking, passed on as an extra field
      thinking: { type: "enabled", budget_tokens: 1024 },
    });
    const sent = fakes.anthropic.requests.at(-1)?.body as Record<string, unknown>;
    expect(sent.output_config).toEqual({ format: { type: "json_schema", schema } });
    expect(sent).not.toHaveProperty("tool_choice");
    expect(completion.choices[0]?.message.content).toBe('{"answer":42}');
  });
});

describe("Anthropic beta features (anthropic-beta)", () => {
  it("reach an Anthropic target as the client named them, and no other target", async () => {
    const betas = "context-1m-2025-08-07, interleaved-thinking-2025-05-14";
    const body = { max_tokens: 10, messages: [{ role: "user" as const, content: "x" }] };
    await claude.messages.create(
      { model: "m-anthropic", ...body },
      { headers: { "anthropic-beta": betas } },
    );
    expect(fakes.anthropic.requests.at(-1)?.headers["anthropic-beta"]).toBe(
      "context-1m-2025-08-07,interleaved-thinking-2025-05-14",
    );
    await claude.messages.create(
      { model: "m-openai", ...body },
      { headers: { "anthropic-beta": betas } },
    );
    expect(fakes.openai.requests.at(-1)?.headers).not.toHaveProperty("anthropic-beta");
    // A request that names none sends none.
    await claude.messages.create({ model: "m-anthropic", ...body });
    expect(fakes.anthropic.requests.at(-1)?.headers).not.toHaveProperty("anthropic-beta");
  });
});

describe("errors keep each client API's envelope", () => {
  it("a 429 upstream reaches the anthropic client as a RateLimitError and the openai client as one too", async () => {
    fakes.anthropic.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "3" } });
    const a = await claude.messages
      .create({
        model: "m-anthropic-paused",
        max_tokens: 10,
        messages: [{ role: "user", content: "x" }],
      })
      .catch((e: unknown) => e);
    expect(a).toBeInstanceOf(Anthropic.RateLimitError);
    expect((a as InstanceType<typeof Anthropic.RateLimitError>).headers?.get("retry-after")).toBe(
      "3",
    );
    const o = await oai.chat.completions
      .create({ model: "m-anthropic-paused", messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(o).toBeInstanceOf(OpenAI.RateLimitError);
    // An upstream 429 that does not say how long still reaches the client with a Retry-After.
    fakes.anthropic.setBehavior({ kind: "error", status: 429 });
    for (const e of [
      await claude.messages
        .create({
          model: "m-anthropic",
          max_tokens: 10,
          messages: [{ role: "user", content: "x" }],
        })
        .catch((e: unknown) => e),
      await oai.chat.completions
        .create({ model: "m-anthropic", messages: [{ role: "user", content: "x" }] })
        .catch((e: unknown) => e),
    ]) {
      expect((e as { status: number }).status).toBe(429);
      expect((e as { headers: Headers }).headers.get("retry-after")).toBe("1");
    }
    fakes.anthropic.setBehavior({ kind: "answer" });
  });

  it("an answer carries Anthropic's request-id header, which the anthropic client reads", async () => {
    const { response, request_id } = await claude.messages
      .create({ model: "m-anthropic", max_tokens: 10, messages: [{ role: "user", content: "x" }] })
      .withResponse();
    expect(response.headers.get("x-request-id")).toBeTruthy();
    expect(request_id).toBe(response.headers.get("x-request-id"));
  });

  it("a request the Messages API rejects gets Anthropic's invalid_request_error naming the field", async () => {
    const err = await claude.messages
      // @ts-expect-error max_tokens is required: the gateway must say so
      .create({ model: "m-openai", messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    const body = (err as InstanceType<typeof Anthropic.BadRequestError>).error as {
      error: { type: string; message: string };
    };
    expect(body.error.type).toBe("invalid_request_error");
    expect(body.error.message).toMatch(/max_tokens/);
  });

  it.each(["m-anthropic", "m-gemini"])(
    "log probabilities, audio or web search asked of %s are refused, not dropped",
    async (model) => {
      const messages = [{ role: "user" as const, content: "x" }];
      for (const [ask, field] of [
        [{ logprobs: true }, /logprobs/],
        [{ modalities: ["text", "audio"] as ["text", "audio"] }, /audio/],
        [{ web_search_options: {} }, /web search/],
      ] as const) {
        const err = await oai.chat.completions
          .create({ model, messages, ...ask })
          .catch((e: unknown) => e);
        expect(err).toBeInstanceOf(OpenAI.BadRequestError);
        expect((err as Error).message).toMatch(field);
      }
      // A hint is no such promise: the answer comes without it.
      const ok = await oai.chat.completions.create({ model, messages, seed: 7 });
      expect(ok.choices[0]?.message.content).toBeTruthy();
    },
  );

  it("a feature the target cannot serve is a 400 naming the model and the feature", async () => {
    const err = await oai.chat.completions
      .create({ model: "m-anthropic", n: 2, messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as Error).message).toMatch(/claude-up/);
    expect((err as Error).message).toMatch(/\bn\b/);
  });

  it.each(UPSTREAMS)(
    "a spoken answer is refused with a 400 on upstream %s, never answered with its text alone",
    async (up) => {
      fakes.answerWith(up, false);
      const before = fakes[up].requests.length;
      const messages = [{ role: "user" as const, content: "x" }];
      for (const audio of [{ modalities: ["text", "audio"] }, { audio: { voice: "alloy" } }]) {
        const err = await oai.chat.completions
          .create({ model: `m-${up}`, messages, ...(audio as object) })
          .catch((e: unknown) => e);
        expect(err).toBeInstanceOf(OpenAI.BadRequestError);
        expect((err as Error).message).toMatch(/audio output/);
      }
      expect(fakes[up].requests.length).toBe(before);
    },
  );
});
