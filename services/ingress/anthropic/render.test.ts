import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type ChatChunk,
  ChatChunkSchema,
  ChatCompletionSchema,
  FinishReason,
  Role,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { aggregate } from "../../lib/chat/aggregate.js";
import { Failure } from "../../lib/errors.js";
import {
  anthropicStopReason,
  MessageStreamRenderer,
  partialToolInput,
  renderMessage,
} from "./render.js";

type ChunkInit = MessageInitShape<typeof ChatChunkSchema>;
const chunk = (init: ChunkInit): ChatChunk => create(ChatChunkSchema, init);

const start = {
  id: "msg_abc",
  created: 1700000000n,
  upstreamModel: "claude-sonnet-4-5-20250929",
  provider: "anthropic",
  attempts: 1,
};

/** One SSE event exactly as Anthropic frames it. */
const ev = (data: { type: string } & Record<string, unknown>): string =>
  `event: ${data.type}\ndata: ${JSON.stringify(data)}\n\n`;

const messageStart = (usage: Record<string, unknown>) =>
  ev({
    type: "message_start",
    message: {
      id: "msg_abc",
      type: "message",
      role: "assistant",
      model: "claude-sonnet-4-5-20250929",
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage,
    },
  });

function failureOf(run: () => unknown): Failure {
  try {
    run();
  } catch (err) {
    if (err instanceof Failure) return err;
    throw err;
  }
  throw new Error("expected a Failure");
}

describe("renderMessage", () => {
  it("renders a text answer as Anthropic does", () => {
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [
        {
          index: 0,
          message: {
            role: Role.ASSISTANT,
            content: [{ part: { case: "text", value: "Hello!" } }],
            contentIsText: true,
          },
          finishReason: FinishReason.STOP,
          rawFinishReason: "end_turn",
        },
      ],
      usage: { promptTokens: 12, completionTokens: 3, totalTokens: 15 },
    });
    expect(JSON.stringify(renderMessage(c))).toBe(
      '{"id":"msg_abc","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",' +
        '"content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","stop_sequence":null,' +
        '"usage":{"input_tokens":12,"output_tokens":3}}',
    );
  });

  it("renders thinking, text and tool calls in that order, with cached and thinking tokens", () => {
    const c = create(ChatCompletionSchema, {
      id: "chatcmpl-1",
      upstreamModel: "o4-mini",
      choices: [
        {
          index: 0,
          message: {
            role: Role.ASSISTANT,
            content: [{ part: { case: "text", value: "Checking." } }],
            toolCalls: [
              { id: "call_1", name: "get_weather", arguments: '{"city": "Paris"}' },
              { id: "call_2", name: "get_time", arguments: "" },
            ],
          },
          finishReason: FinishReason.TOOL_CALLS,
          rawFinishReason: "tool_calls",
          reasoning: "Need weather.",
        },
      ],
      usage: {
        promptTokens: 100,
        completionTokens: 20,
        totalTokens: 120,
        cachedPromptTokens: 64,
        reasoningTokens: 8,
      },
    });
    expect(JSON.stringify(renderMessage(c))).toBe(
      '{"id":"chatcmpl-1","type":"message","role":"assistant","model":"o4-mini","content":[' +
        '{"type":"thinking","thinking":"Need weather.","signature":""},' +
        '{"type":"text","text":"Checking."},' +
        '{"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},' +
        '{"type":"tool_use","id":"call_2","name":"get_time","input":{}}],' +
        '"stop_reason":"tool_use","stop_sequence":null,' +
        '"usage":{"input_tokens":36,"cache_read_input_tokens":64,"output_tokens":20,"output_tokens_details":{"thinking_tokens":8}}}',
    );
  });

  it("says tool_use when an OpenAI-compatible upstream stopped with 'stop' after calling tools", () => {
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [
        {
          index: 0,
          message: { role: Role.ASSISTANT, toolCalls: [{ id: "c", name: "f", arguments: "{}" }] },
          finishReason: FinishReason.STOP,
          rawFinishReason: "stop",
        },
      ],
    });
    expect(renderMessage(c).stop_reason).toBe("tool_use");
  });

  it("names the stop sequence when the request had exactly one", () => {
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [
        {
          index: 0,
          message: { role: Role.ASSISTANT, content: [{ part: { case: "text", value: "1, 2" } }] },
          finishReason: FinishReason.STOP,
          rawFinishReason: "stop_sequence",
        },
      ],
    });
    const one = renderMessage(c, { stopSequences: [", 3"] });
    expect([one.stop_reason, one.stop_sequence]).toEqual(["stop_sequence", ", 3"]);
    const two = renderMessage(c, { stopSequences: [", 3", "END"] });
    expect([two.stop_reason, two.stop_sequence]).toEqual(["stop_sequence", null]);
  });

  it("renders a refusal as text and falls back to the public model and zero usage", () => {
    const c = create(ChatCompletionSchema, {
      id: "x",
      choices: [
        {
          index: 0,
          message: { role: Role.ASSISTANT, refusal: "I can't help with that." },
          finishReason: FinishReason.CONTENT_FILTER,
        },
      ],
    });
    const m = renderMessage(c, { publicModel: "claude" });
    expect(m.model).toBe("claude");
    expect(m.content).toEqual([{ type: "text", text: "I can't help with that." }]);
    expect(m.stop_reason).toBe("refusal");
    expect(m.usage).toEqual({ input_tokens: 0, output_tokens: 0 });
  });

  it("gives a call without an id a deterministic one the client can answer", () => {
    const c = create(ChatCompletionSchema, {
      id: "gen:1/2",
      choices: [
        {
          index: 0,
          message: { role: Role.ASSISTANT, toolCalls: [{ name: "f", arguments: "{}" }] },
          finishReason: FinishReason.TOOL_CALLS,
        },
      ],
    });
    expect(renderMessage(c).content[0]).toEqual({
      type: "tool_use",
      id: "toolu_gen_1_2_0",
      name: "f",
      input: {},
    });
  });

  it.each([
    ["truncated JSON (the answer not cut short)", '{"city": "Par', FinishReason.TOOL_CALLS],
    ["a JSON array", "[1, 2]", FinishReason.LENGTH],
    ["a JSON string", '"Paris"', FinishReason.LENGTH],
  ])("fails with a 502 rather than invent an input for %s arguments", (_name, args, finish) => {
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [
        {
          index: 0,
          message: {
            role: Role.ASSISTANT,
            toolCalls: [{ id: "c", name: "get_weather", arguments: args }],
          },
          finishReason: finish,
        },
      ],
    });
    const f = failureOf(() => renderMessage(c));
    expect(f.status).toBe(502);
    expect(f.kind).toBe("upstream_error");
    expect(f.message).toBe(
      "the model called tool 'get_weather' with arguments that are not a JSON object, which an Anthropic tool_use block cannot hold",
    );
  });

  it("renders only choice 0", () => {
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [
        { index: 1, message: { content: [{ part: { case: "text", value: "second" } }] } },
        { index: 0, message: { content: [{ part: { case: "text", value: "first" } }] } },
      ],
    });
    expect(renderMessage(c).content).toEqual([{ type: "text", text: "first" }]);
  });
});

