import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type ChatParams,
  ChatParamsSchema,
  type ContentPartSchema,
  type MessageSchema,
  type ReasoningBlockSchema,
  ResponseFormat_Type,
  type ResponseFormatSchema,
  Role,
  type ToolSchema,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import type { Failure } from "../../lib/errors.js";
import { makeMessage } from "../../lib/hop/codec.js";
import {
  checkName,
  clip,
  invalid,
  invalidValue,
  isObject,
  numberBetween,
  optionalBoolean,
  optionalString,
  parseToolChoice,
  positiveInt,
  present,
  required,
  requiredString,
  type ToolChoiceDialect,
  typeError,
} from "../openai/parse-request.js";
import { decodeReasoningBlocks } from "./reasoning-content.js";

type JsonObject = Record<string, unknown>;
type MessageInit = MessageInitShape<typeof MessageSchema>;
type PartInit = MessageInitShape<typeof ContentPartSchema>;
type ToolInit = MessageInitShape<typeof ToolSchema>;
type ResponseFormatInit = MessageInitShape<typeof ResponseFormatSchema>;
type ReasoningBlockInit = MessageInitShape<typeof ReasoningBlockSchema>;

/**
 * What a Response object repeats of its request (the SDKs read `tools`, `tool_choice`, `text`
 * and the sampling settings back from it), and what else of the request shapes its output. Kept
 * apart from ChatParams, which has no room for it.
 */
export interface ResponsesEcho {
  /** `include: ["reasoning.encrypted_content"]`: reasoning items carry the reasoning blocks. */
  encrypted_reasoning: boolean;
  instructions: string | null;
  max_output_tokens: number | null;
  metadata: Record<string, unknown>;
  parallel_tool_calls: boolean;
  reasoning: { effort: string | null; summary: string | null };
  temperature: number | null;
  text: { format: Record<string, unknown> };
  tool_choice: unknown;
  tools: Record<string, unknown>[];
  top_p: number | null;
  truncation: string;
  user: string | null;
}

/** A parsed `POST /v1/responses` body: the canonical request and what the answer repeats. */
export interface ResponsesRequest {
  params: ChatParams;
  echo: ResponsesEcho;
}

/** Fields that need a response or conversation stored at the gateway, which keeps none. */
const STATEFUL_FIELDS = ["previous_response_id", "conversation", "prompt"];
/** Accepted and ignored: they steer storage, billing or caching at OpenAI and mean nothing here. */
const IGNORED_FIELDS = [
  "store",
  "truncation",
  "service_tier",
  "prompt_cache_key",
  "prompt_cache_retention",
  "safety_identifier",
  "stream_options",
  "max_tool_calls",
  "background",
];
const KNOWN_FIELDS: ReadonlySet<string> = new Set([
  "model",
  "input",
  "instructions",
  "tools",
  "tool_choice",
  "parallel_tool_calls",
  "temperature",
  "top_p",
  "max_output_tokens",
  "text",
  "reasoning",
  "metadata",
  "user",
  "stream",
  "include",
  ...STATEFUL_FIELDS,
  ...IGNORED_FIELDS,
]);

/** `include` values that ask for what no answer here carries. */
const REFUSED_INCLUDES: ReadonlySet<string> = new Set(["message.output_text.logprobs"]);

const MESSAGE_ROLES: ReadonlyMap<string, Role> = new Map([
  ["system", Role.SYSTEM],
  ["developer", Role.DEVELOPER],
  ["user", Role.USER],
  ["assistant", Role.ASSISTANT],
]);
/** The function's name sits at the top of `tool_choice`; a forced one needs tools to name. */
const RESPONSES_TOOL_CHOICE: ToolChoiceDialect = {
  nameParent: "tool_choice",
  withoutTools: "required",
};
const IMAGE_DETAILS = ["auto", "low", "high"];

/**
 * Validates an OpenAI Responses API request body (JSON-parsed) and translates it into canonical
 * ChatParams. The gateway is stateless: whatever needs a stored response is refused (400) with a
 * message telling the client to send the whole input; OpenAI's built-in tools are refused by name.
 */
