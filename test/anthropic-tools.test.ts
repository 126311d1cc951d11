import Anthropic from "@anthropic-ai/sdk";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { ChatParamsSchema, Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { useAnthropicGateway } from "./helpers/anthropic-gateway.js";

// Tools Anthropic defines (its server tools, which it runs, and the client tools its models are
// trained on), the container its code runs in and the citations of earlier answers, from the
// official @anthropic-ai/sdk through one gateway process: whole to a fake Anthropic upstream
// that records what it is sent, refused by every other target before it is sent anything.

const gateway = useAnthropicGateway("{ retries: 1, backoff: { base_ms: 1, max_ms: 1 } }");

const ask = {
  model: "claude",
  max_tokens: 1024,
  messages: [{ role: "user" as const, content: "What changed in the repo today?" }],
};

/** Each tool as a client writes it; the custom one's keys in the order the gateway writes them. */
const tools = [
  {
    name: "get_weather",
    input_schema: { type: "object", properties: { city: { type: "string" } } },
    description: "Weather for a city",
  },
  {
    type: "web_search_20250305",
    name: "web_search",
    max_uses: 3,
    allowed_domains: ["example.com"],
    user_location: { type: "approximate", city: "Paris", country: "FR" },
  },
  { type: "web_fetch_20250910", name: "web_fetch", max_uses: 2, citations: { enabled: true } },
  { type: "code_execution_20250825", name: "code_execution" },
  { type: "bash_20250124", name: "bash" },
  { type: "text_editor_20250728", name: "str_replace_based_edit_tool", max_characters: 10000 },
  {
    type: "computer_20250124",
    name: "computer",
    display_width_px: 1024,
    display_height_px: 768,
    display_number: 1,
  },
  { type: "memory_20250818", name: "memory", cache_control: { type: "ephemeral" } },
] as unknown as Anthropic.ToolUnion[];

const withTools = { ...ask, tools };

/** The JSON body of the last request the Anthropic upstream got. */
function lastSent(): Record<string, unknown> {
  return gateway.anthropicUp.requests.at(-1)?.body as Record<string, unknown>;
}

const openaiPosts = () => gateway.openaiUp.requests.filter((r) => r.method === "POST").length;

describe("tools Anthropic defines", () => {
  it.each([
    ["whole", false],
    ["streamed", true],
  ])("reach an Anthropic target %s byte for byte, in the client's order", async (_, stream) => {
    const body = {
      ...withTools,
      tool_choice: { type: "tool" as const, name: "web_search" },
    };
    if (stream) await gateway.claude.messages.stream(body).finalMessage();
    else await gateway.claude.messages.create(body);
    const sent = lastSent();
    expect(JSON.stringify(sent.tools)).toBe(JSON.stringify(tools));
    expect(sent.tool_choice).toEqual({ type: "tool", name: "web_search" });
  });

  it("bring back a web search's blocks whole, streamed or not, with usage.server_tool_use, and take them back in place", async () => {
    const location = (url: string, text: string) => ({
      type: "web_search_result_location",
      url,
      title: url,
      encrypted_index: `Eo${text.length}`,
      cited_text: text,
    });
    const searched = [
      { type: "text", text: "I'll search." },
      { type: "server_tool_use", id: "srvtoolu_1", name: "web_search", input: { query: "x" } },
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
      { type: "text", text: "Gateways route.", citations: [location("https://a.example", "r")] },
      { type: "text", text: " And fail over.", citations: [location("https://b.example", "f")] },
    ];
    const serverToolUse = { web_search_requests: 1 };
    gateway.anthropicUp.setBehavior({
      kind: "answer",
      blocks: searched,
      usage: { input_tokens: 40, output_tokens: 20, server_tool_use: serverToolUse },
    });
    const whole = await gateway.claude.messages.create(withTools);
    const streamed = await gateway.claude.messages.stream(withTools).finalMessage();
    for (const message of [whole, streamed]) {
      expect(message.content).toEqual(searched);
      expect(message.usage.server_tool_use).toEqual(serverToolUse);
    }

    gateway.anthropicUp.setBehavior({ kind: "answer", text: "You're welcome." });
    await gateway.claude.messages.create({
      ...withTools,
      messages: [
        ...ask.messages,
        { role: "assistant", content: streamed.content },
        { role: "user", content: "Thanks." },
      ],
    });
    // The citations go back with their text, each block where it stood.
    expect((lastSent().messages as unknown[])[1]).toEqual({
      role: "assistant",
      content: searched,
    });
  });

  it.each([
    ["whole", false],
    ["streamed", true],
  ])(
    "that the client runs come back %s as tool_use, and their results go back",
    async (_, stream) => {
      const calls = [
        { type: "text", text: "Listing files." },
        { type: "tool_use", id: "toolu_bash_1", name: "bash", input: { command: "ls" } },
        {
          type: "tool_use",
          id: "toolu_edit_1",
          name: "str_replace_based_edit_tool",
          input: { command: "view", path: "/repo/README.md" },
        },
      ];
      gateway.anthropicUp.setBehavior({ kind: "answer", blocks: calls });
      const first = stream
        ? await gateway.claude.messages.stream(withTools).finalMessage()
        : await gateway.claude.messages.create(withTools);
      expect(first.content).toEqual(calls);
      expect(first.stop_reason).toBe("tool_use");

      gateway.anthropicUp.setBehavior({ kind: "answer", text: "Two files." });
      const results: Anthropic.ToolResultBlockParam[] = [
        { type: "tool_result", tool_use_id: "toolu_bash_1", content: "README.md\nsrc" },
        {
          type: "tool_result",
          tool_use_id: "toolu_edit_1",
          content: [{ type: "text", text: "1\t# Repo" }],
        },
      ];
      const second = await gateway.claude.messages.create({
        ...withTools,
        messages: [
          ...ask.messages,
          { role: "assistant", content: first.content },
          { role: "user", content: results },
        ],
      });
      expect(second.content).toEqual([{ type: "text", text: "Two files." }]);
      const messages = lastSent().messages as unknown[];
      expect(messages[1]).toEqual({ role: "assistant", content: calls });
      expect(messages[2]).toEqual({ role: "user", content: results });
    },
  );

  it.each([
    ["an OpenAI", "gpt", "openai"],
    ["a mock", "demo", "mock"],
  ])(
    "are refused by %s target with a 400 naming the tool, streamed or not",
    async (_, model, type) => {
      const posted = openaiPosts();
      for (const stream of [false, true]) {
        const refused = await gateway.claude.messages
          .create({ ...withTools, model, stream })
          .catch((e: unknown) => e);
        expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
        expect((refused as Error).message).toContain(
          `(${type}) does not support Anthropic's web_search_20250305 tool (tools[1])`,
        );
      }
      expect(openaiPosts()).toBe(posted);
    },
  );

  it("are refused, not dropped, when a fallback to a non-Anthropic model is what is left", async () => {
    const posted = openaiPosts();
    gateway.anthropicUp.setBehavior({ kind: "error", status: 500 });
    const before = gateway.anthropicUp.requests.length;
    const refused = await gateway.claude.messages
      .create({ ...withTools, model: "claude-or-gpt" })
      .catch((e: unknown) => e);
    expect(gateway.anthropicUp.requests.length).toBe(before + 1);
    expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
    expect((refused as Error).message).toContain("model 'gpt-up' on provider 'oa' (openai)");
    expect((refused as Error).message).toContain("Anthropic's web_search_20250305 tool");
    expect(openaiPosts()).toBe(posted);
  });

  it("are counted by Anthropic's count_tokens, past a target that cannot serve them", async () => {
    const counted = await gateway.claude.messages.countTokens({
      model: "demo-then-claude",
      messages: ask.messages,
      tools,
      // Not part of the prompt: accepted and not sent (Anthropic's count_tokens refuses it).
      container: "container_1",
    } as Anthropic.MessageCountTokensParams);
    expect(counted.input_tokens).toBeGreaterThan(0);
    const sent = gateway.anthropicUp.requests.at(-1);
    expect(sent?.path).toBe("/v1/messages/count_tokens");
    const sentTools = (sent?.body as Record<string, unknown> | undefined)?.tools;
    expect(JSON.stringify(sentTools)).toBe(JSON.stringify(tools));
    expect(sent?.body).not.toHaveProperty("container");
  });
});

describe("the container", () => {
  const container = { id: "container_011", expires_at: "2026-01-01T00:00:00Z", skills: null };

  it.each([
    ["an id", "container_011"],
    ["skills to load", { id: null, skills: [{ type: "anthropic", skill_id: "pptx" }] }],
  ])(
    "reaches an Anthropic target as %s, and the answer names it, whole and streamed",
    async (_, asked) => {
      gateway.anthropicUp.setBehavior({ kind: "answer", text: "Ran it.", container });
      const body = { ...withTools, container: asked } as Anthropic.MessageCreateParamsNonStreaming;
      const whole = await gateway.claude.messages.create(body);
      expect(lastSent().container).toEqual(asked);
      const streamed = await gateway.claude.messages.stream(body).finalMessage();
      expect(lastSent().container).toEqual(asked);
      expect(whole.container).toEqual(container);
      expect(streamed.container).toEqual(container);
    },
  );

  it("is refused by a target that is not Anthropic", async () => {
    const posted = openaiPosts();
    const refused = await gateway.claude.messages
      .create({ ...ask, model: "gpt", container: "container_011" })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
    expect((refused as Error).message).toContain(
      "does not support Anthropic's code execution container (container)",
    );
    expect(openaiPosts()).toBe(posted);
  });
});

describe("citations in the conversation", () => {
  const pdf = { type: "base64" as const, media_type: "application/pdf" as const, data: "JVBERi0=" };
  const quoted = {
    type: "char_location" as const,
    cited_text: "Revenue rose.",
    document_index: 0,
    document_title: "Q3 report",
    start_char_index: 0,
    end_char_index: 13,
  };
  const conversation: Anthropic.MessageParam[] = [
    {
      role: "user",
      content: [
        {
          type: "document",
          source: pdf,
          title: "Q3 report",
          context: "Unaudited figures",
          citations: { enabled: true },
        },
        { type: "text", text: "What happened to revenue?" },
      ],
    },
    {
      role: "assistant",
      content: [
        { type: "text", text: "Per the report: " },
        { type: "text", text: "revenue rose.", citations: [quoted] },
      ],
    },
    {
      role: "user",
      content: [{ type: "text", text: "You said revenue rose.", citations: [quoted] }],
    },
  ];

  it.each([
    ["whole", false],
    ["streamed", true],
  ])(
    "reach an Anthropic target %s intact, in place, with the document's own fields",
    async (_, stream) => {
      const body = { ...ask, messages: conversation };
      if (stream) await gateway.claude.messages.stream(body).finalMessage();
      else await gateway.claude.messages.create(body);
      expect(lastSent().messages).toEqual(conversation);
    },
  );

  it("are left out for another target, which refuses a document whose citations are enabled", async () => {
    const posted = openaiPosts();
    const refused = await gateway.claude.messages
      .create({ ...ask, model: "gpt", messages: conversation })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
    expect((refused as Error).message).toContain(
      "does not support citations of a document (citations.enabled)",
    );
    expect(openaiPosts()).toBe(posted);

    // Without the document, the text goes to the OpenAI target without its citations.
    const [, ...rest] = conversation;
    await gateway.claude.messages.create({
      ...ask,
      model: "gpt",
      messages: [{ role: "user", content: "Hi" }, ...rest],
    });
    const sent = gateway.openaiUp.requests.at(-1)?.body as { messages: unknown[] };
    expect(JSON.stringify(sent.messages)).not.toContain("citations");
    expect(JSON.stringify(sent.messages)).toContain("revenue rose.");
  });
});

describe("GatewayService clients", () => {
  const search = { type: "web_search_20250305", name: "web_search", max_uses: 1 };
  const params = (model: string, anthropicJson = JSON.stringify(search), name = "web_search") =>
    create(ChatParamsSchema, {
      model,
      messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "News?" } }] }],
      tools: [{ name, anthropicJson }],
      extraJson: JSON.stringify({ container: "container_011" }),
    });
  const gatewayClient = () =>
    createClient(
      GatewayService,
      createConnectTransport({ baseUrl: gateway.gw.url, httpVersion: "2" }),
    );

  it("send an Anthropic-defined tool as anthropic_json, and read the answer's container", async () => {
    const container = { id: "container_011", expires_at: "2026-01-01T00:00:00Z", skills: null };
    gateway.anthropicUp.setBehavior({ kind: "answer", text: "Nothing new.", container });
    const { completion } = await gatewayClient().chat({ params: params("claude") });
    expect(lastSent().tools).toEqual([search]);
    expect(lastSent().container).toBe("container_011");
    expect(JSON.parse(completion?.choices[0]?.anthropicContainerJson ?? "")).toEqual(container);
  });

  it.each([
    ["a target that is not Anthropic", params("gpt"), /Anthropic's web_search_20250305 tool/],
    ["malformed anthropic_json", params("claude", "{"), /anthropic_json' must be a JSON object/],
    ["a custom type", params("claude", '{"type":"custom","name":"x"}', "x"), /needs the 'type'/],
    ["another name", params("claude", JSON.stringify(search), "search"), /must be the name in/],
  ])("get INVALID_ARGUMENT for %s", async (_, request, message) => {
    const posted = openaiPosts();
    const before = gateway.anthropicUp.requests.length;
    const err = await gatewayClient()
      .chat({ params: request })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toMatch(message);
    expect(gateway.anthropicUp.requests.length).toBe(before);
    expect(openaiPosts()).toBe(posted);
  });

  it.each([
    ["container", { container: "container_011" }, "Anthropic's code execution container"],
    [
      "mcp_servers",
      { mcp_servers: [{ type: "url", url: "https://mcp.example.com/sse", name: "ex" }] },
      "Anthropic's MCP connector (mcp_servers)",
    ],
  ])(
    "get INVALID_ARGUMENT for %s in extra_json from a target that is not Anthropic",
    async (field, extras, feature) => {
      const request = create(ChatParamsSchema, {
        model: "gpt",
        messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "Hi" } }] }],
        extraJson: JSON.stringify(extras),
      });
      const posted = openaiPosts();
      const err = await gatewayClient()
        .chat({ params: request })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.InvalidArgument);
      expect((err as ConnectError).rawMessage).toContain(feature);
      expect((err as ConnectError).rawMessage).toContain(field);
      expect(openaiPosts()).toBe(posted);
    },
  );
});
