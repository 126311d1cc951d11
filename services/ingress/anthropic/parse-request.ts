import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type AnthropicBlockSchema,
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
type AnthropicBlockInit = MessageInitShape<typeof AnthropicBlockSchema>;
type ToolChoiceInit = MessageInitShape<typeof ToolChoiceSchema>;
type ResponseFormatInit = MessageInitShape<typeof ResponseFormatSchema>;

/**
 * Documented Messages request fields the canonical model does not name. They travel in
 * `extraJson` as the client sent them; the Anthropic connector passes on those its upstream
 * understands, other upstreams ignore them (the gateway's rule for foreign extras).
 */
const EXTRA_FIELDS: ReadonlySet<string> = new Set([
  "top_k",
  "thinking",
  "metadata",
  "service_tier",
  "cache_control",
  "inference_geo",
  "speed",
  // Server-side context editing (beta context-management-2025-06-27), which Claude Code sends.
  "context_management",
  // Remote MCP servers Anthropic calls itself (beta mcp-client-2025-04-04); only Anthropic
  // targets can serve a request that names them.
  "mcp_servers",
  // The container Anthropic runs code execution in (an id, or `{id, skills}`); Anthropic
  // targets only.
  "container",
]);

const FIELDS: ReadonlySet<string> = new Set([
  "model",
  "max_tokens",
  "messages",
  "system",
  "tools",
  "tool_choice",
  "stop_sequences",
  "temperature",
  "top_p",
  "stream",
  "output_config",
  ...EXTRA_FIELDS,
]);

const ROLES: ReadonlyMap<string, Role> = new Map([
  ["user", Role.USER],
  ["assistant", Role.ASSISTANT],
  // Mid-conversation system messages; they keep their place in the canonical conversation.
  ["system", Role.SYSTEM],
]);

/** Block types the gateway translates, in the order Anthropic's reference lists them. */
const BLOCK_TYPES = [
  "text",
  "image",
  "document",
  "thinking",
  "redacted_thinking",
  "tool_use",
  "tool_result",
];
const ROLE_BLOCKS: ReadonlyMap<Role, readonly string[]> = new Map([
  [Role.USER, ["text", "image", "document", "tool_result"]],
  [Role.ASSISTANT, ["text", "thinking", "redacted_thinking", "tool_use"]],
  [Role.SYSTEM, ["text"]],
]);
const TOOL_RESULT_BLOCKS = ["text", "image", "document"];
/**
 * Blocks of Anthropic's server tools, MCP connector and context management that its answers
 * hold. An assistant turn that a client sends back carries them whole, in place, to Anthropic
 * targets (Anthropic ran those tools; no other upstream can continue from them).
 */
const ANTHROPIC_ASSISTANT_BLOCKS: ReadonlySet<string> = new Set([
  "server_tool_use",
  "web_search_tool_result",
  "web_fetch_tool_result",
  "code_execution_tool_result",
  "bash_code_execution_tool_result",
  "text_editor_code_execution_tool_result",
  "tool_search_tool_result",
  "mcp_tool_use",
  "mcp_tool_result",
  "container_upload",
  "compaction",
]);
/**
 * Block types of Anthropic's server tools and retrieval features. They are Anthropic's to
 * produce and execute, so no other upstream can continue a conversation that holds them.
 */
const SERVER_BLOCKS: ReadonlySet<string> = new Set([
  "search_result",
  "server_tool_use",
  "web_search_tool_result",
  "web_fetch_tool_result",
  "code_execution_tool_result",
  "bash_code_execution_tool_result",
  "text_editor_code_execution_tool_result",
  "tool_search_tool_result",
  "container_upload",
  "tool_reference",
  "browser_state",
]);

const IMAGE_MEDIA_TYPES = ["image/jpeg", "image/png", "image/gif", "image/webp"];
const TOOL_CHOICE_MODES: ReadonlyMap<string, ToolChoice_Mode> = new Map([
  ["auto", ToolChoice_Mode.AUTO],
  ["any", ToolChoice_Mode.REQUIRED],
  ["tool", ToolChoice_Mode.FUNCTION],
  ["none", ToolChoice_Mode.NONE],
]);
/**
 * Anthropic's toolsets name no tool of their own (`mcp_toolset` names an MCP server, the
 * `*_toolset_*` types a set of built-in tools); every other Anthropic-defined tool has a name.
 */
