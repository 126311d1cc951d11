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
  type ToolCallSchema,
  ToolChoice_Mode,
  type ToolChoiceSchema,
  type ToolSchema,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";
import { makeMessage } from "../../lib/hop/codec.js";

type JsonObject = Record<string, unknown>;
type MessageInit = MessageInitShape<typeof MessageSchema>;
type PartInit = MessageInitShape<typeof ContentPartSchema>;
type ToolInit = MessageInitShape<typeof ToolSchema>;
type ToolCallInit = MessageInitShape<typeof ToolCallSchema>;
type ReasoningBlockInit = MessageInitShape<typeof ReasoningBlockSchema>;
type ToolChoiceInit = MessageInitShape<typeof ToolChoiceSchema>;
type ResponseFormatInit = MessageInitShape<typeof ResponseFormatSchema>;

/** Top-level fields this parser understands; every other field travels on in `extraJson`. */
export const KNOWN_FIELDS: ReadonlySet<string> = new Set([
  "model",
  "messages",
  "tools",
  "tool_choice",
  "response_format",
  "temperature",
  "top_p",
  "max_tokens",
  "max_completion_tokens",
  "stop",
  "n",
  "presence_penalty",
  "frequency_penalty",
  "seed",
  "user",
  "parallel_tool_calls",
  "stream",
  "stream_options",
]);

const ROLES: ReadonlyMap<string, Role> = new Map([
  ["system", Role.SYSTEM],
  ["developer", Role.DEVELOPER],
  ["user", Role.USER],
  ["assistant", Role.ASSISTANT],
  ["tool", Role.TOOL],
]);

/** Content part types each role may send, as OpenAI allows them. */
const PART_TYPES: ReadonlyMap<Role, readonly string[]> = new Map([
  [Role.SYSTEM, ["text"]],
  [Role.DEVELOPER, ["text"]],
  [Role.USER, ["text", "image_url", "input_audio", "file"]],
  [Role.ASSISTANT, ["text", "refusal"]],
  [Role.TOOL, ["text"]],
]);

const IMAGE_DETAILS = ["auto", "low", "high"];
const TOOL_CHOICE_MODES: ReadonlyMap<string, ToolChoice_Mode> = new Map([
  ["none", ToolChoice_Mode.NONE],
  ["auto", ToolChoice_Mode.AUTO],
  ["required", ToolChoice_Mode.REQUIRED],
]);
const RESPONSE_FORMATS: ReadonlyMap<string, ResponseFormat_Type> = new Map([
  ["text", ResponseFormat_Type.TEXT],
  ["json_object", ResponseFormat_Type.JSON_OBJECT],
  ["json_schema", ResponseFormat_Type.JSON_SCHEMA],
]);
/** OpenAI's rule for function and schema names, which every provider accepts. */
export const NAME_PATTERN = /^[a-zA-Z0-9_-]{1,64}$/;
/** OpenAI's limit on stop sequences. */
export const MAX_STOP = 4;
const UINT32_MAX = 4294967295;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/**
 * Validates an OpenAI Chat Completions request body (already JSON-parsed) and translates it
 * into canonical ChatParams. Throws a 400 Failure whose message and `param` name the offending
 * field the way OpenAI does, so clients see the errors they already handle. `null` counts as
 * absent for optional fields, as it does at OpenAI.
 */
