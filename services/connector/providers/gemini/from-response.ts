import { randomBytes } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
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
  ToolCallDeltaSchema,
  type Usage,
  UsageSchema,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { withThoughtSignature } from "../../../lib/chat/tool-call-ids.js";
import { Failure } from "../../../lib/errors.js";
import { makeMessage } from "../../../lib/hop/codec.js";
import { isRecord } from "../json-object.js";
import { reportedModel } from "../model-name.js";
import { failureFromResponse, retryAfterMs, scrubSecrets } from "../upstream-http.js";
import type { GeminiGenerateContentResponse } from "./wire.js";

// Upstream JSON is read field by field with type checks: a missing or odd field becomes an absent
// one, never a wrong-typed one.

export interface TranslateOptions {
  /** The configured provider name. */
  provider: string;
  /** The model asked for; names the answer when the upstream does not say `modelVersion`. */
  model: string;
  /** The answer's id when the upstream sends no `responseId`. */
  fallbackId: string;
  /** Unix seconds for `start.created`: Gemini answers carry no time. */
  now: number;
  /** Strings that must never reach an error message (the provider's API key). */
  secrets?: readonly string[];
  /**
   * The client forbade parallel tool calls (OpenAI's `parallel_tool_calls: false`, Anthropic's
   * `disable_parallel_tool_use`). Gemini has no such switch, so each choice keeps its first
   * function call and the rest are left out: the model makes them again, one per step, once the
   * first one's result is back.
   */
  oneToolCall?: boolean;
}

/**
 * A `countTokens` answer (`{"totalTokens": N, …}`) as a canonical count, or undefined when it is
 * not one. A prompt is never empty, so an answer without `totalTokens` (proto3 JSON leaves out a
 * zero) is taken as malformed rather than as 0: clients trust a count.
 */
export function fromGeminiCountTokens(
  answer: unknown,
  target: { provider: string; model: string },
): TokenCount | undefined {
  if (typeof answer !== "object" || answer === null) return undefined;
  const tokens = (answer as { totalTokens?: unknown }).totalTokens;
  if (typeof tokens !== "number" || !Number.isInteger(tokens) || tokens < 0) return undefined;
  return makeMessage(TokenCountSchema, {
    inputTokens: tokens,
    upstreamModel: target.model,
    provider: target.provider,
  });
}

/** What one choice has said so far, across the events of one answer. */
export interface ChoiceState {
  /** The choice's first delta (the one with the role) was produced. */
  started: boolean;
  /** Tool calls seen so far: the next call's index and synthetic id number. */
  toolCalls: number;
  /** The random part of this choice's synthetic call ids, made at its first call without one. */
  callNonce?: string;
  finished: boolean;
}

/**
 * A whole (non-streamed) answer as one canonical chunk: start, each candidate's full message,
 * finish and usage. Throws a `Failure` for an error body, a blocked prompt or an answer with no
 * candidates.
 */
export function fromGeminiResponse(response: unknown, options: TranslateOptions): ChatChunk {
  const answer = checkAnswer(response, options, "answer");
  if (!Array.isArray(answer.candidates)) {
    throw malformed(options, "answer", "no candidates");
  }
  const choices = new Map<number, ChoiceState>();
  const chunk = makeMessage(ChatChunkSchema, {
    start: toStart(answer, options),
    choices: records(answer.candidates).map((candidate, i) =>
      candidateDelta(candidate, i, choices, options),
    ),
  });
  const usage = toUsage(answer.usageMetadata);
  if (usage !== undefined) chunk.usage = usage;
  return chunk;
}

/**
 * Checks that a parsed answer (or stream event) is an answer: an object, not an error, not a
 * refusal of the prompt itself. Throws the matching `Failure` otherwise.
 */
export function checkAnswer(
  value: unknown,
  options: TranslateOptions,
  what: "answer" | "stream",
): GeminiGenerateContentResponse {
  if (!isRecord(value)) throw malformed(options, what, "not an object");
  if (value.error !== undefined && value.error !== null) {
    const code = isRecord(value.error) && isCount(value.error.code) ? value.error.code : 500;
    throw failureFromGoogle(options.provider, code, {}, JSON.stringify(value), {
      model: options.model,
      secrets: options.secrets ?? [],
    });
  }
  const feedback = isRecord(value.promptFeedback) ? value.promptFeedback : {};
  const blockReason = feedback.blockReason;
  if (typeof blockReason === "string" && records(value.candidates).length === 0) {
    const said =
      typeof feedback.blockReasonMessage === "string" ? `: ${feedback.blockReasonMessage}` : "";
    // The upstream judged the prompt itself; another attempt with it is no use. The code is the
    // one Azure's filter gives the same refusal, so a client of a model with targets of both
    // types handles one code; Gemini's reason stays in the message.
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      code: "content_filter",
      param: "messages",
      provider: options.provider,
      message: `provider ${options.provider}'s safety filter blocked the prompt (${blockReason})${said}`,
    });
  }
  return value as GeminiGenerateContentResponse;
}