const TOOLSET_TYPE = /(^|_)toolset(_|$)/;
/** Tool fields with no canonical counterpart whose loss changes nothing the model sees. */
const IGNORED_TOOL_FIELDS: ReadonlySet<string> = new Set(["eager_input_streaming"]);
const TOOL_FIELDS: ReadonlySet<string> = new Set([
  "name",
  "description",
  "input_schema",
  "type",
  "strict",
  "cache_control",
  ...IGNORED_TOOL_FIELDS,
]);
/** Tool fields that change what the model does and that the canonical model cannot carry. */
const UNSUPPORTED_TOOL_FIELDS: ReadonlySet<string> = new Set([
  "input_examples",
  "defer_loading",
  "allowed_callers",
]);
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const UINT32_MAX = 4294967295;
const NON_EMPTY_CONTENT =
  "all messages must have non-empty content except for the optional final assistant message";
/** The name a structured-output schema gets as a canonical JSON_SCHEMA response format. */
export const OUTPUT_SCHEMA_NAME = "output";

/**
 * Validates an Anthropic Messages request body (already JSON-parsed) and translates it into
 * canonical ChatParams. Throws a 400 Failure whose message names the field the way Anthropic
 * does ("max_tokens: Field required"), with `param` the same dotted path; what the gateway
 * cannot carry to any upstream is refused with kind "unsupported". `null` counts as absent for
 * optional fields.
 *
 * Translation choices worth knowing:
 * - A user message's `tool_result` blocks become one ROLE_TOOL message each, in order; its
 *   other blocks follow as one ROLE_USER message (OpenAI-style upstreams want tool answers
 *   right after the call).
 * - `thinking` / `redacted_thinking` blocks in the history become the assistant message's
 *   reasoning blocks, byte for byte: with thinking enabled and tools in use, Anthropic wants
 *   the last turn's thinking back with its signature. Only Anthropic upstreams are sent them.
 * - An assistant message's blocks keep their order (`blockIndex`), and the blocks of
 *   Anthropic's server tools and MCP connector travel whole (`anthropicBlocks`), for Anthropic
 *   targets only.
 * - `cache_control` markers on blocks and tools are kept where they stand (`cacheControlJson`):
 *   Anthropic targets get them back in place, other upstreams cache on their own.
 * - Tools Anthropic defines (`web_search_20250305`, `bash_20250124`, …) travel whole, in their
 *   place among the client's own (`Tool.anthropicJson`); only Anthropic targets can serve them.
 * - A text block's `citations` travel whole (`citationsJson`), and so do a document's
 *   `citations` setting and `context` (`anthropicFieldsJson`): Anthropic targets get them back
 *   in place; other upstreams get the text without its citations and the document without its
 *   context, and refuse a document whose citations are enabled.
 * - `output_config.format` becomes the canonical JSON_SCHEMA response format so every upstream
 *   honours it; the rest of `output_config` travels in `extraJson`.
 */
export function parseMessagesRequest(body: unknown): ChatParams {
  return toChatParams(body, true);
}

/**
 * A `POST /v1/messages/count_tokens` body: the same fields and checks as a Messages request,
 * except that `max_tokens` is not required (there is no answer to bound). What only shapes an
 * answer (`max_tokens`, `stream`, sampling) is accepted and not counted.
 */
export function parseCountTokensRequest(body: unknown): ChatParams {
  return toChatParams(body, false);
}

