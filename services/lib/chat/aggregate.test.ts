import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type ChatChunk,
  ChatChunkSchema,
  ChatCompletionSchema,
  FinishReason,
  Role,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { aggregate, CompletionBuilder } from "./aggregate.js";

type ChunkInit = MessageInitShape<typeof ChatChunkSchema>;
const chunk = (init: ChunkInit): ChatChunk => create(ChatChunkSchema, init);

const start = {
  id: "chatcmpl-1",
  created: 1700000000n,
  upstreamModel: "gpt-4o-2024-08-06",
  provider: "openai",
  attempts: 2,
  systemFingerprint: "fp_1",
};
const usage = { promptTokens: 12, completionTokens: 5, totalTokens: 17, cachedPromptTokens: 4 };

/** An Anthropic upstream's answer: thinking, text, a call, a server tool result, cited text. */
const numberedStream = [
  chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT }] }),
  chunk({ choices: [{ index: 0, reasoning: "Hm." }] }),
  chunk({
    choices: [{ index: 0, reasoningBlocks: [{ text: "Hm.", signature: "s", blockIndex: 0 }] }],
  }),
  chunk({ choices: [{ index: 0, content: "Let me ", blockIndex: 1 }] }),
  chunk({ choices: [{ index: 0, content: "check.", blockIndex: 1 }] }),
  chunk({
    choices: [{ index: 0, toolCalls: [{ index: 0, id: "toolu_1", name: "f", blockIndex: 2 }] }],
  }),
  chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: '{"a":1}' }] }] }),
  chunk({
    choices: [
      {
        index: 0,
        anthropicBlock: { json: '{"type":"web_search_tool_result"}', blockIndex: 3 },
      },
    ],
  }),
  chunk({ choices: [{ index: 0, citationsJson: '[{"url":"a"}]', blockIndex: 4 }] }),
  chunk({ choices: [{ index: 0, content: "Cited.", blockIndex: 4 }] }),
  chunk({ choices: [{ index: 0, citationsJson: '[{"url":"b"}]', blockIndex: 4 }] }),
  chunk({
    choices: [{ index: 0, finishReason: FinishReason.TOOL_CALLS, rawFinishReason: "tool_use" }],
  }),
];