export function toStart(
  response: GeminiGenerateContentResponse,
  options: TranslateOptions,
): ChatStart {
  return makeMessage(ChatStartSchema, {
    id: nonEmpty(response.responseId) ?? options.fallbackId,
    created: BigInt(Math.trunc(options.now)),
    upstreamModel: reportedModel(response.modelVersion) ?? options.model,
    provider: options.provider,
  });
}

/** 48 random bits in hex: a choice's synthetic call ids, unique across turns. */
function callNonce(): string {
  return randomBytes(6).toString("hex");
}

/**
 * One candidate (a whole one, or one event's share of it) as a choice delta. Text parts become
 * content, thought parts reasoning, and each `functionCall` part one whole tool call: Gemini
 * never splits a call across events. A call without an id (Gemini gives none unless asked, and
 * models without thinking sign none) gets `call_{nonce}_{n}`, the nonce random per choice: the
 * ids of one turn's calls must not come back in the next turn's, since a conversation that moves
 * to Anthropic is refused for repeated `tool_use` ids, and clients key tool results by id.
 * Throws a `Failure` for a finish reason that says the turn failed (see finishReason).
 */
export function candidateDelta(
  candidate: Record<string, unknown>,
  position: number,
  choices: Map<number, ChoiceState>,
  options: Pick<TranslateOptions, "provider" | "oneToolCall">,
): ChoiceDelta {
  const oneToolCall = options.oneToolCall === true;
  const index = isCount(candidate.index) ? candidate.index : position;
  let choice = choices.get(index);
  if (choice === undefined) {
    choice = { started: false, toolCalls: 0, finished: false };
    choices.set(index, choice);
  }
  const delta = makeMessage(ChoiceDeltaSchema, { index });
  if (!choice.started) {
    delta.role = Role.ASSISTANT;
    choice.started = true;
  }
  const content = isRecord(candidate.content) ? candidate.content : {};
  for (const part of records(content.parts)) {
    if (isRecord(part.functionCall)) {
      if (oneToolCall && choice.toolCalls > 0) continue;
      const call = part.functionCall;
      const n = choice.toolCalls;
      choice.toolCalls += 1;
      let id = nonEmpty(call.id);
      if (id === undefined) {
        choice.callNonce ??= callNonce();
        id = `call_${choice.callNonce}_${n}`;
      }
      const signature = nonEmpty(part.thoughtSignature);
      delta.toolCalls.push(
        makeMessage(ToolCallDeltaSchema, {
          index: n,
          // The call's thought signature rides in its id, for the next step (tool-call-ids.ts).
          id: signature === undefined ? id : withThoughtSignature(id, signature),
          name: typeof call.name === "string" ? call.name : "",
          arguments: JSON.stringify(isRecord(call.args) ? call.args : {}),
        }),
      );
    } else if (typeof part.text === "string" && part.text !== "") {
      // A part holding only a thought signature has empty text: nothing to show.
      if (part.thought === true) delta.reasoning = (delta.reasoning ?? "") + part.text;
      else delta.content = (delta.content ?? "") + part.text;
    }
  }
  const raw = candidate.finishReason;
  if (typeof raw === "string" && raw !== "" && raw !== "FINISH_REASON_UNSPECIFIED") {
    delta.finishReason = finishReason(raw, choice.toolCalls > 0, options.provider);
    delta.rawFinishReason = raw;
    choice.finished = true;
  }
  return delta;
}

/** True when a delta tells the client something. */
export function isEmptyDelta(delta: ChoiceDelta): boolean {
  return (
    delta.role === Role.UNSPECIFIED &&
    delta.content === undefined &&
    delta.reasoning === undefined &&
    delta.toolCalls.length === 0 &&
    delta.finishReason === FinishReason.UNSPECIFIED
  );
}

/**
 * Gemini's reasons for a candidate its filters stopped (LANGUAGE: "flagged for using an
 * unsupported language"; MODEL_ARMOR: Vertex AI's Model Armor), all OpenAI's `content_filter`
 * and Anthropic's `refusal`.
 */
const CONTENT_FILTERS = new Set([
  "SAFETY",
  "RECITATION",
  "LANGUAGE",
  "BLOCKLIST",
  "PROHIBITED_CONTENT",
  "SPII",
  "IMAGE_SAFETY",
  "IMAGE_PROHIBITED_CONTENT",
  "IMAGE_RECITATION",
  "MODEL_ARMOR",
]);

