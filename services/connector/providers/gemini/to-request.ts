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
import { thoughtSignatureOf } from "../../../lib/chat/tool-call-ids.js";
import { Failure } from "../../../lib/errors.js";
import { refuseAnthropicOnly } from "../anthropic-only.js";
import { isRecord, parseObject } from "../json-object.js";
import { refuseOpenAIOnly } from "../openai-only.js";
import type {
  GeminiBlob,
  GeminiContent,
  GeminiCountTokensRequest,
  GeminiFunctionDeclaration,
  GeminiGenerateContentRequest,
  GeminiGenerationConfig,
  GeminiPart,
  GeminiRole,
  GeminiToolConfig,
} from "./wire.js";

/** Who the request goes to, named in the errors for what Gemini cannot do. */
export interface GeminiTarget {
  provider: string;
  model: string;
}

/**
 * Google's documented stand-in signature for function calls Gemini did not make. Gemini 3 rejects
 * a function-calling step whose first `functionCall` comes back without a signature; the calls
 * Gemini made carry their real one in their ids (services/lib/chat/tool-call-ids.ts).
 */
export const FOREIGN_THOUGHT_SIGNATURE = "skip_thought_signature_validator";

/**
 * Builds the generateContent body for one attempt (the same body serves the streamed method).
 * Optional fields appear only when the client set them, so upstream defaults stay in force.
 * Throws a `Failure` (400) for malformed input and for what Gemini cannot do.
 *
 * Left out on purpose, because they do not change the answer: `user` (OpenAI's abuse-monitoring
 * tag), `Message.name` (a participant label Gemini has no field for), `Tool.strict` (Gemini always
 * follows a function's JSON Schema) and an image's `detail` hint.
 */
export function toGeminiRequest(
  params: ChatParams,
  target: GeminiTarget,
): GeminiGenerateContentRequest {
  const extras = parseObject(params.extraJson, "extra_json");
  if (params.clientApi !== "anthropic") {
    refuseOpenAIOnly(extras, (feature, param) => unsupported(target, feature, param));
  }
  refuseAnthropicOnly(params, (feature, param) => unsupported(target, feature, param));
  const body: GeminiGenerateContentRequest = { contents: toContents(params.messages, target) };
  const system = systemInstruction(params.messages, target);
  if (system !== undefined) body.systemInstruction = system;

  if (params.tools.length > 0) {
    // Gemini may always call several functions at once; it has no switch to forbid that, so a
    // client's `parallel_tool_calls: false` is kept on the answer (TranslateOptions.oneToolCall).
    body.tools = [{ functionDeclarations: params.tools.map(toFunctionDeclaration) }];
  }
  const toolConfig = toToolConfig(params.toolChoice);
  if (toolConfig !== undefined) body.toolConfig = toolConfig;

  const config = generationConfig(params, extras, target.model);
  if (Object.keys(config).length > 0) body.generationConfig = config;
  const safetySettings = extra(extras, "safetySettings", "safety_settings");
  if (safetySettings !== undefined) body.safetySettings = safetySettings;
  const cachedContent = extra(extras, "cachedContent", "cached_content");
  if (cachedContent !== undefined) body.cachedContent = cachedContent;
  return body;
}

/**
 * The `countTokens` request for a chat request: the generateContent request it would send, in
 * the `generateContentRequest` wrapper, less what does not change the prompt's size
 * (`generationConfig`, `safetySettings`).
 */
export function toGeminiCountTokensRequest(
  params: ChatParams,
  target: GeminiTarget,
): GeminiCountTokensRequest {
  const {
    generationConfig: _config,
    safetySettings: _safety,
    ...prompt
  } = toGeminiRequest(params, target);
  return { generateContentRequest: { model: geminiModelName(target.model), ...prompt } };
}

/** `models/{model}` as the API names it in bodies; names that already say their kind stay as is. */
export function geminiModelName(model: string): string {
  return model.startsWith("models/") || model.startsWith("tunedModels/")
    ? model
    : `models/${model}`;
}

/** The model as a URL path segment pair: each piece encoded, so a name can never add a method. */
export function geminiModelPath(model: string): string {
  const name = geminiModelName(model);
  const slash = name.indexOf("/");
  return `${name.slice(0, slash)}/${encodeURIComponent(name.slice(slash + 1))}`;
}

// ---- Messages ----------------------------------------------------------------------------------

