import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ChatChunk,
  ChatChunkSchema,
  FinishReason,
  Role,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { aggregate } from "../../lib/chat/aggregate.js";
import { Failure } from "../../lib/errors.js";
import { openAIError } from "./errors.js";
import { ChunkRenderer, renderCompletion } from "./render.js";

// Proves that what the renderers emit is what the official openai SDK understands: every
// scenario is served by a real HTTP server and read back through `client.chat.completions`.

type ChunkInit = MessageInitShape<typeof ChatChunkSchema>;
const chunk = (init: ChunkInit): ChatChunk => create(ChatChunkSchema, init);

const start = {
  id: "chatcmpl-rt",
  created: 1700000000n,
  upstreamModel: "gpt-4o-2024-08-06",
  provider: "openai",
  attempts: 1,
  systemFingerprint: "fp_rt",
};
const args = '{"city": "Zürich", "days": [1, 2]}';

const toolStream: ChatChunk[] = [
  chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, content: "" }] }),
  chunk({ choices: [{ index: 0, content: "Let me " }] }),
  chunk({ choices: [{ index: 0, content: "check." }] }),
  chunk({
    choices: [{ index: 0, toolCalls: [{ index: 0, id: "call_w", name: "get_weather" }] }],
  }),
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
    usage: { promptTokens: 30, completionTokens: 12, totalTokens: 42, cachedPromptTokens: 8 },
  }),
];

const twoChoiceStream: ChatChunk[] = [
  chunk({ start, choices: [{ index: 0, content: "Hel" }] }),
  chunk({
    choices: [
      { index: 1, content: "Bon" },
      { index: 0, content: "lo" },
    ],
  }),
  chunk({ choices: [{ index: 1, content: "jour" }] }),
  chunk({
    choices: [
      { index: 0, finishReason: FinishReason.STOP },
      { index: 1, finishReason: FinishReason.LENGTH },
    ],
  }),
  chunk({ usage: { promptTokens: 5, completionTokens: 4, totalTokens: 9 } }),
];

function sse(chunks: ChatChunk[], includeUsage: boolean, failure?: Failure): string[] {
  const r = new ChunkRenderer({ includeUsage });
  const frames: string[] = [];
  for (const c of chunks) {
    const frame = r.render(c);
    if (frame !== undefined) frames.push(frame);
  }
  if (failure !== undefined) {
    frames.push(r.error(failure));
    return frames;
  }
  const last = r.finish();
  if (last !== undefined) frames.push(last);
  frames.push(r.done());
  return frames;
}

type Reply =
  | { kind: "sse"; frames: (includeUsage: boolean) => string[] }
  | { kind: "json"; status: number; headers: Record<string, string>; body: unknown };

const failure = new Failure({
  status: 502,
  kind: "upstream_error",
  message: "upstream stream broke",
  code: "upstream_reset",
});

const limited = openAIError(
  new Failure({
    status: 429,
    kind: "rate_limited",
    message: "tenant acme is over its rpm",
    retryAfterMs: 1500,
  }),
);

const replies: Record<string, Reply> = {
  tools: { kind: "sse", frames: (u) => sse(toolStream, u) },
  choices: { kind: "sse", frames: (u) => sse(twoChoiceStream, u) },
  broken: { kind: "sse", frames: (u) => sse(toolStream.slice(0, 3), u, failure) },
  whole: {
    kind: "json",
    status: 200,
    headers: { "content-type": "application/json" },
    body: renderCompletion(aggregate(toolStream), "gpt-4o"),
  },
  limited: { kind: "json", ...limited },
};

let server: Server;
let client: OpenAI;