export function parseChatRequest(body: unknown): ChatParams {
  if (!isObject(body)) {
    throw invalid(
      "Invalid type for request body: expected a JSON object",
      undefined,
      "invalid_type",
    );
  }

  const model = body.model;
  if (!present(model)) throw required("model");
  if (typeof model !== "string") throw typeError("model", "a string");
  if (model === "") throw invalid("'model' must be a non-empty string", "model", "invalid_value");

  const rawMessages = body.messages;
  if (!present(rawMessages)) throw required("messages");
  if (!Array.isArray(rawMessages)) throw typeError("messages", "an array of messages");
  if (rawMessages.length === 0) {
    throw invalid("'messages' must contain at least one message", "messages", "invalid_value");
  }
  const messages = rawMessages.map(parseMessage);

  const tools = parseTools(body.tools);
  const stream = optionalBoolean(body.stream, "stream") ?? false;

  let includeUsage = false;
  if (present(body.stream_options)) {
    if (!stream) {
      throw invalid(
        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        "stream_options",
        "invalid_value",
      );
    }
    if (!isObject(body.stream_options)) throw typeError("stream_options", "an object");
    includeUsage =
      optionalBoolean(body.stream_options.include_usage, "stream_options.include_usage") ?? false;
  }

  const maxTokens = positiveInt(body.max_tokens, "max_tokens");
  const maxCompletionTokens = positiveInt(body.max_completion_tokens, "max_completion_tokens");

  return makeMessage(ChatParamsSchema, {
    model,
    messages,
    tools,
    toolChoice: parseToolChoice(body.tool_choice, tools, CHAT_TOOL_CHOICE),
    responseFormat: parseResponseFormat(body.response_format),
    temperature: numberBetween(body.temperature, "temperature", 0, 2),
    topP: numberBetween(body.top_p, "top_p", 0, 1),
    // The newer name wins: it is what current clients mean when they send both.
    maxTokens: maxCompletionTokens ?? maxTokens,
    maxCompletionTokens: maxCompletionTokens !== undefined,
    stop: parseStop(body.stop),
    n: parseN(body.n),
    presencePenalty: numberBetween(body.presence_penalty, "presence_penalty", -2, 2),
    frequencyPenalty: numberBetween(body.frequency_penalty, "frequency_penalty", -2, 2),
    seed: parseSeed(body.seed),
    user: optionalString(body.user, "user"),
    parallelToolCalls: optionalBoolean(body.parallel_tool_calls, "parallel_tool_calls"),
    stream,
    includeUsage,
    extraJson: extraJson(body),
    clientApi: "openai",
  });
}

function parseMessage(raw: unknown, i: number): MessageInit {
  const path = `messages[${i}]`;
  if (!isObject(raw)) throw typeError(path, "an object");

  const roleName = raw.role;
  if (!present(roleName)) throw required(`${path}.role`);
  if (typeof roleName !== "string") throw typeError(`${path}.role`, "a string");
  if (roleName === "function") {
    throw invalid(
      `Invalid value for '${path}.role': 'function'. The legacy 'function' role is not supported; send function results as 'tool' messages with a 'tool_call_id'.`,
      `${path}.role`,
      "invalid_value",
    );
  }
  const role = ROLES.get(roleName);
  if (role === undefined) throw invalidValue(`${path}.role`, roleName, [...ROLES.keys()]);

  const message: MessageInit = { role, name: optionalString(raw.name, `${path}.name`) };

  let toolCallCount = 0;
  let refusal: string | undefined;
  if (role === Role.ASSISTANT) {
    const toolCalls = parseToolCalls(raw.tool_calls, path);
    toolCallCount = toolCalls.length;
    message.toolCalls = toolCalls;
    refusal = optionalString(raw.refusal, `${path}.refusal`);
    message.reasoningBlocks = parseThinkingBlocks(raw.thinking_blocks, path);
  }
  if (role === Role.TOOL) {
    const id = raw.tool_call_id;
    if (!present(id)) throw required(`${path}.tool_call_id`);
    if (typeof id !== "string") throw typeError(`${path}.tool_call_id`, "a string");
    message.toolCallId = id;
  }

  const content = raw.content;
  if (!present(content)) {
    if (role !== Role.ASSISTANT) throw required(`${path}.content`);
    if (toolCallCount === 0 && refusal === undefined) {
      throw invalid(
        `'${path}.content' is a required property unless 'tool_calls' are given`,
        `${path}.content`,
        "missing_required_parameter",
      );
    }
  } else if (typeof content === "string") {
    message.content = [{ part: { case: "text", value: content } }];
    message.contentIsText = true;
  } else if (Array.isArray(content)) {
    if (content.length === 0 && role !== Role.ASSISTANT) {
      throw invalid(
        `Invalid value for '${path}.content': expected at least one content part`,
        `${path}.content`,
        "invalid_value",
      );
    }
    const parts: PartInit[] = [];
    const refusals: string[] = [];
    const allowed = PART_TYPES.get(role) ?? [];
    content.forEach((part, j) => {
      parseContentPart(part, `${path}.content[${j}]`, allowed, parts, refusals);
    });
    message.content = parts;
    if (refusals.length > 0) refusal = (refusal ?? "") + refusals.join("");
  } else {
    throw typeError(`${path}.content`, "a string or an array of content parts");
  }
  if (refusal !== undefined) message.refusal = refusal;
  return message;
}

