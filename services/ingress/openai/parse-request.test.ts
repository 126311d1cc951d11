import { describe, expect, it } from "vitest";
import {
  ResponseFormat_Type,
  Role,
  ToolChoice_Mode,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";
import { parseChatRequest } from "./parse-request.js";

const user = { role: "user", content: "hi" };
const base = { model: "gpt-4o", messages: [user] };

function failureOf(body: unknown): Failure {
  try {
    parseChatRequest(body);
  } catch (err) {
    if (err instanceof Failure) return err;
    throw err;
  }
  throw new Error("expected parseChatRequest to throw");
}

function expectInvalid(body: unknown, message: string, param: string | undefined): void {
  const f = failureOf(body);
  expect(f.status).toBe(400);
  expect(f.kind).toBe("invalid_request");
  expect(f.message).toBe(message);
  expect(f.param).toBe(param ?? "");
}

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather for a city",
    parameters: { type: "object", properties: { city: { type: "string" } } },
    strict: true,
  },
};

describe("parseChatRequest: the body", () => {
  it.each([
    ["an array", []],
    ["a number", 42],
    ["a string", "hi"],
    ["null", null],
  ])("rejects %s as the body", (_name, body) => {
    expectInvalid(body, "Invalid type for request body: expected a JSON object", undefined);
  });

  it("translates a minimal request and marks it as OpenAI", () => {
    const p = parseChatRequest(base);
    expect(p.model).toBe("gpt-4o");
    expect(p.clientApi).toBe("openai");
    expect(p.stream).toBe(false);
    expect(p.includeUsage).toBe(false);
    expect(p.extraJson).toBe("");
    expect(p.messages).toHaveLength(1);
    expect(p.messages[0]?.role).toBe(Role.USER);
    expect(p.messages[0]?.contentIsText).toBe(true);
    expect(p.messages[0]?.content[0]?.part).toEqual({ case: "text", value: "hi" });
    expect(p.temperature).toBeUndefined();
    expect(p.toolChoice).toBeUndefined();
    expect(p.responseFormat).toBeUndefined();
  });
});

describe("parseChatRequest: model and messages", () => {
  it.each<[string, unknown, string, string]>([
    ["missing model", { messages: [user] }, "'model' is a required property", "model"],
    ["null model", { model: null, messages: [user] }, "'model' is a required property", "model"],
    [
      "non-string model",
      { model: 4, messages: [user] },
      "Invalid type for 'model': expected a string",
      "model",
    ],
    ["empty model", { model: "", messages: [user] }, "'model' must be a non-empty string", "model"],
    ["missing messages", { model: "m" }, "'messages' is a required property", "messages"],
    [
      "messages not an array",
      { model: "m", messages: { role: "user" } },
      "Invalid type for 'messages': expected an array of messages",
      "messages",
    ],
    [
      "empty messages",
      { model: "m", messages: [] },
      "'messages' must contain at least one message",
      "messages",
    ],
    [
      "a message that is not an object",
      { model: "m", messages: [user, "hello"] },
      "Invalid type for 'messages[1]': expected an object",
      "messages[1]",
    ],
    [
      "a message without role",
      { model: "m", messages: [{ content: "x" }] },
      "'messages[0].role' is a required property",
      "messages[0].role",
    ],
    [
      "an unknown role",
      { model: "m", messages: [user, user, { role: "robot", content: "x" }] },
      "Invalid value for 'messages[2].role': 'robot'. Supported values are: 'system', 'developer', 'user', 'assistant', and 'tool'.",
      "messages[2].role",
    ],
    [
      "the legacy function role",
      { model: "m", messages: [{ role: "function", name: "f", content: "x" }] },
      "Invalid value for 'messages[0].role': 'function'. The legacy 'function' role is not supported; send function results as 'tool' messages with a 'tool_call_id'.",
      "messages[0].role",
    ],
    [
      "content of the wrong type",
      { model: "m", messages: [{ role: "system", content: 5 }] },
      "Invalid type for 'messages[0].content': expected a string or an array of content parts",
      "messages[0].content",
    ],
    [
      "a user message without content",
      { model: "m", messages: [{ role: "user" }] },
      "'messages[0].content' is a required property",
      "messages[0].content",
    ],
    [
      "an empty parts array",
      { model: "m", messages: [{ role: "user", content: [] }] },
      "Invalid value for 'messages[0].content': expected at least one content part",
      "messages[0].content",
    ],
    [
      "an assistant message with neither content nor tool calls",
      { model: "m", messages: [user, { role: "assistant", content: null }] },
      "'messages[1].content' is a required property unless 'tool_calls' are given",
      "messages[1].content",
    ],
    [
      "a tool message without tool_call_id",
      { model: "m", messages: [{ role: "tool", content: "42" }] },
      "'messages[0].tool_call_id' is a required property",
      "messages[0].tool_call_id",
    ],
    [
      "a non-string name",
      { model: "m", messages: [{ role: "user", content: "x", name: 3 }] },
      "Invalid type for 'messages[0].name': expected a string",
      "messages[0].name",
    ],
  ])("rejects %s", (_name, body, message, param) => {
    expectInvalid(body, message, param);
  });

  it("maps every role and keeps names and tool_call_id", () => {
    const p = parseChatRequest({
      model: "m",
      messages: [
        { role: "system", content: "s" },
        { role: "developer", content: "d" },
        { role: "user", content: "u", name: "ann" },
        { role: "assistant", content: "a" },
        { role: "tool", content: "t", tool_call_id: "call_1" },
      ],
    });
    expect(p.messages.map((m) => m.role)).toEqual([
      Role.SYSTEM,
      Role.DEVELOPER,
      Role.USER,
      Role.ASSISTANT,
      Role.TOOL,
    ]);
    expect(p.messages[2]?.name).toBe("ann");
    expect(p.messages[4]?.toolCallId).toBe("call_1");
  });
});

