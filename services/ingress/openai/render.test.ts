import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type ChatChunk,
  ChatChunkSchema,
  ChatCompletionSchema,
  FinishReason,
  Role,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";
import { ChunkRenderer, openAIFinishReason, renderCompletion } from "./render.js";

type ChunkInit = MessageInitShape<typeof ChatChunkSchema>;
const chunk = (init: ChunkInit): ChatChunk => create(ChatChunkSchema, init);

const start = {
  id: "chatcmpl-abc",
  created: 1700000000n,
  upstreamModel: "gpt-4o-2024-08-06",
  provider: "openai",
  attempts: 1,
  systemFingerprint: "fp_44709d6fcb",
};
const head =
  'data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_44709d6fcb","choices":';

describe("renderCompletion", () => {
  it("renders a text answer as OpenAI does", () => {
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
          rawFinishReason: "stop",
        },
      ],
      usage: { promptTokens: 9, completionTokens: 3, totalTokens: 12 },
    });
    expect(JSON.stringify(renderCompletion(c, "gpt-4o"))).toBe(
      '{"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,"model":"gpt-4o-2024-08-06",' +
        '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null},"logprobs":null,"finish_reason":"stop"}],' +
        '"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12},"system_fingerprint":"fp_44709d6fcb"}',
    );
  });

  it("renders tool calls with null content, reasoning and usage details", () => {
    const c = create(ChatCompletionSchema, {
      id: "chatcmpl-t",
      created: 5n,
      upstreamModel: "qwen3",
      choices: [
        {
          index: 0,
          message: {
            role: Role.ASSISTANT,
            contentIsText: true,
            toolCalls: [{ id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' }],
          },
          finishReason: FinishReason.TOOL_CALLS,
          reasoning: "Need weather.",
        },
      ],
      usage: {
        promptTokens: 20,
        completionTokens: 10,
        totalTokens: 30,
        cachedPromptTokens: 16,
        reasoningTokens: 4,
      },
    });
    expect(JSON.stringify(renderCompletion(c, "local"))).toBe(
      '{"id":"chatcmpl-t","object":"chat.completion","created":5,"model":"qwen3",' +
        '"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,' +
        '"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}}],' +
        '"reasoning_content":"Need weather."},"logprobs":null,"finish_reason":"tool_calls"}],' +
        '"usage":{"prompt_tokens":20,"completion_tokens":10,"total_tokens":30,' +
        '"prompt_tokens_details":{"cached_tokens":16},"completion_tokens_details":{"reasoning_tokens":4}}}',
    );
  });

  it("renders Anthropic's signed and redacted thinking as thinking_blocks", () => {
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [
        {
          message: {
            role: Role.ASSISTANT,
            contentIsText: true,
            content: [{ part: { case: "text", value: "Hi." } }],
            reasoningBlocks: [{ text: "Hm.", signature: "sig_1" }, { redactedData: "enc_1" }],
          },
          finishReason: FinishReason.STOP,
          reasoning: "Hm.",
        },
      ],
    });
    expect(renderCompletion(c, "local").choices[0]?.message).toEqual({
      role: "assistant",
      content: "Hi.",
      refusal: null,
      reasoning_content: "Hm.",
      thinking_blocks: [
        { type: "thinking", thinking: "Hm.", signature: "sig_1" },
        { type: "redacted_thinking", data: "enc_1" },
      ],
    });
  });

  it("renders a refusal with null content", () => {
    const c = create(ChatCompletionSchema, {
      ...start,
      choices: [
        {
          index: 0,
          message: { role: Role.ASSISTANT, refusal: "I can't help with that." },
          finishReason: FinishReason.STOP,
        },
      ],
    });
    const choice = renderCompletion(c, "gpt-4o").choices[0];
    expect(choice?.message).toEqual({
      role: "assistant",
      content: null,
      refusal: "I can't help with that.",
    });
  });

  it("renders an empty answer as empty content, and falls back to the public model name", () => {
    const c = create(ChatCompletionSchema, {
      id: "x",
      choices: [{ index: 0, message: { role: Role.ASSISTANT }, finishReason: FinishReason.LENGTH }],
    });
    const out = renderCompletion(c, "demo");
    expect(out.model).toBe("demo");
    expect(out.choices[0]?.message.content).toBe("");
    expect(out.choices[0]?.finish_reason).toBe("length");
    expect("usage" in out).toBe(false);
    expect("system_fingerprint" in out).toBe(false);
  });

  it("renders an answer a content filter stopped before any text with null content, as Azure does", () => {
    const c = create(ChatCompletionSchema, {
      id: "x",
      choices: [
        { index: 0, message: { role: Role.ASSISTANT }, finishReason: FinishReason.CONTENT_FILTER },
      ],
    });
    expect(renderCompletion(c, "demo").choices[0]).toMatchObject({
      message: { content: null, refusal: null },
      finish_reason: "content_filter",
    });
  });
});

