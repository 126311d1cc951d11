import {
  type ChatParams,
  type ContentPart,
  type Message,
  type ReasoningBlock,
  type ResponseFormat,
  ResponseFormat_Type,
  Role,
  type Tool,
  type ToolChoice,
  ToolChoice_Mode,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { orderedBlocks } from "../../../lib/chat/blocks.js";
import { plainToolCallId } from "../../../lib/chat/tool-call-ids.js";
import { Failure } from "../../../lib/errors.js";
import { isRecord, parseObject } from "../json-object.js";
import { type Refuse, refuseOpenAIOnly } from "../openai-only.js";
import type {
  AnthropicBase64Source,
  AnthropicContentBlockParam,
  AnthropicCountTokensRequest,
  AnthropicCustomTool,
  AnthropicDefinedTool,
  AnthropicMessageParam,
  AnthropicMessagesRequest,
  AnthropicOwnBlockParam,
  AnthropicTextBlockParam,
  AnthropicTool,
  AnthropicToolChoice,
  AnthropicToolResultBlockParam,
  AnthropicToolResultContent,
  AnthropicToolUseBlockParam,
} from "./wire.js";

/**
 * Anthropic requires `max_tokens`; OpenAI-style clients usually leave it out. 4096 is what every
 * current Claude model can produce and large enough for an ordinary answer. When the client
 * enables extended thinking, the thinking budget is added on top (the API wants
 * `max_tokens` > `budget_tokens`).
 */
export const DEFAULT_MAX_TOKENS = 4096;

/** The tool that carries the answer when a client asks for JSON output (see `jsonModeTool`). */
export const JSON_TOOL_NAME = "json_response";

/**
 * `extra_json` keys passed to Anthropic: request fields its Messages API reference lists that
 * the canonical model does not name. Anything else (OpenAI-only fields such as `logit_bias`)
 * means nothing to Anthropic and is left out, as the gateway's other adapters do with foreign
 * keys. Fields the gateway builds itself (model, messages, system, tools, stream, …) are never
 * taken from extras.
 */
const PASSED_EXTRAS = [
  "top_k",
  "thinking",
  "metadata",
  "service_tier",
  "output_config",
  "cache_control",
  "inference_geo",
  "speed",
  "context_management",
  "mcp_servers",
  "container",
] as const;

/** Extras that an OpenAI client also sends, under the same name, with another meaning. */
const OPENAI_HOMONYMS: ReadonlySet<string> = new Set(["metadata", "service_tier"]);

export interface AnthropicRequestPlan {
  body: AnthropicMessagesRequest;
  /**
   * The name of the tool that stands in for JSON mode, when the client asked for JSON output:
   * its input is the answer and must reach the client as content, not as a tool call.
   */
  jsonTool: string | undefined;
}

/**
 * Builds the Messages request for one attempt. Throws a `Failure` (400) for what Anthropic
 * cannot do (`unsupported`) and for malformed JSON text in `params` (`invalid_request`).
 * `provider` is the configured provider name, used in those messages.
 */
export function toAnthropicRequest(
  params: ChatParams,
  model: string,
  provider: string,
): AnthropicRequestPlan {
  const refuse: Refuse = (feature, param) =>
    new Failure({
      status: 400,
      kind: "unsupported",
      param,
      provider,
      message: `model '${model}' on provider '${provider}' (anthropic) does not support ${feature}`,
    });
  checkSampling(params, refuse);

  const extras = parseObject(params.extraJson, "extra_json");
  if (params.clientApi !== "anthropic") refuseOpenAIOnly(extras, refuse);
  const { system, messages } = toConversation(params.messages, refuse);
  const thinking = requestThinking(params, extras, messages);
  const body: AnthropicMessagesRequest = {
    model,
    max_tokens: params.maxTokens ?? defaultMaxTokens(thinking),
    messages,
  };
  if (system !== undefined) body.system = system;
  const passed: Record<string, unknown> = body;
  // OpenAI has fields of these names too, meaning something else (a map of tags, its own tiers):
  // only an Anthropic client's are Anthropic's.
  const ownDialect = params.clientApi === "anthropic";
  for (const key of PASSED_EXTRAS) {
    if (!ownDialect && OPENAI_HOMONYMS.has(key)) continue;
    if (extras[key] !== undefined) passed[key] = extras[key];
  }
  if (thinking !== undefined) body.thinking = thinking;
  if (params.user !== undefined) {
    const metadata = ownDialect && isRecord(extras.metadata) ? extras.metadata : {};
    body.metadata = { ...metadata, user_id: params.user };
  }
  if (params.stop.length > 0) body.stop_sequences = [...params.stop];
  if (params.temperature !== undefined) body.temperature = params.temperature;
  if (params.topP !== undefined) body.top_p = params.topP;

  const tools = params.tools.map(toTool);
  let toolChoice = toToolChoice(params.toolChoice, tools.length > 0);
  let jsonTool: string | undefined;
  const format = params.responseFormat;
  const thinks = thinkingOn(thinking);
  if (format?.type === ResponseFormat_Type.JSON_SCHEMA && (ownDialect || thinks)) {
    // Anthropic's own structured outputs: what an Anthropic client asked for, as it asked; and
    // the only way with thinking on, which refuses the forced tool below.
    const schema = parseObject(format.jsonSchemaJson, "response_format.json_schema").schema;
    if (!isRecord(schema)) {
      throw invalid("response_format.json_schema.schema must be a JSON object", "response_format");
    }
    const rest = isRecord(extras.output_config) ? extras.output_config : {};
    passed.output_config = { ...rest, format: { type: "json_schema", schema } };
  } else if (
    format?.type === ResponseFormat_Type.JSON_OBJECT ||
    format?.type === ResponseFormat_Type.JSON_SCHEMA
  ) {
    if (thinks) {
      // JSON without a schema has no native form, and thinking refuses a forced tool.
      throw refuse("response_format json_object together with thinking", "response_format");
    }
    const mode = params.toolChoice?.mode;
    if (mode === ToolChoice_Mode.REQUIRED || mode === ToolChoice_Mode.FUNCTION) {
      throw refuse("response_format json together with a forced tool_choice", "tool_choice");
    }
    if (tools.some((tool) => tool.name === JSON_TOOL_NAME)) {
      throw refuse(`response_format json together with a tool named '${JSON_TOOL_NAME}'`, "tools");
    }
    // With tools of its own the model may call one of them or answer (through the JSON tool);
    // without, or with tool_choice none, the JSON tool is the only way to answer.
    toolChoice =
      tools.length > 0 && mode !== ToolChoice_Mode.NONE
        ? { type: "any" }
        : { type: "tool", name: JSON_TOOL_NAME };
    tools.push(jsonModeTool(format, refuse));
    jsonTool = JSON_TOOL_NAME;
  }
  if (tools.length > 0) body.tools = tools;
  if (toolChoice !== undefined) {
    if (params.parallelToolCalls === false && toolChoice.type !== "none") {
      toolChoice.disable_parallel_tool_use = true;
    }
    body.tool_choice = toolChoice;
  } else if (params.parallelToolCalls === false && tools.length > 0) {
    body.tool_choice = { type: "auto", disable_parallel_tool_use: true };
  }

  if (params.stream) body.stream = true;
  return { body, jsonTool };
}

/**
 * Builds the `count_tokens` request for a chat request: the Messages request it would send,
 * translated the same way (so the count is of what the model would be sent, a JSON-mode tool
 * included), cut to the fields Anthropic's count_tokens reference lists. It refuses the rest
 * (`max_tokens`, `stream`, sampling, `metadata`, …) as extra inputs.
 */
export function toAnthropicCountTokensRequest(
  params: ChatParams,
  model: string,
  provider: string,
): AnthropicCountTokensRequest {
  const { body } = toAnthropicRequest(params, model, provider);
  const count: AnthropicCountTokensRequest = { model: body.model, messages: body.messages };
  if (body.system !== undefined) count.system = body.system;
  if (body.tools !== undefined) count.tools = body.tools;
  if (body.tool_choice !== undefined) count.tool_choice = body.tool_choice;
  if (body.thinking !== undefined) count.thinking = body.thinking;
  // The MCP servers' tools are part of the prompt, and count_tokens takes them.
  if (body.mcp_servers !== undefined) count.mcp_servers = body.mcp_servers;
  return count;
}

/**
 * Refuses sampling requests Anthropic cannot honour. Penalties of 0 are the OpenAI defaults and
 * change nothing, so they pass. `seed` is left out: OpenAI itself only promises best-effort
 * determinism for it, so an upstream without seeding still keeps that promise.
 */
function checkSampling(params: ChatParams, refuse: Refuse): void {
  if (params.temperature !== undefined && params.temperature > 1) {
    throw refuse("temperature above 1", "temperature");
  }
  if (params.n !== undefined && params.n > 1) throw refuse("n above 1", "n");
  if (params.presencePenalty !== undefined && params.presencePenalty !== 0) {
    throw refuse("presence_penalty", "presence_penalty");
  }
  if (params.frequencyPenalty !== undefined && params.frequencyPenalty !== 0) {
    throw refuse("frequency_penalty", "frequency_penalty");
  }
}

/**
 * OpenAI `reasoning_effort` → Anthropic thinking budget: LiteLLM's budgets for low, medium and
 * high, Anthropic's minimum for minimal, and doubling on for OpenAI's efforts above high. "none"
 * (and no effort) turns nothing on.
 */
const EFFORT_BUDGETS: ReadonlyMap<string, number> = new Map([
  ["minimal", 1024],
  ["low", 1024],
  ["medium", 2048],
  ["high", 4096],
  ["xhigh", 8192],
  ["max", 16384],
]);

/** Anthropic refuses a smaller `budget_tokens`. */
const MIN_THINKING_BUDGET = 1024;

/**
 * The `thinking` to send: the client's own as it sent it, else what its `reasoning_effort` asks
 * for (Chat Completions' field; the Responses API's `reasoning.effort` and GatewayService's
 * `extra_json` carry it under the same name), else none. An effort OpenAI does not know is
 * refused as OpenAI refuses it, also beside a `thinking` of the client's. The effort is a
 * hint, so where Anthropic would refuse thinking the request goes without it rather than fail:
 * with a sampling setting thinking cannot take (`temperature` other than 1, `top_p` under 0.95,
 * `top_k`), a forced tool choice, JSON mode without a schema (served by a forced tool), a
 * `max_tokens` of 1,024 or less, and in a tool loop whose last assistant turn does not start with
 * its signed thinking (a client that keeps no thinking blocks). Thinking takes at most half of
 * the client's `max_tokens`, so that the answer keeps room.
 */
function requestThinking(
  params: ChatParams,
  extras: Record<string, unknown>,
  messages: readonly AnthropicMessageParam[],
): unknown {
  const effort = extras.reasoning_effort ?? null;
  const wanted = typeof effort === "string" ? EFFORT_BUDGETS.get(effort) : undefined;
  if (wanted === undefined && effort !== null && effort !== "none") {
    const param = params.clientApi === "responses" ? "reasoning.effort" : "reasoning_effort";
    const shown = typeof effort === "string" ? effort : JSON.stringify(effort);
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      code: "invalid_value",
      param,
      message: `Invalid value for '${param}': '${shown.slice(0, 64)}'. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', 'xhigh' and 'max'.`,
    });
  }
  if (extras.thinking !== undefined && extras.thinking !== null) return extras.thinking;
  if (wanted === undefined) return undefined;
  if (params.temperature !== undefined && params.temperature !== 1) return undefined;
  if (params.topP !== undefined && params.topP < 0.95) return undefined;
  if (extras.top_k !== undefined) return undefined;
  const mode = params.toolChoice?.mode;
  if (mode === ToolChoice_Mode.REQUIRED || mode === ToolChoice_Mode.FUNCTION) return undefined;
  if (params.responseFormat?.type === ResponseFormat_Type.JSON_OBJECT) return undefined;
  if (toolLoopWithoutThinking(messages)) return undefined;
  let budget = wanted;
  if (params.maxTokens !== undefined) {
    if (params.maxTokens <= MIN_THINKING_BUDGET) return undefined;
    budget = Math.min(budget, Math.max(MIN_THINKING_BUDGET, Math.floor(params.maxTokens / 2)));
  }
  return { type: "enabled", budget_tokens: budget };
}

