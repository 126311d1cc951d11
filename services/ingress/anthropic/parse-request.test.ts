import { describe, expect, it } from "vitest";
import {
  ResponseFormat_Type,
  Role,
  ToolChoice_Mode,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";
import { parseCountTokensRequest, parseMessagesRequest } from "./parse-request.js";

const user = { role: "user", content: "hi" };
const base = { model: "claude", max_tokens: 100, messages: [user] };

function failureOf(body: unknown): Failure {
  try {
    parseMessagesRequest(body);
  } catch (err) {
    if (err instanceof Failure) return err;
    throw err;
  }
  throw new Error("expected parseMessagesRequest to throw");
}

function expectInvalid(body: unknown, message: string, param: string | undefined): void {
  const f = failureOf(body);
  expect(f.status).toBe(400);
  expect(f.kind).toBe("invalid_request");
  expect(f.message).toBe(message);
  expect(f.param).toBe(param ?? "");
}

function expectUnsupported(body: unknown, message: string, param: string): void {
  const f = failureOf(body);
  expect(f.status).toBe(400);
  expect(f.kind).toBe("unsupported");
  expect(f.message).toBe(message);
  expect(f.param).toBe(param);
}

const weather = {
  name: "get_weather",
  description: "Weather for a city",
  input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};

const png = { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" };

describe("parseMessagesRequest: the body", () => {
  it.each([
    ["an array", []],
    ["a string", "hi"],
    ["null", null],
  ])("rejects %s as the body", (_name, body) => {
    expectInvalid(body, "Input should be a valid dictionary or object to extract fields from", "");
  });

  it("translates a minimal request and marks it as Anthropic, always owed usage", () => {
    const p = parseMessagesRequest(base);
    expect(p.model).toBe("claude");
    expect(p.maxTokens).toBe(100);
    expect(p.clientApi).toBe("anthropic");
    expect(p.stream).toBe(false);
    expect(p.includeUsage).toBe(true);
    expect(p.extraJson).toBe("");
    expect(p.messages).toHaveLength(1);
    expect(p.messages[0]?.role).toBe(Role.USER);
    expect(p.messages[0]?.contentIsText).toBe(true);
    expect(p.messages[0]?.content[0]?.part).toEqual({ case: "text", value: "hi" });
    expect(p.temperature).toBeUndefined();
    expect(p.topP).toBeUndefined();
    expect(p.toolChoice).toBeUndefined();
    expect(p.responseFormat).toBeUndefined();
    expect(p.parallelToolCalls).toBeUndefined();
    expect(p.user).toBeUndefined();
    expect(p.stop).toEqual([]);
  });

  it("rejects a top-level field Anthropic does not know, as Anthropic does", () => {
    expectInvalid({ ...base, n: 2 }, "n: Extra inputs are not permitted", "n");
    expectInvalid(
      { ...base, response_format: { type: "json_object" } },
      "response_format: Extra inputs are not permitted",
      "response_format",
    );
  });

  it("carries container, an id or an object, in extraJson for Anthropic targets", () => {
    const withId = parseMessagesRequest({ ...base, container: "container_1" });
    expect(JSON.parse(withId.extraJson)).toEqual({ container: "container_1" });
    const skills = { id: null, skills: [{ type: "anthropic", skill_id: "pptx" }] };
    const withSkills = parseMessagesRequest({ ...base, container: skills });
    expect(JSON.parse(withSkills.extraJson)).toEqual({ container: skills });
    expectInvalid(
      { ...base, container: 7 },
      "container: Input should be a valid string or a valid dictionary",
      "container",
    );
  });
});

describe("parseMessagesRequest: model, max_tokens and sampling", () => {
  it.each<[string, Record<string, unknown>, string, string]>([
    ["missing model", { model: undefined }, "model: Field required", "model"],
    ["a numeric model", { model: 3 }, "model: Input should be a valid string", "model"],
    ["an empty model", { model: "" }, "model: String should have at least 1 character", "model"],
    ["missing max_tokens", { max_tokens: undefined }, "max_tokens: Field required", "max_tokens"],
    ["null max_tokens", { max_tokens: null }, "max_tokens: Field required", "max_tokens"],
    [
      "a string max_tokens",
      { max_tokens: "100" },
      "max_tokens: Input should be a valid integer",
      "max_tokens",
    ],
    [
      "a fractional max_tokens",
      { max_tokens: 1.5 },
      "max_tokens: Input should be a valid integer, got a number with a fractional part",
      "max_tokens",
    ],
    [
      "a zero max_tokens",
      { max_tokens: 0 },
      "max_tokens: Input should be greater than or equal to 1",
      "max_tokens",
    ],
    [
      "a max_tokens beyond uint32",
      { max_tokens: 2 ** 32 },
      "max_tokens: Input should be less than or equal to 4294967295",
      "max_tokens",
    ],
    [
      "a temperature above 1",
      { temperature: 1.5 },
      "temperature: Input should be less than or equal to 1",
      "temperature",
    ],
    [
      "a negative temperature",
      { temperature: -0.1 },
      "temperature: Input should be greater than or equal to 0",
      "temperature",
    ],
    [
      "a string temperature",
      { temperature: "hot" },
      "temperature: Input should be a valid number",
      "temperature",
    ],
    ["a top_p above 1", { top_p: 2 }, "top_p: Input should be less than or equal to 1", "top_p"],
    [
      "a negative top_k",
      { top_k: -1 },
      "top_k: Input should be greater than or equal to 0",
      "top_k",
    ],
    [
      "a non-list stop_sequences",
      { stop_sequences: "END" },
      "stop_sequences: Input should be a valid list",
      "stop_sequences",
    ],
    [
      "a non-string stop sequence",
      { stop_sequences: ["END", 4] },
      "stop_sequences.1: Input should be a valid string",
      "stop_sequences.1",
    ],
    ["a string stream", { stream: "yes" }, "stream: Input should be a valid boolean", "stream"],
  ])("rejects %s", (_name, patch, message, param) => {
    expectInvalid({ ...base, ...patch }, message, param);
  });

  it("translates sampling, stop sequences and stream", () => {
    const p = parseMessagesRequest({
      ...base,
      temperature: 0.7,
      top_p: 0.9,
      stop_sequences: ["END", "\n\nHuman:"],
      stream: true,
    });
    expect(p.temperature).toBe(0.7);
    expect(p.topP).toBe(0.9);
    expect(p.stop).toEqual(["END", "\n\nHuman:"]);
    expect(p.stream).toBe(true);
    expect(p.includeUsage).toBe(true);
  });

  it("treats null optional fields as absent", () => {
    const p = parseMessagesRequest({ ...base, temperature: null, system: null, tools: null });
    expect(p.temperature).toBeUndefined();
    expect(p.messages).toHaveLength(1);
    expect(p.tools).toEqual([]);
  });
});

describe("parseMessagesRequest: fields carried in extraJson", () => {
  it("carries top_k, thinking, metadata and service_tier as sent, and metadata.user_id as user", () => {
    const p = parseMessagesRequest({
      ...base,
      top_k: 5,
      thinking: { type: "enabled", budget_tokens: 2048 },
      metadata: { user_id: "u-42" },
      service_tier: "auto",
    });
    expect(JSON.parse(p.extraJson)).toEqual({
      top_k: 5,
      thinking: { type: "enabled", budget_tokens: 2048 },
      metadata: { user_id: "u-42" },
      service_tier: "auto",
    });
    expect(p.user).toBe("u-42");
  });

  it("carries the documented cache_control, inference_geo, speed and context_management fields", () => {
    const edits = { edits: [{ type: "clear_tool_uses_20250919" }] };
    const p = parseMessagesRequest({
      ...base,
      cache_control: { type: "ephemeral" },
      inference_geo: "us",
      speed: "fast",
      context_management: edits,
    });
    expect(JSON.parse(p.extraJson)).toEqual({
      cache_control: { type: "ephemeral" },
      inference_geo: "us",
      speed: "fast",
      context_management: edits,
    });
    expect(() => parseMessagesRequest({ ...base, context_management: "x" })).toThrow(
      /context_management/,
    );
  });

  it("carries mcp_servers as sent, and refuses one that is not a list of objects", () => {
    const servers = [{ type: "url", url: "https://mcp.example.com/sse", name: "example" }];
    const p = parseMessagesRequest({ ...base, mcp_servers: servers });
    expect(JSON.parse(p.extraJson)).toEqual({ mcp_servers: servers });
    expect(() => parseMessagesRequest({ ...base, mcp_servers: {} })).toThrow(
      "mcp_servers: Input should be a valid list",
    );
    expect(() => parseMessagesRequest({ ...base, mcp_servers: ["x"] })).toThrow(
      "mcp_servers.0: Input should be a valid dictionary",
    );
  });

  it("turns output_config.format into a JSON_SCHEMA response format and carries the rest", () => {
    const schema = { type: "object", properties: { a: { type: "string" } } };
    const p = parseMessagesRequest({
      ...base,
      output_config: { format: { type: "json_schema", schema }, effort: "low" },
    });
    expect(p.responseFormat?.type).toBe(ResponseFormat_Type.JSON_SCHEMA);
    expect(JSON.parse(p.responseFormat?.jsonSchemaJson ?? "")).toEqual({
      name: "output",
      schema,
      strict: true,
    });
    expect(JSON.parse(p.extraJson)).toEqual({ output_config: { effort: "low" } });
    const formatOnly = parseMessagesRequest({
      ...base,
      output_config: { format: { type: "json_schema", schema } },
    });
    expect(formatOnly.extraJson).toBe("");
  });

  it.each<[string, Record<string, unknown>, string, string]>([
    [
      "thinking without type",
      { thinking: { budget_tokens: 2048 } },
      "thinking.type: Field required",
      "thinking.type",
    ],
    [
      "enabled thinking without budget",
      { thinking: { type: "enabled" } },
      "thinking.budget_tokens: Field required",
      "thinking.budget_tokens",
    ],
    [
      "a thinking budget under 1024",
      { thinking: { type: "enabled", budget_tokens: 100 } },
      "thinking.budget_tokens: Input should be greater than or equal to 1024",
      "thinking.budget_tokens",
    ],
    [
      "an unknown metadata field",
      { metadata: { user_id: "u", session: "s" } },
      "metadata.session: Extra inputs are not permitted",
      "metadata.session",
    ],
    [
      "a numeric user_id",
      { metadata: { user_id: 7 } },
      "metadata.user_id: Input should be a valid string",
      "metadata.user_id",
    ],
    [
      "an unknown service tier",
      { service_tier: "priority" },
      "service_tier: Input should be 'auto' or 'standard_only'",
      "service_tier",
    ],
    [
      "an output format other than json_schema",
      { output_config: { format: { type: "json_object" } } },
      "output_config.format.type: Input should be 'json_schema'",
      "output_config.format.type",
    ],
    [
      "an output format without schema",
      { output_config: { format: { type: "json_schema" } } },
      "output_config.format.schema: Field required",
      "output_config.format.schema",
    ],
  ])("rejects %s", (_name, patch, message, param) => {
    expectInvalid({ ...base, ...patch }, message, param);
  });
});

describe("parseMessagesRequest: messages", () => {
  it.each<[string, unknown, string, string]>([
    ["missing messages", undefined, "messages: Field required", "messages"],
    ["messages not a list", { role: "user" }, "messages: Input should be a valid list", "messages"],
    ["no messages", [], "messages: at least one message is required", "messages"],
    [
      "a message that is not an object",
      [user, "hello"],
      "messages.1: Input should be a valid dictionary",
      "messages.1",
    ],
    [
      "a message without role",
      [{ content: "x" }],
      "messages.0.role: Field required",
      "messages.0.role",
    ],
    [
      "an unknown role",
      [user, { role: "tool", content: "x" }],
      "messages.1.role: Input should be 'user', 'assistant' or 'system'",
      "messages.1.role",
    ],
    [
      "an extra message field",
      [{ ...user, name: "bob" }],
      "messages.0.name: Extra inputs are not permitted",
      "messages.0.name",
    ],
    [
      "a message without content",
      [{ role: "user" }],
      "messages.0.content: Field required",
      "messages.0.content",
    ],
    [
      "content of the wrong type",
      [{ role: "user", content: 5 }],
      "messages.0.content: Input should be a valid string or a valid list",
      "messages.0.content",
    ],
    [
      "an empty user message",
      [{ role: "user", content: "" }],
      "messages.0: all messages must have non-empty content except for the optional final assistant message",
      "messages.0",
    ],
    [
      "an empty assistant message that is not last",
      [user, { role: "assistant", content: [] }, user],
      "messages.1: all messages must have non-empty content except for the optional final assistant message",
      "messages.1",
    ],
    [
      "a block without type",
      [{ role: "user", content: [{ text: "x" }] }],
      "messages.0.content.0.type: Field required",
      "messages.0.content.0.type",
    ],
    [
      "an unknown block type",
      [{ role: "user", content: [{ type: "text", text: "a" }, { type: "video" }] }],
      "messages.0.content.1.type: Input should be 'text', 'image', 'document', 'thinking', 'redacted_thinking', 'tool_use' or 'tool_result'",
      "messages.0.content.1.type",
    ],
    [
      "a tool_use block from the user",
      [{ role: "user", content: [{ type: "tool_use", id: "t", name: "f", input: {} }] }],
      "messages.0.content.0.type: 'tool_use' blocks are not allowed in user messages",
      "messages.0.content.0.type",
    ],
    [
      "a tool_result block from the assistant",
      [user, { role: "assistant", content: [{ type: "tool_result", tool_use_id: "t" }] }],
      "messages.1.content.0.type: 'tool_result' blocks are not allowed in assistant messages",
      "messages.1.content.0.type",
    ],
    [
      "an empty text block",
      [{ role: "user", content: [{ type: "text", text: "" }] }],
      "messages.0.content.0.text: text content blocks must be non-empty",
      "messages.0.content.0.text",
    ],
    [
      "a text block without text",
      [{ role: "user", content: [{ type: "text" }] }],
      "messages.0.content.0.text: Field required",
      "messages.0.content.0.text",
    ],
    [
      "an image of an unknown media type",
      [{ role: "user", content: [{ type: "image", source: { ...png, media_type: "image/bmp" } }] }],
      "messages.0.content.0.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
      "messages.0.content.0.source.media_type",
    ],
    [
      "an image without data",
      [
        {
          role: "user",
          content: [{ type: "image", source: { type: "base64", media_type: "image/png" } }],
        },
      ],
      "messages.0.content.0.source.data: Field required",
      "messages.0.content.0.source.data",
    ],
    [
      "an image with an unknown source type",
      [{ role: "user", content: [{ type: "image", source: { type: "ftp" } }] }],
      "messages.0.content.0.source.type: Input should be 'base64', 'url' or 'file'",
      "messages.0.content.0.source.type",
    ],
    [
      "a document that is not a PDF",
      [
        {
          role: "user",
          content: [
            { type: "document", source: { type: "base64", media_type: "text/csv", data: "YQ==" } },
          ],
        },
      ],
      "messages.0.content.0.source.media_type: Input should be 'application/pdf'",
      "messages.0.content.0.source.media_type",
    ],
    [
      "a tool_use without input",
      [user, { role: "assistant", content: [{ type: "tool_use", id: "t", name: "f" }] }],
      "messages.1.content.0.input: Field required",
      "messages.1.content.0.input",
    ],
    [
      "a tool_use whose input is not an object",
      [
        user,
        { role: "assistant", content: [{ type: "tool_use", id: "t", name: "f", input: "{}" }] },
      ],
      "messages.1.content.0.input: Input should be a valid dictionary",
      "messages.1.content.0.input",
    ],
    [
      "a tool_result without tool_use_id",
      [{ role: "user", content: [{ type: "tool_result", content: "x" }] }],
      "messages.0.content.0.tool_use_id: Field required",
      "messages.0.content.0.tool_use_id",
    ],
    [
      "a tool_result holding a tool_use",
      [
        {
          role: "user",
          content: [
            {
              type: "tool_result",
              tool_use_id: "t",
              content: [{ type: "tool_use", id: "x", name: "f", input: {} }],
            },
          ],
        },
      ],
      "messages.0.content.0.content.0.type: 'tool_use' blocks are not allowed in tool_result content",
      "messages.0.content.0.content.0.type",
    ],
    [
      "a string is_error",
      [{ role: "user", content: [{ type: "tool_result", tool_use_id: "t", is_error: "yes" }] }],
      "messages.0.content.0.is_error: Input should be a valid boolean",
      "messages.0.content.0.is_error",
    ],
    [
      "a thinking block without signature",
      [user, { role: "assistant", content: [{ type: "thinking", thinking: "hm" }] }],
      "messages.1.content.0.signature: Field required",
      "messages.1.content.0.signature",
    ],
  ])("rejects %s", (_name, messages, message, param) => {
    expectInvalid({ ...base, messages }, message, param);
  });

  it.each<[string, unknown, string, string]>([
    [
      "a server tool block the user wrote",
      [
        {
          role: "user",
          content: [{ type: "search_result", source: "https://x", title: "x", content: [] }],
        },
      ],
      "messages.0.content.0.type: 'search_result' blocks belong to Anthropic server tools and are not supported by this gateway",
      "messages.0.content.0.type",
    ],
    [
      "an image from the Files API",
      [{ role: "user", content: [{ type: "image", source: { type: "file", file_id: "file_1" } }] }],
      "messages.0.content.0.source.type: 'file' sources (Anthropic Files API ids) are not supported by this gateway; send the bytes as base64",
      "messages.0.content.0.source.type",
    ],
    [
      "a plain-text document",
      [
        {
          role: "user",
          content: [
            { type: "document", source: { type: "text", media_type: "text/plain", data: "x" } },
          ],
        },
      ],
      "messages.0.content.0.source.type: 'text' document sources are not supported by this gateway; send the PDF as base64",
      "messages.0.content.0.source.type",
    ],
  ])("refuses %s as unsupported", (_name, messages, message, param) => {
    expectUnsupported({ ...base, messages }, message, param);
  });

  it("keeps a document's citations setting and context for Anthropic targets, its title as the file name", () => {
    const pdf = { type: "base64", media_type: "application/pdf", data: "JVBERi0=" };
    const p = parseMessagesRequest({
      ...base,
      messages: [
        {
          role: "user",
          content: [
            {
              type: "document",
              source: pdf,
              title: "Report",
              context: "Q3, unaudited",
              citations: { enabled: true },
            },
            { type: "document", source: pdf },
          ],
        },
      ],
    });
    const [cited, plain] = p.messages[0]?.content ?? [];
    expect(cited?.part).toEqual({
      case: "file",
      value: expect.objectContaining({ filename: "Report" }),
    });
    expect(JSON.parse(cited?.anthropicFieldsJson ?? "")).toEqual({
      citations: { enabled: true },
      context: "Q3, unaudited",
    });
    expect(plain?.anthropicFieldsJson).toBe("");
  });

  it.each<[string, Record<string, unknown>, string, string]>([
    [
      "citations that are not an object",
      { citations: true },
      "messages.0.content.0.citations: Input should be a valid dictionary",
      "messages.0.content.0.citations",
    ],
    [
      "citations.enabled that is not a boolean",
      { citations: { enabled: "yes" } },
      "messages.0.content.0.citations.enabled: Input should be a valid boolean",
      "messages.0.content.0.citations.enabled",
    ],
    [
      "a context that is not a string",
      { context: 3 },
      "messages.0.content.0.context: Input should be a valid string",
      "messages.0.content.0.context",
    ],
  ])("rejects a document with %s", (_name, fields, message, param) => {
    const pdf = { type: "base64", media_type: "application/pdf", data: "JVBERi0=" };
    const content = [{ type: "document", source: pdf, ...fields }];
    expectInvalid({ ...base, messages: [{ role: "user", content }] }, message, param);
  });

  it("keeps the citations of text blocks the client sends back, in user and assistant turns", () => {
    const found = {
      type: "web_search_result_location",
      url: "https://a.example",
      title: "A",
      encrypted_index: "Eo1",
      cited_text: "route",
    };
    const quoted = {
      type: "char_location",
      cited_text: "x",
      document_index: 0,
      document_title: null,
      start_char_index: 0,
      end_char_index: 1,
    };
    const p = parseMessagesRequest({
      ...base,
      messages: [
        user,
        {
          role: "assistant",
          content: [
            { type: "text", text: "Gateways route.", citations: [found] },
            { type: "text", text: " Plainly.", citations: null },
          ],
        },
        { role: "user", content: [{ type: "text", text: "As you said:", citations: [quoted] }] },
      ],
    });
    const answer = p.messages[1]?.content ?? [];
    expect(answer.map((c) => c.citationsJson)).toEqual([JSON.stringify([found]), ""]);
    expect(answer.map((c) => c.blockIndex)).toEqual([0, 1]);
    expect(p.messages[2]?.content[0]?.citationsJson).toBe(JSON.stringify([quoted]));
  });

  it.each<[string, unknown, string, string]>([
    [
      "citations that are not a list",
      { type: "x" },
      "messages.0.content.0.citations: Input should be a valid list",
      "messages.0.content.0.citations",
    ],
    [
      "a citation without a type",
      [{ cited_text: "x" }],
      "messages.0.content.0.citations.0.type: Field required",
      "messages.0.content.0.citations.0.type",
    ],
  ])("rejects a text block with %s", (_name, citations, message, param) => {
    const content = [{ type: "text", text: "x", citations }];
    expectInvalid({ ...base, messages: [{ role: "user", content }] }, message, param);
  });

  it("keeps cache_control where the client put it: blocks, tool calls, tool results", () => {
    const ttl = { type: "ephemeral", ttl: "1h" };
    const p = parseMessagesRequest({
      ...base,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Long context", cache_control: ttl },
            { type: "image", source: png, cache_control: { type: "ephemeral" } },
          ],
        },
        {
          role: "assistant",
          content: [{ type: "tool_use", id: "t1", name: "f", input: {}, cache_control: ttl }],
        },
        {
          role: "user",
          content: [{ type: "tool_result", tool_use_id: "t1", content: "ok", cache_control: ttl }],
        },
      ],
    });
    const json = JSON.stringify(ttl);
    expect(p.messages[0]?.content.map((c) => c.cacheControlJson)).toEqual([
      json,
      '{"type":"ephemeral"}',
    ]);
    expect(p.messages[1]?.toolCalls[0]?.cacheControlJson).toBe(json);
    expect(p.messages[2]?.role).toBe(Role.TOOL);
    expect(p.messages[2]?.cacheControlJson).toBe(json);
  });

  it("refuses a cache_control that is not an object, naming the block", () => {
    expectInvalid(
      {
        ...base,
        messages: [{ role: "user", content: [{ type: "text", text: "x", cache_control: "yes" }] }],
      },
      "messages.0.content.0.cache_control: Input should be a valid dictionary",
      "messages.0.content.0.cache_control",
    );
  });

  it("translates text, base64 and URL images, and a PDF document in a user message", () => {
    const p = parseMessagesRequest({
      ...base,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Look:", cache_control: { type: "ephemeral" } },
            { type: "image", source: png },
            { type: "image", source: { type: "url", url: "https://x.test/cat.jpg" } },
            {
              type: "document",
              title: "report.pdf",
              source: { type: "base64", media_type: "application/pdf", data: "JVBERi0=" },
            },
          ],
        },
      ],
    });
    const m = p.messages[0];
    expect(m?.role).toBe(Role.USER);
    expect(m?.contentIsText).toBe(false);
    expect(m?.content.map((c) => c.part)).toEqual([
      { case: "text", value: "Look:" },
      {
        case: "image",
        value: expect.objectContaining({ url: "data:image/png;base64,iVBORw0KGgo=" }),
      },
      { case: "image", value: expect.objectContaining({ url: "https://x.test/cat.jpg" }) },
      {
        case: "file",
        value: expect.objectContaining({
          fileData: "data:application/pdf;base64,JVBERi0=",
          filename: "report.pdf",
        }),
      },
    ]);
  });

  it("turns assistant tool_use blocks into tool calls with the input as JSON text", () => {
    const p = parseMessagesRequest({
      ...base,
      messages: [
        user,
        {
          role: "assistant",
          content: [
            { type: "text", text: "Checking." },
            { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Zürich" } },
            { type: "tool_use", id: "toolu_2", name: "noop", input: {} },
          ],
        },
      ],
    });
    const a = p.messages[1];
    expect(a?.role).toBe(Role.ASSISTANT);
    expect(a?.content.map((c) => c.part)).toEqual([{ case: "text", value: "Checking." }]);
    expect(a?.toolCalls.map((t) => [t.id, t.name, t.arguments])).toEqual([
      ["toolu_1", "get_weather", '{"city":"Zürich"}'],
      ["toolu_2", "noop", "{}"],
    ]);
  });

  it("puts one tool message per tool_result in order, then the user's other blocks", () => {
    const p = parseMessagesRequest({
      ...base,
      messages: [
        user,
        {
          role: "assistant",
          content: [
            { type: "tool_use", id: "toolu_1", name: "a", input: {} },
            { type: "tool_use", id: "toolu_2", name: "b", input: {} },
          ],
        },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_1", content: "sunny" },
            {
              type: "tool_result",
              tool_use_id: "toolu_2",
              is_error: true,
              content: [
                { type: "text", text: "failed" },
                { type: "image", source: png },
              ],
            },
            { type: "text", text: "And tomorrow?" },
          ],
        },
      ],
    });
    expect(p.messages.map((m) => m.role)).toEqual([
      Role.USER,
      Role.ASSISTANT,
      Role.TOOL,
      Role.TOOL,
      Role.USER,
    ]);
    const [first, second, after] = p.messages.slice(2);
    expect(first?.toolCallId).toBe("toolu_1");
    expect(first?.isError).toBe(false);
    expect(first?.contentIsText).toBe(true);
    expect(first?.content.map((c) => c.part)).toEqual([{ case: "text", value: "sunny" }]);
    expect(second?.toolCallId).toBe("toolu_2");
    expect(second?.isError).toBe(true);
    expect(second?.contentIsText).toBe(false);
    expect(second?.content.map((c) => c.part.case)).toEqual(["text", "image"]);
    expect(after?.content.map((c) => c.part)).toEqual([{ case: "text", value: "And tomorrow?" }]);
  });

  it("answers a tool_result without content with an empty text result", () => {
    const p = parseMessagesRequest({
      ...base,
      messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: "t" }] }],
    });
    expect(p.messages).toHaveLength(1);
    expect(p.messages[0]?.role).toBe(Role.TOOL);
    expect(p.messages[0]?.contentIsText).toBe(true);
    expect(p.messages[0]?.content).toEqual([]);
  });

  it("keeps thinking and redacted_thinking blocks as the assistant's reasoning blocks, in order", () => {
    const p = parseMessagesRequest({
      ...base,
      messages: [
        user,
        {
          role: "assistant",
          content: [
            { type: "thinking", thinking: "Let me think.", signature: "sig" },
            { type: "redacted_thinking", data: "opaque" },
            { type: "text", text: "Answer." },
          ],
        },
        user,
      ],
    });
    expect(p.messages[1]?.content.map((c) => c.part)).toEqual([{ case: "text", value: "Answer." }]);
    expect(
      p.messages[1]?.reasoningBlocks.map((b) => [b.text, b.signature, b.redactedData]),
    ).toEqual([
      ["Let me think.", "sig", ""],
      ["", "", "opaque"],
    ]);
  });

  it("numbers an assistant message's blocks in their order, and carries server tool and MCP blocks whole", () => {
    const search = {
      type: "server_tool_use",
      id: "srvtoolu_1",
      name: "web_search",
      input: { q: "x" },
    };
    const mcp = {
      type: "mcp_tool_result",
      tool_use_id: "mcptoolu_1",
      is_error: false,
      content: [{ type: "text", text: "42" }],
    };
    const p = parseMessagesRequest({
      ...base,
      messages: [
        user,
        {
          role: "assistant",
          content: [
            { type: "text", text: "Let me look." },
            search,
            { type: "thinking", thinking: "Found it.", signature: "sig" },
            { type: "tool_use", id: "toolu_1", name: "f", input: {} },
            mcp,
            { type: "text", text: "Done." },
          ],
        },
        // A user's blocks keep the order of their lists only.
        { role: "user", content: [{ type: "text", text: "Thanks." }] },
      ],
    });
    const a = p.messages[1];
    expect(a?.content.map((c) => [c.blockIndex, c.part.value])).toEqual([
      [0, "Let me look."],
      [5, "Done."],
    ]);
    expect(a?.anthropicBlocks.map((b) => [b.blockIndex, JSON.parse(b.json)])).toEqual([
      [1, search],
      [4, mcp],
    ]);
    expect(a?.reasoningBlocks.map((b) => b.blockIndex)).toEqual([2]);
    expect(a?.toolCalls.map((c) => c.blockIndex)).toEqual([3]);
    expect(p.messages[2]?.content[0]?.blockIndex).toBeUndefined();
  });

  it("lets the last assistant message be an empty prefill", () => {
    const p = parseMessagesRequest({
      ...base,
      messages: [user, { role: "assistant", content: "" }],
    });
    expect(p.messages[1]?.role).toBe(Role.ASSISTANT);
    expect(p.messages[1]?.content.map((c) => c.part)).toEqual([{ case: "text", value: "" }]);
  });

  it("keeps a mid-conversation system message in its place", () => {
    const p = parseMessagesRequest({
      ...base,
      messages: [user, { role: "system", content: "Be brief." }, user],
    });
    expect(p.messages.map((m) => m.role)).toEqual([Role.USER, Role.SYSTEM, Role.USER]);
  });
});