function toChatParams(body: unknown, needsMaxTokens: boolean): ChatParams {
  if (!isObject(body)) {
    throw invalid("Input should be a valid dictionary or object to extract fields from");
  }
  for (const key of Object.keys(body)) {
    if (!FIELDS.has(key)) throw invalid(`${key}: Extra inputs are not permitted`, key);
  }

  const model = body.model;
  if (!present(model)) throw required("model");
  if (typeof model !== "string") throw typeError("model", "a valid string");
  if (model === "") throw invalid("model: String should have at least 1 character", "model");

  const maxTokens = integerBetween(body.max_tokens, "max_tokens", 1, UINT32_MAX);
  if (maxTokens === undefined && needsMaxTokens) throw required("max_tokens");

  const messages = parseMessages(body.messages);
  const system = parseSystem(body.system);
  if (system !== undefined) messages.unshift(system);

  const tools = parseTools(body.tools);
  const { toolChoice, parallelToolCalls } = parseToolChoice(body.tool_choice, tools);
  const output = parseOutputConfig(body.output_config);
  const user = parseMetadata(body.metadata);

  const extra: Array<[string, unknown]> = [];
  for (const key of EXTRA_FIELDS) {
    // A container is where code runs, not part of the prompt: a count has no use for it (and
    // Anthropic's count_tokens refuses it).
    if (key === "container" && !needsMaxTokens) continue;
    if (present(body[key])) extra.push([key, body[key]]);
  }
  if (output.rest !== undefined) extra.push(["output_config", output.rest]);
  checkExtras(body);

  return makeMessage(ChatParamsSchema, {
    model,
    messages,
    tools,
    toolChoice,
    responseFormat: output.format,
    temperature: numberBetween(body.temperature, "temperature", 0, 1),
    topP: numberBetween(body.top_p, "top_p", 0, 1),
    maxTokens,
    stop: parseStopSequences(body.stop_sequences),
    user,
    parallelToolCalls,
    stream: optionalBoolean(body.stream, "stream") ?? false,
    // Anthropic streams always report usage, so the client is always owed it.
    includeUsage: true,
    extraJson: extra.length === 0 ? "" : JSON.stringify(Object.fromEntries(extra)),
    clientApi: "anthropic",
  });
}

function parseMessages(raw: unknown): MessageInit[] {
  if (!present(raw)) throw required("messages");
  if (!Array.isArray(raw)) throw typeError("messages", "a valid list");
  if (raw.length === 0) throw invalid("messages: at least one message is required", "messages");
  const out: MessageInit[] = [];
  raw.forEach((message: unknown, i) => {
    out.push(...parseMessage(message, `messages.${i}`, i === raw.length - 1));
  });
  return out;
}

/** One Anthropic message; a user message holding tool results becomes several. */
function parseMessage(raw: unknown, path: string, last: boolean): MessageInit[] {
  if (!isObject(raw)) throw typeError(path, "a valid dictionary");
  for (const key of Object.keys(raw)) {
    if (key !== "role" && key !== "content") {
      throw invalid(`${path}.${key}: Extra inputs are not permitted`, `${path}.${key}`);
    }
  }
  const roleName = raw.role;
  if (!present(roleName)) throw required(`${path}.role`);
  const role = typeof roleName === "string" ? ROLES.get(roleName) : undefined;
  if (role === undefined) throw literal(`${path}.role`, [...ROLES.keys()]);

  const content = raw.content;
  if (!present(content)) throw required(`${path}.content`);
  const mayBeEmpty = last && role === Role.ASSISTANT;
  if (typeof content === "string") {
    if (content === "" && !mayBeEmpty) throw invalid(`${path}: ${NON_EMPTY_CONTENT}`, path);
    return [{ role, content: [textPart(content)], contentIsText: true }];
  }
  if (!Array.isArray(content)) {
    throw typeError(`${path}.content`, "a valid string or a valid list");
  }
  if (content.length === 0 && !mayBeEmpty) throw invalid(`${path}: ${NON_EMPTY_CONTENT}`, path);

  const allowed = ROLE_BLOCKS.get(role) ?? [];
  const results: MessageInit[] = [];
  const parts: PartInit[] = [];
  const toolCalls: ToolCallInit[] = [];
  const reasoningBlocks: ReasoningBlockInit[] = [];
  const anthropicBlocks: AnthropicBlockInit[] = [];
  // An assistant turn's blocks keep their place: Anthropic wants its thinking back where it was,
  // and interleaved thinking puts it between tool calls and text.
  const place = (j: number) => (role === Role.ASSISTANT ? { blockIndex: j } : {});
  content.forEach((block: unknown, j) => {
    const blockPath = `${path}.content.${j}`;
    const { type, value } = blockOf(block, blockPath, allowed, role);
    switch (type) {
      case "text":
      case "image":
      case "document":
        parts.push({ ...contentPart(type, value, blockPath), ...place(j) });
        return;
      case "tool_use":
        toolCalls.push({ ...toolCall(value, blockPath), ...place(j) });
        return;
      case "tool_result":
        results.push(toolResult(value, blockPath));
        return;
      case "thinking":
        reasoningBlocks.push({
          text: requiredString(value, "thinking", blockPath),
          signature: requiredString(value, "signature", blockPath),
          ...place(j),
        });
        return;
      case "redacted_thinking":
        reasoningBlocks.push({
          redactedData: requiredString(value, "data", blockPath),
          ...place(j),
        });
        return;
      default:
        // One of Anthropic's own (see ANTHROPIC_ASSISTANT_BLOCKS): whole, as the client sent it.
        anthropicBlocks.push({ json: JSON.stringify(value), ...place(j) });
    }
  });

  if (role === Role.USER && results.length > 0) {
    if (parts.length > 0) results.push({ role, content: parts });
    return results;
  }
  return [{ role, content: parts, toolCalls, reasoningBlocks, anthropicBlocks }];
}