export function parseResponsesRequest(body: unknown): ResponsesRequest {
  if (!isObject(body)) {
    throw invalid(
      "Invalid type for request body: expected a JSON object",
      undefined,
      "invalid_type",
    );
  }
  for (const key of Object.keys(body)) {
    if (!KNOWN_FIELDS.has(key)) {
      throw invalid(`Unknown parameter: '${clip(key)}'.`, key, "unknown_parameter");
    }
  }
  for (const key of STATEFUL_FIELDS) {
    if (present(body[key])) throw stateless(key);
  }
  if (body.background === true) {
    throw invalid(
      "'background' responses are not supported: Switchyard is stateless and keeps no response to poll. Send the request without 'background'.",
      "background",
      "unsupported_parameter",
    );
  }
  optionalBoolean(body.background, "background");
  optionalBoolean(body.store, "store");
  const encryptedReasoning = parseInclude(body.include);

  const model = body.model;
  if (!present(model)) throw required("model");
  if (typeof model !== "string") throw typeError("model", "a string");
  if (model === "") throw invalid("'model' must be a non-empty string", "model", "invalid_value");

  const instructions = optionalString(body.instructions, "instructions");
  const messages: MessageInit[] = [];
  if (instructions !== undefined) {
    messages.push({
      role: Role.SYSTEM,
      content: [{ part: { case: "text", value: instructions } }],
      contentIsText: true,
    });
  }
  parseInput(body.input, messages);

  const { tools, echoed } = parseTools(body.tools);
  const toolChoice = parseToolChoice(body.tool_choice, tools, RESPONSES_TOOL_CHOICE);
  const { format, responseFormat } = parseText(body.text);
  const effort = parseReasoning(body.reasoning);
  const metadata = parseMetadata(body.metadata);
  const temperature = numberBetween(body.temperature, "temperature", 0, 2);
  const topP = numberBetween(body.top_p, "top_p", 0, 1);
  const maxOutputTokens = positiveInt(body.max_output_tokens, "max_output_tokens");
  const parallelToolCalls = optionalBoolean(body.parallel_tool_calls, "parallel_tool_calls");
  const user = optionalString(body.user, "user");
  const stream = optionalBoolean(body.stream, "stream") ?? false;
  const truncation = optionalString(body.truncation, "truncation");

  const params = makeMessage(ChatParamsSchema, {
    model,
    messages,
    tools,
    toolChoice,
    responseFormat,
    temperature,
    topP,
    maxTokens: maxOutputTokens,
    // Reasoning models take only max_completion_tokens, which is what max_output_tokens means.
    maxCompletionTokens: maxOutputTokens !== undefined,
    user,
    parallelToolCalls,
    stream,
    // The final response.completed event always carries usage.
    includeUsage: true,
    extraJson: effort === undefined ? "" : JSON.stringify({ reasoning_effort: effort }),
    clientApi: "responses",
  });
  const echo: ResponsesEcho = {
    encrypted_reasoning: encryptedReasoning,
    instructions: instructions ?? null,
    max_output_tokens: maxOutputTokens ?? null,
    metadata,
    parallel_tool_calls: parallelToolCalls ?? true,
    reasoning: { effort: effort ?? null, summary: null },
    temperature: temperature ?? null,
    text: { format },
    tool_choice: present(body.tool_choice) ? body.tool_choice : "auto",
    tools: echoed,
    top_p: topP ?? null,
    truncation: truncation ?? "disabled",
    user: user ?? null,
  };
  return { params, echo };
}

function stateless(param: string): Failure {
  return invalid(
    `'${param}' is not supported: Switchyard is stateless and stores no responses, conversations or prompts. Send the whole conversation in 'input' instead.`,
    param,
    "unsupported_parameter",
  );
}