describe("parseMessagesRequest: system", () => {
  it("puts a string system prompt first as a plain-text system message", () => {
    const p = parseMessagesRequest({ ...base, system: "You are terse." });
    expect(p.messages[0]?.role).toBe(Role.SYSTEM);
    expect(p.messages[0]?.contentIsText).toBe(true);
    expect(p.messages[0]?.content[0]?.part).toEqual({ case: "text", value: "You are terse." });
    expect(p.messages[1]?.role).toBe(Role.USER);
  });

  it("puts system text blocks first as one system message of parts", () => {
    const p = parseMessagesRequest({
      ...base,
      system: [
        { type: "text", text: "A", cache_control: { type: "ephemeral" } },
        { type: "text", text: "B" },
      ],
    });
    expect(p.messages).toHaveLength(2);
    expect(p.messages[0]?.contentIsText).toBe(false);
    expect(p.messages[0]?.content.map((c) => c.part)).toEqual([
      { case: "text", value: "A" },
      { case: "text", value: "B" },
    ]);
    expect(p.messages[0]?.content.map((c) => c.cacheControlJson)).toEqual([
      '{"type":"ephemeral"}',
      "",
    ]);
  });

  it("adds no system message for an empty system prompt", () => {
    expect(parseMessagesRequest({ ...base, system: "" }).messages).toHaveLength(1);
    expect(parseMessagesRequest({ ...base, system: [] }).messages).toHaveLength(1);
  });

  it.each<[string, unknown, string, string]>([
    ["a number", 5, "system: Input should be a valid string or a valid list", "system"],
    [
      "an image block",
      [{ type: "image", source: png }],
      "system.0.type: 'image' blocks are not allowed in system messages",
      "system.0.type",
    ],
    [
      "an empty text block",
      [{ type: "text", text: "" }],
      "system.0.text: text content blocks must be non-empty",
      "system.0.text",
    ],
  ])("rejects %s as system", (_name, system, message, param) => {
    expectInvalid({ ...base, system }, message, param);
  });
});

