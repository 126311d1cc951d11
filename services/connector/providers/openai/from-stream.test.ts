import { describe, expect, it } from "vitest";
import { type ChatChunk, FinishReason, Role } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import type { OpenAIChatChunk } from "../../../lib/wire/openai.js";
import { SseParser } from "../sse.js";
import { assemble, readFixture } from "./fixtures/fixtures.js";
import { createOpenAIStreamTranslator, fromOpenAIChunk, isEmptyChunk } from "./from-stream.js";

/** Runs a recorded SSE stream through the parser and the translation, as the provider does. */
function translate(fixture: string): { chunks: ChatChunk[]; done: boolean } {
  const parser = new SseParser();
  const events = parser.push(new TextEncoder().encode(readFixture(fixture)));
  expect(parser.end().truncated).toBe(false);
  const chunks: ChatChunk[] = [];
  let done = false;
  for (const event of events) {
    if (event.data === "[DONE]") {
      done = true;
      break;
    }
    const chunk = fromOpenAIChunk(
      JSON.parse(event.data) as OpenAIChatChunk,
      "openai",
      chunks.length === 0,
    );
    if (!isEmptyChunk(chunk)) chunks.push(chunk);
  }
  return { chunks, done };
}

describe("fromOpenAIChunk", () => {
  it("translates a streamed answer chunk for chunk, with start only on the first", () => {
    const { chunks, done } = translate("stream-plain.sse");
    expect(done).toBe(true);
    // 1 role chunk + 9 content chunks + 1 finish chunk + 1 usage chunk.
    expect(chunks).toHaveLength(12);
    const first = chunks[0];
    expect(first?.start).toMatchObject({
      id: "chatcmpl-AZcm1xJ4Tq2Lsd8s",
      created: 1733256300n,
      upstreamModel: "gpt-4o-2024-08-06",
      provider: "openai",
      systemFingerprint: "fp_7f6be3efb0",
    });
    // The first delta is `{"role":"assistant","content":""}`: empty content, not absent.
    expect(first?.choices[0]).toMatchObject({ role: Role.ASSISTANT, content: "" });
    expect(first?.choices[0]?.refusal).toBeUndefined();
    expect(chunks.slice(1).every((c) => c.start === undefined)).toBe(true);

    const second = chunks[1]?.choices[0];
    expect(second?.role).toBe(Role.UNSPECIFIED);
    expect(second?.finishReason).toBe(FinishReason.UNSPECIFIED);
    expect(second?.rawFinishReason).toBeUndefined();

    const answer = assemble(chunks);
    expect(answer.content).toBe("Hello! How can I help you today? 👋");
    expect(answer.finishReason).toBe(FinishReason.STOP);
    expect(answer.rawFinishReason).toBe("stop");
    expect(answer.starts).toBe(1);
  });

  it("maps the usage-only final chunk to a chunk holding only usage", () => {
    const { chunks } = translate("stream-plain.sse");
    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    expect(last?.start).toBeUndefined();
    expect(last?.usage).toMatchObject({
      promptTokens: 1117,
      completionTokens: 10,
      totalTokens: 1127,
      cachedPromptTokens: 1024,
      reasoningTokens: 0,
    });
    // `usage: null` on the other chunks is no usage.
    expect(chunks.slice(0, -1).every((c) => c.usage === undefined)).toBe(true);
  });

  it("passes tool-call fragments through so two parallel calls reassemble exactly", () => {
    const { chunks, done } = translate("stream-parallel-tool-calls.sse");
    expect(done).toBe(true);
    const firstCall = chunks[0]?.choices[0]?.toolCalls[0];
    expect(firstCall).toMatchObject({ index: 0, id: "call_7QmWnYb9eX1", name: "get_weather" });
    expect(firstCall?.arguments).toBe("");
    expect(chunks[0]?.choices[0]?.content).toBeUndefined();
    // Later fragments carry arguments only.
    const fragment = chunks[1]?.choices[0]?.toolCalls[0];
    expect(fragment?.id).toBeUndefined();
    expect(fragment?.name).toBeUndefined();
    expect(fragment?.arguments).toBe('{"lo');

    const answer = assemble(chunks);
    expect(answer.toolCalls).toEqual([
      { id: "call_7QmWnYb9eX1", name: "get_weather", arguments: '{"location": "Paris, France"}' },
      {
        id: "call_2kLpQ8vZs3T",
        name: "get_time",
        arguments: '{"tz": "Asia/Tokyo", "format": "24h"}',
      },
    ]);
    expect(answer.content).toBeUndefined();
    expect(answer.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(answer.usage?.totalTokens).toBe(144);
  });

  it("reads reasoning_content deltas as reasoning", () => {
    const chunk = fromOpenAIChunk(
      {
        id: "c",
        object: "chat.completion.chunk",
        created: 1,
        model: "deepseek-reasoner",
        choices: [
          { index: 0, delta: { reasoning_content: "Think", content: null }, finish_reason: null },
        ],
      },
      "p",
      false,
    );
    expect(chunk.choices[0]?.reasoning).toBe("Think");
    expect(chunk.choices[0]?.content).toBeUndefined();
    expect(chunk.start).toBeUndefined();
  });

  it("reads `reasoning` (vLLM, OpenRouter, Groq) as reasoning too", () => {
    const chunk = fromOpenAIChunk(
      JSON.parse('{"choices":[{"index":0,"delta":{"reasoning":"Hmm"}}]}') as OpenAIChatChunk,
      "p",
      false,
    );
    expect(chunk.choices[0]?.reasoning).toBe("Hmm");
  });

  it.each(["", "null"])(
    "takes finish_reason %j for no finish yet (Ollama, sglang, KoboldCpp)",
    (raw) => {
      const chunk = fromOpenAIChunk(
        JSON.parse(
          `{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":${JSON.stringify(raw)}}]}`,
        ) as OpenAIChatChunk,
        "p",
        false,
      );
      expect(chunk.choices[0]?.finishReason).toBe(FinishReason.UNSPECIFIED);
      expect(chunk.choices[0]?.rawFinishReason).toBeUndefined();
    },
  );

  it("tolerates a sloppy server's missing fields", () => {
    const sloppy = JSON.parse('{"choices":[{"delta":{"content":"x"}}]}') as OpenAIChatChunk;
    const chunk = fromOpenAIChunk(sloppy, "p", true);
    expect(chunk.choices[0]).toMatchObject({ index: 0, content: "x" });
    expect(chunk.start).toMatchObject({ id: "", upstreamModel: "", provider: "p" });
  });
});

describe("createOpenAIStreamTranslator", () => {
  const head = { object: "chat.completion.chunk" as const, created: 1733256300, model: "m" };
  const filterOnly = {
    ...head,
    id: "",
    created: 0,
    model: "",
    choices: [],
  } as unknown as OpenAIChatChunk;
  const content = (text: string): OpenAIChatChunk => ({
    ...head,
    id: "chatcmpl-1",
    choices: [{ index: 0, delta: { content: text }, finish_reason: null }],
  });

  it("gives the same chunks as fromOpenAIChunk for an OpenAI stream", () => {
    const parser = new SseParser();
    const events = parser.push(new TextEncoder().encode(readFixture("stream-plain.sse")));
    const translator = createOpenAIStreamTranslator("openai");
    const chunks: ChatChunk[] = [];
    for (const event of events) {
      if (event.data === "[DONE]") break;
      const chunk = translator.push(JSON.parse(event.data) as OpenAIChatChunk);
      if (chunk !== undefined) chunks.push(chunk);
    }
    expect(chunks).toEqual(translate("stream-plain.sse").chunks);
    expect(translator.end()).toBeUndefined();
  });

  it("takes the start from the first chunk with choices, not an empty leading one", () => {
    const translator = createOpenAIStreamTranslator("azure");
    expect(translator.push(filterOnly)).toBeUndefined();
    const first = translator.push(content("Hi"));
    expect(first?.start).toMatchObject({
      id: "chatcmpl-1",
      created: 1733256300n,
      upstreamModel: "m",
    });
    expect(translator.push(content("!"))?.start).toBeUndefined();
  });

  it("drops choices that carry nothing, and chunks left with nothing", () => {
    const translator = createOpenAIStreamTranslator("azure");
    translator.push(content("Hi"));
    const annotation = {
      ...head,
      id: "",
      choices: [{ index: 0, finish_reason: null, content_filter_results: {} }],
    } as unknown as OpenAIChatChunk;
    expect(translator.push(annotation)).toBeUndefined();
  });

  it.each([
    ["every call at index 0 (Ollama)", { index: 0 }],
    ["no index at all", {}],
  ])("keeps parallel calls apart when their indexes do not: %s", (_, index) => {
    const translator = createOpenAIStreamTranslator("p");
    const call = (id: string, name: string, args: string) =>
      ({
        ...head,
        id: "chatcmpl-1",
        choices: [
          {
            index: 0,
            delta: {
              tool_calls: [{ ...index, id, type: "function", function: { name, arguments: args } }],
            },
            finish_reason: null,
          },
        ],
      }) as unknown as OpenAIChatChunk;
    const chunks = [
      translator.push(call("call_p", "get_weather", '{"city":"Paris"}')),
      translator.push(call("call_r", "get_time", '{"tz":"CET"}')),
    ];
    const calls = chunks.flatMap((c) => c?.choices[0]?.toolCalls ?? []);
    expect(calls.map((c) => [c.index, c.id, c.name, c.arguments])).toEqual([
      [0, "call_p", "get_weather", '{"city":"Paris"}'],
      [1, "call_r", "get_time", '{"tz":"CET"}'],
    ]);
  });

  it("still yields a start at the end of a stream that had nothing else", () => {
    const translator = createOpenAIStreamTranslator("p");
    const idle = { ...head, id: "chatcmpl-idle", choices: [] } as OpenAIChatChunk;
    expect(translator.push(idle)).toBeUndefined();
    const last = translator.end();
    expect(last?.start).toMatchObject({ id: "chatcmpl-idle", provider: "p" });
    expect(last?.choices).toEqual([]);
    expect(translator.end()).toBeUndefined();
  });
});
