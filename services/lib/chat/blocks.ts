// An assistant message's blocks in the order they came. The canonical message keeps its blocks
// by kind (content, tool calls, reasoning, Anthropic's own blocks); Anthropic's answers and the
// turns its clients send back interleave them (thinking, tool_use, text, …), and each block
// then carries its place (`blockIndex`).

import type {
  AnthropicBlock,
  ContentPart,
  Message,
  ReasoningBlock,
  ToolCall,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";

export type OrderedBlock =
  | { kind: "reasoning"; block: ReasoningBlock }
  | { kind: "content"; part: ContentPart; position: number }
  | { kind: "tool_call"; call: ToolCall; position: number }
  | { kind: "anthropic"; block: AnthropicBlock };

/**
 * The message's blocks in their order: by `blockIndex` where the blocks have one; those without
 * keep the default order, reasoning, then content, then tool calls (then Anthropic's blocks),
 * after the numbered ones. `position` is the block's place in its own list, for error paths.
 */
export function orderedBlocks(message: Message): OrderedBlock[] {
  const blocks: OrderedBlock[] = [];
  for (const block of message.reasoningBlocks) blocks.push({ kind: "reasoning", block });
  message.content.forEach((part, position) => {
    blocks.push({ kind: "content", part, position });
  });
  message.toolCalls.forEach((call, position) => {
    blocks.push({ kind: "tool_call", call, position });
  });
  for (const block of message.anthropicBlocks) blocks.push({ kind: "anthropic", block });
  if (!isNumbered(message)) return blocks;
  // Stable: blocks without an index stay in the default order, after the numbered ones.
  return blocks.sort((a, b) => indexOf(a) - indexOf(b));
}

/** Whether any of the message's blocks says where it stands. */
export function isNumbered(message: Message): boolean {
  return (
    message.content.some((p) => p.blockIndex !== undefined) ||
    message.toolCalls.some((c) => c.blockIndex !== undefined) ||
    message.reasoningBlocks.some((b) => b.blockIndex !== undefined) ||
    message.anthropicBlocks.some((b) => b.blockIndex !== undefined)
  );
}

function indexOf(b: OrderedBlock): number {
  const index =
    b.kind === "content"
      ? b.part.blockIndex
      : b.kind === "tool_call"
        ? b.call.blockIndex
        : b.block.blockIndex;
  return index ?? Number.MAX_SAFE_INTEGER;
}
