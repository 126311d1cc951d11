import { create } from "@bufbuild/protobuf";
import {
  type ChatChunk,
  ChatChunkSchema,
  ChoiceDeltaSchema,
  Role,
  ToolCallDeltaSchema,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import type { OpenAIChatChunk } from "../../../lib/wire/openai.js";
import {
  isCount,
  isRecord,
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
 */
export function fromOpenAIChunk(
  chunk: OpenAIChatChunk,
  provider: string,
  first: boolean,
): ChatChunk {
  const out = create(ChatChunkSchema, {
    choices: records(chunk.choices).map((choice, i) => {
      const delta = isRecord(choice.delta) ? choice.delta : {};
      const canonical = create(ChoiceDeltaSchema, {
        index: isCount(choice.index) ? choice.index : i,
        role: delta.role === "assistant" ? Role.ASSISTANT : Role.UNSPECIFIED,
      });
      setText(canonical, "content", delta.content);
      setText(canonical, "refusal", delta.refusal);
      setText(canonical, "reasoning", delta.reasoning_content);
      canonical.toolCalls = records(delta.tool_calls).map((call, position) => {
        const fragment = create(ToolCallDeltaSchema, {
          index: isCount(call.index) ? call.index : position,
        });
        const fn = isRecord(call.function) ? call.function : {};
        if (typeof call.id === "string") fragment.id = call.id;
        if (typeof fn.name === "string") fragment.name = fn.name;
        if (typeof fn.arguments === "string") fragment.arguments = fn.arguments;
        return fragment;
      });
      setFinish(canonical, choice.finish_reason);
      return canonical;
    }),
  });
  if (first) out.start = toStart(chunk, provider);
  const usage = toUsage(chunk.usage);
  if (usage !== undefined) out.usage = usage;
  return out;
}

/** A chunk with nothing for the client (e.g. a keep-alive or filter-results-only chunk). */
export function isEmptyChunk(chunk: ChatChunk): boolean {
  return chunk.start === undefined && chunk.choices.length === 0 && chunk.usage === undefined;
}