describe("parseMessagesRequest: tools and tool_choice", () => {
  it("translates custom tools with their input schema as JSON text", () => {
    const p = parseMessagesRequest({
      ...base,
      tools: [
        { ...weather, type: "custom", strict: true, cache_control: { type: "ephemeral" } },
        { name: "noop", input_schema: { type: "object" } },
      ],
    });
    expect(p.tools).toHaveLength(2);
    expect(p.tools[0]).toMatchObject({
      name: "get_weather",
      description: "Weather for a city",
      strict: true,
    });
    expect(JSON.parse(p.tools[0]?.parametersJson ?? "")).toEqual(weather.input_schema);
    expect(p.tools[0]?.cacheControlJson).toBe('{"type":"ephemeral"}');
    expect(p.tools[1]?.cacheControlJson).toBe("");
    expect(p.tools[1]?.parametersJson).toBe('{"type":"object"}');
    expect(p.tools[1]?.description).toBeUndefined();
    expect(p.tools[1]?.strict).toBeUndefined();
  });

  it.each<[unknown, ToolChoice_Mode, string, boolean | undefined]>([
    [{ type: "auto" }, ToolChoice_Mode.AUTO, "", undefined],
    [{ type: "any" }, ToolChoice_Mode.REQUIRED, "", undefined],
    [{ type: "none" }, ToolChoice_Mode.NONE, "", undefined],
    [{ type: "tool", name: "get_weather" }, ToolChoice_Mode.FUNCTION, "get_weather", undefined],
    [{ type: "auto", disable_parallel_tool_use: true }, ToolChoice_Mode.AUTO, "", false],
    [{ type: "any", disable_parallel_tool_use: false }, ToolChoice_Mode.REQUIRED, "", undefined],
  ])("translates tool_choice %j", (choice, mode, name, parallel) => {
    const p = parseMessagesRequest({ ...base, tools: [weather], tool_choice: choice });
    expect(p.toolChoice?.mode).toBe(mode);
    expect(p.toolChoice?.functionName).toBe(name);
    expect(p.parallelToolCalls).toBe(parallel);
  });

  it("lets tool_choice auto or none through without tools", () => {
    expect(parseMessagesRequest({ ...base, tool_choice: { type: "auto" } }).toolChoice?.mode).toBe(
      ToolChoice_Mode.AUTO,
    );
    expect(parseMessagesRequest({ ...base, tool_choice: { type: "none" } }).toolChoice?.mode).toBe(
      ToolChoice_Mode.NONE,
    );
  });

  it.each<[string, Record<string, unknown>, string, string]>([
    [
      "tools that are not a list",
      { tools: weather },
      "tools: Input should be a valid list",
      "tools",
    ],
    [
      "a tool without name",
      { tools: [{ input_schema: { type: "object" } }] },
      "tools.0.name: Field required",
      "tools.0.name",
    ],
    [
      "a tool with a bad name",
      { tools: [{ ...weather, name: "get weather" }] },
      "tools.0.name: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
      "tools.0.name",
    ],
    [
      "a tool without input_schema",
      { tools: [{ name: "f" }] },
      "tools.0.input_schema: Field required",
      "tools.0.input_schema",
    ],
    [
      "an input schema that is not an object schema",
      { tools: [{ name: "f", input_schema: { type: "array" } }] },
      "tools.0.input_schema.type: Input should be 'object'",
      "tools.0.input_schema.type",
    ],
    [
      "two tools of one name",
      { tools: [weather, weather] },
      "tools: Tool names must be unique.",
      "tools",
    ],
    [
      "an unknown tool field",
      { tools: [{ ...weather, parameters: {} }] },
      "tools.0.parameters: Extra inputs are not permitted",
      "tools.0.parameters",
    ],
    [
      "tool_choice that is not an object",
      { tools: [weather], tool_choice: "auto" },
      "tool_choice: Input should be a valid dictionary",
      "tool_choice",
    ],
    [
      "tool_choice without type",
      { tools: [weather], tool_choice: {} },
      "tool_choice.type: Field required",
      "tool_choice.type",
    ],
    [
      "an unknown tool_choice type",
      { tools: [weather], tool_choice: { type: "required" } },
      "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'",
      "tool_choice.type",
    ],
    [
      "tool_choice tool without name",
      { tools: [weather], tool_choice: { type: "tool" } },
      "tool_choice.name: Field required",
      "tool_choice.name",
    ],
    [
      "tool_choice naming an unknown tool",
      { tools: [weather], tool_choice: { type: "tool", name: "other" } },
      "tool_choice.name: 'other' is not the name of any tool in 'tools'",
      "tool_choice.name",
    ],
    [
      "tool_choice any without tools",
      { tool_choice: { type: "any" } },
      "tool_choice: 'any' may only be specified while providing tools",
      "tool_choice",
    ],
    [
      "disable_parallel_tool_use on none",
      { tools: [weather], tool_choice: { type: "none", disable_parallel_tool_use: true } },
      "tool_choice.none.disable_parallel_tool_use: Extra inputs are not permitted",
      "tool_choice.disable_parallel_tool_use",
    ],
  ])("rejects %s", (_name, patch, message, param) => {
    expectInvalid({ ...base, ...patch }, message, param);
  });

  it("carries tools Anthropic defines whole, in their place among the client's own", () => {
    const search = {
      type: "web_search_20250305",
      name: "web_search",
      max_uses: 3,
      allowed_domains: ["example.com"],
      cache_control: { type: "ephemeral" },
    };
    const bash = { type: "bash_20250124", name: "bash" };
    const toolset = { type: "mcp_toolset", mcp_server_name: "example" };
    const p = parseMessagesRequest({
      ...base,
      tools: [search, weather, bash, toolset],
      tool_choice: { type: "tool", name: "web_search" },
    });
    expect(p.tools.map((t) => [t.name, t.anthropicJson])).toEqual([
      ["web_search", JSON.stringify(search)],
      ["get_weather", ""],
      ["bash", JSON.stringify(bash)],
      ["", JSON.stringify(toolset)],
    ]);
    expect(p.tools[0]?.parametersJson).toBe("");
    expect(p.tools[0]?.cacheControlJson).toBe("");
    expect(p.toolChoice).toMatchObject({
      mode: ToolChoice_Mode.FUNCTION,
      functionName: "web_search",
    });
  });

  it("leaves a forced tool to Anthropic when a toolset's tools are unnamed", () => {
    const p = parseMessagesRequest({
      ...base,
      tools: [{ type: "mcp_toolset", mcp_server_name: "example" }],
      tool_choice: { type: "tool", name: "echo" },
    });
    expect(p.toolChoice?.functionName).toBe("echo");
  });

  it.each<[string, unknown[], string, string]>([
    [
      "an Anthropic-defined tool without a name",
      [{ type: "web_search_20250305" }],
      "tools.0.name: Field required",
      "tools.0.name",
    ],
    [
      "an Anthropic-defined tool whose name is not a string",
      [{ type: "bash_20250124", name: 1 }],
      "tools.0.name: Input should be a valid string",
      "tools.0.name",
    ],
    [
      "a tool type that is not a string",
      [{ type: 5, name: "x" }],
      "tools.0.type: Input should be a valid string",
      "tools.0.type",
    ],
    [
      "a schema on a tool whose type is not custom",
      [{ ...weather, type: "function" }],
      "tools.0.type: Input should be 'custom'",
      "tools.0.type",
    ],
    [
      "an Anthropic-defined tool named like a custom one",
      [weather, { type: "bash_20250124", name: "get_weather" }],
      "tools: Tool names must be unique.",
      "tools",
    ],
  ])("rejects %s", (_name, tools, message, param) => {
    expectInvalid({ ...base, tools }, message, param);
  });

  it.each<[string, unknown, string, string]>([
    [
      "a tool with input examples",
      { ...weather, input_examples: [{ city: "Paris" }] },
      "tools.0.input_examples: tool input_examples is not supported by this gateway",
      "tools.0.input_examples",
    ],
  ])("refuses %s as unsupported", (_name, tool, message, param) => {
    expectUnsupported({ ...base, tools: [tool] }, message, param);
  });
});

describe("parseCountTokensRequest", () => {
  it("does not require max_tokens: a count has no answer to bound", () => {
    const params = parseCountTokensRequest({
      model: "claude",
      system: "Be brief.",
      messages: [user],
    });
    expect(params.model).toBe("claude");
    expect(params.maxTokens).toBeUndefined();
    expect(params.messages).toHaveLength(2);
  });

  it("takes the tools a Messages request takes, and leaves out the container, which is no prompt", () => {
    const search = { type: "web_search_20250305", name: "web_search" };
    const params = parseCountTokensRequest({
      model: "claude",
      messages: [user],
      tools: [search, weather],
      container: "container_1",
    });
    expect(params.tools.map((t) => t.anthropicJson)).toEqual([JSON.stringify(search), ""]);
    expect(params.extraJson).toBe("");
  });

  it("checks the rest as a Messages request does", () => {
    expect(() => parseCountTokensRequest({ model: "claude" })).toThrow("messages: Field required");
    expect(() => parseCountTokensRequest({ ...base, max_tokens: 0 })).toThrow(Failure);
    expect(() => parseCountTokensRequest({ ...base, nonsense: true })).toThrow(
      "nonsense: Extra inputs are not permitted",
    );
  });
});