function parseContentPart(
  raw: unknown,
  path: string,
  allowed: readonly string[],
  parts: PartInit[],
  refusals: string[],
): void {
  if (!isObject(raw)) throw typeError(path, "an object");
  const type = raw.type;
  if (!present(type)) throw required(`${path}.type`);
  if (typeof type !== "string" || !allowed.includes(type)) {
    throw invalidValue(`${path}.type`, type, allowed);
  }
  const before = parts.length;
  readContentPart(raw, type, path, parts, refusals);
  const cacheControl = cacheControlJson(raw, path);
  if (cacheControl !== "" && parts.length > before) {
    (parts[before] as PartInit).cacheControlJson = cacheControl;
  }
}

/**
 * `cache_control` on a content part or tool (LiteLLM's convention for Anthropic's prompt
 * caching) as JSON text, "" when none: Anthropic targets get it back on the same block.
 */
function cacheControlJson(raw: Record<string, unknown>, path: string): string {
  const value = raw.cache_control;
  if (!present(value)) return "";
  if (!isObject(value)) throw typeError(`${path}.cache_control`, "an object");
  return JSON.stringify(value);
}

function readContentPart(
  raw: Record<string, unknown>,
  type: string,
  path: string,
  parts: PartInit[],
  refusals: string[],
): void {
  switch (type) {
    case "text":
      parts.push({ part: { case: "text", value: requiredString(raw, "text", path) } });
      return;
    case "refusal":
      refusals.push(requiredString(raw, "refusal", path));
      return;
    case "image_url": {
      const image = requiredObject(raw, "image_url", path);
      const url = requiredString(image, "url", `${path}.image_url`);
      const detail = optionalString(image.detail, `${path}.image_url.detail`);
      if (detail !== undefined && !IMAGE_DETAILS.includes(detail)) {
        throw invalidValue(`${path}.image_url.detail`, detail, IMAGE_DETAILS);
      }
      parts.push({ part: { case: "image", value: { url, detail } } });
      return;
    }
    case "input_audio": {
      const audio = requiredObject(raw, "input_audio", path);
      const data = requiredString(audio, "data", `${path}.input_audio`);
      const format = requiredString(audio, "format", `${path}.input_audio`);
      parts.push({ part: { case: "audio", value: { data, format } } });
      return;
    }
    case "file": {
      const file = requiredObject(raw, "file", path);
      const fileId = optionalString(file.file_id, `${path}.file.file_id`);
      const filename = optionalString(file.filename, `${path}.file.filename`);
      const fileData = optionalString(file.file_data, `${path}.file.file_data`);
      if (fileId === undefined && fileData === undefined) {
        throw invalid(
          `'${path}.file' must have either 'file_id' or 'file_data'`,
          `${path}.file`,
          "missing_required_parameter",
        );
      }
      parts.push({ part: { case: "file", value: { fileId, filename, fileData } } });
      return;
    }
  }
}