describe("openAIFinishReason", () => {
  it.each<[FinishReason, string | undefined, string | null]>([
    [FinishReason.UNSPECIFIED, undefined, null],
    [FinishReason.STOP, undefined, "stop"],
    [FinishReason.LENGTH, undefined, "length"],
    [FinishReason.TOOL_CALLS, undefined, "tool_calls"],
    [FinishReason.CONTENT_FILTER, undefined, "content_filter"],
    [FinishReason.OTHER, undefined, "stop"],
    // An OpenAI-compatible upstream's own word passes through.
    [FinishReason.TOOL_CALLS, "function_call", "function_call"],
    [FinishReason.OTHER, "abort", "abort"],
    // Another dialect's word is not shown to an OpenAI client.
    [FinishReason.STOP, "end_turn", "stop"],
    [FinishReason.TOOL_CALLS, "tool_use", "tool_calls"],
    [FinishReason.LENGTH, "MAX_TOKENS", "length"],
    [FinishReason.STOP, "eos_token", "stop"],
  ])("maps %s with raw %s to %s", (reason, raw, expected) => {
    expect(openAIFinishReason(reason, raw)).toBe(expected);
  });
});

describe("ChunkRenderer", () => {
  it("frames a text stream byte for byte, without usage when not asked", () => {
    const r = new ChunkRenderer({ includeUsage: false });
    const frames = [
      r.render(chunk({ start, choices: [{ index: 0, role: Role.ASSISTANT, content: "" }] })),
      r.render(chunk({ choices: [{ index: 0, content: "Hi" }] })),
      r.render(
        chunk({
          choices: [{ index: 0, finishReason: FinishReason.STOP, rawFinishReason: "stop" }],
          usage: { promptTokens: 3, completionTokens: 1, totalTokens: 4 },
        }),
      ),
      r.render(chunk({ usage: { promptTokens: 3, completionTokens: 1, totalTokens: 4 } })),
      r.finish(),
      r.done(),
    ];
    expect(frames).toEqual([
      `${head}[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n`,
      `${head}[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}\n\n`,
      `${head}[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n`,
      undefined,
      undefined,
      "data: [DONE]\n\n",
    ]);
  });

  it("adds usage:null to every chunk and sends usage alone at the end when asked", () => {
    const r = new ChunkRenderer({ includeUsage: true });
    const usage = { promptTokens: 3, completionTokens: 1, totalTokens: 4, cachedPromptTokens: 2 };
    expect(r.render(chunk({ start, choices: [{ index: 0, content: "Hi" }] }))).toBe(
      `${head}[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n`,
    );
    expect(r.render(chunk({ usage }))).toBe(
      `${head}[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":{"cached_tokens":2}}}\n\n`,
    );
    expect(r.finish()).toBeUndefined();
  });

  it("splits a chunk carrying both choices and usage into the choices frame and a final usage frame", () => {
    const r = new ChunkRenderer({ includeUsage: true });
    const frame = r.render(
      chunk({
        start,
        choices: [
          {
            index: 0,
            role: Role.ASSISTANT,
            content: "whole answer",
            finishReason: FinishReason.STOP,
          },
        ],
        usage: { promptTokens: 5, completionTokens: 2, totalTokens: 7, reasoningTokens: 1 },
      }),
    );
    expect(frame).toBe(
      `${head}[{"index":0,"delta":{"role":"assistant","content":"whole answer"},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n`,
    );
    expect(r.finish()).toBe(
      `${head}[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"completion_tokens_details":{"reasoning_tokens":1}}}\n\n`,
    );
    expect(r.finish()).toBeUndefined();
  });

  it("frames tool call fragments with id, type and name only on the opening fragment", () => {
    const r = new ChunkRenderer({ includeUsage: false });
    const frames = [
      r.render(
        chunk({
          start,
          choices: [
            {
              index: 0,
              role: Role.ASSISTANT,
              toolCalls: [{ index: 0, id: "call_1", name: "get_weather" }],
            },
          ],
        }),
      ),
      r.render(chunk({ choices: [{ index: 0, toolCalls: [{ index: 0, arguments: '{"ci' }] }] })),
      r.render(
        chunk({
          choices: [
            {
              index: 0,
              toolCalls: [
                { index: 0, arguments: 'ty":"Paris"}' },
                { index: 1, id: "call_2", name: "get_time", arguments: "{}" },
              ],
            },
          ],
        }),
      ),
      r.render(chunk({ choices: [{ index: 0, finishReason: FinishReason.TOOL_CALLS }] })),
    ];
    expect(frames).toEqual([
      `${head}[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]}\n\n`,
      `${head}[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"ci"}}]},"logprobs":null,"finish_reason":null}]}\n\n`,
      `${head}[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\\":\\"Paris\\"}"}},{"index":1,"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"logprobs":null,"finish_reason":null}]}\n\n`,
      `${head}[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}\n\n`,
    ]);
  });

  it("frames reasoning, refusal and several choices, announcing each choice's role once", () => {
    const r = new ChunkRenderer({ includeUsage: false });
    r.render(chunk({ start, choices: [{ index: 0, content: "a" }] }));
    expect(
      r.render(
        chunk({
          choices: [
            { index: 0, reasoning: "hmm" },
            { index: 1, refusal: "no" },
          ],
        }),
      ),
    ).toBe(
      `${head}[{"index":0,"delta":{"reasoning_content":"hmm"},"logprobs":null,"finish_reason":null},` +
        `{"index":1,"delta":{"role":"assistant","refusal":"no"},"logprobs":null,"finish_reason":null}]}\n\n`,
    );
  });

  it("sends every reasoning block so far in each delta where one completed", () => {
    const r = new ChunkRenderer({ includeUsage: false });
    const blocksOf = (frame: string | undefined) =>
      JSON.parse(frame?.slice("data: ".length) ?? "").choices[0].delta.thinking_blocks;
    const signed = { type: "thinking", thinking: "hm", signature: "s" };
    expect(
      blocksOf(
        r.render(
          chunk({
            start,
            choices: [{ index: 0, reasoningBlocks: [{ text: "hm", signature: "s" }] }],
          }),
        ),
      ),
    ).toEqual([signed]);
    expect(blocksOf(r.render(chunk({ choices: [{ index: 0, content: "x" }] })))).toBeUndefined();
    expect(
      blocksOf(
        r.render(chunk({ choices: [{ index: 0, reasoningBlocks: [{ redactedData: "e" }] }] })),
      ),
    ).toEqual([signed, { type: "redacted_thinking", data: "e" }]);
  });

  it("says nothing for a chunk with neither choices nor usage", () => {
    const r = new ChunkRenderer({ includeUsage: true });
    expect(r.render(chunk({ start }))).toBeUndefined();
    expect(r.render(chunk({ choices: [{ index: 0, content: "x" }] }))?.startsWith(head)).toBe(true);
  });

  it("still gives a usable envelope when the stream did not open with start", () => {
    const r = new ChunkRenderer({ includeUsage: false });
    const frame = r.render(chunk({ choices: [{ index: 0, content: "x" }] })) ?? "";
    const parsed = JSON.parse(frame.slice("data: ".length));
    expect(parsed.id).toMatch(/^chatcmpl-/);
    expect(parsed.object).toBe("chat.completion.chunk");
    expect(typeof parsed.created).toBe("number");
  });

  it("frames a mid-stream failure as an OpenAI error event", () => {
    const r = new ChunkRenderer({ includeUsage: false });
    const f = new Failure({
      status: 502,
      kind: "upstream_error",
      message: "upstream connection reset",
      code: "upstream_reset",
    });
    expect(r.error(f)).toBe(
      'data: {"error":{"message":"upstream connection reset","type":"server_error","param":null,"code":"upstream_reset"}}\n\n',
    );
  });
});
