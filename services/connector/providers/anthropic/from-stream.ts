import {
  type ChatChunk,
  type ChoiceDelta,
  Role,
  type ToolCallDelta,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import {
  anthropicBlock,
  newChatChunk,
  newChoiceDelta,
  newToolCallDelta,
  reasoningBlock,
} from "../../../lib/chat/messages.js";
import { Failure } from "../../../lib/errors.js";
import { isRecord } from "../json-object.js";
import { errorDetailFromJson, scrubSecrets } from "../upstream-http.js";
import {
  isCount,
  setContainer,
  setFinish,
  type TranslateOptions,
  toStart,
  toUsage,
} from "./from-response.js";

export interface StreamOptions extends TranslateOptions {
  /** Strings that must never reach an error message (the provider's API key). */
  secrets?: readonly string[];
}

/**
 * What a content block of the answer turns into for the client: "anthropic" is a block only
 * Anthropic's API has (server tool and MCP calls and results), handed on whole.
 */
type BlockKind = "text" | "thinking" | "tool" | "json" | "anthropic" | "ignored";

interface Block {
  kind: BlockKind;
  /** For tool blocks: the call's index among the answer's tool calls. */
  toolIndex: number;
  /** For thinking blocks: the text so far and the signature, to hand the block on whole. */
  thinking?: { text: string[]; signature: string };
  /** A tool call's block: whether any of its input arrived. */
  gotInput?: boolean;
  /** For Anthropic's own blocks: the block as it started, and its input's JSON fragments. */
  whole?: { block: Record<string, unknown>; input: string[] };
}

/**
 * Translates one Anthropic event stream into canonical chunks. Anthropic numbers content blocks
 * and states the prompt usage only once, up front, so the translation keeps state: one
 * translator per answer. Feed each event's parsed data to `push`, in order.
 */
export class AnthropicStreamTranslator {
  readonly #options: StreamOptions;
  readonly #blocks = new Map<number, Block>();
  #toolCalls = 0;
  /** Usage so far; `message_delta` counts are cumulative and replace `message_start`'s. */
  #usage: Record<string, unknown> = {};
  #started = false;
  #done = false;

  constructor(options: StreamOptions) {
    this.#options = options;
  }

  /** True once `message_stop` arrived: the answer is complete. */
  get done(): boolean {
    return this.#done;
  }

  /**
   * One event to at most one chunk; undefined for events with nothing for the client (ping,
   * signatures, and block stops other than a signed thinking block's, which hands on the whole
   * block). Throws a `Failure` (502, retryable) for an `error` event.
   */
  push(event: Record<string, unknown>): ChatChunk | undefined {
    switch (event.type) {
      case "message_start":
        return this.#messageStart(isRecord(event.message) ? event.message : {});
      case "content_block_start":
        return this.#blockStart(
          event.index,
          isRecord(event.content_block) ? event.content_block : {},
        );
      case "content_block_delta":
        return this.#blockDelta(event.index, isRecord(event.delta) ? event.delta : {});
      case "message_delta":
        return this.#messageDelta(event);
      case "content_block_stop":
        return this.#blockStop(event.index);
      case "message_stop":
        this.#done = true;
        return undefined;
      case "error":
        throw this.#failure(event);
      default:
        // ping, and event types added to the API later.
        return undefined;
    }
  }

  #messageStart(message: Record<string, unknown>): ChatChunk {
    this.#addUsage(message.usage);
    const delta = newChoiceDelta(0);
    delta.role = Role.ASSISTANT;
    const chunk = this.#chunk(delta, message);
    chunk.usage = toUsage(this.#usage);
    return chunk;
  }

  #blockStart(index: unknown, block: Record<string, unknown>): ChatChunk | undefined {
    if (!isCount(index)) return undefined;
    const jsonMode = this.#options.jsonTool !== undefined;
    switch (block.type) {
      case "text":
        // In JSON mode only the JSON tool's input is the answer.
        this.#blocks.set(index, { kind: jsonMode ? "ignored" : "text", toolIndex: 0 });
        return jsonMode ? undefined : this.#text("content", block.text, index);
      case "thinking": {
        const text = typeof block.thinking === "string" ? block.thinking : "";
        const signature = typeof block.signature === "string" ? block.signature : "";
        this.#blocks.set(index, {
          kind: "thinking",
          toolIndex: 0,
          thinking: { text: text === "" ? [] : [text], signature },
        });
        return this.#text("reasoning", text);
      }
      case "redacted_thinking": {
        this.#blocks.set(index, { kind: "ignored", toolIndex: 0 });
        // Encrypted: nothing to show, but the upstream wants it back in the next turn.
        if (typeof block.data !== "string" || block.data === "") return undefined;
        const delta = newChoiceDelta(0);
        delta.reasoningBlocks.push(reasoningBlock("", "", block.data, index));
        return this.#chunk(delta);
      }
      case "tool_use": {
        if (jsonMode && block.name === this.#options.jsonTool) {
          this.#blocks.set(index, { kind: "json", toolIndex: 0 });
          return undefined;
        }
        const toolIndex = this.#toolCalls++;
        this.#blocks.set(index, { kind: "tool", toolIndex });
        // The input arrives as input_json_delta fragments; the start's `input` is always {}.
        const call = newToolCallDelta(toolIndex);
        call.arguments = "";
        call.blockIndex = index;
        if (typeof block.id === "string") call.id = block.id;
        if (typeof block.name === "string") call.name = block.name;
        return this.#chunk(toolCallChoice(call));
      }
      default:
        // Server tool and MCP blocks: Anthropic ran the tool; an Anthropic client gets the
        // block whole once it is complete.
        this.#blocks.set(index, {
          kind: typeof block.type === "string" ? "anthropic" : "ignored",
          toolIndex: 0,
          whole: { block: { ...block }, input: [] },
        });
        return undefined;
    }
  }

  #blockDelta(index: unknown, delta: Record<string, unknown>): ChatChunk | undefined {
    if (!isCount(index)) return undefined;
    const block = this.#blocks.get(index);
    switch (`${block?.kind}:${String(delta.type)}`) {
      case "text:text_delta":
        return this.#text("content", delta.text, index);
      case "text:citations_delta": {
        if (delta.citation === undefined) return undefined;
        const out = newChoiceDelta(0);
        out.blockIndex = index;
        out.citationsJson = JSON.stringify([delta.citation]);
        return this.#chunk(out);
      }
      case "anthropic:input_json_delta":
        if (typeof delta.partial_json === "string") block?.whole?.input.push(delta.partial_json);
        return undefined;
      case "thinking:thinking_delta":
        if (typeof delta.thinking === "string" && delta.thinking !== "") {
          block?.thinking?.text.push(delta.thinking);
        }
        return this.#text("reasoning", delta.thinking);
      case "thinking:signature_delta":
        if (block?.thinking !== undefined && typeof delta.signature === "string") {
          block.thinking.signature += delta.signature;
        }
        return undefined;
      case "json:input_json_delta":
        return this.#text("content", delta.partial_json, index);
      case "tool:input_json_delta": {
        const fragment = delta.partial_json;
        if (typeof fragment !== "string" || fragment === "" || block === undefined)
          return undefined;
        block.gotInput = true;
        const call = newToolCallDelta(block.toolIndex);
        call.arguments = fragment;
        return this.#chunk(toolCallChoice(call));
      }
      default:
        // Another delta of Anthropic's own block carries the block's new value (as
        // compaction_delta does).
        if (block?.kind === "anthropic" && block.whole !== undefined) {
          const { type: _, ...fields } = delta;
          Object.assign(block.whole.block, fields);
        }
        return undefined;
    }
  }

  /**
   * A thinking block that ends signed is handed on whole, so that a client can send it back:
   * Anthropic wants the last turn's thinking again, unchanged, when tools are in use.
   */
  #blockStop(index: unknown): ChatChunk | undefined {
    if (!isCount(index)) return undefined;
    const block = this.#blocks.get(index);
    if (block?.kind === "tool" && !block.gotInput) {
      // A call with no input streams none, but its arguments are still an object: "{}", as
      // OpenAI sends, not "" (which clients fail to parse).
      const call = newToolCallDelta(block.toolIndex);
      call.arguments = "{}";
      return this.#chunk(toolCallChoice(call));
    }
    if (block?.kind === "anthropic" && block.whole !== undefined) {
      return this.#anthropicBlock(block.whole, index);
    }
    const thinking = block?.thinking;
    if (thinking === undefined || thinking.signature === "") return undefined;
    const delta = newChoiceDelta(0);
    delta.reasoningBlocks.push(
      reasoningBlock(thinking.text.join(""), thinking.signature, "", index),
    );
    thinking.text = [];
    return this.#chunk(delta);
  }

  /** One of Anthropic's own blocks, complete: its streamed input put back in place. */
  #anthropicBlock(whole: NonNullable<Block["whole"]>, index: number): ChatChunk {
    const block = whole.block;
    const input = whole.input.join("");
    if (input !== "") {
      try {
        block.input = JSON.parse(input);
      } catch {
        throw new Failure({
          status: 502,
          kind: "upstream_error",
          message: `stream from provider ${this.#options.provider} sent a ${String(block.type)} block whose input is not JSON`,
          retryable: true,
          provider: this.#options.provider,
        });
      }
    }
    const delta = newChoiceDelta(0);
    delta.anthropicBlock = anthropicBlock(JSON.stringify(block), index);
    return this.#chunk(delta);
  }

  #messageDelta(event: Record<string, unknown>): ChatChunk {
    this.#addUsage(event.usage);
    const delta = newChoiceDelta(0);
    const said = isRecord(event.delta) ? event.delta : {};
    setFinish(
      delta,
      said.stop_reason,
      this.#options.jsonTool !== undefined && this.#toolCalls === 0,
      said.stop_sequence,
    );
    // Anthropic names the container with the stop reason, once its code has run.
    setContainer(delta, said.container);
    const chunk = this.#chunk(delta);
    chunk.usage = toUsage(this.#usage);
    return chunk;
  }

  #addUsage(usage: unknown): void {
    if (!isRecord(usage)) return;
    for (const [key, value] of Object.entries(usage)) {
      if (isCount(value)) this.#usage[key] = value;
    }
    // The split of cache writes by lifetime, which prices them.
    if (isRecord(usage.cache_creation)) this.#usage.cache_creation = usage.cache_creation;
    // message_start names the tier; message_delta's server tool counts are cumulative.
    if (typeof usage.service_tier === "string") this.#usage.service_tier = usage.service_tier;
    if (isRecord(usage.server_tool_use)) this.#usage.server_tool_use = usage.server_tool_use;
  }

  /**
   * A chunk with text for `field`; nothing for an absent or empty text. Content says which
   * block it belongs to (`blockIndex`), so that two text blocks stay two.
   */
  #text(
    field: "content" | "reasoning",
    value: unknown,
    blockIndex?: number,
  ): ChatChunk | undefined {
    if (typeof value !== "string" || value === "") return undefined;
    const delta = newChoiceDelta(0);
    delta[field] = value;
    if (blockIndex !== undefined) delta.blockIndex = blockIndex;
    return this.#chunk(delta);
  }

  /** Wraps a delta; the first chunk carries `start`, even in a stream that skipped message_start. */
  #chunk(delta: ChoiceDelta, message: Record<string, unknown> = {}): ChatChunk {
    const chunk = newChatChunk();
    chunk.choices.push(delta);
    if (!this.#started) {
      this.#started = true;
      chunk.start = toStart(message, this.#options);
      delta.role = Role.ASSISTANT;
    }
    return chunk;
  }

  #failure(event: Record<string, unknown>): Failure {
    const { provider, secrets = [] } = this.#options;
    const detail = errorDetailFromJson(event);
    const said = scrubSecrets(detail?.message ?? "unknown error", secrets);
    // overloaded_error is Anthropic's 529 arriving mid-stream: no capacity, as over HTTP.
    const overloaded = detail?.type === "overloaded_error";
    return new Failure({
      status: overloaded ? 503 : 502,
      kind: overloaded ? "upstream_unavailable" : "upstream_error",
      message: `stream from provider ${provider} failed: ${said}`,
      // The router retries only if nothing reached the client yet.
      retryable: true,
      provider,
      ...(detail?.type !== undefined && { code: detail.type }),
    });
  }
}

/** The first choice, carrying one tool call fragment. */
function toolCallChoice(call: ToolCallDelta): ChoiceDelta {
  const delta = newChoiceDelta(0);
  delta.toolCalls.push(call);
  return delta;
}