describe("parseChatRequest: content parts", () => {
  it("translates text, image, audio and file parts of a user message", () => {
    const p = parseChatRequest({
      model: "m",
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "look" },
            { type: "image_url", image_url: { url: "https://x/y.png", detail: "low" } },
            { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
            { type: "input_audio", input_audio: { data: "UklGR", format: "wav" } },
            { type: "file", file: { file_id: "file-1" } },
            {
              type: "file",
              file: { filename: "a.pdf", file_data: "data:application/pdf;base64,JV" },
            },
          ],
        },
      ],
    });
    const m = p.messages[0];
    expect(m?.contentIsText).toBe(false);
    const parts = m?.content.map((c) => c.part);
    expect(parts?.[0]).toEqual({ case: "text", value: "look" });
    expect(parts?.[1]?.case).toBe("image");
    expect(parts?.[1]?.value).toMatchObject({ url: "https://x/y.png", detail: "low" });
    expect(parts?.[2]?.value).toMatchObject({ url: "data:image/png;base64,AAAA" });
    expect(parts?.[2]?.case === "image" && parts[2].value.detail).toBeUndefined();
    expect(parts?.[3]?.case).toBe("audio");
    expect(parts?.[3]?.value).toMatchObject({ data: "UklGR", format: "wav" });
    expect(parts?.[4]?.case).toBe("file");
    expect(parts?.[4]?.value).toMatchObject({ fileId: "file-1" });
    expect(parts?.[5]?.value).toMatchObject({
      filename: "a.pdf",
      fileData: "data:application/pdf;base64,JV",
    });
  });

  it("keeps cache_control on content parts and tools, for Anthropic targets", () => {
    const p = parseChatRequest({
      model: "m",
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Long context", cache_control: { type: "ephemeral" } },
            { type: "text", text: "Question?" },
          ],
        },
      ],
      tools: [
        {
          type: "function",
          function: { name: "f", parameters: { type: "object" } },
          cache_control: { type: "ephemeral", ttl: "1h" },
        },
      ],
    });
    expect(p.messages[0]?.content.map((c) => c.cacheControlJson)).toEqual([
      '{"type":"ephemeral"}',
      "",
    ]);
    expect(p.tools[0]?.cacheControlJson).toBe('{"type":"ephemeral","ttl":"1h"}');
    expect(() =>
      parseChatRequest({
        model: "m",
        messages: [{ role: "user", content: [{ type: "text", text: "x", cache_control: 1 }] }],
      }),
    ).toThrow("Invalid type for 'messages[0].content[0].cache_control': expected an object");
  });

  it("gathers assistant refusal parts into the message refusal", () => {
    const p = parseChatRequest({
      model: "m",
      messages: [
        user,
        {
          role: "assistant",
          content: [
            { type: "text", text: "partial" },
            { type: "refusal", refusal: "I can't help with that." },
          ],
        },
      ],
    });
    expect(p.messages[1]?.refusal).toBe("I can't help with that.");
    expect(p.messages[1]?.content.map((c) => c.part.value)).toEqual(["partial"]);
  });

  it.each<[string, unknown, string, string]>([
    [
      "a part that is not an object",
      [{ role: "user", content: ["hi"] }],
      "Invalid type for 'messages[0].content[0]': expected an object",
      "messages[0].content[0]",
    ],
    [
      "a part without type",
      [{ role: "user", content: [{ text: "hi" }] }],
      "'messages[0].content[0].type' is a required property",
      "messages[0].content[0].type",
    ],
    [
      "an unknown part type",
      [{ role: "user", content: [{ type: "video", video: {} }] }],
      "Invalid value for 'messages[0].content[0].type': 'video'. Supported values are: 'text', 'image_url', 'input_audio', and 'file'.",
      "messages[0].content[0].type",
    ],
    [
      "an image in a system message",
      [{ role: "system", content: [{ type: "image_url", image_url: { url: "u" } }] }],
      "Invalid value for 'messages[0].content[0].type': 'image_url'. Supported values are: 'text'.",
      "messages[0].content[0].type",
    ],
    [
      "a refusal part from the user",
      [{ role: "user", content: [{ type: "refusal", refusal: "no" }] }],
      "Invalid value for 'messages[0].content[0].type': 'refusal'. Supported values are: 'text', 'image_url', 'input_audio', and 'file'.",
      "messages[0].content[0].type",
    ],
    [
      "an image in an assistant message",
      [user, { role: "assistant", content: [{ type: "image_url", image_url: { url: "u" } }] }],
      "Invalid value for 'messages[1].content[0].type': 'image_url'. Supported values are: 'text' and 'refusal'.",
      "messages[1].content[0].type",
    ],
    [
      "a text part without text",
      [{ role: "user", content: [{ type: "text" }] }],
      "'messages[0].content[0].text' is a required property",
      "messages[0].content[0].text",
    ],
    [
      "a text part whose text is not a string",
      [{ role: "user", content: [{ type: "text", text: ["a"] }] }],
      "Invalid type for 'messages[0].content[0].text': expected a string",
      "messages[0].content[0].text",
    ],
    [
      "an image part without image_url",
      [{ role: "user", content: [{ type: "image_url" }] }],
      "'messages[0].content[0].image_url' is a required property",
      "messages[0].content[0].image_url",
    ],
    [
      "an image_url given as a bare string",
      [{ role: "user", content: [{ type: "image_url", image_url: "https://x" }] }],
      "Invalid type for 'messages[0].content[0].image_url': expected an object",
      "messages[0].content[0].image_url",
    ],
    [
      "an image without url",
      [{ role: "user", content: [{ type: "image_url", image_url: {} }] }],
      "'messages[0].content[0].image_url.url' is a required property",
      "messages[0].content[0].image_url.url",
    ],
    [
      "an unknown image detail",
      [{ role: "user", content: [{ type: "image_url", image_url: { url: "u", detail: "max" } }] }],
      "Invalid value for 'messages[0].content[0].image_url.detail': 'max'. Supported values are: 'auto', 'low', and 'high'.",
      "messages[0].content[0].image_url.detail",
    ],
    [
      "audio without format",
      [{ role: "user", content: [{ type: "input_audio", input_audio: { data: "x" } }] }],
      "'messages[0].content[0].input_audio.format' is a required property",
      "messages[0].content[0].input_audio.format",
    ],
    [
      "a file with neither id nor data",
      [{ role: "user", content: [{ type: "file", file: { filename: "a.pdf" } }] }],
      "'messages[0].content[0].file' must have either 'file_id' or 'file_data'",
      "messages[0].content[0].file",
    ],
  ])("rejects %s", (_name, messages, message, param) => {
    expectInvalid({ model: "m", messages }, message, param);
  });
});