/**
 * Checks a block's `type` against what its place allows (`role` is undefined inside a
 * tool_result); returns the block and its type.
 */
function blockOf(
  raw: unknown,
  path: string,
  allowed: readonly string[],
  role: Role | undefined,
): { type: string; value: JsonObject } {
  if (!isObject(raw)) throw typeError(path, "a valid dictionary");
  const type = raw.type;
  if (!present(type)) throw required(`${path}.type`);
  if (role === Role.ASSISTANT && typeof type === "string" && ANTHROPIC_ASSISTANT_BLOCKS.has(type)) {
    return { type, value: raw };
  }
  if (typeof type === "string" && SERVER_BLOCKS.has(type)) {
    throw unsupported(
      `${path}.type`,
      `${path}.type: '${type}' blocks belong to Anthropic server tools and are not supported by this gateway`,
    );
  }
  if (typeof type !== "string" || !BLOCK_TYPES.includes(type)) {
    throw literal(`${path}.type`, role === undefined ? allowed : BLOCK_TYPES);
  }
  if (!allowed.includes(type)) {
    const where = role === undefined ? "tool_result content" : `${roleWord(role)} messages`;
    throw invalid(`${path}.type: '${type}' blocks are not allowed in ${where}`, `${path}.type`);
  }
  return { type, value: raw };
}

function contentPart(type: string, block: JsonObject, path: string): PartInit {
  let part: PartInit;
  switch (type) {
    case "image":
      part = { part: { case: "image", value: { url: imageUrl(block, path) } } };
      break;
    case "document":
      part = document(block, path);
      break;
    default:
      part = textPart(nonEmptyText(block, path));
      part.citationsJson = citationsJson(block, path);
  }
  const cacheControl = cacheControlJson(block, path);
  if (cacheControl !== "") part.cacheControlJson = cacheControl;
  return part;
}

/**
 * A text block's `citations` (of an earlier answer, sent back) as a JSON array ("" when none),
 * for an Anthropic upstream to get back in place; each citation is Anthropic's to judge.
 */
function citationsJson(block: JsonObject, path: string): string {
  const value = block.citations;
  if (!present(value)) return "";
  if (!Array.isArray(value)) throw typeError(`${path}.citations`, "a valid list");
  value.forEach((citation: unknown, k) => {
    const at = `${path}.citations.${k}`;
    if (!isObject(citation)) throw typeError(at, "a valid dictionary");
    if (!present(citation.type)) throw required(`${at}.type`);
    if (typeof citation.type !== "string") throw typeError(`${at}.type`, "a valid string");
  });
  return JSON.stringify(value);
}

/**
 * A block's `cache_control` as JSON text ("" when none), for an Anthropic upstream to get back
 * in place; its contents are Anthropic's to judge.
 */
function cacheControlJson(block: JsonObject, path: string): string {
  const value = block.cache_control;
  if (!present(value)) return "";
  if (!isObject(value)) throw typeError(`${path}.cache_control`, "a valid dictionary");
  return JSON.stringify(value);
}

function nonEmptyText(block: JsonObject, path: string): string {
  const text = requiredString(block, "text", path);
  if (text === "")
    throw invalid(`${path}.text: text content blocks must be non-empty`, `${path}.text`);
  return text;
}

