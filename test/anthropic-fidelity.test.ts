import Anthropic from "@anthropic-ai/sdk";
import { describe, expect, it } from "vitest";
import { useAnthropicGateway } from "./helpers/anthropic-gateway.js";
import { signThinking } from "./upstreams/anthropic-upstream.js";

// What an Anthropic client gets from an Anthropic upstream through the gateway, beyond what
// every pair of APIs shares: the official @anthropic-ai/sdk through one gateway process to the
// fake Anthropic upstream, which answers in Anthropic's wire format, streamed and whole.

const gateway = useAnthropicGateway("{ retries: 0 }");

const ask = {
  model: "claude",
  max_tokens: 1024,
  messages: [{ role: "user" as const, content: "What is new today?" }],
};

/** Every event of a streamed answer, as the SDK reads them off the wire. */
async function streamedEvents(
  body: Anthropic.MessageCreateParamsNonStreaming,
): Promise<Anthropic.RawMessageStreamEvent[]> {
  const events: Anthropic.RawMessageStreamEvent[] = [];
  for await (const event of await gateway.claude.messages.create({ ...body, stream: true })) {
    events.push(event);
  }
  return events;
}

describe("Anthropic's usage details", () => {
  const serverToolUse = { web_search_requests: 2, web_fetch_requests: 1 };

  it("reach an anthropic client whole and streamed: the service tier and the server tool requests", async () => {
    gateway.anthropicUp.setBehavior({
      kind: "answer",
      text: "Two searches later: nothing.",
      usage: {
        input_tokens: 12,
        output_tokens: 7,
        service_tier: "priority",
        server_tool_use: serverToolUse,
      },
    });

    const whole = await gateway.claude.messages.create(ask);
    expect(whole.usage).toMatchObject({ service_tier: "priority", server_tool_use: serverToolUse });

    // Streamed, each where Anthropic puts it: the tier in message_start's usage, the cumulative
    // server tool counts in message_start's and again in message_delta's.
    const events = await streamedEvents(ask);
    const start = events.find((e) => e.type === "message_start");
    const delta = events.find((e) => e.type === "message_delta");
    expect(start?.message.usage).toMatchObject({
      service_tier: "priority",
      server_tool_use: serverToolUse,
    });
    expect(delta?.usage).toMatchObject({ server_tool_use: serverToolUse });
    expect(delta?.usage).not.toHaveProperty("service_tier");

    const streamed = await gateway.claude.messages.stream(ask).finalMessage();
    expect(streamed.usage).toMatchObject({
      service_tier: "priority",
      server_tool_use: serverToolUse,
    });
  });

  it("are left out when the upstream reported none", async () => {
    const whole = await gateway.claude.messages.create(ask);
    expect(whole.usage).not.toHaveProperty("service_tier");
    expect(whole.usage).not.toHaveProperty("server_tool_use");
  });
});

/** The blocks of each content_block_start, and whether every block stopped before the next began. */
function framing(events: Anthropic.RawMessageStreamEvent[]) {
  const starts: Array<{ index: number; type: string }> = [];
  let open: number | undefined;
  let nested = false;
  for (const e of events) {
    if (e.type === "content_block_start") {
      if (open !== undefined) nested = true;
      open = e.index;
      starts.push({ index: e.index, type: e.content_block.type });
    } else if (e.type === "content_block_stop") {
      if (e.index !== open) nested = true;
      open = undefined;
    } else if (e.type === "content_block_delta" && e.index !== open) {
      nested = true;
    }
  }
  return { starts, nested };
}

const signed = (blocks: Array<Record<string, unknown>>) =>
  blocks.map((b) =>
    b.type === "thinking" ? { ...b, signature: signThinking(String(b.thinking)) } : b,
  );