describe("parseChatRequest: assistant tool calls", () => {
  const call = {
    id: "call_1",
    type: "function",
    function: { name: "get_weather", arguments: '{"city":"Paris"}' },
  };

  it("accepts null content when tool calls are present and keeps arguments verbatim", () => {
    const p = parseChatRequest({
      model: "m",
      messages: [
        user,
        { role: "assistant", content: null, tool_calls: [call] },
        { role: "tool", tool_call_id: "call_1", content: "sunny" },
      ],
    });
    const m = p.messages[1];
    expect(m?.content).toEqual([]);
    expect(m?.toolCalls).toHaveLength(1);
    expect(m?.toolCalls[0]).toMatchObject({
      id: "call_1",
      name: "get_weather",
      arguments: '{"city":"Paris"}',
    });
  });

  it("keeps an assistant message's thinking_blocks as its reasoning blocks, in order", () => {
    const p = parseChatRequest({
      model: "m",
      messages: [
        user,
        {
          role: "assistant",
          content: null,
          tool_calls: [call],
          thinking_blocks: [
            { type: "thinking", thinking: "Need weather.", signature: "sig_1" },
            { type: "redacted_thinking", data: "enc_1" },
          ],
        },
        { role: "tool", tool_call_id: "call_1", content: "sunny" },
      ],
    });
    expect(
      p.messages[1]?.reasoningBlocks.map((b) => [b.text, b.signature, b.redactedData]),
    ).toEqual([
      ["Need weather.", "sig_1", ""],
      ["", "", "enc_1"],
    ]);
  });

  it.each<[string, unknown, string, string]>([
    [
      "not an array",
      { type: "thinking" },
      "Invalid type for 'messages[1].thinking_blocks': expected an array of thinking blocks",
      "messages[1].thinking_blocks",
    ],
    [
      "an unknown block type",
      [{ type: "text", text: "x" }],
      "Invalid value for 'messages[1].thinking_blocks[0].type': 'text'. Supported values are: 'thinking' and 'redacted_thinking'.",
      "messages[1].thinking_blocks[0].type",
    ],
    [
      "a thinking block without its signature",
      [{ type: "thinking", thinking: "hm" }],
      "'messages[1].thinking_blocks[0].signature' is a required property",
      "messages[1].thinking_blocks[0].signature",
    ],
  ])("refuses thinking_blocks that are %s", (_, blocks, message, param) => {
    const messages = [user, { role: "assistant", content: "x", thinking_blocks: blocks }];
    expectInvalid({ model: "m", messages }, message, param);
  });

  it("accepts an assistant message that only carries a refusal", () => {
    const p = parseChatRequest({
      model: "m",
      messages: [user, { role: "assistant", content: null, refusal: "No." }],
    });
    expect(p.messages[1]?.refusal).toBe("No.");
  });

  it.each<[string, unknown, string, string]>([
    [
      "tool_calls that are not an array",
      { id: "x" },
      "Invalid type for 'messages[1].tool_calls': expected an array of tool calls",
      "messages[1].tool_calls",
    ],
    [
      "a call without id",
      [{ type: "function", function: { name: "f", arguments: "{}" } }],
      "'messages[1].tool_calls[0].id' is a required property",
      "messages[1].tool_calls[0].id",
    ],
    [
      "a call of another type",
      [{ id: "c", type: "custom", function: { name: "f", arguments: "{}" } }],
      "Invalid value for 'messages[1].tool_calls[0].type': 'custom'. Supported values are: 'function'.",
      "messages[1].tool_calls[0].type",
    ],
    [
      "a call without function",
      [{ id: "c", type: "function" }],
      "'messages[1].tool_calls[0].function' is a required property",
      "messages[1].tool_calls[0].function",
    ],
    [
      "a call without a function name",
      [{ id: "c", type: "function", function: { arguments: "{}" } }],
      "'messages[1].tool_calls[0].function.name' is a required property",
      "messages[1].tool_calls[0].function.name",
    ],
    [
      "arguments sent as an object",
      [{ id: "c", type: "function", function: { name: "f", arguments: { a: 1 } } }],
      "Invalid type for 'messages[1].tool_calls[0].function.arguments': expected a string",
      "messages[1].tool_calls[0].function.arguments",
    ],
  ])("rejects %s", (_name, toolCalls, message, param) => {
    expectInvalid(
      { model: "m", messages: [user, { role: "assistant", content: null, tool_calls: toolCalls }] },
      message,
      param,
    );
  });
});