/** Checks `include`; whether it asks for reasoning items' `encrypted_content`. */
function parseInclude(raw: unknown): boolean {
  if (!present(raw)) return false;
  if (!Array.isArray(raw)) throw typeError("include", "an array of strings");
  let encryptedReasoning = false;
  raw.forEach((value: unknown, i) => {
    if (typeof value !== "string") throw typeError(`include[${i}]`, "a string");
    if (REFUSED_INCLUDES.has(value)) {
      throw invalid(
        `Invalid value for 'include[${i}]': '${value}' is not supported by this gateway.`,
        `include[${i}]`,
        "unsupported_value",
      );
    }
    if (value === "reasoning.encrypted_content") encryptedReasoning = true;
  });
  return encryptedReasoning;
}

function parseInput(raw: unknown, messages: MessageInit[]): void {
  if (!present(raw)) throw required("input");
  if (typeof raw === "string") {
    messages.push({
      role: Role.USER,
      content: [{ part: { case: "text", value: raw } }],
      contentIsText: true,
    });
    return;
  }
  if (!Array.isArray(raw)) throw typeError("input", "a string or an array of input items");
  if (raw.length === 0) {
    throw invalid("'input' must contain at least one item", "input", "invalid_value");
  }
  // Reasoning blocks from `encrypted_content`, waiting for the assistant turn they stand before.
  let pending: ReasoningBlockInit[] | undefined;
  raw.forEach((item: unknown, i) => {
    const blocks = parseItem(item, `input[${i}]`, messages);
    if (blocks !== undefined) {
      if (blocks.length > 0) pending = pending === undefined ? blocks : [...pending, ...blocks];
      return;
    }
    if (pending === undefined) return;
    // The turn the next item opened or joined; a user or tool item here means there is none.
    const turn = messages.at(-1);
    if (turn?.role === Role.ASSISTANT) {
      turn.reasoningBlocks = [...(turn.reasoningBlocks ?? []), ...pending];
    }
    pending = undefined;
  });
}

/**
 * Adds what an input item says to `messages`. A reasoning item adds nothing: it returns the
 * blocks its `encrypted_content` carries (none when it has none of this gateway's), for the
 * assistant turn that follows; every other item returns undefined.
 */
function parseItem(
  item: unknown,
  path: string,
  messages: MessageInit[],
): ReasoningBlockInit[] | undefined {
  if (!isObject(item)) throw typeError(path, "an object");
  const type = present(item.type) ? item.type : "message";
  switch (type) {
    case "message":
      messages.push(parseMessage(item, path));
      return undefined;
    case "function_call": {
      const callId = requiredString(item, "call_id", path);
      const name = requiredString(item, "name", path);
      const args = requiredString(item, "arguments", path);
      // Calls answered together follow one another; they are one assistant turn with many calls.
      const last = messages.at(-1);
      const toolCall = { id: callId, name, arguments: args };
      if (last?.role === Role.ASSISTANT) {
        last.toolCalls = [...(last.toolCalls ?? []), toolCall];
      } else {
        messages.push({ role: Role.ASSISTANT, toolCalls: [toolCall] });
      }
      return undefined;
    }
    case "function_call_output": {
      const callId = requiredString(item, "call_id", path);
      const output = item.output;
      if (!present(output)) throw required(`${path}.output`);
      if (typeof output === "string") {
        messages.push({
          role: Role.TOOL,
          toolCallId: callId,
          content: [{ part: { case: "text", value: output } }],
          contentIsText: true,
        });
        return undefined;
      }
      if (!Array.isArray(output)) {
        throw typeError(`${path}.output`, "a string or an array of content parts");
      }
      const parts = output.map((part: unknown, j) =>
        parsePart(part, `${path}.output[${j}]`, ["input_text", "input_image", "input_file"]),
      );
      messages.push({ role: Role.TOOL, toolCallId: callId, content: parts });
      return undefined;
    }
    case "reasoning": {
      // An earlier answer's reasoning, sent back as the SDKs do. Only the blocks this gateway
      // packed into `encrypted_content` mean anything here (to Anthropic); the rest is dropped.
      const content = item.encrypted_content;
      return (typeof content === "string" && decodeReasoningBlocks(content)) || [];
    }
    case "item_reference":
      // The AI SDK refers so to an earlier answer's reasoning; dropped, like such an item.
      if (typeof item.id === "string" && item.id.startsWith("rs_")) return [];
      throw invalid(
        `Invalid value for '${path}.type': 'item_reference' points at a stored item, and Switchyard is stateless. Send the item itself instead.`,
        `${path}.type`,
        "unsupported_value",
      );
    default:
      throw invalid(
        `Invalid value for '${path}.type': ${typeof type === "string" ? `'${clip(type)}'` : "not a string"}. Supported input items are 'message', 'function_call', 'function_call_output' and 'reasoning'.`,
        `${path}.type`,
        "invalid_value",
      );
  }
}

