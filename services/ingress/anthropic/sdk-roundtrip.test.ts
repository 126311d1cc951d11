import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import Anthropic from "@anthropic-ai/sdk";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ChatChunk,
  ChatChunkSchema,
  type ChatParams,
  FinishReason,
  Role,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { aggregate } from "../../lib/chat/aggregate.js";
import { Failure } from "../../lib/errors.js";
import { anthropicError } from "./errors.js";
import { parseMessagesRequest } from "./parse-request.js";
import { MessageStreamRenderer, renderMessage } from "./render.js";

// Proves that what the renderers emit is what the official @anthropic-ai/sdk understands, and
// that what the SDK sends is what the parser accepts: every request goes through
// parseMessagesRequest on a real HTTP server, and every answer is read back by the SDK.

type ChunkInit = MessageInitShape<typeof ChatChunkSchema>;
const chunk = (init: ChunkInit): ChatChunk => create(ChatChunkSchema, init);

const start = {
  id: "msg_rt",
  created: 1700000000n,
  upstreamModel: "gpt-4o-2024-08-06",
  provider: "openai",
  attempts: 1,
};
const args = '{"city": "Zürich", "days": [1, 2]}';

// An OpenAI-style upstream: parallel calls whose fragments interleave, usage after the finish.
const toolStream: ChatChunk[] = [
  chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, content: "" }] }),
  chunk({ choices: [{ index: 0, content: "Let me " }] }),
  chunk({ choices: [{ index: 0, content: "check." }] }),
  chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, id: "call_w", name: "get_weather" }] }] }),
  chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: args.slice(0, 11) }] }] }),
  chunk({
    choices: [
      {
        index: 0,
        toolCalls: [
          { index: 1, id: "call_t", name: "get_time", arguments: "{}" },
          { index: 0, arguments: args.slice(11) },
        ],
      },
    ],
  }),
  chunk({
    choices: [{ index: 0, finishReason: FinishReason.TOOL_CALLS, rawFinishReason: "tool_calls" }],
  }),
  chunk({
    usage: { promptTokens: 30, completionTokens: 12, totalTokens: 42, cachedPromptTokens: 8 },
  }),
];

// An Anthropic-style upstream: prompt usage up front, thinking before the text.
const thinkingStream: ChatChunk[] = [
  chunk({
    start: { ...start, id: "msg_th", upstreamModel: "claude-sonnet-4-5" },
    choices: [{ index: 0, role: Role.ASSISTANT }],
    usage: { promptTokens: 14, completionTokens: 1, totalTokens: 15 },
  }),
  chunk({ choices: [{ index: 0, reasoning: "The user greets me. " }] }),
  chunk({ choices: [{ index: 0, reasoning: "Greet back." }] }),
  chunk({ choices: [{ index: 0, content: "Hello" }] }),
  chunk({ choices: [{ index: 0, content: " there!" }] }),
  chunk({
    choices: [{ index: 0, finishReason: FinishReason.STOP, rawFinishReason: "end_turn" }],
    usage: { promptTokens: 14, completionTokens: 20, totalTokens: 34, reasoningTokens: 9 },
  }),
];

interface Scenario {
  chunks: ChatChunk[];
  /** Ends the stream with this failure after the chunks, instead of finishing it. */
  failure?: Failure;
  /** Answers with this failure before anything is streamed. */
  refusal?: Failure;
}

const scenarios: Record<string, Scenario> = {
  tools: { chunks: toolStream },
  thinking: { chunks: thinkingStream },
  broken: {
    chunks: toolStream.slice(0, 3),
    failure: new Failure({ status: 502, kind: "upstream_error", message: "upstream stream broke" }),
  },
  limited: {
    chunks: [],
    refusal: new Failure({
      status: 429,
      kind: "rate_limited",
      message: "tenant acme is over its rpm",
      retryAfterMs: 1500,
    }),
  },
};

function sse(scenario: Scenario, params: ChatParams): string[] {
  const r = new MessageStreamRenderer({ publicModel: params.model, stopSequences: params.stop });
  const frames = scenario.chunks.map((c) => r.render(c)).filter((f) => f !== "");
  frames.push(scenario.failure === undefined ? r.finish() : r.error(scenario.failure));
  return frames;
}

let server: Server;
let client: Anthropic;
const received: ChatParams[] = [];

