import {
  type ChatChunk,
  ChatChunkSchema,
  type ChatCompletion,
  ChatCompletionSchema,
  type ChatStart,
  type Choice,
  type ChoiceDelta,
  ChoiceDeltaSchema,
  ChoiceSchema,
  FinishReason,
  MessageSchema,
  type ReasoningBlock,
  Role,
  type ToolCall,
  ToolCallDeltaSchema,
  ToolCallSchema,
  type Usage,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { makeMessage } from "../hop/codec.js";

interface ToolCallParts {
  index: number;
  id: string;
  name: string;
  arguments: string[];
}

interface ChoiceParts {
  index: number;
  role: Role;
  content: string[];
  reasoning: string[];
  refusal: string[];
  /** Whole reasoning blocks, in the order they completed. */
  reasoningBlocks: ReasoningBlock[];
  toolCalls: Map<number, ToolCallParts>;
  finishReason: FinishReason;
  rawFinishReason: string | undefined;
  stopSequence: string | undefined;
  /** The tokens' log probabilities so far (OpenAI's `content` and `refusal` lists), if any came. */
  logprobs: { content: unknown[]; refusal: unknown[] } | undefined;
}

/**
 * Folds the chunks of one answer into the whole answer, e.g. to answer a non-streaming client
 * from a streamed upstream (`build()`), or into one chunk that stands for all of them (`chunk()`,
 * so a held answer crosses an internal hop as one message). Text fragments are kept in arrays and
 * joined once at the end, so a long answer costs one concatenation, not one per token.
 */
export class CompletionBuilder {
  #start: ChatStart | undefined;
  #usage: Usage | undefined;
  readonly #choices = new Map<number, ChoiceParts>();
  #chars = 0;

  /** Characters of answer added so far (text, reasoning, refusals, tool-call arguments). */
  get chars(): number {
    return this.#chars;
  }

  add(chunk: ChatChunk): void {
    if (chunk.start !== undefined && this.#start === undefined) this.#start = chunk.start;
    if (chunk.usage !== undefined) this.#usage = chunk.usage;
    for (const delta of chunk.choices) {
      let choice = this.#choices.get(delta.index);
      if (choice === undefined) {
        choice = {
          index: delta.index,
          role: delta.role,
          content: [],
          reasoning: [],
          refusal: [],
          reasoningBlocks: [],
          toolCalls: new Map(),
          finishReason: FinishReason.UNSPECIFIED,
          rawFinishReason: undefined,
          stopSequence: undefined,
          logprobs: undefined,
        };
        this.#choices.set(delta.index, choice);
      } else if (choice.role === Role.UNSPECIFIED) {
        choice.role = delta.role;
      }
      if (delta.content) {
        choice.content.push(delta.content);
        this.#chars += delta.content.length;
      }
      if (delta.reasoning) {
        choice.reasoning.push(delta.reasoning);
        this.#chars += delta.reasoning.length;
      }
      if (delta.refusal) {
        choice.refusal.push(delta.refusal);
        this.#chars += delta.refusal.length;
      }
      if (delta.reasoningBlocks.length > 0) choice.reasoningBlocks.push(...delta.reasoningBlocks);
      for (const fragment of delta.toolCalls) {
        let call = choice.toolCalls.get(fragment.index);
        if (call === undefined) {
          call = { index: fragment.index, id: "", name: "", arguments: [] };
          choice.toolCalls.set(fragment.index, call);
        }
        if (fragment.id && call.id === "") call.id = fragment.id;
        if (fragment.name && call.name === "") call.name = fragment.name;
        if (fragment.arguments) {
          call.arguments.push(fragment.arguments);
          this.#chars += fragment.arguments.length;
        }
      }
      if (delta.finishReason !== FinishReason.UNSPECIFIED) {
        choice.finishReason = delta.finishReason;
        choice.rawFinishReason = delta.rawFinishReason;
      } else if (delta.rawFinishReason !== undefined) {
        choice.rawFinishReason = delta.rawFinishReason;
      }
      if (delta.stopSequence !== undefined) choice.stopSequence = delta.stopSequence;
      if (delta.logprobsJson !== undefined) addLogprobs(choice, delta.logprobsJson);
    }
  }

  /** Whether nothing was added yet. */
  get empty(): boolean {
    return this.#start === undefined && this.#usage === undefined && this.#choices.size === 0;
  }

  /**
   * The chunks added so far as one chunk: aggregating it gives what aggregating them gives. Each
   * choice's text is one fragment, each tool call one fragment with its whole arguments.
   */
  chunk(): ChatChunk {
    return makeMessage(ChatChunkSchema, {
      start: this.#start,
      choices: this.#sortedChoices().map(mergedDelta),
      usage: this.#usage,
    });
  }

  #sortedChoices(): ChoiceParts[] {
    const choices = [...this.#choices.values()];
    return choices.length > 1 ? choices.sort((a, b) => a.index - b.index) : choices;
  }

  build(): ChatCompletion {
    const start = this.#start;
    const choices = this.#sortedChoices().map(buildChoice);
    return makeMessage(ChatCompletionSchema, {
      id: start?.id ?? "",
      created: start?.created ?? 0n,
      upstreamModel: start?.upstreamModel ?? "",
      provider: start?.provider ?? "",
      attempts: start?.attempts ?? 0,
      systemFingerprint: start?.systemFingerprint,
      choices,
      usage: this.#usage,
    });
  }
}

function mergedDelta(parts: ChoiceParts): ChoiceDelta {
  return makeMessage(ChoiceDeltaSchema, {
    index: parts.index,
    role: parts.role,
    content: parts.content.length > 0 ? parts.content.join("") : undefined,
    reasoning: parts.reasoning.length > 0 ? parts.reasoning.join("") : undefined,
    refusal: parts.refusal.length > 0 ? parts.refusal.join("") : undefined,
    reasoningBlocks: parts.reasoningBlocks,
    toolCalls: sortedCalls(parts).map((c) =>
      makeMessage(ToolCallDeltaSchema, {
        index: c.index,
        id: c.id === "" ? undefined : c.id,
        name: c.name === "" ? undefined : c.name,
        arguments: c.arguments.length > 0 ? c.arguments.join("") : undefined,
      }),
    ),
    finishReason: parts.finishReason,
    rawFinishReason: parts.rawFinishReason,
    stopSequence: parts.stopSequence,
    logprobsJson: logprobsJson(parts),
  });
}

/** One chunk's log probabilities, appended to the answer's (OpenAI lists them per token). */
function addLogprobs(parts: ChoiceParts, json: string): void {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return;
  }
  if (typeof value !== "object" || value === null) return;
  const { content, refusal } = value as { content?: unknown; refusal?: unknown };
  parts.logprobs ??= { content: [], refusal: [] };
  if (Array.isArray(content)) parts.logprobs.content.push(...content);
  if (Array.isArray(refusal)) parts.logprobs.refusal.push(...refusal);
}

function logprobsJson(parts: ChoiceParts): string | undefined {
  const l = parts.logprobs;
  if (l === undefined) return undefined;
  return JSON.stringify({
    content: l.content.length > 0 ? l.content : null,
    refusal: l.refusal.length > 0 ? l.refusal : null,
  });
}

function sortedCalls(parts: ChoiceParts): ToolCallParts[] {
  return [...parts.toolCalls.values()].sort((a, b) => a.index - b.index);
}

function buildChoice(parts: ChoiceParts): Choice {
  const text = parts.content.join("");
  const toolCalls: ToolCall[] = sortedCalls(parts).map((c) =>
    makeMessage(ToolCallSchema, { id: c.id, name: c.name, arguments: c.arguments.join("") }),
  );
  return makeMessage(ChoiceSchema, {
    index: parts.index,
    message: makeMessage(MessageSchema, {
      role: Role.ASSISTANT,
      content: text === "" ? [] : [{ part: { case: "text", value: text } }],
      contentIsText: true,
      toolCalls,
      refusal: parts.refusal.length > 0 ? parts.refusal.join("") : undefined,
      reasoningBlocks: parts.reasoningBlocks,
    }),
    finishReason: parts.finishReason,
    rawFinishReason: parts.rawFinishReason,
    stopSequence: parts.stopSequence,
    logprobsJson: logprobsJson(parts),
    reasoning: parts.reasoning.length > 0 ? parts.reasoning.join("") : undefined,
  });
}

/** The whole answer that a sequence of chunks adds up to. */
export function aggregate(chunks: Iterable<ChatChunk>): ChatCompletion {
  const builder = new CompletionBuilder();
  for (const chunk of chunks) builder.add(chunk);
  return builder.build();
}