function parseToolCalls(raw: unknown, messagePath: string): ToolCallInit[] {
  if (!present(raw)) return [];
  const path = `${messagePath}.tool_calls`;
  if (!Array.isArray(raw)) throw typeError(path, "an array of tool calls");
  return raw.map((call: unknown, k): ToolCallInit => {
    const callPath = `${path}[${k}]`;
    if (!isObject(call)) throw typeError(callPath, "an object");
    const id = requiredString(call, "id", callPath);
    // OpenAI insists on `type`; some clients omit it, and "function" is the only value anyway.
    if (present(call.type) && call.type !== "function") {
      throw invalidValue(`${callPath}.type`, call.type, ["function"]);
    }
    const fn = requiredObject(call, "function", callPath);
    const name = requiredString(fn, "name", `${callPath}.function`);
    const args = requiredString(fn, "arguments", `${callPath}.function`);
    return { id, name, arguments: args };
  });
}

/**
 * `thinking_blocks` on an assistant message (LiteLLM's convention, which Switchyard also
 * answers with): the reasoning blocks of an Anthropic answer, sent back so that a tool-use
 * loop with thinking enabled can go on.
 */
function parseThinkingBlocks(raw: unknown, messagePath: string): ReasoningBlockInit[] {
  if (!present(raw)) return [];
  const path = `${messagePath}.thinking_blocks`;
  if (!Array.isArray(raw)) throw typeError(path, "an array of thinking blocks");
  return raw.map((block: unknown, k): ReasoningBlockInit => {
    const blockPath = `${path}[${k}]`;
    if (!isObject(block)) throw typeError(blockPath, "an object");
    switch (block.type) {
      case "thinking":
        return {
          text: requiredString(block, "thinking", blockPath),
          signature: requiredString(block, "signature", blockPath),
        };
      case "redacted_thinking":
        return { redactedData: requiredString(block, "data", blockPath) };
      default:
        if (!present(block.type)) throw required(`${blockPath}.type`);
        throw invalidValue(`${blockPath}.type`, block.type, ["thinking", "redacted_thinking"]);
    }
  });
}

function parseTools(raw: unknown): ToolInit[] {
  if (!present(raw)) return [];
  if (!Array.isArray(raw)) throw typeError("tools", "an array of tools");
  return raw.map((tool: unknown, i): ToolInit => {
    const path = `tools[${i}]`;
    if (!isObject(tool)) throw typeError(path, "an object");
    if (!present(tool.type)) throw required(`${path}.type`);
    if (tool.type !== "function") throw invalidValue(`${path}.type`, tool.type, ["function"]);
    const fn = requiredObject(tool, "function", path);
    const name = requiredString(fn, "name", `${path}.function`);
    checkName(name, `${path}.function.name`);
    let parametersJson = "";
    if (present(fn.parameters)) {
      if (!isObject(fn.parameters)) throw typeError(`${path}.function.parameters`, "an object");
      parametersJson = JSON.stringify(fn.parameters);
    }
    return {
      name,
      description: optionalString(fn.description, `${path}.function.description`),
      parametersJson,
      strict: optionalBoolean(fn.strict, `${path}.function.strict`),
      cacheControlJson: cacheControlJson(tool, path),
    };
  });
}

/** Where Chat Completions and the Responses API differ in `tool_choice`, and in refusing it. */
export interface ToolChoiceDialect {
  /**
   * The object holding a forced function's name, as a param path: `{type: "function",
   * function: {name}}` in Chat Completions, `{type: "function", name}` in the Responses API.
   */
  nameParent: "tool_choice.function" | "tool_choice";
  /**
   * What the refusal of a choice that needs tools, sent without any, quotes: Chat Completions
   * refuses any such choice as `'tool_choice'`; the Responses API quotes `'required'`, and
   * refuses a named function as naming none of the tools.
   */
  withoutTools: "tool_choice" | "required";
}

export const CHAT_TOOL_CHOICE: ToolChoiceDialect = {
  nameParent: "tool_choice.function",
  withoutTools: "tool_choice",
};