beforeAll(async () => {
  server = createServer(async (req, res) => {
    let raw = "";
    for await (const part of req) raw += part;
    const requestId = "req_rt";
    const reply = (f: Failure) => {
      const e = anthropicError(f, requestId);
      res.writeHead(e.status, e.headers).end(JSON.stringify(e.body));
    };
    let params: ChatParams;
    try {
      params = parseMessagesRequest(JSON.parse(raw));
    } catch (err) {
      reply(Failure.from(err));
      return;
    }
    received.push(params);
    const scenario = scenarios[params.model];
    if (scenario === undefined) {
      reply(new Failure({ status: 404, kind: "not_found", message: `no model ${params.model}` }));
      return;
    }
    if (scenario.refusal !== undefined) {
      reply(scenario.refusal);
      return;
    }
    if (!params.stream) {
      const body = renderMessage(aggregate(scenario.chunks), { publicModel: params.model });
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    // One write per chunk, as the ingress will send them.
    for (const frame of sse(scenario, params)) res.write(frame);
    res.end();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  client = new Anthropic({ apiKey: "test", baseURL: `http://127.0.0.1:${port}`, maxRetries: 0 });
});

afterAll(async () => {
  server.closeAllConnections();
  server.close();
  await once(server, "close");
});

const messages: Anthropic.MessageParam[] = [{ role: "user", content: "weather?" }];

async function thrownBy(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (err) {
    return err;
  }
  throw new Error("expected the SDK to throw");
}

describe("the @anthropic-ai/sdk reading rendered streams", () => {
  it("reassembles text, interleaved tool-call fragments and late usage into the whole answer", async () => {
    const final = await client.messages
      .stream({ model: "tools", max_tokens: 100, messages })
      .finalMessage();

    expect(final.id).toBe("msg_rt");
    expect(final.model).toBe("gpt-4o-2024-08-06");
    expect(final.role).toBe("assistant");
    expect(final.content).toEqual([
      { type: "text", text: "Let me check." },
      {
        type: "tool_use",
        id: "call_w",
        name: "get_weather",
        input: { city: "Zürich", days: [1, 2] },
      },
      { type: "tool_use", id: "call_t", name: "get_time", input: {} },
    ]);
    expect(final.stop_reason).toBe("tool_use");
    expect(final.stop_sequence).toBeNull();
    expect(final.usage).toEqual({
      input_tokens: 22,
      cache_read_input_tokens: 8,
      output_tokens: 12,
    });
    // The streamed answer is the non-streamed one (plus the SDK's own structured-output field).
    expect(JSON.parse(JSON.stringify(final))).toEqual({
      ...renderMessage(aggregate(toolStream), { publicModel: "tools" }),
      parsed_output: null,
    });
  });

  it("delivers Anthropic's event sequence to a raw stream reader", async () => {
    const stream = await client.messages.create({
      model: "tools",
      max_tokens: 100,
      messages,
      stream: true,
    });
    const seen: string[] = [];
    for await (const event of stream) {
      seen.push("index" in event ? `${event.type}:${event.index}` : event.type);
    }
    expect(seen).toEqual([
      "message_start",
      "content_block_start:0",
      "content_block_delta:0",
      "content_block_delta:0",
      "content_block_stop:0",
      "content_block_start:1",
      "content_block_delta:1",
      "content_block_delta:1",
      "content_block_stop:1",
      "content_block_start:2",
      "content_block_delta:2",
      "content_block_stop:2",
      "message_delta",
      "message_stop",
    ]);
  });

  it("reassembles thinking before text, with usage from the start and the end", async () => {
    const stream = client.messages.stream({ model: "thinking", max_tokens: 100, messages });
    const texts: string[] = [];
    const thoughts: string[] = [];
    stream.on("text", (t) => texts.push(t));
    stream.on("thinking", (t) => thoughts.push(t));
    const final = await stream.finalMessage();
    expect(texts).toEqual(["Hello", " there!"]);
    expect(thoughts).toEqual(["The user greets me. ", "Greet back."]);
    expect(final.content).toEqual([
      { type: "thinking", thinking: "The user greets me. Greet back.", signature: "" },
      { type: "text", text: "Hello there!" },
    ]);
    expect(final.stop_reason).toBe("end_turn");
    expect(final.usage).toEqual({
      input_tokens: 14,
      output_tokens: 20,
      output_tokens_details: { thinking_tokens: 9 },
    });
  });

  it("throws an APIError when the stream ends with an error event", async () => {
    const stream = await client.messages.create({
      model: "broken",
      max_tokens: 100,
      messages,
      stream: true,
    });
    const text: string[] = [];
    const thrown = await thrownBy(async () => {
      for await (const event of stream) {
        if (event.type === "content_block_delta" && event.delta.type === "text_delta") {
          text.push(event.delta.text);
        }
      }
    });
    expect(text.join("")).toBe("Let me check.");
    expect(thrown).toBeInstanceOf(Anthropic.APIError);
    const e = thrown as InstanceType<typeof Anthropic.APIError>;
    expect(e.type).toBe("api_error");
    expect(e.error).toEqual({
      type: "error",
      error: { type: "api_error", message: "upstream stream broke" },
    });
  });

  it("makes finalMessage() reject rather than return a truncated answer", async () => {
    const thrown = await thrownBy(() =>
      client.messages.stream({ model: "broken", max_tokens: 100, messages }).finalMessage(),
    );
    expect(thrown).toBeInstanceOf(Anthropic.APIError);
  });
});

describe("the @anthropic-ai/sdk reading rendered bodies", () => {
  it("parses a rendered message", async () => {
    const m = await client.messages.create({ model: "tools", max_tokens: 100, messages });
    expect(m.type).toBe("message");
    expect(m.content[0]).toEqual({ type: "text", text: "Let me check." });
    expect(m.content[1]).toEqual({
      type: "tool_use",
      id: "call_w",
      name: "get_weather",
      input: { city: "Zürich", days: [1, 2] },
    });
    expect(m.stop_reason).toBe("tool_use");
    expect(m.usage.cache_read_input_tokens).toBe(8);
  });

  it("raises a RateLimitError with Retry-After and the request id from a rendered error", async () => {
    const thrown = await thrownBy(() =>
      client.messages.create({ model: "limited", max_tokens: 100, messages }),
    );
    expect(thrown).toBeInstanceOf(Anthropic.RateLimitError);
    const e = thrown as InstanceType<typeof Anthropic.RateLimitError>;
    expect(e.status).toBe(429);
    expect(e.type).toBe("rate_limit_error");
    expect(e.requestID).toBe("req_rt");
    expect(e.headers.get("retry-after")).toBe("2");
    expect(e.message).toBe(
      '429 {"type":"error","error":{"type":"rate_limit_error","message":"tenant acme is over its rpm"},"request_id":"req_rt"}',
    );
  });

  it("raises a BadRequestError naming the field for a request the parser refuses", async () => {
    const thrown = await thrownBy(() =>
      client.messages.create({ model: "tools", max_tokens: 100, messages, temperature: 1.5 }),
    );
    expect(thrown).toBeInstanceOf(Anthropic.BadRequestError);
    const e = thrown as InstanceType<typeof Anthropic.BadRequestError>;
    expect(e.type).toBe("invalid_request_error");
    expect(e.error).toEqual({
      type: "error",
      error: {
        type: "invalid_request_error",
        message: "temperature: Input should be less than or equal to 1",
      },
      request_id: "req_rt",
    });
  });
});

describe("the parser reading what the @anthropic-ai/sdk sends", () => {
  it("accepts a tool-use turn with system blocks, tools, tool_choice and metadata", async () => {
    received.length = 0;
    await client.messages.create({
      model: "tools",
      max_tokens: 256,
      system: [{ type: "text", text: "Be brief.", cache_control: { type: "ephemeral" } }],
      metadata: { user_id: "u-1" },
      tools: [
        {
          name: "get_weather",
          description: "Weather for a city",
          input_schema: { type: "object", properties: { city: { type: "string" } } },
        },
      ],
      tool_choice: { type: "auto", disable_parallel_tool_use: true },
      messages: [
        { role: "user", content: "weather?" },
        {
          role: "assistant",
          content: [
            { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Bern" } },
          ],
        },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_1", content: "sunny" },
            { type: "text", text: "Thanks!" },
          ],
        },
      ],
    });
    const p = received[0];
    expect(p?.clientApi).toBe("anthropic");
    expect(p?.maxTokens).toBe(256);
    expect(p?.user).toBe("u-1");
    expect(p?.parallelToolCalls).toBe(false);
    expect(p?.tools.map((t) => t.name)).toEqual(["get_weather"]);
    expect(p?.messages.map((m) => m.role)).toEqual([
      Role.SYSTEM,
      Role.USER,
      Role.ASSISTANT,
      Role.TOOL,
      Role.USER,
    ]);
    expect(p?.messages[2]?.toolCalls[0]?.arguments).toBe('{"city":"Bern"}');
    expect(p?.messages[3]?.toolCallId).toBe("toolu_1");
  });
});