describe("parseChatRequest: tools, tool_choice and response_format", () => {
  it("translates a function tool with its JSON schema as text", () => {
    const p = parseChatRequest({
      ...base,
      tools: [weather, { type: "function", function: { name: "noop" } }],
    });
    expect(p.tools).toHaveLength(2);
    expect(p.tools[0]).toMatchObject({
      name: "get_weather",
      description: "Weather for a city",
      strict: true,
    });
    expect(JSON.parse(p.tools[0]?.parametersJson ?? "")).toEqual(weather.function.parameters);
    expect(p.tools[1]?.parametersJson).toBe("");
    expect(p.tools[1]?.description).toBeUndefined();
    expect(p.tools[1]?.strict).toBeUndefined();
  });

  it.each<[unknown, ToolChoice_Mode, string]>([
    ["none", ToolChoice_Mode.NONE, ""],
    ["auto", ToolChoice_Mode.AUTO, ""],
    ["required", ToolChoice_Mode.REQUIRED, ""],
    [
      { type: "function", function: { name: "get_weather" } },
      ToolChoice_Mode.FUNCTION,
      "get_weather",
    ],
  ])("translates tool_choice %j", (choice, mode, name) => {
    const p = parseChatRequest({ ...base, tools: [weather], tool_choice: choice });
    expect(p.toolChoice?.mode).toBe(mode);
    expect(p.toolChoice?.functionName).toBe(name);
  });

  it("lets tool_choice auto or none through without tools", () => {
    expect(parseChatRequest({ ...base, tool_choice: "auto" }).toolChoice?.mode).toBe(
      ToolChoice_Mode.AUTO,
    );
    expect(parseChatRequest({ ...base, tool_choice: "none" }).toolChoice?.mode).toBe(
      ToolChoice_Mode.NONE,
    );
  });

  it.each<[string, unknown, string, string]>([
    [
      "tools that are not an array",
      { tools: weather },
      "Invalid type for 'tools': expected an array of tools",
      "tools",
    ],
    [
      "a tool without type",
      { tools: [{ function: { name: "f" } }] },
      "'tools[0].type' is a required property",
      "tools[0].type",
    ],
    [
      "a tool of another type",
      { tools: [weather, { type: "web_search" }] },
      "Invalid value for 'tools[1].type': 'web_search'. Supported values are: 'function'.",
      "tools[1].type",
    ],
    [
      "a tool without function",
      { tools: [{ type: "function" }] },
      "'tools[0].function' is a required property",
      "tools[0].function",
    ],
    [
      "a tool without name",
      { tools: [{ type: "function", function: { description: "d" } }] },
      "'tools[0].function.name' is a required property",
      "tools[0].function.name",
    ],
    [
      "a tool name outside the pattern",
      { tools: [{ type: "function", function: { name: "get weather" } }] },
      "Invalid value for 'tools[0].function.name': 'get weather'. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
      "tools[0].function.name",
    ],
    [
      "a tool name longer than 64",
      { tools: [{ type: "function", function: { name: "a".repeat(65) } }] },
      `Invalid value for 'tools[0].function.name': '${"a".repeat(64)}…'. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.`,
      "tools[0].function.name",
    ],
    [
      "parameters that are not an object",
      { tools: [{ type: "function", function: { name: "f", parameters: "{}" } }] },
      "Invalid type for 'tools[0].function.parameters': expected an object",
      "tools[0].function.parameters",
    ],
    [
      "a non-boolean strict",
      { tools: [{ type: "function", function: { name: "f", strict: "yes" } }] },
      "Invalid type for 'tools[0].function.strict': expected a boolean",
      "tools[0].function.strict",
    ],
    [
      "an unknown tool_choice word",
      { tools: [weather], tool_choice: "any" },
      "Invalid value for 'tool_choice': 'any'. Supported values are: 'none', 'auto', and 'required'.",
      "tool_choice",
    ],
    [
      "a tool_choice of the wrong type",
      { tools: [weather], tool_choice: 1 },
      "Invalid type for 'tool_choice': expected a string or an object",
      "tool_choice",
    ],
    [
      "a tool_choice object of another type",
      { tools: [weather], tool_choice: { type: "allowed_tools" } },
      "Invalid value for 'tool_choice.type': 'allowed_tools'. Supported values are: 'function'.",
      "tool_choice.type",
    ],
    [
      "a tool_choice function without name",
      { tools: [weather], tool_choice: { type: "function", function: {} } },
      "'tool_choice.function.name' is a required property",
      "tool_choice.function.name",
    ],
    [
      "a tool_choice naming no declared tool",
      { tools: [weather], tool_choice: { type: "function", function: { name: "other" } } },
      "Invalid value for 'tool_choice.function.name': 'other' is not the name of any function in 'tools'.",
      "tool_choice.function.name",
    ],
    [
      "tool_choice required without tools",
      { tool_choice: "required" },
      "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
      "tool_choice",
    ],
    [
      "a response_format that is not an object",
      { response_format: "json" },
      "Invalid type for 'response_format': expected an object",
      "response_format",
    ],
    [
      "a response_format without type",
      { response_format: {} },
      "'response_format.type' is a required property",
      "response_format.type",
    ],
    [
      "an unknown response_format type",
      { response_format: { type: "yaml" } },
      "Invalid value for 'response_format.type': 'yaml'. Supported values are: 'text', 'json_object', and 'json_schema'.",
      "response_format.type",
    ],
    [
      "json_schema without its object",
      { response_format: { type: "json_schema" } },
      "'response_format.json_schema' is a required property",
      "response_format.json_schema",
    ],
    [
      "json_schema without name",
      { response_format: { type: "json_schema", json_schema: { schema: {} } } },
      "'response_format.json_schema.name' is a required property",
      "response_format.json_schema.name",
    ],
    [
      "json_schema whose schema is not an object",
      { response_format: { type: "json_schema", json_schema: { name: "x", schema: [] } } },
      "Invalid type for 'response_format.json_schema.schema': expected an object",
      "response_format.json_schema.schema",
    ],
  ])("rejects %s", (_name, extra, message, param) => {
    expectInvalid({ ...base, ...(extra as object) }, message, param);
  });

  it("translates every response_format type, keeping the json_schema object as text", () => {
    expect(
      parseChatRequest({ ...base, response_format: { type: "text" } }).responseFormat?.type,
    ).toBe(ResponseFormat_Type.TEXT);
    expect(
      parseChatRequest({ ...base, response_format: { type: "json_object" } }).responseFormat?.type,
    ).toBe(ResponseFormat_Type.JSON_OBJECT);
    const jsonSchema = {
      name: "answer",
      schema: { type: "object", properties: { a: { type: "number" } }, required: ["a"] },
      strict: true,
    };
    const rf = parseChatRequest({
      ...base,
      response_format: { type: "json_schema", json_schema: jsonSchema },
    }).responseFormat;
    expect(rf?.type).toBe(ResponseFormat_Type.JSON_SCHEMA);
    expect(JSON.parse(rf?.jsonSchemaJson ?? "")).toEqual(jsonSchema);
  });
});