/**
 * Gemini's reasons for a turn that failed: what the model made is no answer, or it stopped for a
 * reason Gemini does not name. Each with what it means, for the error's message.
 */
const FAILED_TURNS: ReadonlyMap<string, string> = new Map([
  ["MALFORMED_FUNCTION_CALL", "the function call the model generated could not be parsed"],
  ["UNEXPECTED_TOOL_CALL", "the model called a tool the request did not offer"],
  ["TOO_MANY_TOOL_CALLS", "the model called tools too many times in a row"],
  ["MALFORMED_RESPONSE", "the model's response was malformed"],
  ["NO_IMAGE", "the model was to generate an image and did not"],
  ["IMAGE_OTHER", "the image generation stopped for a reason Gemini does not name"],
  ["OTHER", "the model stopped for a reason Gemini does not name"],
]);

/**
 * The canonical finish reason of Gemini's word. Gemini says STOP after function calls too; the
 * canonical model tells that apart.
 *
 * A turn that failed (FAILED_TURNS, and a word this gateway does not know yet) throws a 502
 * `upstream_error` in the client API's format, with Gemini's word as its code, rather than end
 * with a finish reason: OpenAI's and Anthropic's reasons have none for it, and each they have
 * would pass the turn off as finished (`stop`, `end_turn`), cut by a limit (`length`) or as
 * calling tools it did not call (`tool_calls`, `tool_use`). OpenAI's own API fails so ("The model
 * produced invalid content", a 500) when its model's output cannot be parsed. It fails also when
 * text came first: that text narrates a call that was never made. A streaming client has that
 * text, then the error event, as for any answer cut short. Not retried nor charged to the
 * target's health (not `retryable`): the model's answer to this request says nothing of the
 * deployment, and one client's request must not open a breaker for all; the openai and Anthropic
 * SDKs retry a 5xx on their own, which asks for a new answer.
 *
 * MISSING_THOUGHT_SIGNATURE is the request's fault, a 400: a function call in the conversation
 * lacks the signature Gemini gave it (the gateway sends each back in the call's id, and Google's
 * stand-in for calls Gemini did not make; see to-request.ts).
 */
export function finishReason(raw: string, calledTools: boolean, provider: string): FinishReason {
  if (raw === "STOP") return calledTools ? FinishReason.TOOL_CALLS : FinishReason.STOP;
  if (raw === "MAX_TOKENS") return FinishReason.LENGTH;
  if (CONTENT_FILTERS.has(raw)) return FinishReason.CONTENT_FILTER;
  if (raw === "MISSING_THOUGHT_SIGNATURE") {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      code: raw,
      param: "messages",
      provider,
      message: `provider ${provider} refused the conversation (${raw}): a function call in it lacks the thought signature Gemini gave it; send tool calls back with the ids they came with`,
    });
  }
  const meaning =
    FAILED_TURNS.get(raw) ?? "Gemini ended the answer with a reason this gateway does not know";
  throw new Failure({
    status: 502,
    kind: "upstream_error",
    code: raw,
    provider,
    message: `provider ${provider}'s answer failed (${raw}): ${meaning}`,
  });
}

/**
 * Gemini's usage in the canonical (OpenAI) convention: thoughts count as completion tokens and
 * are also reported as reasoning tokens; tool-use prompt tokens (results of built-in tools) count
 * as prompt tokens, as Google bills them. `promptTokenCount` already includes cached tokens.
 */
export function toUsage(metadata: unknown): Usage | undefined {
  if (!isRecord(metadata)) return undefined;
  const prompt = count(metadata.promptTokenCount) + count(metadata.toolUsePromptTokenCount);
  const completion = count(metadata.candidatesTokenCount) + count(metadata.thoughtsTokenCount);
  const usage = makeMessage(UsageSchema, {
    promptTokens: prompt,
    completionTokens: completion,
    totalTokens: isCount(metadata.totalTokenCount) ? metadata.totalTokenCount : prompt + completion,
  });
  if (isCount(metadata.cachedContentTokenCount)) {
    usage.cachedPromptTokens = metadata.cachedContentTokenCount;
  }
  if (isCount(metadata.thoughtsTokenCount)) usage.reasoningTokens = metadata.thoughtsTokenCount;
  return usage;
}

// ---- Errors ------------------------------------------------------------------------------------

