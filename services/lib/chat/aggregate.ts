import {
  type AnthropicBlock,
  type ChatChunk,
  ChatChunkSchema,
  type ChatCompletion,
  ChatCompletionSchema,
  type ChatStart,
  type Choice,
  type ChoiceDelta,
  ChoiceDeltaSchema,
  ChoiceSchema,
  type ContentPart,
  ContentPartSchema,
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
  /** The upstream's index of the call's block, when its answer is numbered blocks. */
  blockIndex: number | undefined;
}

/** One text block of an upstream whose answers are numbered blocks (Anthropic). */
interface TextBlockParts {
  index: number;
  text: string[];
  citations: unknown[];
}

interface ChoiceParts {
  index: number;
  role: Role;
  /** Text without a block index (one block, or upstreams without blocks). */
  content: string[];
  /** Text by the upstream's block index, when there is one; created on the first. */
  textBlocks: Map<number, TextBlockParts> | undefined;
  reasoning: string[];
  refusal: string[];
  /** Whole reasoning blocks, in the order they completed. */
  reasoningBlocks: ReasoningBlock[];
  toolCalls: Map<number, ToolCallParts>;
  /** Blocks only Anthropic's API has, in the order they completed. */
  anthropicBlocks: AnthropicBlock[];
  finishReason: FinishReason;
  rawFinishReason: string | undefined;
  stopSequence: string | undefined;
  /** The container Anthropic ran code in (see ChoiceDelta.anthropic_container_json). */
  container: string | undefined;
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
          textBlocks: undefined,
          reasoning: [],
          refusal: [],
          reasoningBlocks: [],
          toolCalls: new Map(),
          anthropicBlocks: [],
          finishReason: FinishReason.UNSPECIFIED,
          rawFinishReason: undefined,
          stopSequence: undefined,
          container: undefined,
          logprobs: undefined,
        };
        this.#choices.set(delta.index, choice);
      } else if (choice.role === Role.UNSPECIFIED) {
        choice.role = delta.role;
      }
      if (delta.content) {
        if (delta.blockIndex === undefined) choice.content.push(delta.content);
        else textBlock(choice, delta.blockIndex).text.push(delta.content);
        this.#chars += delta.content.length;
      }
      if (delta.citationsJson !== undefined && delta.blockIndex !== undefined) {
        addCitations(textBlock(choice, delta.blockIndex), delta.citationsJson);
        this.#chars += delta.citationsJson.length;
      }
      if (delta.anthropicBlock !== undefined) {
        choice.anthropicBlocks.push(delta.anthropicBlock);
        this.#chars += delta.anthropicBlock.json.length;
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
          call = {
            index: fragment.index,
            id: "",
            name: "",
            arguments: [],
            blockIndex: undefined,
          };
          choice.toolCalls.set(fragment.index, call);
        }
        call.blockIndex ??= fragment.blockIndex;
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
      if (delta.anthropicContainerJson !== undefined) {
        choice.container = delta.anthropicContainerJson;
      }
      if (delta.logprobsJson !== undefined) addLogprobs(choice, delta.logprobsJson);
    }
  }

  /** Whether nothing was added yet. */
  get empty(): boolean {
    return this.#start === undefined && this.#usage === undefined && this.#choices.size === 0;
  }

  /**
   * The chunks added so far as one chunk: aggregating it gives what aggregating them gives. Each
   * choice's text is one fragment, each tool call one fragment with its whole arguments. A
   * choice whose text came in numbered blocks has a delta of its own for each further text
   * block and each Anthropic block (a delta holds one of either).
   */
  chunk(): ChatChunk {
    return makeMessage(ChatChunkSchema, {
      start: this.#start,
      choices: this.#sortedChoices().flatMap(mergedDeltas),
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

/** A choice's deltas for `chunk()`: its own, then one per further text block and Anthropic block. */
function mergedDeltas(parts: ChoiceParts): ChoiceDelta[] {
  const blocks = sortedTextBlocks(parts);
  // The choice's own delta holds its unnumbered text, or else its first text block.
  const first = parts.content.length === 0 ? blocks.shift() : undefined;
  const own = makeMessage(ChoiceDeltaSchema, {
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
        blockIndex: c.blockIndex,
      }),
    ),
    finishReason: parts.finishReason,
    rawFinishReason: parts.rawFinishReason,
    stopSequence: parts.stopSequence,
    anthropicContainerJson: parts.container,
    logprobsJson: logprobsJson(parts),
  });
  if (first !== undefined) setTextBlock(own, first);
  const out = [own];
  for (const block of blocks) {
    out.push(setTextBlock(makeMessage(ChoiceDeltaSchema, { index: parts.index }), block));
  }
  for (const anthropicBlock of parts.anthropicBlocks) {
    out.push(makeMessage(ChoiceDeltaSchema, { index: parts.index, anthropicBlock }));
  }
  return out;
}

function setTextBlock(delta: ChoiceDelta, block: TextBlockParts): ChoiceDelta {
  delta.content = block.text.join("");
  delta.blockIndex = block.index;
  if (block.citations.length > 0) delta.citationsJson = JSON.stringify(block.citations);
  return delta;
}

function textBlock(parts: ChoiceParts, index: number): TextBlockParts {
  parts.textBlocks ??= new Map();
  let block = parts.textBlocks.get(index);
  if (block === undefined) {
    block = { index, text: [], citations: [] };
    parts.textBlocks.set(index, block);
  }
  return block;
}

/** A text block's citations so far, and those of a delta (a JSON array). */
function addCitations(block: TextBlockParts, json: string): void {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return;
  }
  if (Array.isArray(value)) block.citations.push(...value);
}

function sortedTextBlocks(parts: ChoiceParts): TextBlockParts[] {
  return [...(parts.textBlocks?.values() ?? [])].sort((a, b) => a.index - b.index);
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
  const content: ContentPart[] =
    text === "" ? [] : [makeMessage(ContentPartSchema, { part: { case: "text", value: text } })];
  // Numbered text blocks stay apart, each in its place, with its own citations.
  for (const block of sortedTextBlocks(parts)) {
    content.push(
      makeMessage(ContentPartSchema, {
        part: { case: "text", value: block.text.join("") },
        blockIndex: block.index,
        citationsJson: block.citations.length > 0 ? JSON.stringify(block.citations) : "",
      }),
    );
  }
  const toolCalls: ToolCall[] = sortedCalls(parts).map((c) =>
    makeMessage(ToolCallSchema, {
      id: c.id,
      name: c.name,
      arguments: c.arguments.join(""),
      blockIndex: c.blockIndex,
    }),
  );
  return makeMessage(ChoiceSchema, {
    index: parts.index,
    message: makeMessage(MessageSchema, {
      role: Role.ASSISTANT,
      content,
      contentIsText: parts.textBlocks === undefined,
      toolCalls,
      refusal: parts.refusal.length > 0 ? parts.refusal.join("") : undefined,
      reasoningBlocks: parts.reasoningBlocks,
      anthropicBlocks: parts.anthropicBlocks,
    }),
    finishReason: parts.finishReason,
    rawFinishReason: parts.rawFinishReason,
    stopSequence: parts.stopSequence,
    anthropicContainerJson: parts.container,
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
