import {
  type ChatChunk,
  ChatChunkSchema,
  type ChoiceDelta,
  FinishReason,
  Role,
  type ToolCallDelta,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { newChatChunk, newChoiceDelta, newToolCallDelta } from "../../../lib/chat/messages.js";
import { makeMessage } from "../../../lib/hop/codec.js";
import type { OpenAIChatChunk } from "../../../lib/wire/openai.js";
import { isRecord } from "../json-object.js";
import {
  isCount,
  reasoningOf,
  records,
  setFinish,
  setText,
  toStart,
  toUsage,
} from "./from-response.js";

/**
 * One upstream stream chunk as one canonical chunk. `first` marks the first chunk of the answer,
 * which also carries `start`. Fields the upstream left out stay undefined, so an empty `content`
 * is told apart from no content. The usage-only chunk at the end (no choices) becomes a chunk
 * holding only usage.
 *
 * This runs for every token of every answer, so its messages are literals (../../../lib/chat/
 * messages.ts) filled in field by field: cheaper still than makeMessage(schema, init), which
 * reads the init object field by field.
 */
export function fromOpenAIChunk(
  chunk: OpenAIChatChunk,
  provider: string,
  first: boolean,
): ChatChunk {
  const out = newChatChunk();
  const choices = records(chunk.choices);
  for (let i = 0; i < choices.length; i++) {
    const choice = choices[i] as Record<string, unknown>;
    const delta = isRecord(choice.delta) ? choice.delta : {};
    const canonical = newChoiceDelta(isCount(choice.index) ? choice.index : i);
    if (delta.role === "assistant") canonical.role = Role.ASSISTANT;
    setText(canonical, "content", delta.content);
    setText(canonical, "refusal", delta.refusal);
    setText(canonical, "reasoning", reasoningOf(delta));
    if (delta.tool_calls !== undefined) canonical.toolCalls = toolCallDeltas(delta.tool_calls);
    setFinish(canonical, choice.finish_reason);
    if (isRecord(choice.logprobs)) canonical.logprobsJson = JSON.stringify(choice.logprobs);
    out.choices.push(canonical);
  }
  if (first) out.start = toStart(chunk, provider);
  const usage = toUsage(chunk.usage);
  if (usage !== undefined) out.usage = usage;
  return out;
}

function toolCallDeltas(calls: unknown): ToolCallDelta[] {
  return records(calls).map((call, position) => {
    const fragment = newToolCallDelta(isCount(call.index) ? call.index : position);
    const fn = isRecord(call.function) ? call.function : {};
    if (typeof call.id === "string") fragment.id = call.id;
    if (typeof fn.name === "string") fragment.name = fn.name;
    if (typeof fn.arguments === "string") fragment.arguments = fn.arguments;
    return fragment;
  });
}

/**
 * Tool-call indexes as a client can trust them. OpenAI numbers a choice's parallel calls 0, 1, 2
 * and sends each call's id on its first fragment; some servers give every call index 0 (Ollama)
 * or none at all, so the fragments of two calls would run together. A fragment that brings a new
 * id to an index already in use starts a new call, at the next free index; a fragment without an
 * id continues the call last started at its index.
 */
class ToolCallIndexes {
  /** Upstream index → the id of the call last started there, and that call's index here. */
  readonly #at = new Map<number, { id: string | undefined; index: number }>();
  readonly #used = new Set<number>();

  of(fragment: ToolCallDelta): number {
    const upstream = fragment.index;
    const seen = this.#at.get(upstream);
    if (seen !== undefined && (fragment.id === undefined || fragment.id === seen.id)) {
      return seen.index;
    }
    if (seen !== undefined && seen.id === undefined) {
      // The call's id came after its first fragment: still the same call.
      seen.id = fragment.id;
      return seen.index;
    }
    let index = upstream;
    while (this.#used.has(index)) index++;
    this.#used.add(index);
    this.#at.set(upstream, { id: fragment.id, index });
    return index;
  }
}

/** A chunk with nothing for the client (e.g. a keep-alive or filter-results-only chunk). */
export function isEmptyChunk(chunk: ChatChunk): boolean {
  return chunk.start === undefined && chunk.choices.length === 0 && chunk.usage === undefined;
}

/** A choice delta that carries nothing (e.g. Azure's content-filter annotations alone). */
export function isEmptyDelta(delta: ChoiceDelta): boolean {
  return (
    delta.role === Role.UNSPECIFIED &&
    delta.content === undefined &&
    delta.reasoning === undefined &&
    delta.refusal === undefined &&
    delta.toolCalls.length === 0 &&
    delta.finishReason === FinishReason.UNSPECIFIED &&
    delta.rawFinishReason === undefined &&
    delta.logprobsJson === undefined
  );
}

export interface OpenAIStreamTranslator {
  /** The canonical chunk for one upstream chunk; undefined when it has nothing for the client. */
  push(chunk: OpenAIChatChunk): ChatChunk | undefined;
  /** At a clean end of the stream: a start-only chunk if no chunk carried the start yet. */
  end(): ChatChunk | undefined;
  /** Whether every choice so far (and at least one) came with its finish reason. */
  finished(): boolean;
}

/**
 * The state of one streamed answer. The start (id, created, model) is taken from the first chunk
 * that carries choices or usage: Azure opens its streams with a prompt-filter-results chunk whose
 * id and model are empty and whose `created` is 0.
 */
export function createOpenAIStreamTranslator(provider: string): OpenAIStreamTranslator {
  let started = false;
  let idleHead: OpenAIChatChunk | undefined;
  /** Per choice, the tool calls seen so far (see ToolCallIndexes). */
  let toolCalls: Map<number, ToolCallIndexes> | undefined;
  /** The choices seen, and those of them that finished. */
  const choices = new Set<number>();
  const finished = new Set<number>();
  return {
    push(chunk) {
      const out = fromOpenAIChunk(chunk, provider, !started);
      out.choices = out.choices.filter((delta) => !isEmptyDelta(delta));
      for (const delta of out.choices) {
        choices.add(delta.index);
        if (delta.finishReason !== FinishReason.UNSPECIFIED) finished.add(delta.index);
        if (delta.toolCalls.length === 0) continue;
        toolCalls ??= new Map();
        let indexes = toolCalls.get(delta.index);
        if (indexes === undefined) {
          indexes = new ToolCallIndexes();
          toolCalls.set(delta.index, indexes);
        }
        for (const fragment of delta.toolCalls) fragment.index = indexes.of(fragment);
      }
      if (out.choices.length === 0 && out.usage === undefined) {
        idleHead ??= chunk;
        return undefined;
      }
      started = true;
      return out;
    },
    finished: () => choices.size > 0 && finished.size === choices.size,
    end() {
      if (started || idleHead === undefined) return undefined;
      started = true;
      return makeMessage(ChatChunkSchema, { start: toStart(idleHead, provider) });
    },
  };
}