describe("a tool call that max_tokens cut off mid-JSON", () => {
  const cut = '{"path": "/tmp/x.ts", "content": "export const a = 1;\\nexport con';

  it("is answered whole as far as it got, with stop_reason max_tokens", () => {
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [
        {
          index: 0,
          message: {
            role: Role.ASSISTANT,
            toolCalls: [{ id: "toolu_1", name: "write_file", arguments: cut }],
          },
          finishReason: FinishReason.LENGTH,
        },
      ],
    });
    const m = renderMessage(c);
    expect(m.stop_reason).toBe("max_tokens");
    expect(m.content).toEqual([
      {
        type: "tool_use",
        id: "toolu_1",
        name: "write_file",
        input: { path: "/tmp/x.ts", content: "export const a = 1;\nexport con" },
      },
    ]);
  });

  it("streams its fragments as they came, then closes the block and stops as Anthropic does", () => {
    const r = new MessageStreamRenderer();
    let out = r.render(
      chunk({
        start,
        choices: [
          {
            index: 0,
            toolCalls: [{ index: 0, id: "toolu_1", name: "write_file", arguments: cut }],
          },
        ],
      }),
    );
    out += r.render(chunk({ choices: [{ index: 0, finishReason: FinishReason.LENGTH }] }));
    out += r.finish();
    expect(out).toContain(
      ev({
        type: "content_block_delta",
        index: 0,
        delta: { type: "input_json_delta", partial_json: cut },
      }),
    );
    expect(out).toContain(ev({ type: "content_block_stop", index: 0 }));
    expect(out).toContain('"stop_reason":"max_tokens"');
    expect(out.endsWith(ev({ type: "message_stop" }))).toBe(true);
  });

  it.each([
    ['{"a": 1, "b": "x', { a: 1, b: "x" }],
    ['{"a": 1, "b', { a: 1 }],
    ['{"a": 1, "b":', { a: 1 }],
    ['{"a": [1, 2, {"c": tr', { a: [1, 2] }],
    ['{"a": "ends in a backslash \\', { a: "ends in a backslash " }],
    ["{", {}],
    ["", {}],
  ])("keeps what holds together of %s", (args, expected) => {
    expect(partialToolInput(args)).toEqual(expected);
  });
});