function parseMessage(item: JsonObject, path: string): MessageInit {
  const roleName = item.role;
  if (!present(roleName)) throw required(`${path}.role`);
  const role = typeof roleName === "string" ? MESSAGE_ROLES.get(roleName) : undefined;
  if (role === undefined) throw invalidValue(`${path}.role`, roleName, [...MESSAGE_ROLES.keys()]);
  const content = item.content;
  if (!present(content)) throw required(`${path}.content`);
  if (typeof content === "string") {
    return { role, content: [{ part: { case: "text", value: content } }], contentIsText: true };
  }
  if (!Array.isArray(content)) {
    throw typeError(`${path}.content`, "a string or an array of content parts");
  }
  const allowed =
    role === Role.ASSISTANT
      ? ["output_text", "refusal"]
      : role === Role.USER
        ? ["input_text", "input_image", "input_file"]
        : ["input_text"];
  const message: MessageInit = { role, content: [] };
  const parts: PartInit[] = [];
  let refusal: string | undefined;
  content.forEach((part: unknown, j) => {
    const partPath = `${path}.content[${j}]`;
    if (isObject(part) && part.type === "refusal" && allowed.includes("refusal")) {
      refusal = (refusal ?? "") + requiredString(part, "refusal", partPath);
      return;
    }
    parts.push(parsePart(part, partPath, allowed));
  });
  message.content = parts;
  if (refusal !== undefined) message.refusal = refusal;
  return message;
}

function parsePart(raw: unknown, path: string, allowed: readonly string[]): PartInit {
  if (!isObject(raw)) throw typeError(path, "an object");
  const type = raw.type;
  if (!present(type)) throw required(`${path}.type`);
  if (typeof type !== "string" || !allowed.includes(type)) {
    throw invalidValue(`${path}.type`, type, allowed);
  }
  switch (type) {
    case "input_image": {
      const detail = optionalString(raw.detail, `${path}.detail`);
      if (detail !== undefined && !IMAGE_DETAILS.includes(detail)) {
        throw invalidValue(`${path}.detail`, detail, IMAGE_DETAILS);
      }
      if (present(raw.file_id)) {
        throw invalid(
          `'${path}.file_id' is not supported: Switchyard holds no uploaded files. Send 'image_url' (a URL or a data URL) instead.`,
          `${path}.file_id`,
          "unsupported_parameter",
        );
      }
      const url = requiredString(raw, "image_url", path);
      return { part: { case: "image", value: { url, detail } } };
    }
    case "input_file": {
      const fileId = optionalString(raw.file_id, `${path}.file_id`);
      const filename = optionalString(raw.filename, `${path}.filename`);
      const fileData = optionalString(raw.file_data, `${path}.file_data`);
      if (fileId === undefined && fileData === undefined) {
        throw invalid(
          `'${path}' must have either 'file_id' or 'file_data'`,
          path,
          "missing_required_parameter",
        );
      }
      return { part: { case: "file", value: { fileId, filename, fileData } } };
    }
    default:
      // input_text, output_text
      return { part: { case: "text", value: requiredString(raw, "text", path) } };
  }
}

