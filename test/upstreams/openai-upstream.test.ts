import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OpenAIUpstream, startOpenAIUpstream } from "./openai-upstream.js";

// The official SDK is the judge of whether the fake speaks OpenAI's wire format.
let upstream: OpenAIUpstream;
let client: OpenAI;

beforeAll(async () => {
  upstream = await startOpenAIUpstream();
  client = new OpenAI({ baseURL: upstream.url, apiKey: "sk-fake", maxRetries: 0 });
});
afterAll(async () => {
  await upstream.close();
});

describe("fake OpenAI upstream", () => {
  it("streams text and tool calls the SDK reassembles", async () => {
    upstream.setBehavior({
      kind: "answer",
      text: "Hi there",
      chunks: 2,
      toolCalls: [{ name: "f", arguments: '{"a":1}', fragments: 3 }],
    });
    const stream = client.chat.completions.stream({
      model: "m",
      messages: [{ role: "user", content: "x" }],
      stream_options: { include_usage: true },
    });
    const completion = await stream.finalChatCompletion();
    const message = completion.choices[0]?.message;
    expect(message?.content).toBe("Hi there");
    expect(message?.tool_calls?.[0]).toMatchObject({
      id: "call_1",
      function: { name: "f", arguments: '{"a":1}' },
    });
    expect(completion.choices[0]?.finish_reason).toBe("tool_calls");
    expect(completion.usage?.total_tokens).toBe(15);
    expect(upstream.requests.at(-1)?.headers.authorization).toBe("Bearer sk-fake");
  });

  it("answers without streaming and lists models", async () => {
    upstream.setBehavior({ kind: "answer", text: "Whole" });
    const completion = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "x" }],
    });
    expect(completion.choices[0]?.message.content).toBe("Whole");
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["fake-model"]);
  });

  it("sends errors with their status, body and headers", async () => {
    upstream.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "1" } });
    const error = await client.chat.completions
      .create({ model: "m", messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    expect((error as InstanceType<typeof OpenAI.RateLimitError>).headers.get("retry-after")).toBe(
      "1",
    );
  });
});