/** `tool_choice` as Chat Completions or the Responses API (`dialect`) sends it. */
export function parseToolChoice(
  raw: unknown,
  tools: ToolInit[],
  dialect: ToolChoiceDialect,
): ToolChoiceInit | undefined {
  if (!present(raw)) return undefined;
  let choice: ToolChoiceInit;
  if (typeof raw === "string") {
    const mode = TOOL_CHOICE_MODES.get(raw);
    if (mode === undefined) throw invalidValue("tool_choice", raw, [...TOOL_CHOICE_MODES.keys()]);
    choice = { mode };
  } else if (isObject(raw)) {
    if (!present(raw.type)) throw required("tool_choice.type");
    if (raw.type !== "function") throw invalidValue("tool_choice.type", raw.type, ["function"]);
    const { nameParent } = dialect;
    const holder =
      nameParent === "tool_choice" ? raw : requiredObject(raw, "function", "tool_choice");
    const name = requiredString(holder, "name", nameParent);
    // Without tools, Chat Completions refuses the choice itself (below); Responses, its name.
    if (
      (tools.length > 0 || dialect.withoutTools === "required") &&
      !tools.some((t) => t.name === name)
    ) {
      throw invalid(
        `Invalid value for '${nameParent}.name': '${clip(name)}' is not the name of any function in 'tools'.`,
        `${nameParent}.name`,
        "invalid_value",
      );
    }
    choice = { mode: ToolChoice_Mode.FUNCTION, functionName: name };
  } else {
    throw typeError("tool_choice", "a string or an object");
  }
  // "none" and "auto" are harmless without tools, and many clients send them unconditionally.
  const needsTools =
    choice.mode === ToolChoice_Mode.REQUIRED || choice.mode === ToolChoice_Mode.FUNCTION;
  if (needsTools && tools.length === 0) {
    throw invalid(
      `Invalid value for 'tool_choice': '${dialect.withoutTools}' is only allowed when 'tools' are specified.`,
      "tool_choice",
      "invalid_value",
    );
  }
  return choice;
}

function parseResponseFormat(raw: unknown): ResponseFormatInit | undefined {
  if (!present(raw)) return undefined;
  if (!isObject(raw)) throw typeError("response_format", "an object");
  if (!present(raw.type)) throw required("response_format.type");
  const type = typeof raw.type === "string" ? RESPONSE_FORMATS.get(raw.type) : undefined;
  if (type === undefined) {
    throw invalidValue("response_format.type", raw.type, [...RESPONSE_FORMATS.keys()]);
  }
  if (type !== ResponseFormat_Type.JSON_SCHEMA) return { type };
  const schema = requiredObject(raw, "json_schema", "response_format");
  const name = requiredString(schema, "name", "response_format.json_schema");
  checkName(name, "response_format.json_schema.name");
  if (present(schema.schema) && !isObject(schema.schema)) {
    throw typeError("response_format.json_schema.schema", "an object");
  }
  optionalBoolean(schema.strict, "response_format.json_schema.strict");
  optionalString(schema.description, "response_format.json_schema.description");
  return { type, jsonSchemaJson: JSON.stringify(schema) };
}

function parseStop(raw: unknown): string[] {
  if (!present(raw)) return [];
  if (typeof raw === "string") return [raw];
  if (
    Array.isArray(raw) &&
    raw.length <= MAX_STOP &&
    raw.every((s: unknown) => typeof s === "string")
  ) {
    return raw;
  }
  throw invalid(
    `'stop' must be a string or an array of at most ${MAX_STOP} strings`,
    "stop",
    "invalid_value",
  );
}

function parseN(raw: unknown): number | undefined {
  if (!present(raw)) return undefined;
  if (typeof raw !== "number" || !Number.isInteger(raw) || raw < 1) {
    throw invalid("'n' must be an integer greater than or equal to 1", "n", "invalid_value");
  }
  if (raw > UINT32_MAX) throw invalid(`'n' must be at most ${UINT32_MAX}`, "n", "invalid_value");
  return raw;
}

function parseSeed(raw: unknown): bigint | undefined {
  if (!present(raw)) return undefined;
  if (typeof raw !== "number" || !Number.isInteger(raw)) {
    throw invalid("'seed' must be an integer", "seed", "invalid_type");
  }
  const seed = BigInt(raw);
  if (seed < INT64_MIN || seed > INT64_MAX) {
    throw invalid(
      `'seed' must be an integer between ${INT64_MIN} and ${INT64_MAX}`,
      "seed",
      "invalid_value",
    );
  }
  return seed;
}

