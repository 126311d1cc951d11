// A `reasoning` item's `encrypted_content`, as this gateway fills it: the answer's reasoning
// blocks (Anthropic's signed `thinking`, `redacted_thinking`) for a stateless client to send back,
// so that a tool loop with thinking on can go on. Not encryption: the client may read the text
// anyway, and Anthropic's signature is what guards it against edits. The version prefix tells
// these strings apart from OpenAI's own ciphertext, which means nothing here.

import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  ReasoningBlock,
  ReasoningBlockSchema,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { isObject } from "../openai/parse-request.js";

type ReasoningBlockInit = MessageInitShape<typeof ReasoningBlockSchema>;

const PREFIX = "sy1.";

/** The blocks, in order, as Anthropic's own JSON (without their place: they go first). */
export function encodeReasoningBlocks(blocks: readonly ReasoningBlock[]): string {
  const json = JSON.stringify(
    blocks.map((b) =>
      b.redactedData !== ""
        ? { type: "redacted_thinking", data: b.redactedData }
        : { type: "thinking", thinking: b.text, signature: b.signature },
    ),
  );
  return PREFIX + Buffer.from(json).toString("base64url");
}

/**
 * The blocks an `encrypted_content` of this gateway's carries; undefined for any other string
 * (another service's ciphertext, a damaged copy), which is ignored like a bare reasoning item.
 */
export function decodeReasoningBlocks(content: string): ReasoningBlockInit[] | undefined {
  if (!content.startsWith(PREFIX)) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(content.slice(PREFIX.length), "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
  if (!Array.isArray(raw) || raw.length === 0) return undefined;
  const blocks: ReasoningBlockInit[] = [];
  for (const block of raw) {
    if (!isObject(block)) return undefined;
    if (
      block.type === "thinking" &&
      typeof block.thinking === "string" &&
      typeof block.signature === "string"
    ) {
      blocks.push({ text: block.thinking, signature: block.signature });
    } else if (block.type === "redacted_thinking" && typeof block.data === "string") {
      blocks.push({ redactedData: block.data });
    } else {
      return undefined;
    }
  }
  return blocks;
}