/**
 * Whether the conversation's last assistant turn called tools without starting with its
 * thinking: Anthropic refuses the next turn of such a loop when thinking is on.
 */
function toolLoopWithoutThinking(messages: readonly AnthropicMessageParam[]): boolean {
  for (let i = messages.length - 1; i >= 0; i--) {
    const { role, content } = messages[i] as AnthropicMessageParam;
    if (role !== "assistant") continue;
    if (typeof content === "string") return false;
    const first = content[0]?.type;
    if (first === "thinking" || first === "redacted_thinking") return false;
    return content.some((block) => block.type === "tool_use");
  }
  return false;
}

function defaultMaxTokens(thinking: unknown): number {
  if (isRecord(thinking) && typeof thinking.budget_tokens === "number") {
    return thinking.budget_tokens + DEFAULT_MAX_TOKENS;
  }
  return DEFAULT_MAX_TOKENS;
}

interface Turn {
  role: "user" | "assistant";
  blocks: AnthropicContentBlockParam[];
  /** The message as one plain string, while the turn is a single plain-text message. */
  plain: string | undefined;
}

/**
 * Splits the canonical messages into Anthropic's top-level `system` and a conversation of
 * alternating turns: consecutive messages of one role (tool results count as user) become one
 * turn with several blocks. `name` has no Anthropic counterpart and is left out.
 */
