import { describe, expect, it } from "vitest";
import { FinishReason, Role } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import type { OpenAIChatCompletion } from "../../../lib/wire/openai.js";
import { readJsonFixture } from "./fixtures/fixtures.js";
import { fromOpenAICompletion } from "./from-response.js";

describe("fromOpenAICompletion", () => {
  it("turns a plain answer into one chunk with start, message, finish and usage", () => {
    const chunk = fromOpenAICompletion(
      readJsonFixture<OpenAIChatCompletion>("completion-plain.json"),
      "openai",
    );
    expect(chunk.start).toMatchObject({
      id: "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
      created: 1741569952n,
      upstreamModel: "gpt-4.1-2025-04-14",
      provider: "openai",
      systemFingerprint: "fp_b3f1157249",
    });
    expect(chunk.choices).toHaveLength(1);
    const choice = chunk.choices[0];
    expect(choice).toMatchObject({
      index: 0,
      role: Role.ASSISTANT,
      content: "Hello! How can I assist you today?",
      finishReason: FinishReason.STOP,
      rawFinishReason: "stop",
    });
    // `refusal: null` upstream means no refusal, not an empty one.
    expect(choice?.refusal).toBeUndefined();
    expect(choice?.reasoning).toBeUndefined();
    expect(chunk.usage).toMatchObject({
      promptTokens: 19,
      completionTokens: 10,
      totalTokens: 29,
      cachedPromptTokens: 0,
      reasoningTokens: 0,
    });
  });

  it("gives every tool call whole, with its index, id, name and exact arguments", () => {
    const chunk = fromOpenAICompletion(
      readJsonFixture<OpenAIChatCompletion>("completion-tool-calls.json"),
      "openai",
    );
    const choice = chunk.choices[0];
    expect(choice?.content).toBeUndefined();
    expect(choice?.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(
      choice?.toolCalls.map(({ index, id, name, arguments: args }) => ({ index, id, name, args })),
    ).toEqual([
      {
        index: 0,
        id: "call_abc123",
        name: "get_current_weather",
        args: '{\n"location": "Boston, MA"\n}',
      },
      {
        index: 1,
        id: "call_def456",
        name: "get_current_weather",
        args: '{\n"location": "Paris, France", "unit": "celsius"\n}',
      },
    ]);
    expect(chunk.start?.systemFingerprint).toBeUndefined();
    expect(chunk.usage).toMatchObject({ cachedPromptTokens: 64, reasoningTokens: 12 });
  });

  it("keeps reasoning_content as reasoning, and usage without details", () => {
    const chunk = fromOpenAICompletion(
      readJsonFixture<OpenAIChatCompletion>("completion-reasoning.json"),
      "deepseek",
    );
    expect(chunk.choices[0]).toMatchObject({
      reasoning: "The user greets me; answer briefly.",
      content: "Hi!",
      finishReason: FinishReason.LENGTH,
    });
    expect(chunk.usage?.cachedPromptTokens).toBeUndefined();
    expect(chunk.usage?.reasoningTokens).toBeUndefined();
  });

  it("maps an unknown finish reason to OTHER and keeps the word", () => {
    const completion = readJsonFixture<OpenAIChatCompletion>("completion-plain.json");
    const first = completion.choices[0];
    if (first) first.finish_reason = "eos";
    const choice = fromOpenAICompletion(completion, "p").choices[0];
    expect(choice).toMatchObject({ finishReason: FinishReason.OTHER, rawFinishReason: "eos" });
  });

  it.each(["eos_token", "stop_sequence"])(
    "takes Text Generation Inference's %s as a stop and keeps the word",
    (word) => {
      const completion = readJsonFixture<OpenAIChatCompletion>("completion-plain.json");
      const first = completion.choices[0];
      if (first) first.finish_reason = word;
      const choice = fromOpenAICompletion(completion, "p").choices[0];
      expect(choice).toMatchObject({ finishReason: FinishReason.STOP, rawFinishReason: word });
    },
  );
});

describe("the upstream's model name", () => {
  // The name reaches the client's x-switchyard-model header: a lone surrogate there made a 500,
  // a 100 KB one a header no client accepts.
  it("is left empty (the requested model stands in) when a header could not carry it", () => {
    const completion = readJsonFixture<OpenAIChatCompletion>("completion-plain.json");
    for (const model of ["\ud800", "x".repeat(100 * 1024), "gpt\r\nx-evil: 1"]) {
      const chunk = fromOpenAICompletion({ ...completion, model }, "openai");
      expect(chunk.start?.upstreamModel).toBe("");
      expect(chunk.choices[0]?.content).toBe("Hello! How can I assist you today?");
    }
  });
});