describe("aggregate", () => {
  it("folds a streamed text answer into the completion a non-streamed upstream gives", () => {
    const streamed = [
      chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, content: "" }] }),
      chunk({ choices: [{ index: 0, content: "Hel" }] }),
      chunk({ choices: [{ index: 0, content: "lo, " }] }),
      chunk({ choices: [{ index: 0, content: "world" }] }),
      chunk({
        choices: [{ index: 0, finishReason: FinishReason.STOP, rawFinishReason: "stop" }],
      }),
      chunk({ usage }),
    ];
    const whole = chunk({
      start,
      choices: [
        {
          index: 0,
          role: Role.ASSISTANT,
          content: "Hello, world",
          finishReason: FinishReason.STOP,
          rawFinishReason: "stop",
        },
      ],
      usage,
    });
    const expected = create(ChatCompletionSchema, {
      ...start,
      choices: [
        {
          index: 0,
          message: {
            role: Role.ASSISTANT,
            content: [{ part: { case: "text", value: "Hello, world" } }],
            contentIsText: true,
          },
          finishReason: FinishReason.STOP,
          rawFinishReason: "stop",
        },
      ],
      usage,
    });
    expect(aggregate(streamed)).toEqual(expected);
    expect(aggregate([whole])).toEqual(expected);
  });

  it("keeps choices apart and sorts them by index", () => {
    const c = aggregate([
      chunk({ start, choices: [{ index: 1, role: Role.ASSISTANT, content: "B1" }] }),
      chunk({ choices: [{ index: 0, role: Role.ASSISTANT, content: "A1" }] }),
      chunk({
        choices: [
          { index: 0, content: "A2" },
          { index: 1, content: "B2" },
        ],
      }),
      chunk({
        choices: [
          { index: 1, finishReason: FinishReason.LENGTH, rawFinishReason: "length" },
          { index: 0, finishReason: FinishReason.STOP },
        ],
      }),
    ]);
    expect(c.choices.map((ch) => ch.index)).toEqual([0, 1]);
    expect(c.choices[0]?.message?.content[0]?.part.value).toBe("A1A2");
    expect(c.choices[1]?.message?.content[0]?.part.value).toBe("B1B2");
    expect(c.choices[0]?.finishReason).toBe(FinishReason.STOP);
    expect(c.choices[0]?.rawFinishReason).toBeUndefined();
    expect(c.choices[1]?.finishReason).toBe(FinishReason.LENGTH);
    expect(c.choices[1]?.rawFinishReason).toBe("length");
  });

  it("reassembles tool calls split into fragments, arguments byte for byte", () => {
    const argsA = '{"city": "Zürich",\n "unit":"c"}';
    const argsB = '{"q":"\\"quoted\\""}';
    const streamed = [
      chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT }] }),
      chunk({
        choices: [
          { index: 0, toolCalls: [{ index: 0, id: "call_a", name: "weather", arguments: "" }] },
        ],
      }),
      chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: argsA.slice(0, 9) }] }] }),
      chunk({
        choices: [
          {
            index: 0,
            toolCalls: [
              { index: 1, id: "call_b", name: "search", arguments: argsB.slice(0, 3) },
              { index: 0, arguments: argsA.slice(9, 20) },
            ],
          },
        ],
      }),
      chunk({ choices: [{ index: 0, toolCalls: [{ index: 1, arguments: argsB.slice(3) }] }] }),
      chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: argsA.slice(20) }] }] }),
      chunk({
        choices: [
          { index: 0, finishReason: FinishReason.TOOL_CALLS, rawFinishReason: "tool_calls" },
        ],
        usage,
      }),
    ];
    const whole = chunk({
      start,
      choices: [
        {
          index: 0,
          role: Role.ASSISTANT,
          toolCalls: [
            { index: 0, id: "call_a", name: "weather", arguments: argsA },
            { index: 1, id: "call_b", name: "search", arguments: argsB },
          ],
          finishReason: FinishReason.TOOL_CALLS,
          rawFinishReason: "tool_calls",
        },
      ],
      usage,
    });
    const c = aggregate(streamed);
    expect(c).toEqual(aggregate([whole]));
    const message = c.choices[0]?.message;
    expect(message?.content).toEqual([]);
    expect(message?.toolCalls.map((t) => [t.id, t.name, t.arguments])).toEqual([
      ["call_a", "weather", argsA],
      ["call_b", "search", argsB],
    ]);
  });

  it("concatenates reasoning and refusal text", () => {
    const c = aggregate([
      chunk({ start, choices: [{ index: 0, reasoning: "think " }] }),
      chunk({ choices: [{ index: 0, reasoning: "more" }] }),
      chunk({ choices: [{ index: 0, refusal: "I can't " }] }),
      chunk({ choices: [{ index: 0, refusal: "do that." }] }),
      chunk({ choices: [{ index: 0, finishReason: FinishReason.STOP }] }),
    ]);
    expect(c.choices[0]?.reasoning).toBe("think more");
    expect(c.choices[0]?.message?.refusal).toBe("I can't do that.");
    expect(c.choices[0]?.message?.role).toBe(Role.ASSISTANT);
  });

  it("keeps reasoning blocks whole, in the order they completed, on the message", () => {
    const first = { text: "think ", signature: "sig_1" };
    const secret = { redactedData: "enc_1" };
    const second = { text: "more", signature: "sig_2" };
    const c = aggregate([
      chunk({ start, choices: [{ index: 0, reasoning: "think " }] }),
      chunk({ choices: [{ index: 0, reasoningBlocks: [first] }] }),
      chunk({ choices: [{ index: 0, reasoningBlocks: [secret] }] }),
      chunk({ choices: [{ index: 0, reasoning: "more", reasoningBlocks: [second] }] }),
      chunk({ choices: [{ index: 0, content: "Answer." }] }),
    ]);
    expect(c.choices[0]?.reasoning).toBe("think more");
    expect(c.choices[0]?.message?.reasoningBlocks).toEqual(
      create(ChatCompletionSchema, {
        choices: [{ message: { reasoningBlocks: [first, secret, second] } }],
      }).choices[0]?.message?.reasoningBlocks,
    );
  });

  it("keeps numbered blocks in their places: text blocks apart with their citations, calls and Anthropic blocks", () => {
    const message = aggregate(numberedStream).choices[0]?.message;
    expect(message?.content.map((p) => [p.blockIndex, p.part.value, p.citationsJson])).toEqual([
      [1, "Let me check.", ""],
      [4, "Cited.", '[{"url":"a"},{"url":"b"}]'],
    ]);
    expect(message?.contentIsText).toBe(false);
    expect(message?.reasoningBlocks.map((b) => b.blockIndex)).toEqual([0]);
    expect(message?.toolCalls.map((c) => [c.blockIndex, c.id, c.arguments])).toEqual([
      [2, "toolu_1", '{"a":1}'],
    ]);
    expect(message?.anthropicBlocks.map((b) => [b.blockIndex, b.json])).toEqual([
      [3, '{"type":"web_search_tool_result"}'],
    ]);
  });

  it("leaves reasoning and refusal unset when none came", () => {
    const c = aggregate([chunk({ start, choices: [{ index: 0, content: "x" }] })]);
    expect(c.choices[0]?.reasoning).toBeUndefined();
    expect(c.choices[0]?.message?.refusal).toBeUndefined();
  });

  it("keeps the last usage and the first start", () => {
    const b = new CompletionBuilder();
    b.add(chunk({ start, choices: [{ index: 0, content: "x" }], usage: { promptTokens: 1 } }));
    b.add(chunk({ start: { ...start, id: "other" }, usage }));
    const c = b.build();
    expect(c.id).toBe("chatcmpl-1");
    expect(c.usage).toEqual(create(ChatCompletionSchema, { usage }).usage);
  });

  it("builds the same completion when asked twice", () => {
    const b = new CompletionBuilder();
    b.add(chunk({ start, choices: [{ index: 0, content: "a" }] }));
    const first = b.build();
    expect(b.build()).toEqual(first);
    b.add(chunk({ choices: [{ index: 0, content: "b" }] }));
    expect(b.build().choices[0]?.message?.content[0]?.part.value).toBe("ab");
  });

  it("gives an empty completion for no chunks", () => {
    expect(aggregate([])).toEqual(create(ChatCompletionSchema, {}));
  });
});

