import {
  type ChatChunk,
  ChatChunkSchema,
  type ChatStart,
  ChatStartSchema,
  type ChoiceDelta,
  ChoiceDeltaSchema,
  FinishReason,
  Role,
  ToolCallDeltaSchema,
  type Usage,
  UsageSchema,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { makeMessage } from "../../../lib/hop/codec.js";
import type { OpenAIChatCompletion, OpenAIUsage } from "../../../lib/wire/openai.js";
import { isRecord } from "../json-object.js";
import { reportedModel } from "../model-name.js";

// Upstream JSON is only as well-formed as the server that sent it: every field is read with a
// type check so a sloppy OpenAI-compatible server yields absent fields, not wrong-typed ones.

/** A whole (non-streamed) answer as one canonical chunk: start, full message, finish, usage. */
export function fromOpenAICompletion(
  completion: OpenAIChatCompletion,
  provider: string,
): ChatChunk {
  const chunk = makeMessage(ChatChunkSchema, {
    start: toStart(completion, provider),
    choices: records(completion.choices).map((choice, i) => {
      const message = isRecord(choice.message) ? choice.message : {};
      const delta = makeMessage(ChoiceDeltaSchema, {
        index: isCount(choice.index) ? choice.index : i,
        role: Role.ASSISTANT,
      });
      setText(delta, "content", message.content);
      setText(delta, "refusal", message.refusal);
      setText(delta, "reasoning", reasoningOf(message));
      delta.toolCalls = records(message.tool_calls).map((call, index) => {
        const out = makeMessage(ToolCallDeltaSchema, { index });
        const fn = isRecord(call.function) ? call.function : {};
        if (typeof call.id === "string") out.id = call.id;
        if (typeof fn.name === "string") out.name = fn.name;
        out.arguments = typeof fn.arguments === "string" ? fn.arguments : "";
        return out;
      });
      setFinish(delta, choice.finish_reason);
      if (isRecord(choice.logprobs)) delta.logprobsJson = JSON.stringify(choice.logprobs);
      return delta;
    }),
  });
  const usage = toUsage(completion.usage);
  if (usage !== undefined) chunk.usage = usage;
  return chunk;
}

export function toStart(
  source: { id?: unknown; created?: unknown; model?: unknown; system_fingerprint?: unknown },
  provider: string,
): ChatStart {
  // Made empty, then filled in, as the per-token code does (from-stream.ts).
  const start = makeMessage(ChatStartSchema);
  if (typeof source.id === "string") start.id = source.id;
  start.created = BigInt(Math.trunc(numberOr(source.created, Math.floor(Date.now() / 1000))));
  start.upstreamModel = reportedModel(source.model) ?? "";
  start.provider = provider;
  if (typeof source.system_fingerprint === "string") {
    start.systemFingerprint = source.system_fingerprint;
  }
  return start;
}

const FINISH_REASONS: Record<string, FinishReason> = {
  stop: FinishReason.STOP,
  length: FinishReason.LENGTH,
  tool_calls: FinishReason.TOOL_CALLS,
  function_call: FinishReason.TOOL_CALLS,
  content_filter: FinishReason.CONTENT_FILTER,
  // Text Generation Inference's OpenAI route says how the model stopped in its own words.
  eos_token: FinishReason.STOP,
  stop_sequence: FinishReason.STOP,
};

/** Sets the canonical finish reason and keeps the upstream's own word beside it. */
export function setFinish(delta: ChoiceDelta, raw: unknown): void {
  // Some servers (Ollama, sglang) send "" on every chunk, KoboldCpp "null": not finished yet.
  if (typeof raw !== "string" || raw === "" || raw === "null") return;
  delta.finishReason = FINISH_REASONS[raw] ?? FinishReason.OTHER;
  delta.rawFinishReason = raw;
}

/**
 * A message's or delta's reasoning text: `reasoning_content` (DeepSeek, older vLLM) or
 * `reasoning` (vLLM since it renamed the field, OpenRouter, Groq).
 */
export function reasoningOf(message: Record<string, unknown>): unknown {
  return message.reasoning_content ?? message.reasoning;
}

export function setText(
  delta: ChoiceDelta,
  field: "content" | "refusal" | "reasoning",
  value: unknown,
): void {
  if (typeof value === "string") delta[field] = value;
}

export function toUsage(usage: OpenAIUsage | null | undefined): Usage | undefined {
  if (!isRecord(usage)) return undefined;
  const prompt = count(usage.prompt_tokens);
  const completion = count(usage.completion_tokens);
  const out = makeMessage(UsageSchema);
  out.promptTokens = prompt;
  out.completionTokens = completion;
  out.totalTokens = isCount(usage.total_tokens) ? usage.total_tokens : prompt + completion;
  const promptDetails: unknown = usage.prompt_tokens_details;
  if (isRecord(promptDetails) && isCount(promptDetails.cached_tokens)) {
    out.cachedPromptTokens = promptDetails.cached_tokens;
  }
  const completionDetails: unknown = usage.completion_tokens_details;
  if (isRecord(completionDetails) && isCount(completionDetails.reasoning_tokens)) {
    out.reasoningTokens = completionDetails.reasoning_tokens;
  }
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

function numberOr(value: unknown, fallback: number): number {
  return typeof value === "number" && Number.isFinite(value) ? value : fallback;
}
