import { create } from "@bufbuild/protobuf";
import {
  type ChatChunk,
  type ChatCompletion,
  ChatCompletionSchema,
  type ChatStart,
  type Choice,
  ChoiceSchema,
  FinishReason,
  MessageSchema,
  Role,
  type ToolCall,
  ToolCallSchema,
  type Usage,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";

interface ToolCallParts {
  index: number;
  id: string;
  name: string;
  arguments: string[];
}

interface ChoiceParts {
  index: number;
  content: string[];
  reasoning: string[];
  refusal: string[];
  toolCalls: Map<number, ToolCallParts>;
  finishReason: FinishReason;
  rawFinishReason: string | undefined;
}

/**
 * Folds the chunks of one answer into the whole answer, e.g. to answer a non-streaming client
 * from a streamed upstream. Text fragments are kept in arrays and joined once in `build()`,
 * so a long answer costs one concatenation, not one per token.
 */
export class CompletionBuilder {
  #start: ChatStart | undefined;
  #usage: Usage | undefined;
  readonly #choices = new Map<number, ChoiceParts>();

  add(chunk: ChatChunk): void {
    if (chunk.start !== undefined && this.#start === undefined) this.#start = chunk.start;
    if (chunk.usage !== undefined) this.#usage = chunk.usage;
    for (const delta of chunk.choices) {
      let choice = this.#choices.get(delta.index);
      if (choice === undefined) {
        choice = {
          index: delta.index,
          content: [],
          reasoning: [],
          refusal: [],
          toolCalls: new Map(),
          finishReason: FinishReason.UNSPECIFIED,
          rawFinishReason: undefined,
        };
        this.#choices.set(delta.index, choice);
      }
      if (delta.content) choice.content.push(delta.content);
      if (delta.reasoning) choice.reasoning.push(delta.reasoning);
      if (delta.refusal) choice.refusal.push(delta.refusal);
      for (const fragment of delta.toolCalls) {
        let call = choice.toolCalls.get(fragment.index);
        if (call === undefined) {
          call = { index: fragment.index, id: "", name: "", arguments: [] };
          choice.toolCalls.set(fragment.index, call);
        }
        if (fragment.id && call.id === "") call.id = fragment.id;
        if (fragment.name && call.name === "") call.name = fragment.name;
        if (fragment.arguments) call.arguments.push(fragment.arguments);
      }
      if (delta.finishReason !== FinishReason.UNSPECIFIED) {
        choice.finishReason = delta.finishReason;
        choice.rawFinishReason = delta.rawFinishReason;
      } else if (delta.rawFinishReason !== undefined) {
        choice.rawFinishReason = delta.rawFinishReason;
      }
    }
  }

  build(): ChatCompletion {
    const start = this.#start;
    const choices = [...this.#choices.values()].sort((a, b) => a.index - b.index).map(buildChoice);
    return create(ChatCompletionSchema, {
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

function buildChoice(parts: ChoiceParts): Choice {
  const text = parts.content.join("");
  const toolCalls: ToolCall[] = [...parts.toolCalls.values()]
    .sort((a, b) => a.index - b.index)
    .map((c) =>
      create(ToolCallSchema, { id: c.id, name: c.name, arguments: c.arguments.join("") }),
    );
  return create(ChoiceSchema, {
    index: parts.index,
    message: create(MessageSchema, {
      role: Role.ASSISTANT,
      content: text === "" ? [] : [{ part: { case: "text", value: text } }],
      contentIsText: true,
      toolCalls,
      refusal: parts.refusal.length > 0 ? parts.refusal.join("") : undefined,
    }),
    finishReason: parts.finishReason,
    rawFinishReason: parts.rawFinishReason,
    reasoning: parts.reasoning.length > 0 ? parts.reasoning.join("") : undefined,
  });
}

/** The whole answer that a sequence of chunks adds up to. */
export function aggregate(chunks: Iterable<ChatChunk>): ChatCompletion {
  const builder = new CompletionBuilder();
  for (const chunk of chunks) builder.add(chunk);
  return builder.build();
}