function systemInstruction(messages: Message[], target: GeminiTarget): GeminiContent | undefined {
  const parts: GeminiPart[] = [];
  messages.forEach((message, i) => {
    if (message.role !== Role.SYSTEM && message.role !== Role.DEVELOPER) return;
    message.content.forEach(({ part }, j) => {
      if (part.case === "text") {
        if (part.value !== "") parts.push({ text: part.value });
      } else if (part.case !== undefined) {
        throw unsupported(
          target,
          `${part.case} in system messages`,
          `messages[${i}].content[${j}]`,
        );
      }
    });
  });
  return parts.length > 0 ? { parts } : undefined;
}

function toContents(messages: Message[], target: GeminiTarget): GeminiContent[] {
  const contents: GeminiContent[] = [];
  // Tool results name the call they answer by id; Gemini wants the function's name instead.
  const callNames = new Map<string, string>();
  const append = (role: GeminiRole, parts: GeminiPart[]) => {
    if (parts.length === 0) return;
    const last = contents.at(-1);
    // Gemini wants turns to alternate: parallel tool results and the user's next words are one turn.
    if (last?.role === role) last.parts.push(...parts);
    else contents.push({ role, parts });
  };
  messages.forEach((message, i) => {
    switch (message.role) {
      case Role.SYSTEM:
      case Role.DEVELOPER:
        return;
      case Role.USER:
        append("user", mediaParts(message, i, target));
        return;
      case Role.ASSISTANT:
        append("model", modelParts(message, i, target));
        for (const call of message.toolCalls) callNames.set(call.id, call.name);
        return;
      case Role.TOOL:
        append("user", toolResultParts(message, i, callNames, target));
        return;
      default:
        throw new Failure({
          status: 400,
          kind: "invalid_request",
          message: `messages[${i}] has no role`,
          param: `messages[${i}].role`,
        });
    }
  });
  return contents;
}

function modelParts(message: Message, i: number, target: GeminiTarget): GeminiPart[] {
  const parts = mediaParts(message, i, target);
  if (message.refusal !== undefined && message.refusal !== "")
    parts.push({ text: message.refusal });
  message.toolCalls.forEach((call, j) => {
    const part: GeminiPart = {
      functionCall: {
        name: call.name,
        args: parseObject(call.arguments, `messages[${i}].tool_calls[${j}].function.arguments`),
      },
    };
    // Gemini's own signature comes back on the call it came with; a step Gemini did not make
    // (another model's, or a client's own) gets the stand-in on its first call.
    const signature = thoughtSignatureOf(call.id);
    if (signature !== undefined) part.thoughtSignature = signature;
    else if (j === 0) part.thoughtSignature = FOREIGN_THOUGHT_SIGNATURE;
    parts.push(part);
  });
  return parts;
}

function toolResultParts(
  message: Message,
  i: number,
  callNames: ReadonlyMap<string, string>,
  target: GeminiTarget,
): GeminiPart[] {
  const id = message.toolCallId;
  const name = (id === undefined ? undefined : callNames.get(id)) ?? message.name;
  if (name === undefined) {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      param: `messages[${i}].tool_call_id`,
      message:
        id === undefined
          ? `messages[${i}] is a tool result without a tool_call_id`
          : `messages[${i}].tool_call_id '${id}' answers no tool call of an earlier assistant message`,
    });
  }
  let text = "";
  const media: GeminiPart[] = [];
  message.content.forEach((content, j) => {
    if (content.part.case === "text") text += content.part.value;
    else {
      // Function responses carry JSON only (on most models); pictures a tool returned follow it
      // in the same turn.
      const part = mediaPart(content, `messages[${i}].content[${j}]`, target);
      if (part !== undefined) media.push(part);
    }
  });
  return [{ functionResponse: { name, response: toolResponse(text, message.isError) } }, ...media];
}

/**
 * The reference's convention: a JSON object is the response itself; anything else goes under
 * `output`, or under `error` when the tool failed.
 */
function toolResponse(text: string, isError: boolean): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const object = isRecord(parsed) ? parsed : undefined;
  if (isError) return { error: object ?? text };
  return object ?? { output: text };
}

function mediaParts(message: Message, i: number, target: GeminiTarget): GeminiPart[] {
  const parts: GeminiPart[] = [];
  message.content.forEach((content, j) => {
    const part = mediaPart(content, `messages[${i}].content[${j}]`, target);
    if (part !== undefined) parts.push(part);
  });
  return parts;
}