describe("parseChatRequest: tool_choice refusals, word for word", () => {
  // The Responses API parses tool_choice with the same code, its function's name one level up;
  // these pin what Chat Completions clients get, so sharing it changes nothing for them.
  const named = (fn: unknown) => ({ type: "function", function: fn });
  it.each<[unknown, unknown[] | undefined, string, string, string]>([
    [
      "any",
      [weather],
      "Invalid value for 'tool_choice': 'any'. Supported values are: 'none', 'auto', and 'required'.",
      "tool_choice",
      "invalid_value",
    ],
    [
      [],
      [weather],
      "Invalid type for 'tool_choice': expected a string or an object",
      "tool_choice",
      "invalid_type",
    ],
    [
      {},
      [weather],
      "'tool_choice.type' is a required property",
      "tool_choice.type",
      "missing_required_parameter",
    ],
    [
      { type: "tool" },
      [weather],
      "Invalid value for 'tool_choice.type': 'tool'. Supported values are: 'function'.",
      "tool_choice.type",
      "invalid_value",
    ],
    [
      { type: "function", name: "get_weather" },
      [weather],
      "'tool_choice.function' is a required property",
      "tool_choice.function",
      "missing_required_parameter",
    ],
    [
      named("get_weather"),
      [weather],
      "Invalid type for 'tool_choice.function': expected an object",
      "tool_choice.function",
      "invalid_type",
    ],
    [
      named({ name: 7 }),
      [weather],
      "Invalid type for 'tool_choice.function.name': expected a string",
      "tool_choice.function.name",
      "invalid_type",
    ],
    [
      named({ name: "x".repeat(70) }),
      [weather],
      `Invalid value for 'tool_choice.function.name': '${"x".repeat(64)}…' is not the name of any function in 'tools'.`,
      "tool_choice.function.name",
      "invalid_value",
    ],
    [
      named({ name: "get_weather" }),
      undefined,
      "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
      "tool_choice",
      "invalid_value",
    ],
    [
      named({ name: "other" }),
      [],
      "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
      "tool_choice",
      "invalid_value",
    ],
    [
      "required",
      [],
      "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
      "tool_choice",
      "invalid_value",
    ],
  ])("refuses %j (tools %j)", (choice, tools, message, param, code) => {
    const f = failureOf({ ...base, ...(tools ? { tools } : {}), tool_choice: choice });
    expect([f.status, f.message, f.param, f.code]).toEqual([400, message, param, code]);
  });
});