/** An image source as the canonical https: or data: URL. */
function imageUrl(block: JsonObject, path: string): string {
  const source = requiredObject(block, "source", path);
  const sourcePath = `${path}.source`;
  const kind = source.type;
  if (!present(kind)) throw required(`${sourcePath}.type`);
  if (kind === "base64") {
    const mediaType = source.media_type;
    if (!present(mediaType)) throw required(`${sourcePath}.media_type`);
    if (typeof mediaType !== "string" || !IMAGE_MEDIA_TYPES.includes(mediaType)) {
      throw literal(`${sourcePath}.media_type`, IMAGE_MEDIA_TYPES);
    }
    return `data:${mediaType};base64,${requiredString(source, "data", sourcePath)}`;
  }
  if (kind === "url") return requiredString(source, "url", sourcePath);
  if (kind === "file") throw fileSource(sourcePath);
  throw literal(`${sourcePath}.type`, ["base64", "url", "file"]);
}

/**
 * A PDF document as a canonical file part: its bytes as a data: URL, its title as the file
 * name (which the Anthropic connector turns back into the title).
 */
function document(block: JsonObject, path: string): PartInit {
  const source = requiredObject(block, "source", path);
  const sourcePath = `${path}.source`;
  const kind = source.type;
  if (!present(kind)) throw required(`${sourcePath}.type`);
  if (kind === "file") throw fileSource(sourcePath);
  if (kind === "text" || kind === "content" || kind === "url") {
    throw unsupported(
      `${sourcePath}.type`,
      `${sourcePath}.type: '${kind}' document sources are not supported by this gateway; send the PDF as base64`,
    );
  }
  if (kind !== "base64") {
    throw literal(`${sourcePath}.type`, ["base64", "text", "content", "url", "file"]);
  }
  const mediaType = source.media_type;
  if (!present(mediaType)) throw required(`${sourcePath}.media_type`);
  if (mediaType !== "application/pdf")
    throw literal(`${sourcePath}.media_type`, ["application/pdf"]);
  const data = requiredString(source, "data", sourcePath);

  // Anthropic's own fields of a document, for Anthropic targets (see anthropicFieldsJson).
  const fields: JsonObject = {};
  const citations = block.citations;
  if (present(citations)) {
    if (!isObject(citations)) throw typeError(`${path}.citations`, "a valid dictionary");
    optionalBoolean(citations.enabled, `${path}.citations.enabled`);
    fields.citations = citations;
  }
  const context = optionalString(block.context, `${path}.context`);
  if (context !== undefined) fields.context = context;
  const title = optionalString(block.title, `${path}.title`);
  return {
    part: {
      case: "file",
      value: { fileData: `data:application/pdf;base64,${data}`, filename: title },
    },
    anthropicFieldsJson: Object.keys(fields).length === 0 ? "" : JSON.stringify(fields),
  };
}

function toolCall(block: JsonObject, path: string): ToolCallInit {
  const id = requiredString(block, "id", path);
  const name = requiredString(block, "name", path);
  const input = requiredObject(block, "input", path);
  return {
    id,
    name,
    arguments: JSON.stringify(input),
    cacheControlJson: cacheControlJson(block, path),
  };
}

function toolResult(block: JsonObject, path: string): MessageInit {
  const toolCallId = requiredString(block, "tool_use_id", path);
  const isError = optionalBoolean(block.is_error, `${path}.is_error`) ?? false;
  const message: MessageInit = {
    role: Role.TOOL,
    toolCallId,
    isError,
    cacheControlJson: cacheControlJson(block, path),
  };
  const content = block.content;
  if (!present(content)) {
    message.contentIsText = true;
  } else if (typeof content === "string") {
    message.content = [textPart(content)];
    message.contentIsText = true;
  } else if (Array.isArray(content)) {
    message.content = content.map((part: unknown, k) => {
      const partPath = `${path}.content.${k}`;
      const { type, value } = blockOf(part, partPath, TOOL_RESULT_BLOCKS, undefined);
      return contentPart(type, value, partPath);
    });
  } else {
    throw typeError(`${path}.content`, "a valid string or a valid list");
  }
  return message;
}

function parseSystem(raw: unknown): MessageInit | undefined {
  if (!present(raw)) return undefined;
  if (typeof raw === "string") {
    return raw === ""
      ? undefined
      : { role: Role.SYSTEM, content: [textPart(raw)], contentIsText: true };
  }
  if (!Array.isArray(raw)) throw typeError("system", "a valid string or a valid list");
  if (raw.length === 0) return undefined;
  const parts = raw.map((block: unknown, i) => {
    const path = `system.${i}`;
    const { value } = blockOf(block, path, ["text"], Role.SYSTEM);
    return contentPart("text", value, path);
  });
  return { role: Role.SYSTEM, content: parts };
}

