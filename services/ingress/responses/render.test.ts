import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ChatChunk,
  ChatChunkSchema,
  ChatCompletionSchema,
  FinishReason,
  Role,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import type { ResponsesEcho } from "./parse-request.js";
import { ResponseStreamRenderer, renderResponse } from "./render.js";

// What the renderers emit, read back through the official openai SDK from a real HTTP server:
// its stream accumulator throws on an event that does not fit the items before it.

const chunk = (init: MessageInitShape<typeof ChatChunkSchema>): ChatChunk =>
  create(ChatChunkSchema, init);
const start = {
  id: "x",
  created: 1700000000n,
  upstreamModel: "up-model",
  provider: "p",
  attempts: 1,
};
const echo: ResponsesEcho = {
  encrypted_reasoning: false,
  instructions: null,
  max_output_tokens: null,
  metadata: {},
  parallel_tool_calls: true,
  reasoning: { effort: null, summary: null },
  temperature: null,
  text: { format: { type: "text" } },
  tool_choice: "auto",
  tools: [],
  top_p: null,
  truncation: "disabled",
  user: null,
};

/** Reasoning, text, a refusal, then two tool calls whose argument fragments interleave. */
const mixed: ChatChunk[] = [
  chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, reasoning: "Think" }] }),
  chunk({ choices: [{ index: 0, reasoning: "ing." }] }),
  chunk({ choices: [{ index: 0, content: "Hel" }] }),
  chunk({ choices: [{ index: 0, content: "lo" }] }),
  chunk({ choices: [{ index: 0, refusal: "No." }] }),
  chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, id: "call_a", name: "f" }] }] }),
  chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: '{"a"' }] }] }),
  chunk({
    choices: [
      {
        index: 0,
        toolCalls: [
          { index: 1, id: "call_b", name: "g", arguments: "{}" },
          { index: 0, arguments: ":1}" },
        ],
      },
    ],
  }),
  chunk({
    choices: [{ index: 0, finishReason: FinishReason.TOOL_CALLS }],
    usage: { promptTokens: 9, completionTokens: 5, totalTokens: 14, reasoningTokens: 2 },
  }),
];
const cut: ChatChunk[] = [
  chunk({ start, choices: [{ index: 0, content: "Trunc" }] }),
  chunk({
    choices: [{ index: 0, finishReason: FinishReason.LENGTH }],
    usage: { promptTokens: 3, completionTokens: 16, totalTokens: 19 },
  }),
];

function sse(chunks: ChatChunk[]): string {
  const r = new ResponseStreamRenderer("public", echo);
  return chunks.map((c) => r.render(c)).join("") + r.finish();
}

let server: Server;
let client: OpenAI;

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => {
      body += d;
    });
    req.on("end", () => {
      const { model } = JSON.parse(body) as { model: string };
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(sse(model === "cut" ? cut : mixed));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "x", maxRetries: 0 });
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe("ResponseStreamRenderer", () => {
  it("streams reasoning, text, refusal and interleaved calls the SDK accumulates", async () => {
    const final = await client.responses.stream({ model: "mixed", input: "x" }).finalResponse();
    expect(final.status).toBe("completed");
    expect(final.model).toBe("up-model");
    expect(final.output.map((o) => o.type)).toEqual([
      "reasoning",
      "message",
      "function_call",
      "function_call",
    ]);
    const [reasoning, message, a, b] = final.output;
    expect(reasoning).toMatchObject({ summary: [{ type: "summary_text", text: "Thinking." }] });
    expect(message).toMatchObject({
      status: "completed",
      content: [
        { type: "output_text", text: "Hello" },
        { type: "refusal", refusal: "No." },
      ],
    });
    expect(a).toMatchObject({ call_id: "call_a", name: "f", arguments: '{"a":1}' });
    expect(b).toMatchObject({ call_id: "call_b", name: "g", arguments: "{}" });
    expect(final.usage).toMatchObject({
      input_tokens: 9,
      output_tokens: 5,
      total_tokens: 14,
      output_tokens_details: { reasoning_tokens: 2 },
    });
  });

  it("ends an answer cut by its token limit with response.incomplete", async () => {
    const stream = await client.responses.create({ model: "cut", input: "x", stream: true });
    const types: string[] = [];
    let last: unknown;
    for await (const e of stream) {
      types.push(e.type);
      last = e;
    }
    expect(types).not.toContain("response.completed");
    expect(last).toMatchObject({
      type: "response.incomplete",
      response: { status: "incomplete", incomplete_details: { reason: "max_output_tokens" } },
    });
  });
});

describe("renderResponse", () => {
  it("renders a whole answer's reasoning, message and calls as output items", () => {
    const completion = create(ChatCompletionSchema, {
      created: 1700000000n,
      upstreamModel: "",
      choices: [
        {
          index: 0,
          reasoning: "Because.",
          message: {
            role: Role.ASSISTANT,
            content: [{ part: { case: "text", value: "Hi" } }],
            toolCalls: [{ id: "call_z", name: "f", arguments: "{}" }],
          },
          finishReason: FinishReason.LENGTH,
        },
      ],
      usage: { promptTokens: 1, completionTokens: 2, totalTokens: 3, cachedPromptTokens: 1 },
    });
    const r = renderResponse(completion, "public", echo);
    expect(r).toMatchObject({
      object: "response",
      created_at: 1700000000,
      model: "public",
      status: "incomplete",
      incomplete_details: { reason: "max_output_tokens" },
      store: false,
      usage: { input_tokens: 1, output_tokens: 2, input_tokens_details: { cached_tokens: 1 } },
      output: [
        { type: "reasoning", summary: [{ type: "summary_text", text: "Because." }] },
        { type: "message", status: "incomplete", content: [{ type: "output_text", text: "Hi" }] },
        { type: "function_call", call_id: "call_z", name: "f", arguments: "{}" },
      ],
    });
  });
});