function toConversation(
  input: readonly Message[],
  refuse: Refuse,
): { system: string | AnthropicTextBlockParam[] | undefined; messages: AnthropicMessageParam[] } {
  const system: AnthropicTextBlockParam[] = [];
  let systemMessages = 0;
  let systemIsPlain = true;
  const turns: Turn[] = [];
  const add = (role: Turn["role"], blocks: AnthropicContentBlockParam[], plain?: string) => {
    const last = turns.at(-1);
    if (last?.role === role) {
      last.blocks.push(...blocks);
      last.plain = undefined;
    } else {
      turns.push({ role, blocks, plain });
    }
  };

  input.forEach((message, i) => {
    const param = `messages[${i}]`;
    switch (message.role) {
      case Role.SYSTEM:
      case Role.DEVELOPER: {
        system.push(...textOnly(message, param, "system", refuse));
        systemMessages += 1;
        systemIsPlain &&= plainText(message);
        return;
      }
      case Role.USER: {
        const blocks = message.content.flatMap((part, j) =>
          toUserBlock(part, `${param}.content[${j}]`, refuse),
        );
        add("user", blocks, plainText(message) ? textOf(message) : undefined);
        return;
      }
      case Role.ASSISTANT: {
        const blocks = assistantBlocks(message, param, refuse);
        const plain =
          plainText(message) &&
          message.toolCalls.length === 0 &&
          message.refusal === undefined &&
          blocks.every((b) => b.type === "text")
            ? textOf(message)
            : undefined;
        add("assistant", blocks, plain);
        return;
      }
      case Role.TOOL: {
        if (message.toolCallId === undefined) {
          throw invalid(`${param} answers no tool call: tool_call_id is missing`, param);
        }
        const content: string | AnthropicToolResultContent[] = message.contentIsText
          ? textOf(message)
          : message.content.flatMap((part, j) =>
              toUserBlock(part, `${param}.content[${j}]`, refuse),
            );
        const result: AnthropicToolResultBlockParam = {
          type: "tool_result",
          tool_use_id: plainToolCallId(message.toolCallId),
          content,
          ...(message.isError && { is_error: true }),
        };
        add("user", [cached(result, message, param)]);
        return;
      }
      default:
        throw invalid(`${param} has no role`, `${param}.role`);
    }
  });

  const messages = turns.map(
    ({ role, blocks, plain }): AnthropicMessageParam => ({
      role,
      content: plain ?? resultsFirst(blocks),
    }),
  );
  if (system.length === 0) return { system: undefined, messages };
  const plain = systemMessages === 1 && systemIsPlain;
  return { system: plain ? joinText(system) : system, messages };
}