function parseTools(raw: unknown): ToolInit[] {
  if (!present(raw)) return [];
  if (!Array.isArray(raw)) throw typeError("tools", "a valid list");
  const names = new Set<string>();
  return raw.map((tool: unknown, i): ToolInit => {
    const path = `tools.${i}`;
    if (!isObject(tool)) throw typeError(path, "a valid dictionary");
    const type = tool.type;
    if (present(type) && type !== "custom") {
      if (typeof type !== "string") throw typeError(`${path}.type`, "a valid string");
      if (!present(tool.input_schema)) return anthropicTool(tool, type, path, names);
      // A tool with a schema is the client's own, whatever else it says.
      throw literal(`${path}.type`, ["custom"]);
    }
    for (const key of Object.keys(tool)) {
      if (UNSUPPORTED_TOOL_FIELDS.has(key)) {
        throw unsupported(
          `${path}.${key}`,
          `${path}.${key}: tool ${key} is not supported by this gateway`,
        );
      }
      if (!TOOL_FIELDS.has(key)) {
        throw invalid(`${path}.${key}: Extra inputs are not permitted`, `${path}.${key}`);
      }
    }
    const name = requiredString(tool, "name", path);
    if (!TOOL_NAME.test(name)) {
      throw invalid(
        `${path}.name: String should match pattern '${TOOL_NAME.source}'`,
        `${path}.name`,
      );
    }
    if (names.has(name)) throw invalid("tools: Tool names must be unique.", "tools");
    names.add(name);
    const schema = requiredObject(tool, "input_schema", path);
    if (!present(schema.type)) throw required(`${path}.input_schema.type`);
    if (schema.type !== "object") throw literal(`${path}.input_schema.type`, ["object"]);
    return {
      name,
      description: optionalString(tool.description, `${path}.description`),
      parametersJson: JSON.stringify(schema),
      strict: optionalBoolean(tool.strict, `${path}.strict`),
      cacheControlJson: cacheControlJson(tool, path),
    };
  });
}

/**
 * A tool Anthropic defines (its server tools, its client tools such as `bash_20250124`, its
 * toolsets), whole: its fields are Anthropic's to judge. It needs a name (but for a toolset,
 * which has none), unique among the request's tools as a custom tool's is.
 */
function anthropicTool(tool: JsonObject, type: string, path: string, names: Set<string>): ToolInit {
  const name =
    present(tool.name) || !TOOLSET_TYPE.test(type) ? requiredString(tool, "name", path) : "";
  if (name !== "") {
    if (names.has(name)) throw invalid("tools: Tool names must be unique.", "tools");
    names.add(name);
  }
  return { name, anthropicJson: JSON.stringify(tool) };
}

function parseToolChoice(
  raw: unknown,
  tools: readonly ToolInit[],
): { toolChoice: ToolChoiceInit | undefined; parallelToolCalls: boolean | undefined } {
  if (!present(raw)) return { toolChoice: undefined, parallelToolCalls: undefined };
  if (!isObject(raw)) throw typeError("tool_choice", "a valid dictionary");
  const typeName = raw.type;
  if (!present(typeName)) throw required("tool_choice.type");
  const mode = typeof typeName === "string" ? TOOL_CHOICE_MODES.get(typeName) : undefined;
  if (mode === undefined) throw literal("tool_choice.type", [...TOOL_CHOICE_MODES.keys()]);
  const fields = mode === ToolChoice_Mode.NONE ? ["type"] : ["type", "disable_parallel_tool_use"];
  if (mode === ToolChoice_Mode.FUNCTION) fields.push("name");
  for (const key of Object.keys(raw)) {
    if (!fields.includes(key)) {
      throw invalid(
        `tool_choice.${typeName}.${key}: Extra inputs are not permitted`,
        `tool_choice.${key}`,
      );
    }
  }
  // "auto" and "none" are harmless without tools, and many clients send them unconditionally.
  if ((mode === ToolChoice_Mode.REQUIRED || mode === ToolChoice_Mode.FUNCTION) && !tools.length) {
    throw invalid(
      `tool_choice: '${typeName}' may only be specified while providing tools`,
      "tool_choice",
    );
  }
  const choice: ToolChoiceInit = { mode };
  if (mode === ToolChoice_Mode.FUNCTION) {
    const name = requiredString(raw, "name", "tool_choice");
    // A toolset's tools have names the request does not spell out: Anthropic judges those.
    const toolset = tools.some((t) => t.anthropicJson !== undefined && t.name === "");
    if (!toolset && !tools.some((t) => t.name === name)) {
      throw invalid(
        `tool_choice.name: '${clip(name)}' is not the name of any tool in 'tools'`,
        "tool_choice.name",
      );
    }
    choice.functionName = name;
  }
  const disable = optionalBoolean(
    raw.disable_parallel_tool_use,
    "tool_choice.disable_parallel_tool_use",
  );
  return { toolChoice: choice, parallelToolCalls: disable === true ? false : undefined };
}

