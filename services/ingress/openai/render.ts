import {
  type ChatChunk,
  type ChatCompletion,
  type ChatStart,
  type Choice,
  type ChoiceDelta,
  FinishReason,
  type ReasoningBlock,
  Role,
  type ToolCallDelta,
  type Usage,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import type { Failure } from "../../lib/errors.js";
import { newUuid } from "../../lib/ids.js";
import type {
  OpenAIChatChunk,
  OpenAIChatCompletion,
  OpenAIThinkingBlock,
  OpenAIToolCallDelta,
  OpenAIUsage,
} from "../../lib/wire/openai.js";
import { openAIError } from "./errors.js";

type CompletionChoice = OpenAIChatCompletion["choices"][number];
type ChunkChoice = OpenAIChatChunk["choices"][number];
type ChunkDelta = ChunkChoice["delta"];

const OPENAI_FINISH_REASONS: ReadonlySet<string> = new Set([
  "stop",
  "length",
  "tool_calls",
  "content_filter",
  "function_call",
]);

/**
 * The `finish_reason` an OpenAI client sees. The upstream's own word is kept when it is one an
 * OpenAI client knows (so an OpenAI-compatible upstream passes through unchanged) or when the
 * canonical enum could not name it; another dialect's word (Anthropic "end_turn", Gemini
 * "MAX_TOKENS") is mapped, since OpenAI clients branch on these values.
 */
export function openAIFinishReason(reason: FinishReason, raw: string | undefined): string | null {
  if (raw !== undefined && raw !== "") {
    if (OPENAI_FINISH_REASONS.has(raw) || reason === FinishReason.OTHER) return raw;
  }
  switch (reason) {
    case FinishReason.UNSPECIFIED:
      return null;
    case FinishReason.LENGTH:
      return "length";
    case FinishReason.TOOL_CALLS:
      return "tool_calls";
    case FinishReason.CONTENT_FILTER:
      return "content_filter";
    default:
      return "stop";
  }
}

/** OpenAI's usage object, plus what it cost (clients and SDKs ignore fields they do not know). */
export type UsageWithCost = OpenAIUsage & { cost_usd?: number };

export function renderUsage(u: Usage): UsageWithCost {
  const out: UsageWithCost = {
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.totalTokens || u.promptTokens + u.completionTokens,
  };
  if (u.cachedPromptTokens !== undefined) {
    out.prompt_tokens_details = { cached_tokens: u.cachedPromptTokens };
  }
  if (u.reasoningTokens !== undefined) {
    out.completion_tokens_details = { reasoning_tokens: u.reasoningTokens };
  }
  if (u.costUsd !== undefined) out.cost_usd = u.costUsd;
  return out;
}

/** The body of a non-streamed `POST /v1/chat/completions` answer. */
export function renderCompletion(c: ChatCompletion, publicModel: string): OpenAIChatCompletion {
  const out: OpenAIChatCompletion = {
    id: c.id,
    object: "chat.completion",
    created: Number(c.created),
    // The model that really answered, as OpenAI reports the dated snapshot behind an alias.
    model: c.upstreamModel || publicModel,
    choices: c.choices.map(renderChoice),
  };
  if (c.usage !== undefined) out.usage = renderUsage(c.usage);
  if (c.systemFingerprint !== undefined) out.system_fingerprint = c.systemFingerprint;
  return out;
}

function renderChoice(choice: Choice): CompletionChoice {
  const message = choice.message;
  let text = "";
  for (const part of message?.content ?? []) {
    if (part.part.case === "text") text += part.part.value;
  }
  const toolCalls = message?.toolCalls ?? [];
  const refusal = message?.refusal ? message.refusal : null;
  // No text is `null` where OpenAI and Azure send null: beside tool calls or a refusal, and in
  // an answer a content filter stopped before any text. An answer that ended empty otherwise
  // (a reasoning model out of tokens) is "" there, and here.
  const nothingSaid =
    toolCalls.length > 0 || refusal !== null || choice.finishReason === FinishReason.CONTENT_FILTER;
  const rendered: CompletionChoice["message"] = {
    role: "assistant",
    content: text === "" && nothingSaid ? null : text,
    refusal,
  };
  if (toolCalls.length > 0) {
    rendered.tool_calls = toolCalls.map((t) => ({
      id: t.id,
      type: "function",
      function: { name: t.name, arguments: t.arguments },
    }));
  }
  if (choice.reasoning) rendered.reasoning_content = choice.reasoning;
  const blocks = message?.reasoningBlocks ?? [];
  if (blocks.length > 0) rendered.thinking_blocks = blocks.map(thinkingBlock);
  return {
    index: choice.index,
    message: rendered,
    logprobs: logprobsOf(choice.logprobsJson),
    finish_reason: openAIFinishReason(choice.finishReason, choice.rawFinishReason),
  };
}

export interface ChunkRendererOptions {
  /** OpenAI `stream_options.include_usage`. */
  includeUsage: boolean;
}

/**
 * Frames one answer's canonical chunks as OpenAI SSE events, one renderer per stream. The
 * envelope (id, created, model, fingerprint) never changes within a stream, so it is serialised
 * once and each token costs only the JSON of its choices.
 */
export class ChunkRenderer {
  readonly #includeUsage: boolean;
  readonly #suffix: string;
  #prefix: string | undefined;
  #pendingUsage: Usage | undefined;
  /** Choice indexes whose role has been announced; OpenAI sends it on each choice's first delta. */
  readonly #announced = new Set<number>();
  /** Each choice's thinking blocks so far (see #renderDelta). */
  #thinkingBlocks: Map<number, OpenAIThinkingBlock[]> | undefined;

  constructor(options: ChunkRendererOptions) {
    this.#includeUsage = options.includeUsage;
    // With include_usage OpenAI sends `"usage":null` on every chunk but the last.
    this.#suffix = options.includeUsage ? ',"usage":null}\n\n' : "}\n\n";
  }

  /** One `data:` frame for the chunk, or undefined when the client is owed nothing for it. */
  render(chunk: ChatChunk): string | undefined {
    const prefix = this.#envelope(chunk.start);
    if (chunk.choices.length === 0) {
      if (chunk.usage === undefined || !this.#includeUsage) return undefined;
      this.#pendingUsage = undefined;
      return `${prefix}[],"usage":${JSON.stringify(renderUsage(chunk.usage))}}\n\n`;
    }
    // Usage riding on a content chunk is held back: OpenAI clients expect it alone, last.
    if (chunk.usage !== undefined && this.#includeUsage) this.#pendingUsage = chunk.usage;
    const choices: ChunkChoice[] = [];
    for (const d of chunk.choices) choices.push(this.#renderDelta(d));
    return prefix + JSON.stringify(choices) + this.#suffix;
  }

  /** The usage-only frame still owed after the last chunk, if any. */
  finish(): string | undefined {
    const usage = this.#pendingUsage;
    if (usage === undefined || !this.#includeUsage) return undefined;
    this.#pendingUsage = undefined;
    return `${this.#envelope(undefined)}[],"usage":${JSON.stringify(renderUsage(usage))}}\n\n`;
  }

  done(): string {
    return "data: [DONE]\n\n";
  }

  /**
   * A failure after the stream began. The openai SDK throws an APIError for any data event whose
   * JSON has an `error` key (Stream.fromSSEResponse in node_modules/openai/src/core/streaming.ts),
   * so the client never mistakes a truncated answer for a complete one.
   */
  error(f: Failure): string {
    return `data: ${JSON.stringify(openAIError(f).body)}\n\n`;
  }

  #envelope(start: ChatStart | undefined): string {
    if (this.#prefix !== undefined) return this.#prefix;
    // A stream should open with `start`; if it did not, still give the client a usable envelope.
    const id = start?.id || `chatcmpl-${newUuid()}`;
    const created = start !== undefined ? Number(start.created) : Math.floor(Date.now() / 1000);
    let prefix = `data: {"id":${JSON.stringify(id)},"object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(start?.upstreamModel ?? "")}`;
    if (start?.systemFingerprint !== undefined) {
      prefix += `,"system_fingerprint":${JSON.stringify(start.systemFingerprint)}`;
    }
    this.#prefix = `${prefix},"choices":`;
    return this.#prefix;
  }

  /**
   * Every thinking block of the choice so far, the new ones last. A client that folds deltas
   * by overwriting fields it does not know (the openai SDK's stream helpers do) ends with all
   * of them; one that reads the frames takes the last list.
   */
  #blocksSoFar(d: ChoiceDelta): OpenAIThinkingBlock[] {
    this.#thinkingBlocks ??= new Map();
    let blocks = this.#thinkingBlocks.get(d.index);
    if (blocks === undefined) {
      blocks = [];
      this.#thinkingBlocks.set(d.index, blocks);
    }
    for (const block of d.reasoningBlocks) blocks.push(thinkingBlock(block));
    return [...blocks];
  }

  #renderDelta(d: ChoiceDelta): ChunkChoice {
    const delta: ChunkDelta = {};
    if (d.role === Role.ASSISTANT || !this.#announced.has(d.index)) {
      this.#announced.add(d.index);
      delta.role = "assistant";
    }
    if (d.content !== undefined) delta.content = d.content;
    if (d.reasoning !== undefined) delta.reasoning_content = d.reasoning;
    if (d.refusal !== undefined) delta.refusal = d.refusal;
    if (d.toolCalls.length > 0) delta.tool_calls = d.toolCalls.map(renderToolCallDelta);
    if (d.reasoningBlocks.length > 0) delta.thinking_blocks = this.#blocksSoFar(d);
    return {
      index: d.index,
      delta,
      logprobs: logprobsOf(d.logprobsJson),
      finish_reason: openAIFinishReason(d.finishReason, d.rawFinishReason),
    };
  }
}

/** The upstream's log probabilities, as it sent them; null when it sent none (OpenAI's own). */
function logprobsOf(json: string | undefined): unknown {
  return json === undefined ? null : JSON.parse(json);
}

/** A whole reasoning block, for the client to send back on its assistant message. */
function thinkingBlock(block: ReasoningBlock): OpenAIThinkingBlock {
  return block.redactedData !== ""
    ? { type: "redacted_thinking", data: block.redactedData }
    : { type: "thinking", thinking: block.text, signature: block.signature };
}

function renderToolCallDelta(t: ToolCallDelta): OpenAIToolCallDelta {
  if (t.id !== undefined) {
    // The opening fragment, shaped as OpenAI sends it: id, type, name and (possibly empty) args.
    const args = t.arguments ?? "";
    const fn = t.name !== undefined ? { name: t.name, arguments: args } : { arguments: args };
    return { index: t.index, id: t.id, type: "function", function: fn };
  }
  const out: OpenAIToolCallDelta = { index: t.index };
  if (t.name !== undefined || t.arguments !== undefined) {
    out.function = {};
    if (t.name !== undefined) out.function.name = t.name;
    if (t.arguments !== undefined) out.function.arguments = t.arguments;
  }
  return out;
}