describe("usage with cache writes", () => {
  it("says how many of them live five minutes and how many an hour, as Anthropic does", () => {
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [
        {
          index: 0,
          message: { role: Role.ASSISTANT, content: [] },
          finishReason: FinishReason.STOP,
        },
      ],
      usage: {
        promptTokens: 1225,
        completionTokens: 17,
        totalTokens: 1242,
        cacheWritePromptTokens: 1200,
        cacheWrite1hPromptTokens: 1000,
        cachedPromptTokens: 0,
      },
    });
    expect(renderMessage(c).usage).toEqual({
      input_tokens: 25,
      cache_creation_input_tokens: 1200,
      cache_read_input_tokens: 0,
      cache_creation: { ephemeral_5m_input_tokens: 200, ephemeral_1h_input_tokens: 1000 },
      output_tokens: 17,
    });
  });
});

/**
 * An Anthropic upstream's answer as the connector translates it: each block numbered, two text
 * blocks in a row (the second with a citation), a server tool call and its result.
 */
const numberedAnswer = [
  chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, reasoning: "Hm." }] }),
  chunk({
    choices: [{ index: 0, reasoningBlocks: [{ text: "Hm.", signature: "sig", blockIndex: 0 }] }],
  }),
  chunk({ choices: [{ index: 0, content: "One.", blockIndex: 1 }] }),
  chunk({ choices: [{ index: 0, citationsJson: '[{"url":"https://a.example"}]', blockIndex: 2 }] }),
  chunk({ choices: [{ index: 0, content: "Two.", blockIndex: 2 }] }),
  chunk({
    choices: [
      {
        index: 0,
        anthropicBlock: {
          json: '{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"q"}}',
          blockIndex: 3,
        },
      },
    ],
  }),
  chunk({
    choices: [
      {
        index: 0,
        anthropicBlock: {
          json: '{"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]}',
          blockIndex: 4,
        },
      },
    ],
  }),
  chunk({
    choices: [
      {
        index: 0,
        toolCalls: [{ index: 0, id: "toolu_1", name: "f", arguments: "{}", blockIndex: 5 }],
      },
    ],
  }),
  chunk({
    choices: [{ index: 0, finishReason: FinishReason.TOOL_CALLS, rawFinishReason: "tool_use" }],
  }),
];

describe("an Anthropic upstream's numbered blocks", () => {
  it("are rendered whole in their order, two text blocks apart, each with its citations", () => {
    expect(renderMessage(aggregate(numberedAnswer)).content).toEqual([
      { type: "thinking", thinking: "Hm.", signature: "sig" },
      { type: "text", text: "One." },
      { type: "text", text: "Two.", citations: [{ url: "https://a.example" }] },
      { type: "server_tool_use", id: "srvtoolu_1", name: "web_search", input: { query: "q" } },
      { type: "web_search_tool_result", tool_use_id: "srvtoolu_1", content: [] },
      { type: "tool_use", id: "toolu_1", name: "f", input: {} },
    ]);
  });
});

describe("usage with a service tier and server tool requests", () => {
  it("names the tier in a whole answer and message_start, the requests in message_delta too", () => {
    const usage = {
      promptTokens: 10,
      completionTokens: 5,
      totalTokens: 15,
      serviceTier: "priority",
      serverToolUseJson: '{"web_search_requests":2}',
    };
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [{ index: 0, message: { role: Role.ASSISTANT }, finishReason: FinishReason.STOP }],
      usage,
    });
    expect(renderMessage(c).usage).toEqual({
      input_tokens: 10,
      output_tokens: 5,
      server_tool_use: { web_search_requests: 2 },
      service_tier: "priority",
    });
    const r = new MessageStreamRenderer();
    const frames = r.render(chunk({ start, usage })) + r.finish();
    expect(frames).toContain(
      '"usage":{"input_tokens":10,"output_tokens":5,"server_tool_use":{"web_search_requests":2},"service_tier":"priority"}}}',
    );
    expect(frames).toContain(
      '"usage":{"input_tokens":10,"output_tokens":5,"server_tool_use":{"web_search_requests":2}}}',
    );
  });
});