describe("CompletionBuilder.chunk", () => {
  /** Merges `chunks` into one and checks it stands for them all. */
  const merged = (chunks: ChatChunk[]): ChatChunk => {
    const b = new CompletionBuilder();
    for (const c of chunks) b.add(c);
    const one = b.chunk();
    expect(aggregate([one])).toEqual(aggregate(chunks));
    return one;
  };

  it("makes one chunk of a streamed text answer, with its start, finish and usage", () => {
    const one = merged([
      chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, content: "" }] }),
      chunk({ choices: [{ index: 0, content: "Hel" }] }),
      chunk({ choices: [{ index: 0, content: "lo" }] }),
      chunk({ choices: [{ index: 0, finishReason: FinishReason.STOP, rawFinishReason: "stop" }] }),
      chunk({ usage }),
    ]);
    expect(one).toEqual(
      chunk({
        start,
        choices: [
          {
            index: 0,
            role: Role.ASSISTANT,
            content: "Hello",
            finishReason: FinishReason.STOP,
            rawFinishReason: "stop",
          },
        ],
        usage,
      }),
    );
  });

  it("keeps tool calls whole, in index order, and choices apart", () => {
    const one = merged([
      chunk({
        start,
        choices: [
          { index: 1, role: Role.ASSISTANT, toolCalls: [{ index: 1, id: "b", name: "g" }] },
        ],
      }),
      chunk({ choices: [{ index: 1, toolCalls: [{ index: 0, id: "a", name: "f" }] }] }),
      chunk({ choices: [{ index: 1, toolCalls: [{ index: 1, arguments: '{"y":' }] }] }),
      chunk({ choices: [{ index: 1, toolCalls: [{ index: 0, arguments: "{}" }] }] }),
      chunk({ choices: [{ index: 1, toolCalls: [{ index: 1, arguments: "2}" }] }] }),
      chunk({ choices: [{ index: 0, reasoning: "r", refusal: "no" }] }),
    ]);
    expect(one.choices.map((c) => c.index)).toEqual([0, 1]);
    expect(one.choices[0]).toMatchObject({ reasoning: "r", refusal: "no" });
    expect(one.choices[0]?.content).toBeUndefined();
    expect(one.choices[1]?.role).toBe(Role.ASSISTANT);
    expect(one.choices[1]?.toolCalls.map((t) => [t.index, t.id, t.name, t.arguments])).toEqual([
      [0, "a", "f", "{}"],
      [1, "b", "g", '{"y":2}'],
    ]);
  });

  it("carries every reasoning block of the chunks it stands for", () => {
    const one = merged([
      chunk({ start, choices: [{ index: 0, reasoning: "a" }] }),
      chunk({ choices: [{ index: 0, reasoningBlocks: [{ text: "a", signature: "s1" }] }] }),
      chunk({ choices: [{ index: 0, reasoning: "b" }] }),
      chunk({ choices: [{ index: 0, reasoningBlocks: [{ text: "b", signature: "s2" }] }] }),
    ]);
    expect(one.choices[0]?.reasoning).toBe("ab");
    expect(one.choices[0]?.reasoningBlocks.map((b) => [b.text, b.signature])).toEqual([
      ["a", "s1"],
      ["b", "s2"],
    ]);
  });

  it("stands for numbered blocks: each text block apart, with its citations, held in halves", () => {
    const halves = [numberedStream.slice(0, 5), numberedStream.slice(5)].map((part) => {
      const b = new CompletionBuilder();
      for (const c of part) b.add(c);
      return b.chunk();
    });
    // A held answer crosses two hops: merged chunks are merged again.
    const one = merged(halves);
    expect(aggregate([one])).toEqual(aggregate(numberedStream));
    expect(
      aggregate([one]).choices[0]?.message?.content.map((p) => [p.blockIndex, p.part.value]),
    ).toEqual([
      [1, "Let me check."],
      [4, "Cited."],
    ]);
  });

  it("is empty before anything was added, and not after", () => {
    const b = new CompletionBuilder();
    expect(b.empty).toBe(true);
    expect(b.chunk()).toEqual(chunk({}));
    b.add(chunk({ usage }));
    expect(b.empty).toBe(false);
  });
});