function mediaPart(
  { part }: ContentPart,
  param: string,
  target: GeminiTarget,
): GeminiPart | undefined {
  switch (part.case) {
    case "text":
      // Gemini rejects empty text parts; an empty string says nothing anyway.
      return part.value === "" ? undefined : { text: part.value };
    case "image": {
      const url = part.value.url;
      if (url.startsWith("data:")) return { inlineData: dataUrlBlob(url, `${param}.image_url`) };
      if (url.startsWith("https:")) {
        // The API fetches public and signed https URLs itself; the type comes from the name
        // when it tells, else the upstream finds it out.
        const mimeType = mimeTypeOfName(urlPath(url, `${param}.image_url`));
        return { fileData: mimeType === undefined ? { fileUri: url } : { fileUri: url, mimeType } };
      }
      throw unsupported(target, "image URLs other than https: and data:", `${param}.image_url`);
    }
    case "audio": {
      const format = part.value.format.toLowerCase();
      if (format === "") {
        throw new Failure({
          status: 400,
          kind: "invalid_request",
          param: `${param}.input_audio.format`,
          message: `${param}.input_audio.format is required`,
        });
      }
      return { inlineData: { mimeType: `audio/${format}`, data: part.value.data } };
    }
    case "file": {
      const file = part.value;
      if (file.fileData === undefined || file.fileData === "") {
        throw unsupported(
          target,
          "file ids; send the file's bytes as file_data",
          `${param}.file.file_id`,
        );
      }
      if (file.fileData.startsWith("data:")) {
        return { inlineData: dataUrlBlob(file.fileData, `${param}.file.file_data`) };
      }
      const mimeType = file.filename === undefined ? undefined : mimeTypeOfName(file.filename);
      if (mimeType === undefined) {
        throw new Failure({
          status: 400,
          kind: "invalid_request",
          param: `${param}.file.file_data`,
          message: `${param}.file.file_data must be a data: URL (its type cannot be told from the filename)`,
        });
      }
      return { inlineData: { mimeType, data: file.fileData } };
    }
    default:
      return undefined;
  }
}

/** A data: URL (RFC 2397) as Gemini's base64 blob. */
function dataUrlBlob(url: string, param: string): GeminiBlob {
  const comma = url.indexOf(",");
  const malformed = () =>
    new Failure({
      status: 400,
      kind: "invalid_request",
      param,
      message: `${param} is not a valid data: URL`,
    });
  if (comma === -1) throw malformed();
  const [type = "", ...options] = url.slice("data:".length, comma).split(";");
  const payload = url.slice(comma + 1);
  const mimeType = type === "" ? "text/plain" : type.toLowerCase();
  if (options.some((option) => option.toLowerCase() === "base64")) {
    return { mimeType, data: payload };
  }
  try {
    return { mimeType, data: Buffer.from(decodeURIComponent(payload), "utf8").toString("base64") };
  } catch {
    throw malformed();
  }
}

function urlPath(url: string, param: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      param,
      message: `${param} is not a valid URL`,
    });
  }
}

const MIME_TYPES: Record<string, string> = {
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  webp: "image/webp",
  heic: "image/heic",
  heif: "image/heif",
  gif: "image/gif",
  pdf: "application/pdf",
  txt: "text/plain",
  md: "text/md",
  html: "text/html",
  htm: "text/html",
  csv: "text/csv",
  xml: "text/xml",
  wav: "audio/wav",
  mp3: "audio/mp3",
  aiff: "audio/aiff",
  aac: "audio/aac",
  ogg: "audio/ogg",
  flac: "audio/flac",
  mp4: "video/mp4",
  mpeg: "video/mpeg",
  mov: "video/mov",
  webm: "video/webm",
};

function mimeTypeOfName(name: string): string | undefined {
  const dot = name.lastIndexOf(".");
  if (dot === -1 || name.lastIndexOf("/") > dot) return undefined;
  return MIME_TYPES[name.slice(dot + 1).toLowerCase()];
}

// ---- Tools -------------------------------------------------------------------------------------

function toFunctionDeclaration(tool: Tool, index: number): GeminiFunctionDeclaration {
  const declaration: GeminiFunctionDeclaration = { name: tool.name };
  if (tool.description !== undefined) declaration.description = tool.description;
  if (tool.parametersJson !== "") {
    declaration.parametersJsonSchema = parseObject(
      tool.parametersJson,
      `tools[${index}].function.parameters`,
    );
  }
  return declaration;
}

function toToolConfig(choice: ToolChoice | undefined): GeminiToolConfig | undefined {
  switch (choice?.mode) {
    case ToolChoice_Mode.NONE:
      return { functionCallingConfig: { mode: "NONE" } };
    case ToolChoice_Mode.AUTO:
      return { functionCallingConfig: { mode: "AUTO" } };
    case ToolChoice_Mode.REQUIRED:
      return { functionCallingConfig: { mode: "ANY" } };
    case ToolChoice_Mode.FUNCTION:
      return {
        functionCallingConfig: { mode: "ANY", allowedFunctionNames: [choice.functionName] },
      };
    default:
      return undefined;
  }
}

// ---- Generation config -------------------------------------------------------------------------