/** What Google's error envelope says, as far as the gateway cares. */
export interface GoogleError {
  code?: number;
  message: string;
  /** The google.rpc.Code name, e.g. "RESOURCE_EXHAUSTED". */
  status?: string;
  /** google.rpc.ErrorInfo `reason`, e.g. "API_KEY_INVALID". */
  reason?: string;
  /** google.rpc.RetryInfo `retryDelay`, in milliseconds. */
  retryDelayMs?: number;
}

export function googleErrorOf(value: unknown): GoogleError | undefined {
  if (!isRecord(value) || !isRecord(value.error)) return undefined;
  const error = value.error;
  if (typeof error.message !== "string") return undefined;
  const out: GoogleError = { message: error.message };
  if (isCount(error.code)) out.code = error.code;
  if (typeof error.status === "string" && error.status !== "") out.status = error.status;
  for (const detail of records(error.details)) {
    const type = typeof detail["@type"] === "string" ? detail["@type"] : "";
    if (type.endsWith("google.rpc.ErrorInfo") && typeof detail.reason === "string") {
      out.reason = detail.reason;
    } else if (type.endsWith("google.rpc.RetryInfo")) {
      const delay = durationMs(detail.retryDelay);
      if (delay !== undefined) out.retryDelayMs = delay;
    }
  }
  return out;
}

/** A google.protobuf.Duration in JSON ("43s", "0.250s") as milliseconds. */
export function durationMs(value: unknown): number | undefined {
  if (typeof value !== "string") return undefined;
  const match = /^(\d+(?:\.\d+)?)s$/.exec(value.trim());
  if (match?.[1] === undefined) return undefined;
  return Math.min(Math.round(Number(match[1]) * 1000), 0xffffffff);
}

const AUTH_REASONS = new Set([
  "API_KEY_INVALID",
  "API_KEY_SERVICE_BLOCKED",
  "API_KEY_HTTP_REFERRER_BLOCKED",
]);

/**
 * Maps a Gemini HTTP error (or an error event mid-stream, with its `code` as the status) to a
 * `Failure`, as `failureFromResponse` does for every provider, with what Google's envelope adds:
 * the google.rpc status name as the code, RetryInfo as the retry delay (Gemini sends no
 * Retry-After header), and two 400s that are not the client's fault — a bad API key and a
 * FAILED_PRECONDITION (region or billing of the gateway's account), which another target may not
 * have.
 */
export function failureFromGoogle(
  provider: string,
  status: number,
  headers: IncomingHttpHeaders,
  bodyText: string,
  options: { model?: string; secrets?: readonly string[] } = {},
): Failure {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bodyText);
  } catch {
    parsed = undefined;
  }
  const google = googleErrorOf(parsed);
  if (google === undefined)
    return failureFromResponse(provider, status, headers, bodyText, options);
  const code = google.status ?? google.reason;
  const common = { upstreamStatus: status, provider, ...(code !== undefined && { code }) };
  if (google.reason !== undefined && AUTH_REASONS.has(google.reason)) {
    // Like 401/403 elsewhere: the gateway's key is wrong, and Google's text says nothing more.
    return new Failure({
      ...common,
      code: google.reason,
      status: 502,
      kind: "auth",
      retryable: true,
      message: `provider ${provider} rejected the gateway's credentials (${status} ${google.reason})`,
    });
  }
  const said = scrubSecrets(google.message, options.secrets ?? []);
  if (status === 400 && google.status === "FAILED_PRECONDITION") {
    return new Failure({
      ...common,
      status: 502,
      kind: "upstream_error",
      retryable: true,
      message: `provider ${provider} cannot serve the gateway's account (400 FAILED_PRECONDITION): ${said}`,
    });
  }
  const withDelay =
    google.retryDelayMs !== undefined && retryAfterMs(headers) === undefined
      ? { ...headers, "retry-after-ms": String(google.retryDelayMs) }
      : headers;
  // The shape `failureFromResponse` reads, with the status name rather than the number as code.
  const normalized = JSON.stringify({ error: { message: google.message, code } });
  return failureFromResponse(provider, status, withDelay, normalized, options);
}

function malformed(options: TranslateOptions, what: "answer" | "stream", why: string): Failure {
  return new Failure({
    status: 502,
    kind: "upstream_error",
    retryable: true,
    provider: options.provider,
    message: `${what} from provider ${options.provider} was malformed: ${why}`,
  });
}

// ---- Helpers -----------------------------------------------------------------------------------

/** The object entries of what should be an array of objects; anything else counts as empty. */
export function records(value: unknown): Record<string, unknown>[] {
  return Array.isArray(value) ? value.filter(isRecord) : [];
}

export function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 0xffffffff;
}

function count(value: unknown): number {
  return isCount(value) ? value : 0;
}

function nonEmpty(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}
