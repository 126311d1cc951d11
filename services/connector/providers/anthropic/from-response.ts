import {
  type ChatChunk,
  ChatChunkSchema,
  type ChatStart,
  ChatStartSchema,
  type ChoiceDelta,
  ChoiceDeltaSchema,
  FinishReason,
  Role,
  type TokenCount,
  TokenCountSchema,
  type ToolCallDelta,
  ToolCallDeltaSchema,
  type Usage,
  UsageSchema,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { anthropicBlock, reasoningBlock } from "../../../lib/chat/messages.js";
import { makeMessage } from "../../../lib/hop/codec.js";
import { isRecord } from "../json-object.js";
import { reportedModel } from "../model-name.js";
import type { AnthropicMessage } from "./wire.js";

// Upstream JSON is read with a type check per field, so a malformed answer yields absent
// fields rather than wrong-typed ones.

export interface TranslateOptions {
  /** The configured provider name, for `start.provider`. */
  provider: string;
  /** The request's JSON-mode tool (see `toAnthropicRequest`): its input is the answer's text. */
  jsonTool?: string | undefined;
  /** Unix seconds for `start.created` (Anthropic answers carry no time); default now. */
  now?: number | undefined;
}

/**
 * A `count_tokens` answer (`{"input_tokens": N}`) as a canonical count, or undefined when it is
 * not one: a made-up number would be worse than an error, since clients trust a count.
 */
export function fromAnthropicCountTokens(
  answer: unknown,
  target: { provider: string; model: string },
): TokenCount | undefined {
  if (!isRecord(answer)) return undefined;
  const tokens = answer.input_tokens;
  if (typeof tokens !== "number" || !Number.isInteger(tokens) || tokens < 0) return undefined;
  return makeMessage(TokenCountSchema, {
    inputTokens: tokens,
    upstreamModel: target.model,
    provider: target.provider,
  });
}

/**
 * A whole (non-streamed) answer as one canonical chunk: start, full message, finish, usage.
 * Every block keeps its place (`blockIndex`): the choice's delta holds the reasoning, the tool
 * calls and the first text; each further text block and each of Anthropic's own blocks (server
 * tool and MCP calls and results) has a delta of its own, as its stream would.
 */
export function fromAnthropicMessage(
  message: AnthropicMessage,
  options: TranslateOptions,
): ChatChunk {
  const delta = makeMessage(ChoiceDeltaSchema, { index: 0, role: Role.ASSISTANT });
  const more: ChoiceDelta[] = [];
  const jsonMode = options.jsonTool !== undefined;
  const reasoning: string[] = [];
  const addText = (text: string, index: number, citations?: unknown) => {
    const into = delta.content === undefined ? delta : makeMessage(ChoiceDeltaSchema, {});
    into.content = text;
    into.blockIndex = index;
    if (Array.isArray(citations) && citations.length > 0) {
      into.citationsJson = JSON.stringify(citations);
    }
    if (into !== delta) more.push(into);
  };
  records(message.content).forEach((block, index) => {
    switch (block.type) {
      case "text":
        // In JSON mode only the JSON tool's input is the answer.
        if (!jsonMode && typeof block.text === "string") {
          addText(block.text, index, block.citations);
        }
        break;
      case "thinking":
        if (typeof block.thinking === "string") reasoning.push(block.thinking);
        // Signed, it goes back to Anthropic in the next turn (see from-stream.ts).
        if (typeof block.signature === "string" && block.signature !== "") {
          const text = typeof block.thinking === "string" ? block.thinking : "";
          delta.reasoningBlocks.push(reasoningBlock(text, block.signature, "", index));
        }
        break;
      case "redacted_thinking":
        if (typeof block.data === "string" && block.data !== "") {
          delta.reasoningBlocks.push(reasoningBlock("", "", block.data, index));
        }
        break;
      case "tool_use":
        if (jsonMode && block.name === options.jsonTool) {
          addText(JSON.stringify(isRecord(block.input) ? block.input : {}), index);
        } else {
          delta.toolCalls.push(toolCall(block, delta.toolCalls.length, index));
        }
        break;
      default:
        // Server tool and MCP blocks: Anthropic ran the tool; its client gets them whole.
        if (typeof block.type === "string") {
          more.push(
            makeMessage(ChoiceDeltaSchema, {
              anthropicBlock: anthropicBlock(JSON.stringify(block), index),
            }),
          );
        }
        break;
    }
  });
  if (reasoning.length > 0) delta.reasoning = reasoning.join("");
  setFinish(
    delta,
    message.stop_reason,
    jsonMode && delta.toolCalls.length === 0,
    message.stop_sequence,
  );
  setContainer(delta, message.container);

  const chunk = makeMessage(ChatChunkSchema, {
    start: toStart(message, options),
    choices: [delta, ...more],
  });
  const usage = toUsage(message.usage);
  if (usage !== undefined) chunk.usage = usage;
  return chunk;
}

/**
 * A whole tool call. Anthropic hands the input over as an object, so its JSON text is written
 * anew: byte for byte it may differ in spacing from the fragments the same call streams in.
 */
function toolCall(
  block: Record<string, unknown>,
  index: number,
  blockIndex: number,
): ToolCallDelta {
  const call = makeMessage(ToolCallDeltaSchema, {
    index,
    arguments: JSON.stringify(isRecord(block.input) ? block.input : {}),
    blockIndex,
  });
  if (typeof block.id === "string") call.id = block.id;
  if (typeof block.name === "string") call.name = block.name;
  return call;
}

export function toStart(
  message: { id?: unknown; model?: unknown },
  options: TranslateOptions,
): ChatStart {
  return makeMessage(ChatStartSchema, {
    id: typeof message.id === "string" ? message.id : "",
    created: BigInt(options.now ?? Math.floor(Date.now() / 1000)),
    upstreamModel: reportedModel(message.model) ?? "",
    provider: options.provider,
  });
}

const STOP_REASONS: Record<string, FinishReason> = {
  end_turn: FinishReason.STOP,
  stop_sequence: FinishReason.STOP,
  max_tokens: FinishReason.LENGTH,
  // The context window filled up: the answer is cut short, as with max_tokens.
  model_context_window_exceeded: FinishReason.LENGTH,
  tool_use: FinishReason.TOOL_CALLS,
  refusal: FinishReason.CONTENT_FILTER,
};

/**
 * Sets the canonical finish reason and keeps Anthropic's word beside it. `jsonAnswer` marks a
 * JSON-mode answer made only of the JSON tool's input: for the client that is a finished text,
 * so it stops with STOP, and Anthropic's "tool_use" is not passed on where no tool call is.
 */
export function setFinish(
  delta: ChoiceDelta,
  raw: unknown,
  jsonAnswer: boolean,
  stopSequence?: unknown,
): void {
  if (typeof raw !== "string") return;
  if (typeof stopSequence === "string") delta.stopSequence = stopSequence;
  if (raw === "tool_use" && jsonAnswer) {
    delta.finishReason = FinishReason.STOP;
    return;
  }
  delta.finishReason = STOP_REASONS[raw] ?? FinishReason.OTHER;
  delta.rawFinishReason = raw;
}

/**
 * The container Anthropic ran code execution in (`{id, expires_at, skills}`), kept whole: the
 * client passes its id back as the next request's `container` to keep working in it.
 */
export function setContainer(delta: ChoiceDelta, container: unknown): void {
  if (isRecord(container)) delta.anthropicContainerJson = JSON.stringify(container);
}

/**
 * Anthropic counts cached prompt tokens apart from `input_tokens`; the canonical prompt count
 * includes them, and the cache reads are its cached share.
 */
export function toUsage(usage: unknown): Usage | undefined {
  if (!isRecord(usage)) return undefined;
  const cacheRead = usage.cache_read_input_tokens;
  const prompt =
    count(usage.input_tokens) + count(cacheRead) + count(usage.cache_creation_input_tokens);
  const completion = count(usage.output_tokens);
  const out = makeMessage(UsageSchema, {
    promptTokens: prompt,
    completionTokens: completion,
    totalTokens: prompt + completion,
  });
  if (isCount(cacheRead)) out.cachedPromptTokens = cacheRead;
  const cacheWrite = usage.cache_creation_input_tokens;
  if (isCount(cacheWrite)) out.cacheWritePromptTokens = cacheWrite;
  const hour = isRecord(usage.cache_creation)
    ? usage.cache_creation.ephemeral_1h_input_tokens
    : undefined;
  if (isCount(hour) && hour > 0) out.cacheWrite1hPromptTokens = hour;
  if (typeof usage.service_tier === "string") out.serviceTier = usage.service_tier;
  if (isRecord(usage.server_tool_use))
    out.serverToolUseJson = JSON.stringify(usage.server_tool_use);
  return out;
}

/** The object entries of what should be an array of objects; anything else counts as empty. */
export function records(value: unknown): Record<string, unknown>[] {
  return Array.isArray(value) ? value.filter(isRecord) : [];
}

function count(value: unknown): number {
  return isCount(value) ? value : 0;
}

export function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 0xffffffff;
}