describe("the container Anthropic ran code in", () => {
  const container = { id: "container_011", expires_at: "2026-01-01T00:00:00Z", skills: null };

  it("is named in a whole answer and in message_delta, as Anthropic names it", () => {
    const choice = {
      index: 0,
      message: {
        role: Role.ASSISTANT,
        content: [{ part: { case: "text" as const, value: "Ran." } }],
      },
      finishReason: FinishReason.STOP,
      rawFinishReason: "end_turn",
      anthropicContainerJson: JSON.stringify(container),
    };
    expect(
      renderMessage(create(ChatCompletionSchema, { ...start, choices: [choice] })),
    ).toMatchObject({
      stop_reason: "end_turn",
      container,
    });
    const r = new MessageStreamRenderer();
    const frames =
      r.render(chunk({ start, choices: [{ index: 0, content: "Ran." }] })) +
      r.render(
        chunk({
          choices: [
            {
              index: 0,
              finishReason: FinishReason.STOP,
              rawFinishReason: "end_turn",
              anthropicContainerJson: JSON.stringify(container),
            },
          ],
        }),
      ) +
      r.finish();
    expect(frames).toContain(
      ev({
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null, container },
        usage: { input_tokens: 0, output_tokens: 0 },
      }),
    );
  });

  it("is left out when the answer used none", () => {
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [{ index: 0, message: { role: Role.ASSISTANT }, finishReason: FinishReason.STOP }],
    });
    expect(renderMessage(c)).not.toHaveProperty("container");
    const r = new MessageStreamRenderer();
    expect(r.render(chunk({ start })) + r.finish()).not.toContain("container");
  });
});

describe("anthropicStopReason", () => {
  it.each<[FinishReason, string | undefined, boolean, string]>([
    [FinishReason.STOP, undefined, false, "end_turn"],
    [FinishReason.STOP, "stop", false, "end_turn"],
    [FinishReason.STOP, "stop_sequence", false, "stop_sequence"],
    [FinishReason.STOP, "stop", true, "tool_use"],
    [FinishReason.LENGTH, "length", false, "max_tokens"],
    [FinishReason.LENGTH, "MAX_TOKENS", false, "max_tokens"],
    [FinishReason.LENGTH, "model_context_window_exceeded", false, "model_context_window_exceeded"],
    [FinishReason.TOOL_CALLS, "tool_calls", true, "tool_use"],
    [FinishReason.CONTENT_FILTER, "SAFETY", false, "refusal"],
    [FinishReason.OTHER, "pause_turn", false, "pause_turn"],
    // A word no canonical reason names passes on: a failed turn must not read as finished.
    [FinishReason.OTHER, "abort", false, "abort"],
    [FinishReason.OTHER, "abort", true, "abort"],
    [FinishReason.OTHER, undefined, false, "end_turn"],
    [FinishReason.UNSPECIFIED, undefined, false, "end_turn"],
    // Anthropic's word is kept only where it agrees with the canonical reason.
    [FinishReason.LENGTH, "end_turn", false, "max_tokens"],
  ])("maps %s with raw %s (tools: %s) to %s", (reason, raw, tools, expected) => {
    expect(anthropicStopReason(reason, raw, tools)).toBe(expected);
  });
});

