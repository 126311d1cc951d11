import {
  type ChatParams,
  type ContentPart,
  type Message,
  ResponseFormat_Type,
  Role,
  type Tool,
  type ToolChoice,
  ToolChoice_Mode,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { plainToolCallId } from "../../../lib/chat/tool-call-ids.js";
import { Failure } from "../../../lib/errors.js";
import type {
  OpenAIChatRequest,
  OpenAIContentPart,
  OpenAIMessage,
  OpenAIResponseFormat,
  OpenAIRole,
  OpenAITool,
  OpenAIToolChoice,
} from "../../../lib/wire/openai.js";
import { isRecord, parseObject } from "../json-object.js";
import { audioOutputParam } from "../openai-only.js";

export interface ToRequestOptions {
  /**
   * Which field carries `max_tokens`, where the upstream's API decides it: OpenAI itself wants
   * `max_completion_tokens` (its reasoning models reject `max_tokens`), and each Azure API
   * version knows one or both. Unset, the limit goes under the name the client used
   * (`max_tokens` when the client was not an OpenAI client): an OpenAI-compatible server behind
   * a `base_url` may be OpenAI behind a proxy, or a server that knows only `max_tokens`.
   */
  maxTokensField?: "max_tokens" | "max_completion_tokens";
  /**
   * Whether to send `stream_options.include_usage` on streamed requests (default true). Servers
   * that predate it reject the field, and then a streamed answer carries no usage.
   */
  streamUsage?: boolean;
}

/** Fields the gateway owns; `extra_json` must not replace them. */
const RESERVED = new Set(["model", "messages", "stream", "stream_options"]);

/**
 * Builds the Chat Completions request body for one attempt. Optional fields appear only when the
 * client set them, so upstream defaults stay in force. Throws a `Failure` (400) if a JSON text
 * field of `params` does not parse.
 */
export function toOpenAIRequest(
  params: ChatParams,
  model: string,
  options: ToRequestOptions = {},
): OpenAIChatRequest {
  // Fields the canonical model does not name pass through in the client's own dialect. An
  // Anthropic client's (top_k, thinking, metadata, service_tier, cache_control, …) are not this
  // API's: OpenAI refuses arguments it does not know, or reads the same name differently.
  const extras =
    params.clientApi === "anthropic" ? {} : parseObject(params.extraJson, "extra_json");
  const audio = audioOutputParam(extras);
  if (audio !== undefined) {
    throw new Failure({
      status: 400,
      kind: "unsupported",
      param: audio,
      message:
        "audio output is not supported through this gateway: its answers carry text, tool calls and reasoning, not audio",
    });
  }
  const body: OpenAIChatRequest = { model, messages: [] };
  for (const [key, value] of Object.entries(extras)) {
    if (!RESERVED.has(key)) body[key] = value;
  }
  body.model = model;
  body.messages = toMessages(params.messages);

  if (params.tools.length > 0) body.tools = params.tools.map(toTool);
  const toolChoice = toToolChoice(params.toolChoice);
  if (toolChoice !== undefined) body.tool_choice = toolChoice;
  const responseFormat = toResponseFormat(params);
  if (responseFormat !== undefined) body.response_format = responseFormat;
  if (params.temperature !== undefined) body.temperature = params.temperature;
  if (params.topP !== undefined) body.top_p = params.topP;
  if (params.maxTokens !== undefined) {
    const field =
      options.maxTokensField ??
      (params.maxCompletionTokens ? "max_completion_tokens" : "max_tokens");
    body[field] = params.maxTokens;
  }
  if (params.stop.length > 0) body.stop = [...params.stop];
  if (params.n !== undefined) body.n = params.n;
  if (params.presencePenalty !== undefined) body.presence_penalty = params.presencePenalty;
  if (params.frequencyPenalty !== undefined) body.frequency_penalty = params.frequencyPenalty;
  if (params.seed !== undefined) body.seed = Number(params.seed);
  if (params.user !== undefined) body.user = params.user;
  if (params.parallelToolCalls !== undefined) body.parallel_tool_calls = params.parallelToolCalls;

  if (params.stream) {
    body.stream = true;
    // Always ask for usage: the gateway meters tokens even when the client did not ask.
    if (options.streamUsage !== false) {
      const clientOptions = extras.stream_options;
      body.stream_options = {
        ...(isRecord(clientOptions) ? clientOptions : {}),
        include_usage: true,
      };
    }
  }
  return body;
}

/**
 * An upstream's refusal (400) of `stop` in the words of an Anthropic client, whose
 * `stop_sequences` went as `stop`, a field it never named. OpenAI takes at most 4 stop
 * sequences, and its reasoning models none, where Anthropic takes many; but the connector cannot
 * know each OpenAI-compatible server's limit (vLLM and Ollama have none), so every sequence is
 * sent and the upstream judges. Its words are kept, and the client learns which of its fields to
 * change. A 400 is the request's fault, and counts against no target.
 */
export function inClientTerms(failure: Failure, clientApi: string): Failure {
  if (clientApi !== "anthropic" || failure.status !== 400) return failure;
  const aboutStop = failure.param === "stop" || /'(\$\.)?stop'/.test(failure.message);
  if (!aboutStop) return failure;
  // upstream-http words it "provider X rejected the request (400): <the upstream's words>".
  const said = /\(400\)(: .*)?$/s.exec(failure.message)?.[1] ?? "";
  return new Failure(
    {
      status: 400,
      kind: "invalid_request",
      message: `provider ${failure.provider} rejected stop_sequences, sent to it as OpenAI's \`stop\` (400)${said}`,
      upstreamStatus: failure.upstreamStatus,
      provider: failure.provider,
      param: "stop_sequences",
      ...(failure.code !== "" && { code: failure.code }),
    },
    { cause: failure },
  );
}

const ROLES: Record<Role, OpenAIRole | undefined> = {
  [Role.UNSPECIFIED]: undefined,
  [Role.SYSTEM]: "system",
  [Role.DEVELOPER]: "developer",
  [Role.USER]: "user",
  [Role.ASSISTANT]: "assistant",
  [Role.TOOL]: "tool",
};

/**
 * The conversation in OpenAI's terms. A tool message holds text only (OpenAI refuses anything
 * else there), so the images, audio and files of tool results (an Anthropic client's Read of an
 * image, say) follow the run of tool messages in one user message, each labelled with the call
 * it answers: tool messages must stay right after the assistant turn that called the tools.
 */
function toMessages(messages: readonly Message[]): OpenAIMessage[] {
  const out: OpenAIMessage[] = [];
  let media: OpenAIContentPart[] = [];
  messages.forEach((message, index) => {
    if (message.role !== Role.TOOL && media.length > 0) {
      out.push({ role: "user", content: media });
      media = [];
    }
    const converted = toMessage(message, index);
    if (message.role === Role.TOOL && Array.isArray(converted.content)) {
      const text = converted.content.filter((p) => p.type === "text");
      const other = converted.content.filter((p) => p.type !== "text");
      if (other.length > 0) {
        converted.content = text;
        const id = converted.tool_call_id ?? "";
        media.push({ type: "text", text: `Attached to the result of tool call ${id}:` }, ...other);
      }
    }
    out.push(converted);
  });
  if (media.length > 0) out.push({ role: "user", content: media });
  return out;
}

function toMessage(message: Message, index: number): OpenAIMessage {
  const role = ROLES[message.role];
  if (role === undefined) {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      message: `messages[${index}] has no role`,
      param: `messages[${index}].role`,
    });
  }
  const out: OpenAIMessage = { role, content: toContent(message) };
  // OpenAI's tool message has no error flag (Anthropic's `is_error`): the model reads it instead.
  if (message.role === Role.TOOL && message.isError) out.content = markError(out.content);
  if (message.name !== undefined) out.name = message.name;
  if (message.toolCalls.length > 0) {
    out.tool_calls = message.toolCalls.map((call) => ({
      id: plainToolCallId(call.id),
      type: "function",
      function: { name: call.name, arguments: call.arguments },
    }));
  }
  if (message.toolCallId !== undefined) out.tool_call_id = plainToolCallId(message.toolCallId);
  if (message.refusal !== undefined) out.refusal = message.refusal;
  return out;
}