/**
 * Splits `output_config`: its `format` (Anthropic structured outputs) is the canonical
 * JSON_SCHEMA response format, which every upstream type can honour; what remains (`effort`)
 * is Anthropic's alone and travels in `extraJson`.
 */
function parseOutputConfig(raw: unknown): {
  format: ResponseFormatInit | undefined;
  rest: JsonObject | undefined;
} {
  if (!present(raw)) return { format: undefined, rest: undefined };
  if (!isObject(raw)) throw typeError("output_config", "a valid dictionary");
  const { format, ...rest } = raw;
  const remaining = Object.keys(rest).length > 0 ? rest : undefined;
  if (!present(format)) return { format: undefined, rest: remaining };
  if (!isObject(format)) throw typeError("output_config.format", "a valid dictionary");
  if (!present(format.type)) throw required("output_config.format.type");
  if (format.type !== "json_schema") throw literal("output_config.format.type", ["json_schema"]);
  const schema = requiredObject(format, "schema", "output_config.format");
  return {
    format: {
      type: ResponseFormat_Type.JSON_SCHEMA,
      // Anthropic's structured outputs always hold to the schema, which is OpenAI's `strict`.
      jsonSchemaJson: JSON.stringify({ name: OUTPUT_SCHEMA_NAME, schema, strict: true }),
    },
    rest: remaining,
  };
}

/** Checks `metadata` (which only holds `user_id`) and returns that id as the canonical user. */
function parseMetadata(raw: unknown): string | undefined {
  if (!present(raw)) return undefined;
  if (!isObject(raw)) throw typeError("metadata", "a valid dictionary");
  for (const key of Object.keys(raw)) {
    if (key !== "user_id") {
      throw invalid(`metadata.${key}: Extra inputs are not permitted`, `metadata.${key}`);
    }
  }
  return optionalString(raw.user_id, "metadata.user_id");
}

/** Shape checks for the fields that travel in `extraJson`, so a bad one fails here, not later. */
function checkExtras(body: JsonObject): void {
  integerBetween(body.top_k, "top_k", 0, UINT32_MAX);
  const thinking = body.thinking;
  if (present(thinking)) {
    if (!isObject(thinking)) throw typeError("thinking", "a valid dictionary");
    if (!present(thinking.type)) throw required("thinking.type");
    if (typeof thinking.type !== "string") throw typeError("thinking.type", "a valid string");
    if (thinking.type === "enabled") {
      const budget = integerBetween(
        thinking.budget_tokens,
        "thinking.budget_tokens",
        1024,
        UINT32_MAX,
      );
      if (budget === undefined) throw required("thinking.budget_tokens");
    }
  }
  const tier = body.service_tier;
  if (present(tier) && tier !== "auto" && tier !== "standard_only") {
    throw literal("service_tier", ["auto", "standard_only"]);
  }
  if (present(body.cache_control) && !isObject(body.cache_control)) {
    throw typeError("cache_control", "a valid dictionary");
  }
  if (present(body.context_management) && !isObject(body.context_management)) {
    throw typeError("context_management", "a valid dictionary");
  }
  const mcpServers = body.mcp_servers;
  if (present(mcpServers)) {
    if (!Array.isArray(mcpServers)) throw typeError("mcp_servers", "a valid list");
    mcpServers.forEach((server: unknown, i) => {
      if (!isObject(server)) throw typeError(`mcp_servers.${i}`, "a valid dictionary");
    });
  }
  const container = body.container;
  if (present(container) && typeof container !== "string" && !isObject(container)) {
    throw typeError("container", "a valid string or a valid dictionary");
  }
  optionalString(body.inference_geo, "inference_geo");
  const speed = body.speed;
  if (present(speed) && speed !== "standard" && speed !== "fast") {
    throw literal("speed", ["standard", "fast"]);
  }
}