/**
 * An assistant turn's blocks in their order: as the client or Anthropic numbered them (thinking,
 * tool_use, text, … interleaved, Anthropic's own server tool and MCP blocks whole in place),
 * else thinking first (with tools in use Anthropic wants the last turn's thinking back at the
 * start), then text, then tool calls. An earlier refusal is what the assistant said; Anthropic
 * has only text for it.
 */
function assistantBlocks(
  message: Message,
  param: string,
  refuse: Refuse,
): AnthropicContentBlockParam[] {
  const blocks: AnthropicContentBlockParam[] = [];
  for (const block of orderedBlocks(message)) {
    switch (block.kind) {
      case "reasoning": {
        const thinking = thinkingBlock(block.block);
        if (thinking !== undefined) blocks.push(thinking);
        break;
      }
      case "content": {
        const text = textBlock(
          block.part,
          `${param}.content[${block.position}]`,
          "assistant",
          refuse,
        );
        if (text !== undefined) blocks.push(text);
        break;
      }
      case "tool_call": {
        const { call } = block;
        const callParam = `${param}.tool_calls[${block.position}]`;
        const toolUse: AnthropicToolUseBlockParam = {
          type: "tool_use",
          id: plainToolCallId(call.id),
          name: call.name,
          input: parseArguments(call.arguments, `${callParam}.function.arguments`),
        };
        blocks.push(cached(toolUse, call, callParam));
        break;
      }
      case "anthropic":
        blocks.push(parseObject(block.block.json, `${param}.content`) as AnthropicOwnBlockParam);
        break;
    }
  }
  if (message.refusal !== undefined && message.refusal !== "") {
    blocks.push({ type: "text", text: message.refusal });
  }
  return blocks;
}