function parseTools(raw: unknown): { tools: ToolInit[]; echoed: JsonObject[] } {
  if (!present(raw)) return { tools: [], echoed: [] };
  if (!Array.isArray(raw)) throw typeError("tools", "an array of tools");
  const tools: ToolInit[] = [];
  const echoed: JsonObject[] = [];
  raw.forEach((tool: unknown, i) => {
    const path = `tools[${i}]`;
    if (!isObject(tool)) throw typeError(path, "an object");
    if (!present(tool.type)) throw required(`${path}.type`);
    if (tool.type !== "function") {
      throw invalid(
        `Invalid value for '${path}.type': ${typeof tool.type === "string" ? `'${clip(tool.type)}' is a built-in tool of OpenAI's hosted service, which this gateway cannot run` : "expected a string"}. Only 'function' tools are supported.`,
        `${path}.type`,
        "unsupported_value",
      );
    }
    const name = requiredString(tool, "name", path);
    checkName(name, `${path}.name`);
    let parametersJson = "";
    if (present(tool.parameters)) {
      if (!isObject(tool.parameters)) throw typeError(`${path}.parameters`, "an object");
      parametersJson = JSON.stringify(tool.parameters);
    }
    const description = optionalString(tool.description, `${path}.description`);
    const strict = optionalBoolean(tool.strict, `${path}.strict`);
    tools.push({ name, description, parametersJson, strict });
    echoed.push({
      type: "function",
      name,
      description: description ?? null,
      parameters: present(tool.parameters) ? tool.parameters : null,
      strict: strict ?? null,
    });
  });
  return { tools, echoed };
}

function parseText(raw: unknown): {
  format: JsonObject;
  responseFormat: ResponseFormatInit | undefined;
} {
  const plain = { format: { type: "text" }, responseFormat: undefined };
  if (!present(raw)) return plain;
  if (!isObject(raw)) throw typeError("text", "an object");
  optionalString(raw.verbosity, "text.verbosity");
  const format = raw.format;
  if (!present(format)) return plain;
  if (!isObject(format)) throw typeError("text.format", "an object");
  switch (format.type) {
    case "text":
      return { format: { type: "text" }, responseFormat: { type: ResponseFormat_Type.TEXT } };
    case "json_object":
      return {
        format: { type: "json_object" },
        responseFormat: { type: ResponseFormat_Type.JSON_OBJECT },
      };
    case "json_schema": {
      const name = requiredString(format, "name", "text.format");
      checkName(name, "text.format.name");
      const schema = format.schema;
      if (!present(schema)) throw required("text.format.schema");
      if (!isObject(schema)) throw typeError("text.format.schema", "an object");
      const strict = optionalBoolean(format.strict, "text.format.strict");
      const description = optionalString(format.description, "text.format.description");
      // Chat Completions' `json_schema` object, which every connector reads.
      const chatSchema: JsonObject = { name, schema };
      if (strict !== undefined) chatSchema.strict = strict;
      if (description !== undefined) chatSchema.description = description;
      return {
        format: {
          type: "json_schema",
          name,
          schema,
          strict: strict ?? null,
          description: description ?? null,
        },
        responseFormat: {
          type: ResponseFormat_Type.JSON_SCHEMA,
          jsonSchemaJson: JSON.stringify(chatSchema),
        },
      };
    }
    default:
      if (!present(format.type)) throw required("text.format.type");
      throw invalidValue("text.format.type", format.type, ["text", "json_object", "json_schema"]);
  }
}

function parseReasoning(raw: unknown): string | undefined {
  if (!present(raw)) return undefined;
  if (!isObject(raw)) throw typeError("reasoning", "an object");
  optionalString(raw.summary, "reasoning.summary");
  return optionalString(raw.effort, "reasoning.effort");
}

function parseMetadata(raw: unknown): JsonObject {
  if (!present(raw)) return {};
  if (!isObject(raw)) throw typeError("metadata", "an object");
  return raw;
}