beforeAll(async () => {
  server = createServer(async (req, res) => {
    let raw = "";
    for await (const part of req) raw += part;
    const body = JSON.parse(raw) as { model: string; stream_options?: { include_usage?: boolean } };
    const reply = replies[body.model];
    if (reply === undefined) {
      res.writeHead(404).end();
      return;
    }
    if (reply.kind === "json") {
      res.writeHead(reply.status, reply.headers).end(JSON.stringify(reply.body));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    // One write per frame, as the ingress will send them.
    for (const frame of reply.frames(body.stream_options?.include_usage === true)) {
      res.write(frame);
    }
    res.end();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  client = new OpenAI({ apiKey: "test", baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0 });
});

afterAll(async () => {
  server.closeAllConnections();
  server.close();
  await once(server, "close");
});

const messages = [{ role: "user" as const, content: "weather?" }];

describe("the openai SDK reading rendered streams", () => {
  it("reassembles content, split tool calls and usage into the non-streamed answer", async () => {
    const stream = client.chat.completions.stream({
      model: "tools",
      messages,
      stream_options: { include_usage: true },
    });
    const final = await stream.finalChatCompletion();
    const expected = renderCompletion(aggregate(toolStream), "gpt-4o");

    expect(final.id).toBe("chatcmpl-rt");
    expect(final.model).toBe("gpt-4o-2024-08-06");
    expect(final.system_fingerprint).toBe("fp_rt");
    expect(final.choices).toHaveLength(1);
    const choice = final.choices[0];
    expect(choice?.finish_reason).toBe("tool_calls");
    expect(choice?.message.role).toBe("assistant");
    expect(choice?.message.content).toBe("Let me check.");
    expect(choice?.message.tool_calls).toEqual(expected.choices[0]?.message.tool_calls);
    expect(choice?.message.tool_calls).toEqual([
      { id: "call_w", type: "function", function: { name: "get_weather", arguments: args } },
      { id: "call_t", type: "function", function: { name: "get_time", arguments: "{}" } },
    ]);
    expect(final.usage).toEqual({
      prompt_tokens: 30,
      completion_tokens: 12,
      total_tokens: 42,
      prompt_tokens_details: { cached_tokens: 8 },
    });
  });

  it("delivers usage only in a final chunk with no choices when include_usage is set", async () => {
    const stream = await client.chat.completions.create({
      model: "tools",
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    expect(last?.usage?.total_tokens).toBe(42);
    expect(chunks.slice(0, -1).every((c) => c.usage === null && c.choices.length === 1)).toBe(true);
  });

  it("carries no usage when include_usage is not set", async () => {
    const stream = await client.chat.completions.create({ model: "tools", messages, stream: true });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks.every((c) => c.usage === undefined && c.choices.length === 1)).toBe(true);
    expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe("tool_calls");
  });

  it("keeps several choices apart", async () => {
    const final = await client.chat.completions
      .stream({ model: "choices", messages, n: 2 })
      .finalChatCompletion();
    expect(final.choices.map((c) => [c.index, c.message.content, c.finish_reason])).toEqual([
      [0, "Hello", "stop"],
      [1, "Bonjour", "length"],
    ]);
  });

  it("throws an APIError when the stream ends with an error event", async () => {
    const stream = await client.chat.completions.create({
      model: "broken",
      messages,
      stream: true,
    });
    const seen: string[] = [];
    let thrown: unknown;
    try {
      for await (const c of stream) seen.push(c.choices[0]?.delta.content ?? "");
    } catch (err) {
      thrown = err;
    }
    expect(seen.join("")).toBe("Let me check.");
    expect(thrown).toBeInstanceOf(OpenAI.APIError);
    const e = thrown as InstanceType<typeof OpenAI.APIError>;
    expect(e.message).toBe("upstream stream broke");
    expect(e.type).toBe("server_error");
    expect(e.code).toBe("upstream_reset");
  });
});

describe("the openai SDK reading rendered bodies", () => {
  it("parses a rendered completion", async () => {
    const c = await client.chat.completions.create({ model: "whole", messages });
    expect(c.choices[0]?.message.content).toBe("Let me check.");
    expect(c.choices[0]?.message.tool_calls?.[0]).toEqual({
      id: "call_w",
      type: "function",
      function: { name: "get_weather", arguments: args },
    });
    expect(c.usage?.prompt_tokens_details?.cached_tokens).toBe(8);
  });

  it("raises a RateLimitError with the Retry-After from a rendered error", async () => {
    let thrown: unknown;
    try {
      await client.chat.completions.create({ model: "limited", messages });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(OpenAI.RateLimitError);
    const e = thrown as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.status).toBe(429);
    expect(e.code).toBe("rate_limit_exceeded");
    expect(e.message).toBe("429 tenant acme is over its rpm");
    expect(e.headers.get("retry-after")).toBe("2");
  });
});