/**
 * Sampling and output settings. From `extra_json`, only fields the Gemini API reference names are
 * passed (in its camelCase or the snake_case spelling): `topK`, `thinkingConfig`,
 * `mediaResolution`, plus `safetySettings` and `cachedContent` at the top level. Anthropic's
 * `thinking` and OpenAI's `reasoning_effort` have Gemini counterparts and are translated (a
 * `thinkingConfig` of the client's own wins over both). Every other key is ignored: it
 * belongs to another vendor's dialect (e.g. OpenAI `logit_bias`) and Gemini would reject it.
 */
function generationConfig(
  params: ChatParams,
  extras: Record<string, unknown>,
  model: string,
): GeminiGenerationConfig {
  const config: GeminiGenerationConfig = {};
  if (params.temperature !== undefined) config.temperature = params.temperature;
  if (params.topP !== undefined) config.topP = params.topP;
  if (params.maxTokens !== undefined) config.maxOutputTokens = params.maxTokens;
  if (params.stop.length > 0) config.stopSequences = [...params.stop];
  if (params.n !== undefined) config.candidateCount = params.n;
  if (params.presencePenalty !== undefined) config.presencePenalty = params.presencePenalty;
  if (params.frequencyPenalty !== undefined) config.frequencyPenalty = params.frequencyPenalty;
  if (params.seed !== undefined) config.seed = Number(params.seed);

  const format = params.responseFormat;
  if (format?.type === ResponseFormat_Type.JSON_OBJECT) {
    config.responseMimeType = "application/json";
  } else if (format?.type === ResponseFormat_Type.JSON_SCHEMA) {
    config.responseMimeType = "application/json";
    const jsonSchema = parseObject(format.jsonSchemaJson, "response_format.json_schema");
    if (isRecord(jsonSchema.schema)) config.responseJsonSchema = jsonSchema.schema;
  }

  const topK = extra(extras, "topK", "top_k");
  if (typeof topK === "number") config.topK = topK;
  const thinkingConfig =
    extra(extras, "thinkingConfig", "thinking_config") ??
    fromAnthropicThinking(extras.thinking) ??
    fromReasoningEffort(extras.reasoning_effort, model);
  if (thinkingConfig !== undefined) config.thinkingConfig = thinkingConfig;
  const mediaResolution = extra(extras, "mediaResolution", "media_resolution");
  if (mediaResolution !== undefined) config.mediaResolution = mediaResolution;
  return config;
}

/** Anthropic `thinking` → Gemini `thinkingConfig`: shown thoughts, with the same token budget. */
function fromAnthropicThinking(thinking: unknown): unknown {
  if (!isRecord(thinking)) return undefined;
  if (thinking.type === "enabled") {
    return typeof thinking.budget_tokens === "number"
      ? { includeThoughts: true, thinkingBudget: thinking.budget_tokens }
      : { includeThoughts: true };
  }
  // "adaptive" leaves the budget to the model, as Gemini does by default.
  if (thinking.type === "adaptive") return { includeThoughts: true };
  return undefined;
}

/**
 * OpenAI `reasoning_effort` → Gemini `thinkingConfig`, as Google's own OpenAI-compatible endpoint
 * maps it: Gemini 3 models take a thinking level, the word itself ("none" as "minimal", the least
 * they think; "xhigh" as "high"); earlier models a token budget, 1,024 / 8,192 / 24,576 for
 * low / medium / high and 0 for "none" (thinking off, which Gemini 2.5 Pro refuses in its own 400).
 * The two cannot be sent together: Gemini refuses a request that has both.
 */
function fromReasoningEffort(effort: unknown, model: string): unknown {
  if (typeof effort !== "string") return undefined;
  if (/^gemini-3/.test(model)) {
    const level = effort === "none" ? "minimal" : effort === "xhigh" ? "high" : effort;
    return { thinkingLevel: level };
  }
  const budget = THINKING_BUDGETS.get(effort);
  return budget === undefined ? undefined : { thinkingBudget: budget };
}

const THINKING_BUDGETS: ReadonlyMap<string, number> = new Map([
  ["none", 0],
  ["minimal", 1024],
  ["low", 1024],
  ["medium", 8192],
  ["high", 24576],
  ["xhigh", 24576],
]);

function extra(extras: Record<string, unknown>, camel: string, snake: string): unknown {
  return extras[camel] ?? extras[snake];
}

// ---- Helpers -----------------------------------------------------------------------------------

function unsupported(target: GeminiTarget, feature: string, param: string): Failure {
  return new Failure({
    status: 400,
    kind: "unsupported",
    param,
    provider: target.provider,
    message: `model '${target.model}' on provider '${target.provider}' (gemini) does not support ${feature}`,
  });
}
