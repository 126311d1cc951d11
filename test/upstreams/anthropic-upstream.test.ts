import Anthropic from "@anthropic-ai/sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type AnthropicUpstream,
  signThinking,
  startAnthropicUpstream,
} from "./anthropic-upstream.js";

// The official SDK is the judge of whether the fake speaks Anthropic's wire format.
let upstream: AnthropicUpstream;
let client: Anthropic;

beforeAll(async () => {
  upstream = await startAnthropicUpstream();
  client = new Anthropic({ baseURL: upstream.url, apiKey: "sk-ant-fake", maxRetries: 0 });
});
afterAll(async () => {
  await upstream.close();
});
afterEach(() => {
  upstream.setBehavior({ kind: "answer" });
});

const ask = {
  model: "claude-x",
  max_tokens: 64,
  messages: [{ role: "user" as const, content: "x" }],
};

describe("fake Anthropic upstream", () => {
  it("streams thinking, text and tool_use blocks the SDK reassembles", async () => {
    upstream.setBehavior({
      kind: "answer",
      thinking: "Let me think.",
      text: "Hi there",
      chunks: 2,
      toolUses: [{ name: "f", input: '{"a":1,"b":[true,null]}', fragments: 4 }],
    });
    const message = await client.messages.stream(ask).finalMessage();
    expect(message.content).toEqual([
      { type: "thinking", thinking: "Let me think.", signature: signThinking("Let me think.") },
      { type: "text", text: "Hi there" },
      { type: "tool_use", id: "toolu_fake_1", name: "f", input: { a: 1, b: [true, null] } },
    ]);
    expect(message.stop_reason).toBe("tool_use");
    expect(message.model).toBe("claude-x");
    expect(message.usage.output_tokens).toBe(8);
    const request = upstream.requests.at(-1);
    expect(request?.headers["x-api-key"]).toBe("sk-ant-fake");
    expect(request?.body).toMatchObject({ stream: true, max_tokens: 64 });
  });

  it("answers given blocks in their order, streamed as Anthropic streams each type and whole", async () => {
    const citation = {
      type: "web_search_result_location",
      url: "https://example.com/a",
      title: "A",
      encrypted_index: "Eo8B",
      cited_text: "a fact",
    };
    const blocks = [
      { type: "text", text: "Searching." },
      { type: "server_tool_use", id: "srvtoolu_1", name: "web_search", input: { query: "q" } },
      {
        type: "web_search_tool_result",
        tool_use_id: "srvtoolu_1",
        content: [{ type: "web_search_result", url: "https://example.com/a", title: "A" }],
      },
      { type: "thinking", thinking: "Now answer." },
      { type: "text", text: "A fact.", citations: [citation] },
      { type: "tool_use", id: "toolu_1", name: "f", input: { a: 1 } },
    ];
    upstream.setBehavior({
      kind: "answer",
      blocks,
      usage: { server_tool_use: { web_search_requests: 1 } },
    });
    const expected = blocks.map((b) =>
      b.type === "thinking" ? { ...b, signature: signThinking("Now answer.") } : b,
    );
    const streamed = await client.messages.stream(ask).finalMessage();
    expect(streamed.content).toEqual(expected);
    expect(streamed.stop_reason).toBe("tool_use");
    expect(streamed.usage.server_tool_use).toEqual({ web_search_requests: 1 });
    const whole = await client.messages.create(ask);
    expect(whole.content).toEqual(expected);
  });

  it("refuses mcp_servers without the MCP connector's beta, as Anthropic does", async () => {
    const body = {
      ...ask,
      mcp_servers: [{ type: "url", url: "https://mcp.example.com", name: "x" }],
    };
    const refused = await client.messages.create(body as never).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String(refused)).toMatch(/mcp_servers/);
    const answered = await client.messages.create(body as never, {
      headers: { "anthropic-beta": "mcp-client-2025-04-04" },
    });
    expect(answered.type).toBe("message");
  });

  it("checks thinking in the history as Anthropic does: signed, and first in a tool loop's last turn", async () => {
    upstream.setBehavior({
      kind: "answer",
      thinking: "Use the tool.",
      redactedThinking: "EmwKAhgB",
      text: "",
      toolUses: [{ id: "toolu_1", name: "f", input: "{}" }],
    });
    const thinking = { type: "enabled" as const, budget_tokens: 1024 };
    const first = await client.messages.create({ ...ask, max_tokens: 2048, thinking });
    expect(first.content.map((b) => b.type)).toEqual(["thinking", "redacted_thinking", "tool_use"]);
    const next = (content: Anthropic.ContentBlockParam[]) =>
      client.messages.create({
        ...ask,
        max_tokens: 2048,
        thinking,
        messages: [
          ...ask.messages,
          { role: "assistant", content },
          {
            role: "user",
            content: [{ type: "tool_result", tool_use_id: "toolu_1", content: "1" }],
          },
        ],
      });
    upstream.setBehavior({ kind: "answer", text: "Done." });
    expect((await next(first.content)).content).toEqual([{ type: "text", text: "Done." }]);

    const withoutThinking = await next(first.content.slice(2)).catch((e: unknown) => e);
    expect(withoutThinking).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String((withoutThinking as Error).message)).toContain(
      "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`.",
    );
    const forged = await next([
      { type: "thinking", thinking: "Use the tool.", signature: "Eqforged" },
      ...first.content.slice(1),
    ]).catch((e: unknown) => e);
    expect(forged).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String((forged as Error).message)).toContain(
      "messages.1.content.0: Invalid `signature` in `thinking` block",
    );
  });

  it("refuses beside enabled thinking what Anthropic refuses", async () => {
    const thinking = { type: "enabled" as const, budget_tokens: 1024 };
    const tools = [{ name: "f", input_schema: { type: "object" as const } }];
    const refused: Array<[Partial<Anthropic.MessageCreateParamsNonStreaming>, string]> = [
      [{ thinking: { type: "enabled", budget_tokens: 512 } }, "greater than or equal to 1024"],
      [{ max_tokens: 1024 }, "`max_tokens` must be greater than `thinking.budget_tokens`"],
      [{ temperature: 0.5 }, "`temperature` may only be set to 1"],
      [{ top_p: 0.9 }, "`top_p` must be greater than or equal to 0.95"],
      [{ top_k: 5 }, "`top_k` must be unset"],
      [{ tools, tool_choice: { type: "any" } }, "tool_choice forces tool use"],
      [{ tools, tool_choice: { type: "tool", name: "f" } }, "tool_choice forces tool use"],
    ];
    for (const [settings, message] of refused) {
      const error = await client.messages
        .create({ ...ask, max_tokens: 2048, thinking, ...settings })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Anthropic.BadRequestError);
      expect(String((error as Error).message)).toContain(message);
    }
    const accepted = await client.messages.create({
      ...ask,
      max_tokens: 1025,
      thinking,
      temperature: 1,
      top_p: 0.95,
      tools,
      tool_choice: { type: "auto" },
    });
    expect(accepted.type).toBe("message");
    // Without thinking the same settings pass.
    const plain = await client.messages.create({ ...ask, temperature: 0.5, top_k: 5 });
    expect(plain.type).toBe("message");
  });

  it("answers without streaming and lists models", async () => {
    upstream.setBehavior({ kind: "answer", text: "Whole" });
    const message = await client.messages.create(ask);
    expect(message.content).toEqual([{ type: "text", text: "Whole" }]);
    expect(message.stop_reason).toBe("end_turn");
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["claude-fake"]);
  });

  it("sends errors in Anthropic's envelope with their status and headers", async () => {
    upstream.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "1" } });
    const limited = await client.messages.create(ask).catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(Anthropic.RateLimitError);
    expect(
      (limited as InstanceType<typeof Anthropic.RateLimitError>).headers.get("retry-after"),
    ).toBe("1");

    upstream.setBehavior({ kind: "error", status: 529 });
    const overloaded = await client.messages.create(ask).catch((e: unknown) => e);
    expect(overloaded).toBeInstanceOf(Anthropic.InternalServerError);
    expect((overloaded as InstanceType<typeof Anthropic.APIError>).error).toEqual({
      type: "error",
      error: { type: "overloaded_error", message: "Overloaded" },
      request_id: "req_fake",
    });
  });

  it("fails a stream with an error event after k events", async () => {
    upstream.setBehavior({ kind: "answer", errorAfterEvents: 3 });
    const seen: string[] = [];
    const error = await (async () => {
      const stream = await client.messages.create({ ...ask, stream: true });
      for await (const event of stream) seen.push(event.type);
    })().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Anthropic.APIError);
    expect(String((error as Error).message)).toContain("Overloaded");
    // The SDK does not hand out pings: the third event was one.
    expect(seen).toEqual(["message_start", "content_block_start"]);
  });

  it("cuts a stream after k events without message_stop", async () => {
    upstream.setBehavior({ kind: "answer", cutAfterEvents: 4 });
    const seen: string[] = [];
    const stream = await client.messages.create({ ...ask, stream: true });
    for await (const event of stream) seen.push(event.type);
    expect(seen).toEqual(["message_start", "content_block_start", "content_block_delta"]);
  });

  it("names every event as Anthropic does, in Anthropic's order", async () => {
    upstream.setBehavior({ kind: "answer", text: "ab", chunks: 2 });
    const response = await fetch(`${upstream.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...ask, stream: true }),
    });
    const text = await response.text();
    const names = [...text.matchAll(/^event: (\w+)\ndata: (.*)$/gm)].map(([, name, data]) => {
      expect(JSON.parse(data ?? "").type).toBe(name);
      return name;
    });
    expect(names).toEqual([
      "message_start",
      "content_block_start",
      "ping",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
  });

  it("names the container its code ran in, whole and in message_delta, as the SDK reads it", async () => {
    const container = { id: "container_1", expires_at: "2026-01-01T00:00:00Z", skills: null };
    upstream.setBehavior({ kind: "answer", container });
    expect((await client.messages.create(ask)).container).toEqual(container);
    expect((await client.messages.stream(ask).finalMessage()).container).toEqual(container);
  });
});