/**
 * A reasoning block as Anthropic's `thinking` or `redacted_thinking`. Only signed or encrypted
 * blocks: Anthropic refuses thinking whose signature it did not issue, and reasoning another
 * upstream showed (unsigned) was never Anthropic's to check.
 */
function thinkingBlock(block: ReasoningBlock): AnthropicContentBlockParam | undefined {
  if (block.redactedData !== "") return { type: "redacted_thinking", data: block.redactedData };
  if (block.signature !== "") {
    return { type: "thinking", thinking: block.text, signature: block.signature };
  }
  return undefined;
}

/** Whether a message may go as a plain string: sent as one, with no block marked for caching. */
function plainText(message: Message): boolean {
  return message.contentIsText && message.content.every((p) => p.cacheControlJson === "");
}

/** Anthropic wants a user turn's tool results before anything else in it. */
function resultsFirst(blocks: AnthropicContentBlockParam[]): AnthropicContentBlockParam[] {
  const results = blocks.filter((b) => b.type === "tool_result");
  if (results.length === 0) return blocks;
  return [...results, ...blocks.filter((b) => b.type !== "tool_result")];
}

/** The text blocks of a message whose role only takes text (system prompts). */
function textOnly(
  message: Message,
  param: string,
  where: string,
  refuse: Refuse,
): AnthropicTextBlockParam[] {
  const blocks: AnthropicTextBlockParam[] = [];
  message.content.forEach((content, j) => {
    const block = textBlock(content, `${param}.content[${j}]`, where, refuse);
    if (block !== undefined) blocks.push(block);
  });
  return blocks;
}