function parseStopSequences(raw: unknown): string[] {
  if (!present(raw)) return [];
  if (!Array.isArray(raw)) throw typeError("stop_sequences", "a valid list");
  return raw.map((s: unknown, i) => {
    if (typeof s !== "string") throw typeError(`stop_sequences.${i}`, "a valid string");
    return s;
  });
}

function textPart(value: string): PartInit {
  return { part: { case: "text", value } };
}

function numberBetween(raw: unknown, name: string, min: number, max: number): number | undefined {
  if (!present(raw)) return undefined;
  if (typeof raw !== "number" || !Number.isFinite(raw)) throw typeError(name, "a valid number");
  if (raw < min) throw invalid(`${name}: Input should be greater than or equal to ${min}`, name);
  if (raw > max) throw invalid(`${name}: Input should be less than or equal to ${max}`, name);
  return raw;
}

function integerBetween(raw: unknown, name: string, min: number, max: number): number | undefined {
  if (!present(raw)) return undefined;
  if (typeof raw !== "number" || !Number.isFinite(raw)) throw typeError(name, "a valid integer");
  if (!Number.isInteger(raw)) {
    throw invalid(
      `${name}: Input should be a valid integer, got a number with a fractional part`,
      name,
    );
  }
  return numberBetween(raw, name, min, max);
}

function requiredString(obj: JsonObject, key: string, parent: string): string {
  const v = obj[key];
  if (!present(v)) throw required(`${parent}.${key}`);
  if (typeof v !== "string") throw typeError(`${parent}.${key}`, "a valid string");
  return v;
}

function requiredObject(obj: JsonObject, key: string, parent: string): JsonObject {
  const v = obj[key];
  if (!present(v)) throw required(`${parent}.${key}`);
  if (!isObject(v)) throw typeError(`${parent}.${key}`, "a valid dictionary");
  return v;
}

function optionalString(v: unknown, param: string): string | undefined {
  if (!present(v)) return undefined;
  if (typeof v !== "string") throw typeError(param, "a valid string");
  return v;
}

function optionalBoolean(v: unknown, param: string): boolean | undefined {
  if (!present(v)) return undefined;
  if (typeof v !== "boolean") throw typeError(param, "a valid boolean");
  return v;
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

function roleWord(role: Role): string {
  return role === Role.ASSISTANT ? "assistant" : role === Role.SYSTEM ? "system" : "user";
}

function required(param: string): Failure {
  return invalid(`${param}: Field required`, param);
}

function typeError(param: string, expected: string): Failure {
  return invalid(`${param}: Input should be ${expected}`, param);
}

/** Pydantic's wording, which Anthropic's validation errors use: 'a', 'b' or 'c'. */
function literal(param: string, values: readonly string[]): Failure {
  const quoted = values.map((v) => `'${v}'`);
  const list =
    quoted.length <= 1
      ? (quoted[0] ?? "")
      : `${quoted.slice(0, -1).join(", ")} or ${quoted.at(-1)}`;
  return invalid(`${param}: Input should be ${list}`, param);
}

function fileSource(param: string): Failure {
  return unsupported(
    `${param}.type`,
    `${param}.type: 'file' sources (Anthropic Files API ids) are not supported by this gateway; send the bytes as base64`,
  );
}

function invalid(message: string, param?: string): Failure {
  return new Failure({
    status: 400,
    kind: "invalid_request",
    message,
    ...(param !== undefined ? { param } : {}),
  });
}

function unsupported(param: string, message: string): Failure {
  return new Failure({ status: 400, kind: "unsupported", param, message });
}

/** Keeps echoed client values short: an error message is not a place for a whole prompt. */
function clip(s: string): string {
  return s.length > 64 ? `${s.slice(0, 64)}…` : s;
}