describe("Anthropic's content blocks", () => {
  // Interleaved thinking with tools (beta interleaved-thinking-2025-05-14): thinking between
  // calls, text between calls, as Anthropic answers.
  const interleaved = [
    { type: "thinking", thinking: "The user wants Paris. Weather first." },
    { type: "text", text: "Let me check the weather." },
    { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Paris" } },
    { type: "text", text: "And the time, too." },
    { type: "thinking", thinking: "Paris is on CET." },
    { type: "tool_use", id: "toolu_2", name: "get_time", input: { tz: "CET" } },
  ];
  const tools = [
    { name: "get_weather", input_schema: { type: "object" as const } },
    { name: "get_time", input_schema: { type: "object" as const } },
  ];
  const thinkingAsk = {
    ...ask,
    max_tokens: 4096,
    thinking: { type: "enabled" as const, budget_tokens: 2048 },
    tools,
  };

  it.each([
    ["streamed", true],
    ["whole", false],
  ])(
    "reach an anthropic client %s in the upstream's order, each block whole",
    async (_, stream) => {
      gateway.anthropicUp.setBehavior({ kind: "answer", blocks: interleaved });
      const message = stream
        ? await gateway.claude.messages.stream(thinkingAsk).finalMessage()
        : await gateway.claude.messages.create(thinkingAsk);
      expect(message.content).toEqual(signed(interleaved));
      expect(message.stop_reason).toBe("tool_use");
    },
  );

  it("stream as one block after another, numbered from 0 in order", async () => {
    gateway.anthropicUp.setBehavior({ kind: "answer", blocks: interleaved });
    const { starts, nested } = framing(await streamedEvents(thinkingAsk));
    expect(nested).toBe(false);
    expect(starts).toEqual(interleaved.map((b, index) => ({ index, type: b.type })));
  });

  it("go back to Anthropic in the client's order when it sends its answer on", async () => {
    gateway.anthropicUp.setBehavior({ kind: "answer", blocks: interleaved });
    const first = await gateway.claude.messages.create(thinkingAsk, {
      headers: { "anthropic-beta": "interleaved-thinking-2025-05-14" },
    });
    gateway.anthropicUp.setBehavior({ kind: "answer", text: "Sunny, 14:00." });
    const results = [
      { type: "tool_result" as const, tool_use_id: "toolu_1", content: "sunny" },
      { type: "tool_result" as const, tool_use_id: "toolu_2", content: "14:00" },
    ];
    const second = await gateway.claude.messages.create({
      ...thinkingAsk,
      messages: [
        ...ask.messages,
        { role: "assistant", content: first.content },
        { role: "user", content: results },
      ],
    });
    // The fake checks every signature, as Anthropic does; the turn arrives as the client sent it.
    expect(second.content).toEqual([{ type: "text", text: "Sunny, 14:00." }]);
    const sent = gateway.anthropicUp.requests.at(-1)?.body as { messages: unknown[] };
    expect(sent.messages[1]).toEqual({ role: "assistant", content: signed(interleaved) });
  });

  it("keep two text blocks apart, each with its citations, after a web search", async () => {
    const citation = (url: string, text: string) => ({
      type: "web_search_result_location",
      url,
      title: url,
      encrypted_index: `Eo${text.length}`,
      cited_text: text,
    });
    const searched = [
      { type: "text", text: "I'll search." },
      {
        type: "server_tool_use",
        id: "srvtoolu_1",
        name: "web_search",
        input: { query: "gateway news" },
      },
      {
        type: "web_search_tool_result",
        tool_use_id: "srvtoolu_1",
        content: [
          {
            type: "web_search_result",
            url: "https://a.example",
            title: "A",
            encrypted_content: "EqA",
            page_age: null,
          },
        ],
      },
      {
        type: "text",
        text: "Gateways route.",
        citations: [citation("https://a.example", "route")],
      },
      {
        type: "text",
        text: " They also fail over.",
        citations: [citation("https://b.example", "fail")],
      },
    ];
    gateway.anthropicUp.setBehavior({
      kind: "answer",
      blocks: searched,
      usage: { input_tokens: 50, output_tokens: 20, server_tool_use: { web_search_requests: 1 } },
    });
    const whole = await gateway.claude.messages.create(ask);
    expect(whole.content).toEqual(searched);
    const streamed = await gateway.claude.messages.stream(ask).finalMessage();
    expect(streamed.content).toEqual(searched);
    expect(streamed.usage.server_tool_use).toEqual({ web_search_requests: 1 });
  });
});

describe("Anthropic's MCP connector (mcp_servers)", () => {
  const mcpServers = [
    {
      type: "url",
      url: "https://mcp.example.com/sse",
      name: "example",
      authorization_token: "tok",
      tool_configuration: { enabled: true, allowed_tools: ["echo"] },
    },
  ];
  const beta = { headers: { "anthropic-beta": "mcp-client-2025-04-04" } };
  const answer = [
    { type: "text", text: "Asking the server." },
    {
      type: "mcp_tool_use",
      id: "mcptoolu_1",
      name: "echo",
      server_name: "example",
      input: { text: "hi" },
    },
    {
      type: "mcp_tool_result",
      tool_use_id: "mcptoolu_1",
      is_error: false,
      content: [{ type: "text", text: "hi" }],
    },
    { type: "text", text: "It said hi." },
  ];
  const body = { ...ask, mcp_servers: mcpServers } as Anthropic.MessageCreateParamsNonStreaming;

  it.each([
    ["streamed", true],
    ["whole", false],
  ])(
    "reach an Anthropic target as sent, and its MCP blocks come back %s in place, each whole",
    async (_, stream) => {
      gateway.anthropicUp.setBehavior({ kind: "answer", blocks: answer });
      const message = stream
        ? await gateway.claude.beta.messages
            .stream(body as Anthropic.Beta.MessageCreateParamsNonStreaming, beta)
            .finalMessage()
        : await gateway.claude.beta.messages.create(
            body as Anthropic.Beta.MessageCreateParamsNonStreaming,
            beta,
          );
      expect(message.content).toEqual(answer);
      const sent = gateway.anthropicUp.requests.at(-1);
      expect((sent?.body as Record<string, unknown> | undefined)?.mcp_servers).toEqual(mcpServers);
      expect(sent?.headers["anthropic-beta"]).toBe("mcp-client-2025-04-04");
    },
  );

  it("go back to Anthropic in place when the client sends the turn on", async () => {
    gateway.anthropicUp.setBehavior({ kind: "answer", text: "Anything else?" });
    await gateway.claude.beta.messages.create(
      {
        ...(body as Anthropic.Beta.MessageCreateParamsNonStreaming),
        messages: [
          ...ask.messages,
          { role: "assistant", content: answer as Anthropic.Beta.BetaContentBlockParam[] },
          { role: "user", content: "Thanks." },
        ],
      },
      beta,
    );
    const sent = gateway.anthropicUp.requests.at(-1)?.body as { messages: unknown[] };
    expect(sent.messages[1]).toEqual({ role: "assistant", content: answer });
  });

  it.each([
    ["an OpenAI", "gpt", "openai"],
    ["a mock", "demo", "mock"],
  ])("is refused by %s target with a 400 naming the field", async (_, model, type) => {
    const refused = await gateway.claude.messages
      .create({ ...body, model }, beta)
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
    expect((refused as Error).message).toContain(
      `does not support Anthropic's MCP connector (mcp_servers)`,
    );
    expect((refused as Error).message).toContain(`(${type})`);
  });

  it("refuses a conversation holding MCP blocks for a target that is not Anthropic", async () => {
    const refused = await gateway.claude.messages
      .create({
        ...ask,
        model: "gpt",
        messages: [
          ...ask.messages,
          { role: "assistant", content: answer as Anthropic.ContentBlockParam[] },
          { role: "user", content: "Thanks." },
        ],
      })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
    expect((refused as Error).message).toContain("Anthropic's mcp_tool_use blocks");
    expect(gateway.openaiUp.requests.filter((r) => r.method === "POST")).toHaveLength(0);
  });

  it("are counted by an Anthropic target, passing over one that cannot serve them", async () => {
    const counted = await gateway.claude.beta.messages.countTokens(
      {
        model: "demo-then-claude",
        messages: ask.messages,
        mcp_servers: mcpServers,
      } as Anthropic.Beta.MessageCountTokensParams,
      beta,
    );
    expect(counted.input_tokens).toBeGreaterThan(0);
    const sent = gateway.anthropicUp.requests.at(-1);
    expect(sent?.path).toBe("/v1/messages/count_tokens");
    expect((sent?.body as Record<string, unknown> | undefined)?.mcp_servers).toEqual(mcpServers);
  });
});