/** A content part of a message whose role only takes text, as a text block (none if empty). */
function textBlock(
  content: ContentPart,
  param: string,
  where: string,
  refuse: Refuse,
): AnthropicTextBlockParam | undefined {
  const { part } = content;
  if (part.case === "text") {
    // Anthropic rejects empty text blocks; an empty text says nothing anyway.
    if (part.value === "") return undefined;
    return cached(textWithCitations(part.value, content, param), content, param);
  }
  if (part.case !== undefined) throw refuse(`${part.case} content in ${where} messages`, param);
  return undefined;
}

/** A text block with the citations its part carries (an earlier answer's, sent back). */
function textWithCitations(
  text: string,
  content: ContentPart,
  param: string,
): AnthropicTextBlockParam {
  const block: AnthropicTextBlockParam = { type: "text", text };
  if (content.citationsJson !== "") {
    block.citations = parseArray(content.citationsJson, `${param}.citations`);
  }
  return block;
}

function toUserBlock(
  content: ContentPart,
  param: string,
  refuse: Refuse,
): AnthropicToolResultContent[] {
  return userBlocks(content, param, refuse).map((block) => cached(block, content, param));
}

/**
 * `block` with the `cache_control` its source carried (a content part, tool, call or tool
 * result), which Anthropic reads as a prompt-caching breakpoint at that block.
 */
function cached<B extends object>(
  block: B,
  source: { cacheControlJson: string } | undefined,
  param: string,
): B {
  const json = source?.cacheControlJson ?? "";
  if (json === "") return block;
  return { ...block, cache_control: parseObject(json, `${param}.cache_control`) };
}