describe("MessageStreamRenderer", () => {
  it("frames a text stream byte for byte, holding message_delta until finish for late usage", () => {
    const r = new MessageStreamRenderer();
    const frames = [
      r.render(chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, content: "" }] })),
      r.render(chunk({ choices: [{ index: 0, content: "Hel" }] })),
      r.render(chunk({ choices: [{ index: 0, content: "lo" }] })),
      r.render(
        chunk({
          choices: [{ index: 0, finishReason: FinishReason.STOP, rawFinishReason: "stop" }],
        }),
      ),
      r.render(chunk({ usage: { promptTokens: 9, completionTokens: 2, totalTokens: 11 } })),
      r.finish(),
    ];
    expect(frames).toEqual([
      messageStart({ input_tokens: 0, output_tokens: 0 }),
      ev({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }) +
        ev({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hel" } }),
      ev({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "lo" } }),
      "",
      "",
      ev({ type: "content_block_stop", index: 0 }) +
        ev({
          type: "message_delta",
          delta: { stop_reason: "end_turn", stop_sequence: null },
          usage: { input_tokens: 9, output_tokens: 2 },
        }) +
        ev({ type: "message_stop" }),
    ]);
    expect(frames[0]).toBe(
      'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_abc","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}\n\n',
    );
    expect(r.finish()).toBe("");
  });

  it("takes message_start usage from the first chunk, as an Anthropic upstream reports it", () => {
    const r = new MessageStreamRenderer();
    const first = r.render(
      chunk({
        start,
        choices: [{ index: 0, role: Role.ASSISTANT }],
        usage: { promptTokens: 30, completionTokens: 1, totalTokens: 31, cachedPromptTokens: 20 },
      }),
    );
    expect(first).toBe(
      messageStart({ input_tokens: 10, cache_read_input_tokens: 20, output_tokens: 1 }),
    );
  });

  it("frames thinking, then text, then tool calls streamed in fragments", () => {
    const r = new MessageStreamRenderer();
    const out = [
      r.render(chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, reasoning: "Hmm" }] })),
      r.render(chunk({ choices: [{ index: 0, reasoning: "." }] })),
      r.render(chunk({ choices: [{ index: 0, content: "Let me check." }] })),
      r.render(
        chunk({
          choices: [
            {
              index: 0,
              toolCalls: [{ index: 0, id: "toolu_1", name: "get_weather", arguments: "" }],
            },
          ],
        }),
      ),
      r.render(chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: '{"ci' }] }] })),
      r.render(
        chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: 'ty":"P"}' }] }] }),
      ),
      r.render(
        chunk({
          choices: [{ index: 0, toolCalls: [{ index: 1, id: "toolu_2", name: "get_time" }] }],
        }),
      ),
      r.render(chunk({ choices: [{ index: 0, toolCalls: [{ index: 1, arguments: "{}" }] }] })),
      r.render(
        chunk({
          choices: [
            { index: 0, finishReason: FinishReason.TOOL_CALLS, rawFinishReason: "tool_use" },
          ],
          usage: { promptTokens: 50, completionTokens: 25, totalTokens: 75, reasoningTokens: 3 },
        }),
      ),
      r.finish(),
    ];
    expect(out).toEqual([
      messageStart({ input_tokens: 0, output_tokens: 0 }) +
        ev({
          type: "content_block_start",
          index: 0,
          content_block: { type: "thinking", thinking: "", signature: "" },
        }) +
        ev({
          type: "content_block_delta",
          index: 0,
          delta: { type: "thinking_delta", thinking: "Hmm" },
        }),
      ev({
        type: "content_block_delta",
        index: 0,
        delta: { type: "thinking_delta", thinking: "." },
      }),
      ev({ type: "content_block_stop", index: 0 }) +
        ev({ type: "content_block_start", index: 1, content_block: { type: "text", text: "" } }) +
        ev({
          type: "content_block_delta",
          index: 1,
          delta: { type: "text_delta", text: "Let me check." },
        }),
      ev({ type: "content_block_stop", index: 1 }) +
        ev({
          type: "content_block_start",
          index: 2,
          content_block: { type: "tool_use", id: "toolu_1", name: "get_weather", input: {} },
        }),
      ev({
        type: "content_block_delta",
        index: 2,
        delta: { type: "input_json_delta", partial_json: '{"ci' },
      }),
      ev({
        type: "content_block_delta",
        index: 2,
        delta: { type: "input_json_delta", partial_json: 'ty":"P"}' },
      }),
      // The second call waits one fragment: the first one might still go on.
      "",
      ev({ type: "content_block_stop", index: 2 }) +
        ev({
          type: "content_block_start",
          index: 3,
          content_block: { type: "tool_use", id: "toolu_2", name: "get_time", input: {} },
        }) +
        ev({
          type: "content_block_delta",
          index: 3,
          delta: { type: "input_json_delta", partial_json: "{}" },
        }),
      "",
      ev({ type: "content_block_stop", index: 3 }) +
        ev({
          type: "message_delta",
          delta: { stop_reason: "tool_use", stop_sequence: null },
          usage: {
            input_tokens: 50,
            output_tokens: 25,
            output_tokens_details: { thinking_tokens: 3 },
          },
        }) +
        ev({ type: "message_stop" }),
    ]);
  });

  it("holds a call that opens while another is open, and opens its block when it goes on", () => {
    const r = new MessageStreamRenderer();
    let out = r.render(
      chunk({
        start,
        choices: [
          {
            index: 0,
            toolCalls: [{ index: 0, id: "call_w", name: "get_weather", arguments: '{"city":' }],
          },
        ],
      }),
    );
    out += r.render(
      chunk({
        choices: [
          {
            index: 0,
            toolCalls: [
              { index: 1, id: "call_t", name: "get_time", arguments: '{"tz":' },
              { index: 0, arguments: ' "Zürich"}' },
            ],
          },
        ],
      }),
    );
    out += r.render(chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: "" }] }] }));
    out += r.render(
      chunk({ choices: [{ index: 0, toolCalls: [{ index: 1, arguments: '"CET"}' }] }] }),
    );
    out += r.finish();
    const events = parseEvents(out);
    expect(events.map((e) => [e.type, e.index])).toEqual([
      ["message_start", undefined],
      ["content_block_start", 0],
      ["content_block_delta", 0],
      ["content_block_delta", 0],
      ["content_block_stop", 0],
      ["content_block_start", 1],
      ["content_block_delta", 1],
      ["content_block_stop", 1],
      ["message_delta", undefined],
      ["message_stop", undefined],
    ]);
    expect(events[5]?.content_block).toEqual({
      type: "tool_use",
      id: "call_t",
      name: "get_time",
      input: {},
    });
    expect(events.slice(2, 4).map((e) => e.delta)).toEqual([
      { type: "input_json_delta", partial_json: '{"city":' },
      { type: "input_json_delta", partial_json: ' "Zürich"}' },
    ]);
    // What the held call gathered while it waited arrives in one delta.
    expect(events[6]?.delta).toEqual({ type: "input_json_delta", partial_json: '{"tz":"CET"}' });
  });

  it("keeps parallel calls whose fragments come in turns apart, each whole", () => {
    // As some OpenAI-compatible servers stream two calls: a fragment of one, then the other.
    const fragments: Array<[number, string, string?]> = [
      [0, "", "fa"],
      [1, '{"b":', "fb"],
      [0, '{"a":1'],
      [1, "2}"],
      [0, "}"],
    ];
    const r = new MessageStreamRenderer();
    let out = "";
    for (const [i, [index, args, name]] of fragments.entries()) {
      const call = { index, arguments: args, ...(name && { id: `call_${name}`, name }) };
      out += r.render(
        chunk({ ...(i === 0 && { start }), choices: [{ index: 0, toolCalls: [call] }] }),
      );
    }
    out += r.finish();
    const message = reassemble(parseEvents(out)) as { content: unknown[] };
    expect(message.content).toEqual([
      { type: "tool_use", id: "call_fa", name: "fa", input: { a: 1 } },
      { type: "tool_use", id: "call_fb", name: "fb", input: { b: 2 } },
    ]);
  });

  it("refuses a held call whose arguments never became a JSON object", () => {
    const r = new MessageStreamRenderer();
    r.render(
      chunk({
        start,
        choices: [{ index: 0, toolCalls: [{ index: 0, id: "a", name: "f", arguments: "{}" }] }],
      }),
    );
    r.render(
      chunk({
        choices: [{ index: 0, toolCalls: [{ index: 1, id: "b", name: "g", arguments: "{" }] }],
      }),
    );
    r.render(chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: "" }] }] }));
    const f = failureOf(() => r.finish());
    expect(f.status).toBe(502);
    expect(f.message).toContain("tool 'g'");
  });

  it("sends a whole non-streamed answer's parallel calls as consecutive blocks", () => {
    const whole = chunk({
      start,
      choices: [
        {
          index: 0,
          role: Role.ASSISTANT,
          content: "Both.",
          toolCalls: [
            { index: 0, id: "a", name: "f", arguments: '{"x":1}' },
            { index: 1, id: "b", name: "g", arguments: '{"y":2}' },
          ],
          finishReason: FinishReason.TOOL_CALLS,
        },
      ],
      usage: { promptTokens: 5, completionTokens: 6, totalTokens: 11 },
    });
    const r = new MessageStreamRenderer();
    const events = parseEvents(r.render(whole) + r.finish());
    expect(events.map((e) => [e.type, e.index])).toEqual([
      ["message_start", undefined],
      ["content_block_start", 0],
      ["content_block_delta", 0],
      ["content_block_stop", 0],
      ["content_block_start", 1],
      ["content_block_delta", 1],
      ["content_block_stop", 1],
      ["content_block_start", 2],
      ["content_block_delta", 2],
      ["content_block_stop", 2],
      ["message_delta", undefined],
      ["message_stop", undefined],
    ]);
    expect(events[8]?.delta).toEqual({ type: "input_json_delta", partial_json: '{"y":2}' });
    expect(events[10]?.usage).toEqual({ input_tokens: 5, output_tokens: 6 });
  });

  it("fails a call that goes on after other content closed its block", () => {
    const r = new MessageStreamRenderer();
    r.render(
      chunk({
        start,
        choices: [{ index: 0, toolCalls: [{ index: 0, id: "a", name: "f", arguments: "{" }] }],
      }),
    );
    // The text closes the tool block; its arguments are checked as it closes.
    const early = failureOf(() => r.render(chunk({ choices: [{ index: 0, content: "x" }] })));
    expect(early.message).toContain("tool 'f'");

    const s = new MessageStreamRenderer();
    s.render(
      chunk({
        start,
        choices: [{ index: 0, toolCalls: [{ index: 0, id: "a", name: "f", arguments: "{}" }] }],
      }),
    );
    s.render(chunk({ choices: [{ index: 0, content: "then text" }] }));
    const late = failureOf(() =>
      s.render(chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: " " }] }] })),
    );
    expect(late.status).toBe(502);
    expect(late.message).toBe(
      "tool call 0 went on after its block was closed, which an Anthropic stream cannot hold",
    );
  });

  it("opens the message even for a stream that ends without content or start", () => {
    const r = new MessageStreamRenderer({ publicModel: "claude" });
    const events = parseEvents(r.finish());
    expect(events.map((e) => e.type)).toEqual(["message_start", "message_delta", "message_stop"]);
    const message = events[0]?.message as { id: string; model: string };
    expect(message.id).toMatch(/^msg_[0-9a-f]{32}$/);
    expect(message.model).toBe("claude");
  });

  it("ignores choices other than 0 and names a single stop sequence", () => {
    const r = new MessageStreamRenderer({ stopSequences: ["###"] });
    const out =
      r.render(
        chunk({
          start,
          choices: [
            { index: 1, content: "other" },
            { index: 0, content: "one" },
          ],
        }),
      ) +
      r.render(
        chunk({
          choices: [
            { index: 0, finishReason: FinishReason.STOP, rawFinishReason: "stop_sequence" },
          ],
        }),
      ) +
      r.finish();
    const events = parseEvents(out);
    expect(events.filter((e) => e.type === "content_block_delta").map((e) => e.delta)).toEqual([
      { type: "text_delta", text: "one" },
    ]);
    expect(events.at(-2)?.delta).toEqual({ stop_reason: "stop_sequence", stop_sequence: "###" });
  });

  it("frames a mid-stream failure as an Anthropic error event, with no message_stop after", () => {
    const r = new MessageStreamRenderer();
    r.render(chunk({ start, choices: [{ index: 0, content: "Hel" }] }));
    const f = new Failure({ status: 502, kind: "upstream_error", message: "upstream reset" });
    expect(r.error(f)).toBe(
      'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"upstream reset"}}\n\n',
    );
    expect(r.finish()).toBe("");
    expect(r.render(chunk({ choices: [{ index: 0, content: "lo" }] }))).toBe("");
  });

  it("ends a thinking block with its signature, and sends redacted thinking as a block of its own", () => {
    const r = new MessageStreamRenderer();
    const out = [
      r.render(chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, reasoning: "Hm" }] })),
      r.render(chunk({ choices: [{ index: 0, reasoning: "m." }] })),
      r.render(
        chunk({ choices: [{ index: 0, reasoningBlocks: [{ text: "Hmm.", signature: "sig_1" }] }] }),
      ),
      r.render(chunk({ choices: [{ index: 0, reasoningBlocks: [{ redactedData: "enc_1" }] }] })),
      // A signed block whose text the stream did not show (Anthropic's omitted display).
      r.render(chunk({ choices: [{ index: 0, reasoningBlocks: [{ signature: "sig_2" }] }] })),
      r.render(chunk({ choices: [{ index: 0, content: "Done." }] })),
    ].join("");
    const events = parseEvents(out).slice(1);
    expect(events).toEqual([
      {
        type: "content_block_start",
        index: 0,
        content_block: { type: "thinking", thinking: "", signature: "" },
      },
      { type: "content_block_delta", index: 0, delta: { type: "thinking_delta", thinking: "Hm" } },
      { type: "content_block_delta", index: 0, delta: { type: "thinking_delta", thinking: "m." } },
      {
        type: "content_block_delta",
        index: 0,
        delta: { type: "signature_delta", signature: "sig_1" },
      },
      { type: "content_block_stop", index: 0 },
      {
        type: "content_block_start",
        index: 1,
        content_block: { type: "redacted_thinking", data: "enc_1" },
      },
      { type: "content_block_stop", index: 1 },
      {
        type: "content_block_start",
        index: 2,
        content_block: { type: "thinking", thinking: "", signature: "" },
      },
      {
        type: "content_block_delta",
        index: 2,
        delta: { type: "signature_delta", signature: "sig_2" },
      },
      { type: "content_block_stop", index: 2 },
      { type: "content_block_start", index: 3, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 3, delta: { type: "text_delta", text: "Done." } },
    ]);
  });

  it("streams what renderMessage renders for the same answer, signed thinking included", () => {
    const chunks = [
      chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, reasoning: "Think" }] }),
      chunk({ choices: [{ index: 0, reasoningBlocks: [{ text: "Think", signature: "sig" }] }] }),
      chunk({ choices: [{ index: 0, reasoningBlocks: [{ redactedData: "enc" }] }] }),
      chunk({ choices: [{ index: 0, content: "Sure." }] }),
      chunk({
        choices: [{ index: 0, finishReason: FinishReason.STOP }],
        usage: { promptTokens: 4, completionTokens: 9, totalTokens: 13 },
      }),
    ];
    const r = new MessageStreamRenderer();
    let sse = "";
    for (const c of chunks) sse += r.render(c);
    sse += r.finish();
    const whole = renderMessage(aggregate(chunks));
    expect(whole.content.slice(0, 2)).toEqual([
      { type: "thinking", thinking: "Think", signature: "sig" },
      { type: "redacted_thinking", data: "enc" },
    ]);
    expect(reassemble(parseEvents(sse))).toEqual(whole);
  });

  it("streams an Anthropic upstream's numbered blocks in order, as renderMessage renders them", () => {
    const r = new MessageStreamRenderer();
    let sse = "";
    for (const c of numberedAnswer) sse += r.render(c);
    sse += r.finish();
    const events = parseEvents(sse);
    // Every block is started, filled and stopped before the next, numbered from 0.
    expect(
      events
        .filter((e) => e.type === "content_block_start" || e.type === "content_block_stop")
        .map((e) => `${e.type === "content_block_start" ? "+" : "-"}${e.index}`),
    ).toEqual(["+0", "-0", "+1", "-1", "+2", "-2", "+3", "-3", "+4", "-4", "+5", "-5"]);
    expect(events.find((e) => e.type === "content_block_start" && e.index === 3)).toEqual({
      type: "content_block_start",
      index: 3,
      content_block: { type: "server_tool_use", id: "srvtoolu_1", name: "web_search", input: {} },
    });
    expect(reassemble(events)).toEqual(renderMessage(aggregate(numberedAnswer)));
  });

  it("streams what renderMessage renders for the same answer", () => {
    const chunks = [
      chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, reasoning: "Think" }] }),
      chunk({ choices: [{ index: 0, content: "Sure: " }] }),
      chunk({
        choices: [{ index: 0, toolCalls: [{ index: 0, id: "t1", name: "f", arguments: '{"a":' }] }],
      }),
      chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: "[1,2]}" }] }] }),
      chunk({
        choices: [{ index: 0, finishReason: FinishReason.TOOL_CALLS }],
        usage: { promptTokens: 4, completionTokens: 9, totalTokens: 13 },
      }),
    ];
    const r = new MessageStreamRenderer();
    let sse = "";
    for (const c of chunks) sse += r.render(c);
    sse += r.finish();
    expect(reassemble(parseEvents(sse))).toEqual(renderMessage(aggregate(chunks)));
  });
});