export function numberBetween(
  raw: unknown,
  name: string,
  min: number,
  max: number,
): number | undefined {
  if (!present(raw)) return undefined;
  if (typeof raw !== "number" || !Number.isFinite(raw) || raw < min || raw > max) {
    throw invalid(`'${name}' must be a number between ${min} and ${max}`, name, "invalid_value");
  }
  return raw;
}

export function positiveInt(raw: unknown, name: string): number | undefined {
  if (!present(raw)) return undefined;
  if (typeof raw !== "number" || !Number.isInteger(raw) || raw < 1) {
    throw invalid(`'${name}' must be a positive integer`, name, "invalid_value");
  }
  if (raw > UINT32_MAX) {
    throw invalid(`'${name}' must be at most ${UINT32_MAX}`, name, "invalid_value");
  }
  return raw;
}

export function checkName(name: string, param: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw invalid(
      `Invalid value for '${param}': '${clip(name)}'. Expected a string that matches the pattern '${NAME_PATTERN.source}'.`,
      param,
      "invalid_value",
    );
  }
}

/** The unknown top-level fields, as a JSON object for upstreams that speak the same dialect. */
function extraJson(body: JsonObject): string {
  const extra: Array<[string, unknown]> = [];
  for (const key of Object.keys(body)) {
    if (!KNOWN_FIELDS.has(key)) extra.push([key, body[key]]);
  }
  // fromEntries defines own properties, so a "__proto__" key is carried, not applied.
  return extra.length === 0 ? "" : JSON.stringify(Object.fromEntries(extra));
}

export function requiredString(obj: JsonObject, key: string, parent: string): string {
  const v = obj[key];
  if (!present(v)) throw required(`${parent}.${key}`);
  if (typeof v !== "string") throw typeError(`${parent}.${key}`, "a string");
  return v;
}

export function requiredObject(obj: JsonObject, key: string, parent: string): JsonObject {
  const v = obj[key];
  if (!present(v)) throw required(`${parent}.${key}`);
  if (!isObject(v)) throw typeError(`${parent}.${key}`, "an object");
  return v;
}

export function optionalString(v: unknown, param: string): string | undefined {
  if (!present(v)) return undefined;
  if (typeof v !== "string") throw typeError(param, "a string");
  return v;
}

export function optionalBoolean(v: unknown, param: string): boolean | undefined {
  if (!present(v)) return undefined;
  if (typeof v !== "boolean") throw typeError(param, "a boolean");
  return v;
}

export function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

export function required(param: string): Failure {
  return invalid(`'${param}' is a required property`, param, "missing_required_parameter");
}

export function typeError(param: string, expected: string): Failure {
  return invalid(`Invalid type for '${param}': expected ${expected}`, param, "invalid_type");
}

export function invalidValue(param: string, value: unknown, supported: readonly string[]): Failure {
  return invalid(
    `Invalid value for '${param}': ${show(value)}. Supported values are: ${listOf(supported)}.`,
    param,
    "invalid_value",
  );
}

export function invalid(message: string, param: string | undefined, code: string): Failure {
  return new Failure({
    status: 400,
    kind: "invalid_request",
    message,
    code,
    ...(param !== undefined ? { param } : {}),
  });
}

function show(v: unknown): string {
  return typeof v === "string" ? `'${clip(v)}'` : clip(JSON.stringify(v) ?? String(v));
}

/** Keeps echoed client values short: an error message is not a place for a whole prompt. */
export function clip(s: string): string {
  return s.length > 64 ? `${s.slice(0, 64)}…` : s;
}

function listOf(values: readonly string[]): string {
  const quoted = values.map((v) => `'${v}'`);
  if (quoted.length <= 2) return quoted.join(" and ");
  return `${quoted.slice(0, -1).join(", ")}, and ${quoted.at(-1)}`;
}