describe("parseChatRequest: sampling and limits", () => {
  it("translates every sampling field", () => {
    const p = parseChatRequest({
      ...base,
      temperature: 0.7,
      top_p: 0.9,
      max_tokens: 100,
      stop: ["\n", "END"],
      n: 2,
      presence_penalty: -1.5,
      frequency_penalty: 2,
      seed: 1234,
      user: "u-1",
      parallel_tool_calls: false,
    });
    expect(p.temperature).toBe(0.7);
    expect(p.topP).toBe(0.9);
    expect(p.maxTokens).toBe(100);
    expect(p.stop).toEqual(["\n", "END"]);
    expect(p.n).toBe(2);
    expect(p.presencePenalty).toBe(-1.5);
    expect(p.frequencyPenalty).toBe(2);
    expect(p.seed).toBe(1234n);
    expect(p.user).toBe("u-1");
    expect(p.parallelToolCalls).toBe(false);
  });

  it("accepts the boundaries of every range", () => {
    const p = parseChatRequest({ ...base, temperature: 0, top_p: 1, presence_penalty: -2 });
    expect(p.temperature).toBe(0);
    expect(p.topP).toBe(1);
    expect(p.presencePenalty).toBe(-2);
    expect(parseChatRequest({ ...base, temperature: 2, top_p: 0 }).temperature).toBe(2);
  });

  it("takes max_completion_tokens as maxTokens, over max_tokens when both are sent", () => {
    expect(parseChatRequest({ ...base, max_completion_tokens: 50 }).maxTokens).toBe(50);
    expect(parseChatRequest({ ...base, max_tokens: 10, max_completion_tokens: 50 }).maxTokens).toBe(
      50,
    );
    // Which name the client used travels on, for upstreams that take the client's word.
    expect(parseChatRequest({ ...base, max_completion_tokens: 50 }).maxCompletionTokens).toBe(true);
    expect(parseChatRequest({ ...base, max_tokens: 10 }).maxCompletionTokens).toBe(false);
  });

  it("wraps a single stop string into a list", () => {
    expect(parseChatRequest({ ...base, stop: "END" }).stop).toEqual(["END"]);
  });

  it("treats null optional fields as absent", () => {
    const p = parseChatRequest({
      ...base,
      temperature: null,
      top_p: null,
      max_tokens: null,
      stop: null,
      n: null,
      seed: null,
      user: null,
      tools: null,
      tool_choice: null,
      response_format: null,
      stream: null,
      stream_options: null,
      parallel_tool_calls: null,
    });
    expect(p.temperature).toBeUndefined();
    expect(p.maxTokens).toBeUndefined();
    expect(p.stop).toEqual([]);
    expect(p.seed).toBeUndefined();
    expect(p.tools).toEqual([]);
    expect(p.stream).toBe(false);
  });

  it.each<[string, unknown, string, string]>([
    [
      "temperature above 2",
      { temperature: 2.5 },
      "'temperature' must be a number between 0 and 2",
      "temperature",
    ],
    [
      "temperature below 0",
      { temperature: -0.1 },
      "'temperature' must be a number between 0 and 2",
      "temperature",
    ],
    [
      "temperature as a string",
      { temperature: "1" },
      "'temperature' must be a number between 0 and 2",
      "temperature",
    ],
    ["top_p above 1", { top_p: 1.01 }, "'top_p' must be a number between 0 and 1", "top_p"],
    ["max_tokens of 0", { max_tokens: 0 }, "'max_tokens' must be a positive integer", "max_tokens"],
    [
      "fractional max_tokens",
      { max_tokens: 1.5 },
      "'max_tokens' must be a positive integer",
      "max_tokens",
    ],
    [
      "max_tokens beyond uint32",
      { max_tokens: 2 ** 32 },
      "'max_tokens' must be at most 4294967295",
      "max_tokens",
    ],
    [
      "negative max_completion_tokens",
      { max_completion_tokens: -5 },
      "'max_completion_tokens' must be a positive integer",
      "max_completion_tokens",
    ],
    [
      "five stop strings",
      { stop: ["a", "b", "c", "d", "e"] },
      "'stop' must be a string or an array of at most 4 strings",
      "stop",
    ],
    [
      "a non-string stop",
      { stop: ["a", 1] },
      "'stop' must be a string or an array of at most 4 strings",
      "stop",
    ],
    [
      "stop as a number",
      { stop: 3 },
      "'stop' must be a string or an array of at most 4 strings",
      "stop",
    ],
    ["n of 0", { n: 0 }, "'n' must be an integer greater than or equal to 1", "n"],
    ["fractional n", { n: 1.5 }, "'n' must be an integer greater than or equal to 1", "n"],
    [
      "presence_penalty below -2",
      { presence_penalty: -2.1 },
      "'presence_penalty' must be a number between -2 and 2",
      "presence_penalty",
    ],
    [
      "frequency_penalty above 2",
      { frequency_penalty: 3 },
      "'frequency_penalty' must be a number between -2 and 2",
      "frequency_penalty",
    ],
    ["a fractional seed", { seed: 1.5 }, "'seed' must be an integer", "seed"],
    ["a string seed", { seed: "7" }, "'seed' must be an integer", "seed"],
    [
      "a seed beyond int64",
      { seed: 1e19 },
      "'seed' must be an integer between -9223372036854775808 and 9223372036854775807",
      "seed",
    ],
    ["a non-string user", { user: 7 }, "Invalid type for 'user': expected a string", "user"],
    [
      "a non-boolean parallel_tool_calls",
      { parallel_tool_calls: "true" },
      "Invalid type for 'parallel_tool_calls': expected a boolean",
      "parallel_tool_calls",
    ],
    [
      "a non-boolean stream",
      { stream: "yes" },
      "Invalid type for 'stream': expected a boolean",
      "stream",
    ],
  ])("rejects %s", (_name, extra, message, param) => {
    expectInvalid({ ...base, ...(extra as object) }, message, param);
  });
});