type Event = Record<string, unknown> & { type: string; index?: number };

function parseEvents(sse: string): Event[] {
  return sse
    .split("\n\n")
    .filter((frame) => frame !== "")
    .map((frame) => {
      const [eventLine = "", dataLine = ""] = frame.split("\n");
      const data = JSON.parse(dataLine.slice("data: ".length)) as Event;
      expect(eventLine).toBe(`event: ${data.type}`);
      return data;
    });
}

/** Folds events into a message the way Anthropic's reference describes. */
function reassemble(events: Event[]): unknown {
  const start = events[0]?.message as Record<string, unknown>;
  const content: Record<string, unknown>[] = [];
  const json: string[] = [];
  let message = { ...start };
  for (const e of events.slice(1)) {
    const i = e.index ?? 0;
    if (e.type === "content_block_start") {
      content[i] = { ...(e.content_block as Record<string, unknown>) };
      json[i] = "";
    } else if (e.type === "content_block_delta") {
      const d = e.delta as Record<string, string>;
      const block = content[i] as Record<string, unknown>;
      if (d.type === "text_delta") block.text = `${block.text}${d.text}`;
      if (d.type === "thinking_delta") block.thinking = `${block.thinking}${d.thinking}`;
      if (d.type === "signature_delta") block.signature = `${block.signature}${d.signature}`;
      if (d.type === "input_json_delta") json[i] += d.partial_json ?? "";
      if (e.delta && (e.delta as { type: string }).type === "citations_delta") {
        block.citations = [
          ...((block.citations as unknown[]) ?? []),
          (e.delta as { citation: unknown }).citation,
        ];
      }
    } else if (e.type === "content_block_stop") {
      const block = content[i] as Record<string, unknown>;
      if ("input" in block && json[i] !== "") block.input = JSON.parse(json[i] ?? "");
    } else if (e.type === "message_delta") {
      message = { ...message, ...(e.delta as object), usage: e.usage };
    }
  }
  return { ...message, content };
}
