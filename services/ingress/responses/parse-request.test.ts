import { describe, expect, it } from "vitest";
import {
  ResponseFormat_Type,
  Role,
  ToolChoice_Mode,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";
import { parseResponsesRequest } from "./parse-request.js";

const base = { model: "gpt-4o", input: "hi" };
const weather = {
  type: "function",
  name: "get_weather",
  description: "Weather for a city",
  parameters: { type: "object", properties: { city: { type: "string" } } },
  strict: true,
};

function failureOf(body: unknown): Failure {
  try {
    parseResponsesRequest(body);
  } catch (err) {
    if (err instanceof Failure) return err;
    throw err;
  }
  throw new Error("expected parseResponsesRequest to throw");
}

function textOf(m: { content: { part: { case: string | undefined; value?: unknown } }[] }) {
  return m.content
    .map((p) => (p.part.case === "text" ? p.part.value : `[${p.part.case}]`))
    .join("");
}

describe("parseResponsesRequest", () => {
  it("turns a string input into one user message, after the instructions as a system message", () => {
    const { params, echo } = parseResponsesRequest({ ...base, instructions: "Be terse." });
    expect(params.messages.map((m) => [m.role, textOf(m)])).toEqual([
      [Role.SYSTEM, "Be terse."],
      [Role.USER, "hi"],
    ]);
    expect(params.clientApi).toBe("responses");
    expect(params.includeUsage).toBe(true);
    expect(echo).toMatchObject({ instructions: "Be terse.", tool_choice: "auto", tools: [] });
  });

  it("reads message items, parts and a tool-use turn, merging consecutive calls into one turn", () => {
    const { params } = parseResponsesRequest({
      model: "m",
      input: [
        { role: "developer", content: [{ type: "input_text", text: "Rules." }] },
        {
          type: "message",
          role: "user",
          content: [
            { type: "input_text", text: "What is this?" },
            { type: "input_image", image_url: "data:image/png;base64,AAAA", detail: "low" },
          ],
        },
        { type: "reasoning", id: "rs_1", summary: [] },
        { type: "item_reference", id: "rs_2" },
        {
          type: "message",
          role: "assistant",
          content: [{ type: "output_text", text: "Checking.", annotations: [] }],
        },
        { type: "function_call", id: "fc_1", call_id: "call_a", name: "f", arguments: "{}" },
        { type: "function_call", call_id: "call_b", name: "g", arguments: '{"x":1}' },
        { type: "function_call_output", call_id: "call_a", output: "A" },
        {
          type: "function_call_output",
          call_id: "call_b",
          output: [{ type: "input_text", text: "B" }],
        },
      ],
    });
    expect(params.messages.map((m) => m.role)).toEqual([
      Role.DEVELOPER,
      Role.USER,
      Role.ASSISTANT,
      Role.TOOL,
      Role.TOOL,
    ]);
    const [, userMsg, assistant, toolA, toolB] = params.messages;
    expect(userMsg?.content[1]?.part).toEqual({
      case: "image",
      value: expect.objectContaining({ url: "data:image/png;base64,AAAA", detail: "low" }),
    });
    expect(textOf(assistant as never)).toBe("Checking.");
    expect(assistant?.toolCalls.map((c) => [c.id, c.name, c.arguments])).toEqual([
      ["call_a", "f", "{}"],
      ["call_b", "g", '{"x":1}'],
    ]);
    expect([toolA?.toolCallId, textOf(toolA as never)]).toEqual(["call_a", "A"]);
    expect([toolB?.toolCallId, textOf(toolB as never)]).toEqual(["call_b", "B"]);
  });

  it("maps tools, tool_choice, text.format, sampling and reasoning.effort", () => {
    const schema = { type: "object", properties: { a: { type: "number" } } };
    const { params, echo } = parseResponsesRequest({
      ...base,
      tools: [weather],
      tool_choice: { type: "function", name: "get_weather" },
      text: { format: { type: "json_schema", name: "out", schema, strict: true } },
      temperature: 0.5,
      top_p: 0.9,
      max_output_tokens: 100,
      parallel_tool_calls: false,
      reasoning: { effort: "high", summary: "auto" },
      metadata: { k: "v" },
      store: true,
      include: ["reasoning.encrypted_content"],
      user: "u1",
    });
    expect(params.tools[0]).toMatchObject({ name: "get_weather", strict: true });
    expect(JSON.parse(params.tools[0]?.parametersJson ?? "")).toEqual(weather.parameters);
    expect(params.toolChoice).toMatchObject({
      mode: ToolChoice_Mode.FUNCTION,
      functionName: "get_weather",
    });
    expect(params.responseFormat?.type).toBe(ResponseFormat_Type.JSON_SCHEMA);
    expect(JSON.parse(params.responseFormat?.jsonSchemaJson ?? "")).toEqual({
      name: "out",
      schema,
      strict: true,
    });
    expect(params).toMatchObject({
      temperature: 0.5,
      topP: 0.9,
      maxTokens: 100,
      maxCompletionTokens: true,
      parallelToolCalls: false,
      user: "u1",
    });
    expect(JSON.parse(params.extraJson)).toEqual({ reasoning_effort: "high" });
    expect(echo).toMatchObject({
      max_output_tokens: 100,
      parallel_tool_calls: false,
      metadata: { k: "v" },
      reasoning: { effort: "high" },
      tool_choice: { type: "function", name: "get_weather" },
      text: { format: { type: "json_schema", name: "out", strict: true } },
    });
  });

  it.each([
    [{ previous_response_id: "resp_1" }, "previous_response_id", /stateless/],
    [{ conversation: { id: "conv_1" } }, "conversation", /stateless/],
    [{ prompt: { id: "pmpt_1" } }, "prompt", /stateless/],
    [{ background: true }, "background", /stateless/],
    [{ input: [{ type: "item_reference", id: "msg_1" }] }, "input[0].type", /stateless/],
    [{ tools: [{ type: "file_search" }] }, "tools[0].type", /'file_search' is a built-in tool/],
    [{ tool_choice: { type: "web_search" } }, "tool_choice.type", /'function'/],
    [{ include: ["message.output_text.logprobs"] }, "include[0]", /not supported/],
    [{ frobnicate: 1 }, "frobnicate", /Unknown parameter/],
    [{ input: [] }, "input", /at least one/],
    [{ input: [{ role: "tool", content: "x" }] }, "input[0].role", /Invalid value/],
    [
      { input: [{ role: "user", content: [{ type: "output_text", text: "x" }] }] },
      "input[0].content[0].type",
      /Invalid value/,
    ],
    [{ input: [{ type: "function_call_output", output: "x" }] }, "input[0].call_id", /required/],
    [{ text: { format: { type: "json_schema", name: "x" } } }, "text.format.schema", /required/],
    [{ temperature: 3 }, "temperature", /between 0 and 2/],
    [{ max_output_tokens: 0 }, "max_output_tokens", /positive integer/],
  ])("refuses %j naming %s", (extra, param, message) => {
    const f = failureOf({ ...base, ...extra });
    expect(f.status).toBe(400);
    expect(f.param).toBe(param);
    expect(f.message).toMatch(message);
  });

  it("requires model and input", () => {
    expect(failureOf({ input: "hi" }).param).toBe("model");
    expect(failureOf({ model: "m" }).param).toBe("input");
    expect(failureOf([]).status).toBe(400);
  });
});

describe("parseResponsesRequest: tool_choice", () => {
  // Chat Completions parses tool_choice with the same code, its function's name one level down;
  // these pin what Responses clients get, so sharing it changes nothing for them.
  it.each<[unknown, ToolChoice_Mode, string]>([
    ["none", ToolChoice_Mode.NONE, ""],
    ["auto", ToolChoice_Mode.AUTO, ""],
    ["required", ToolChoice_Mode.REQUIRED, ""],
    [{ type: "function", name: "get_weather" }, ToolChoice_Mode.FUNCTION, "get_weather"],
  ])("translates %j", (choice, mode, name) => {
    const { params, echo } = parseResponsesRequest({
      ...base,
      tools: [weather],
      tool_choice: choice,
    });
    expect([params.toolChoice?.mode, params.toolChoice?.functionName]).toEqual([mode, name]);
    expect(echo.tool_choice).toEqual(choice);
  });

  it("lets auto and none through without tools", () => {
    for (const choice of ["auto", "none"]) {
      expect(parseResponsesRequest({ ...base, tool_choice: choice }).params.toolChoice?.mode).toBe(
        choice === "auto" ? ToolChoice_Mode.AUTO : ToolChoice_Mode.NONE,
      );
    }
  });

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
      { type: "function", function: { name: "get_weather" } },
      [weather],
      "'tool_choice.name' is a required property",
      "tool_choice.name",
      "missing_required_parameter",
    ],
    [
      { type: "function", name: 7 },
      [weather],
      "Invalid type for 'tool_choice.name': expected a string",
      "tool_choice.name",
      "invalid_type",
    ],
    [
      { type: "function", name: "other" },
      [weather],
      "Invalid value for 'tool_choice.name': 'other' is not the name of any function in 'tools'.",
      "tool_choice.name",
      "invalid_value",
    ],
    [
      { type: "function", name: "get_weather" },
      undefined,
      "Invalid value for 'tool_choice.name': 'get_weather' is not the name of any function in 'tools'.",
      "tool_choice.name",
      "invalid_value",
    ],
    [
      "required",
      undefined,
      "Invalid value for 'tool_choice': 'required' is only allowed when 'tools' are specified.",
      "tool_choice",
      "invalid_value",
    ],
    [
      "required",
      [],
      "Invalid value for 'tool_choice': 'required' is only allowed when 'tools' are specified.",
      "tool_choice",
      "invalid_value",
    ],
  ])("refuses %j (tools %j) word for word", (choice, tools, message, param, code) => {
    const f = failureOf({ ...base, ...(tools ? { tools } : {}), tool_choice: choice });
    expect([f.status, f.message, f.param, f.code]).toEqual([400, message, param, code]);
  });
});