function markError(
  content: string | OpenAIContentPart[] | null | undefined,
): string | OpenAIContentPart[] {
  const mark = "Error: ";
  if (typeof content === "string" || content == null) return `${mark}${content ?? ""}`;
  return [{ type: "text", text: mark }, ...content];
}

function toContent(message: Message): string | OpenAIContentPart[] | null {
  if (message.contentIsText) {
    let text = "";
    for (const part of message.content) if (part.part.case === "text") text += part.part.value;
    return text;
  }
  // An assistant turn that only calls tools has no content; OpenAI wants null there.
  if (message.content.length === 0 && message.role === Role.ASSISTANT) return null;
  const parts: OpenAIContentPart[] = [];
  for (const part of message.content) {
    const converted = toPart(part);
    if (converted !== undefined) parts.push(converted);
  }
  return parts;
}

function toPart({ part }: ContentPart): OpenAIContentPart | undefined {
  switch (part.case) {
    case "text":
      return { type: "text", text: part.value };
    case "image": {
      const image: { url: string; detail?: "auto" | "low" | "high" } = { url: part.value.url };
      // Passed through as the client sent it; the upstream judges the value.
      if (part.value.detail !== undefined) image.detail = part.value.detail as "auto";
      return { type: "image_url", image_url: image };
    }
    case "audio":
      return {
        type: "input_audio",
        input_audio: { data: part.value.data, format: part.value.format },
      };
    case "file": {
      const file: { file_id?: string; filename?: string; file_data?: string } = {};
      if (part.value.fileId !== undefined) file.file_id = part.value.fileId;
      if (part.value.filename !== undefined) file.filename = part.value.filename;
      if (part.value.fileData !== undefined) file.file_data = part.value.fileData;
      return { type: "file", file };
    }
    default:
      return undefined;
  }
}

function toTool(tool: Tool, index: number): OpenAITool {
  const fn: OpenAITool["function"] = { name: tool.name };
  if (tool.description !== undefined) fn.description = tool.description;
  if (tool.parametersJson !== "") {
    fn.parameters = parseObject(tool.parametersJson, `tools[${index}].function.parameters`);
  }
  if (tool.strict !== undefined) fn.strict = tool.strict;
  return { type: "function", function: fn };
}

function toToolChoice(choice: ToolChoice | undefined): OpenAIToolChoice | undefined {
  switch (choice?.mode) {
    case ToolChoice_Mode.NONE:
      return "none";
    case ToolChoice_Mode.AUTO:
      return "auto";
    case ToolChoice_Mode.REQUIRED:
      return "required";
    case ToolChoice_Mode.FUNCTION:
      return { type: "function", function: { name: choice.functionName } };
    default:
      return undefined;
  }
}

function toResponseFormat(params: ChatParams): OpenAIResponseFormat | undefined {
  const format = params.responseFormat;
  switch (format?.type) {
    case ResponseFormat_Type.TEXT:
      return { type: "text" };
    case ResponseFormat_Type.JSON_OBJECT:
      return { type: "json_object" };
    case ResponseFormat_Type.JSON_SCHEMA:
      return {
        type: "json_schema",
        json_schema: parseObject(format.jsonSchemaJson, "response_format.json_schema"),
      };
    default:
      return undefined;
  }
}