function userBlocks(
  content: ContentPart,
  param: string,
  refuse: Refuse,
): AnthropicToolResultContent[] {
  const { part } = content;
  switch (part.case) {
    case "text":
      return part.value === "" ? [] : [textWithCitations(part.value, content, param)];
    case "image": {
      // `detail` is OpenAI's resolution hint; Anthropic picks the resolution itself.
      const url = part.value.url;
      if (url.startsWith("data:")) {
        return [{ type: "image", source: base64Source(url, `${param}.image_url`) }];
      }
      if (/^https?:\/\//i.test(url)) return [{ type: "image", source: { type: "url", url } }];
      throw invalid(`${param}: an image URL must be an https: or data: URL`, `${param}.image_url`);
    }
    case "audio":
      throw refuse("audio input", param);
    case "file": {
      const file = part.value;
      if (file.fileData === undefined) throw refuse("uploaded file ids", `${param}.file.file_id`);
      const source = fileSource(file.fileData, file.filename, `${param}.file.file_data`);
      if (source.media_type !== "application/pdf") {
        throw refuse(`files of type ${source.media_type} (only PDF)`, `${param}.file`);
      }
      return [
        {
          // An Anthropic client's `context` and `citations` of the document; they cannot
          // replace what the part itself says.
          ...parseObject(content.anthropicFieldsJson, `${param}.anthropic_fields_json`),
          type: "document",
          source,
          ...(file.filename !== undefined && { title: file.filename }),
        },
      ];
    }
    default:
      return [];
  }
}

const DATA_URL = /^data:([^,;]*)((?:;[^,;]*)*),(.*)$/s;

/** A `data:…;base64,…` URL as an Anthropic base64 source. */
function base64Source(url: string, param: string): AnthropicBase64Source {
  const match = DATA_URL.exec(url);
  const [, mediaType = "", attributes = "", data = ""] = match ?? [];
  if (match === null || mediaType === "" || !attributes.split(";").includes("base64")) {
    throw invalid(`${param} must be a base64 data: URL with a media type`, param);
  }
  return { type: "base64", media_type: mediaType.toLowerCase(), data };
}

/** File data is a data: URL, or bare base64 whose type the file name tells. */
function fileSource(
  fileData: string,
  filename: string | undefined,
  param: string,
): AnthropicBase64Source {
  if (fileData.startsWith("data:")) return base64Source(fileData, param);
  const mediaType = filename?.toLowerCase().endsWith(".pdf")
    ? "application/pdf"
    : "application/octet-stream";
  return { type: "base64", media_type: mediaType, data: fileData };
}

function toTool(tool: Tool, index: number): AnthropicTool {
  // One of Anthropic's own tools: as the client wrote it.
  if (tool.anthropicJson !== "") {
    const defined = parseObject(tool.anthropicJson, `tools[${index}]`) as AnthropicDefinedTool;
    return cached(defined, tool, `tools[${index}]`);
  }
  const out: AnthropicCustomTool = {
    name: tool.name,
    // Anthropic requires a schema; a function without parameters takes an empty object.
    input_schema:
      tool.parametersJson === ""
        ? { type: "object" }
        : parseObject(tool.parametersJson, `tools[${index}].function.parameters`),
  };
  if (tool.description !== undefined) out.description = tool.description;
  // `strict: false` is the default on both sides; only a request for validation is passed.
  if (tool.strict === true) out.strict = true;
  return cached(out, tool, `tools[${index}]`);
}

function toToolChoice(
  choice: ToolChoice | undefined,
  hasTools: boolean,
): AnthropicToolChoice | undefined {
  switch (choice?.mode) {
    case ToolChoice_Mode.NONE:
      return hasTools ? { type: "none" } : undefined;
    case ToolChoice_Mode.AUTO:
      return hasTools ? { type: "auto" } : undefined;
    case ToolChoice_Mode.REQUIRED:
      return { type: "any" };
    case ToolChoice_Mode.FUNCTION:
      return { type: "tool", name: choice.functionName };
    default:
      return undefined;
  }
}

/** Whether Anthropic `thinking` is on: then Anthropic refuses a forced tool_choice. */
function thinkingOn(thinking: unknown): boolean {
  return isRecord(thinking) && (thinking.type === "enabled" || thinking.type === "adaptive");
}

/**
 * Anthropic's structured outputs (`output_config.format`) serve JSON schemas on its newer models
 * only, so for an OpenAI client without thinking, JSON output is asked for the way
 * other gateways do it: a tool whose input schema is the wanted JSON, which the model is made to
 * call. Its input is then handed to the client as the answer's text (see from-response and
 * from-stream). `strict` of a JSON schema is not forwarded, so the emulation works on models
 * without strict tool use.
 */
function jsonModeTool(format: ResponseFormat, refuse: Refuse): AnthropicCustomTool {
  let schema: Record<string, unknown> = { type: "object" };
  let description = "Give your answer as this tool's input: a JSON object.";
  if (format.type === ResponseFormat_Type.JSON_SCHEMA) {
    const param = "response_format.json_schema";
    const spec = parseObject(format.jsonSchemaJson, param);
    if (isRecord(spec.schema)) {
      if (spec.schema.type !== undefined && spec.schema.type !== "object") {
        throw refuse("a JSON schema whose root is not an object", `${param}.schema`);
      }
      schema = spec.schema;
    }
    if (typeof spec.description === "string" && spec.description !== "") {
      description = `${description} ${spec.description}`;
    }
  }
  return { name: JSON_TOOL_NAME, description, input_schema: schema };
}

/** Tool-call arguments as the object Anthropic wants; "" (no arguments) is an empty object. */
function parseArguments(text: string, param: string): Record<string, unknown> {
  if (text.trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (!isRecord(value)) throw invalid(`${param} must be a JSON object`, param);
  return value;
}

function textOf(message: Message): string {
  let text = "";
  for (const { part } of message.content) if (part.case === "text") text += part.value;
  return text;
}

function joinText(blocks: readonly AnthropicTextBlockParam[]): string {
  return blocks.map((b) => b.text).join("");
}

/** A JSON array carried as text in the canonical model. */
function parseArray(text: string, param: string): unknown[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (!Array.isArray(value)) throw invalid(`${param} must be a JSON array`, param);
  return value;
}

function invalid(message: string, param: string): Failure {
  return new Failure({ status: 400, kind: "invalid_request", message, param });
}