describe("parseChatRequest: streaming", () => {
  it("reads stream and stream_options.include_usage", () => {
    const p = parseChatRequest({ ...base, stream: true, stream_options: { include_usage: true } });
    expect(p.stream).toBe(true);
    expect(p.includeUsage).toBe(true);
    expect(parseChatRequest({ ...base, stream: true }).includeUsage).toBe(false);
  });

  it.each<[string, unknown, string, string]>([
    [
      "stream_options without stream",
      { stream_options: { include_usage: true } },
      "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
      "stream_options",
    ],
    [
      "stream_options with stream false",
      { stream: false, stream_options: { include_usage: true } },
      "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
      "stream_options",
    ],
    [
      "stream_options that are not an object",
      { stream: true, stream_options: true },
      "Invalid type for 'stream_options': expected an object",
      "stream_options",
    ],
    [
      "a non-boolean include_usage",
      { stream: true, stream_options: { include_usage: 1 } },
      "Invalid type for 'stream_options.include_usage': expected a boolean",
      "stream_options.include_usage",
    ],
  ])("rejects %s", (_name, extra, message, param) => {
    expectInvalid({ ...base, ...(extra as object) }, message, param);
  });
});

describe("parseChatRequest: fields passed through", () => {
  it("carries every unknown top-level field in extraJson", () => {
    const extra = {
      logit_bias: { "50256": -100 },
      logprobs: true,
      top_logprobs: 3,
      reasoning_effort: "high",
      metadata: { team: "a" },
      store: false,
      service_tier: "flex",
      prediction: { type: "content", content: "x" },
      modalities: ["text"],
      audio: null,
    };
    const p = parseChatRequest({ ...base, temperature: 1, ...extra });
    expect(JSON.parse(p.extraJson)).toEqual(extra);
  });

  it("keeps a __proto__ field as data rather than applying it", () => {
    const body = JSON.parse(
      '{"model":"m","messages":[{"role":"user","content":"x"}],"__proto__":{"a":1}}',
    );
    const p = parseChatRequest(body);
    expect(p.extraJson).toBe('{"__proto__":{"a":1}}');
  });

  it("flags its failures with OpenAI's error codes", () => {
    expect(failureOf({ messages: [user] }).code).toBe("missing_required_parameter");
    expect(failureOf({ model: 1, messages: [user] }).code).toBe("invalid_type");
    expect(failureOf({ ...base, temperature: 9 }).code).toBe("invalid_value");
  });

  it("echoes at most 64 characters of a bad value", () => {
    const f = failureOf({ model: "m", messages: [{ role: "x".repeat(500), content: "" }] });
    expect(f.message).toContain(`'${"x".repeat(64)}…'`);
    expect(f.message.length).toBeLessThan(200);
  });
});
