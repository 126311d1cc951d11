import { randomUUID } from "node:crypto";
import {
  type AnthropicBlock,
  type ChatChunk,
  type ChatCompletion,
  type ChatStart,
  type Choice,
  FinishReason,
  type ReasoningBlock,
  type ToolCallDelta,
  type Usage,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { isNumbered, orderedBlocks } from "../../lib/chat/blocks.js";
import { Failure } from "../../lib/errors.js";
import { anthropicError } from "./errors.js";
import type {
  AnthropicContentBlock,
  AnthropicMessage,
  AnthropicOwnBlock,
  AnthropicStopReason,
  AnthropicStreamEvent,
  AnthropicTextBlock,
  AnthropicUsage,
} from "./wire.js";

export interface RenderOptions {
  /** The model name the client asked for; shown only when the upstream named no model. */
  publicModel?: string;
  /**
   * The request's `stop_sequences`: when the upstream does not say which one matched,
   * `stop_sequence` is filled in only if there was exactly one.
   */
  stopSequences?: readonly string[];
}

/** Anthropic's stop reasons and the canonical finish reason each one means. */
const STOP_REASONS: ReadonlyMap<string, FinishReason> = new Map([
  ["end_turn", FinishReason.STOP],
  ["stop_sequence", FinishReason.STOP],
  ["max_tokens", FinishReason.LENGTH],
  ["model_context_window_exceeded", FinishReason.LENGTH],
  ["tool_use", FinishReason.TOOL_CALLS],
  ["refusal", FinishReason.CONTENT_FILTER],
  ["pause_turn", FinishReason.OTHER],
]);

function isStopReason(raw: string | undefined): raw is AnthropicStopReason {
  return raw !== undefined && STOP_REASONS.has(raw);
}

/**
 * The `stop_reason` an Anthropic client sees. An Anthropic upstream's own word passes through
 * when it agrees with the canonical reason (so "stop_sequence" and "pause_turn" survive);
 * otherwise the canonical reason is mapped. An answer that calls tools stops with "tool_use"
 * even when an OpenAI-compatible upstream said "stop": Anthropic clients run tools on
 * "tool_use" only. A word the canonical enum could not name (vLLM's "abort") reaches the client
 * unchanged, as it does an OpenAI client: as "end_turn" a failed turn would pass for a finished
 * one. (Gemini's failed turns end as errors in its adapter: gemini/from-response.ts.)
 */
export function anthropicStopReason(
  reason: FinishReason,
  raw: string | undefined,
  callsTools: boolean,
): AnthropicStopReason {
  if (isStopReason(raw) && STOP_REASONS.get(raw) === reason) return raw;
  if (reason === FinishReason.OTHER && raw !== undefined && raw !== "") return raw;
  switch (reason) {
    case FinishReason.LENGTH:
      return "max_tokens";
    case FinishReason.TOOL_CALLS:
      return "tool_use";
    case FinishReason.CONTENT_FILTER:
      return "refusal";
    default:
      return callsTools ? "tool_use" : "end_turn";
  }
}

/**
 * The stop sequence that ended the answer: the one the upstream named, else the request's only
 * one (an upstream that does not name it cannot have ended on another).
 */
function stopSequence(
  reason: AnthropicStopReason,
  named: string | undefined,
  options: RenderOptions,
): string | null {
  if (reason !== "stop_sequence") return null;
  if (named !== undefined) return named;
  const sequences = options.stopSequences ?? [];
  return sequences.length === 1 ? (sequences[0] ?? null) : null;
}

/**
 * Where a usage object goes: a whole answer, or a stream's `message_start` (the usage so far,
 * whose cost is not the answer's) or `message_delta` (which, as Anthropic sends it, has no
 * `service_tier`: the tier was named at the start).
 */
export type UsagePlace = "message" | "message_start" | "message_delta";

/**
 * Anthropic counts cache reads and cache writes apart from `input_tokens`; the canonical prompt
 * count includes both.
 */
export function renderUsage(
  u: Usage | undefined,
  place: UsagePlace = "message",
): AnthropicUsage & { cost_usd?: number } {
  if (u === undefined) return { input_tokens: 0, output_tokens: 0 };
  const cached = u.cachedPromptTokens;
  const written = u.cacheWritePromptTokens;
  // Keys in the order Anthropic sends them.
  const out: AnthropicUsage & { cost_usd?: number } = {
    input_tokens: Math.max(0, u.promptTokens - (cached ?? 0) - (written ?? 0)),
    ...(written !== undefined && { cache_creation_input_tokens: written }),
    ...(cached !== undefined && { cache_read_input_tokens: cached }),
    // The split of cache writes by lifetime, which prices them (an hour costs more).
    ...(written !== undefined && { cache_creation: cacheCreation(written, u) }),
    output_tokens: u.completionTokens,
  };
  if (u.reasoningTokens !== undefined) {
    out.output_tokens_details = { thinking_tokens: u.reasoningTokens };
  }
  if (u.serverToolUseJson !== undefined) out.server_tool_use = JSON.parse(u.serverToolUseJson);
  if (u.serviceTier !== undefined && place !== "message_delta") out.service_tier = u.serviceTier;
  // Clients and SDKs ignore fields they do not know; only final usage carries a final cost.
  if (place !== "message_start" && u.costUsd !== undefined) out.cost_usd = u.costUsd;
  return out;
}

function cacheCreation(written: number, u: Usage) {
  const hour = Math.min(u.cacheWrite1hPromptTokens ?? 0, written);
  return { ephemeral_5m_input_tokens: written - hour, ephemeral_1h_input_tokens: hour };
}

/**
 * Tool-call arguments as the object a `tool_use` block holds ("" is no arguments). Arguments
 * that are not a JSON object cannot be shown to an Anthropic client without inventing an
 * input the model never gave, and a client would run its tool on it; so the answer fails
 * loudly instead, streamed or not.
 */
function toolInput(args: string, name: string): Record<string, unknown> {
  if (args.trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(args);
  } catch {
    value = undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Failure({
      status: 502,
      kind: "upstream_error",
      code: "invalid_tool_arguments",
      message: `the model called tool '${name}' with arguments that are not a JSON object, which an Anthropic tool_use block cannot hold`,
    });
  }
  return value as Record<string, unknown>;
}

/**
 * The input of a tool call whose arguments `max_tokens` cut off mid-JSON (Anthropic's
 * fine-grained tool streaming says they can be): the object as far as it got, an open string
 * value kept as far as it got, a member cut before its value left out; `{}` when nothing of it
 * holds together. The answer's stop reason, `max_tokens`, tells the client it is not whole.
 */
export function partialToolInput(args: string): Record<string, unknown> {
  const stack: string[] = [];
  /** Where a member ended (a comma outside strings), with the brackets still open there. */
  const cuts: Array<{ at: number; closers: string }> = [];
  let inString = false;
  let escaped = false;
  for (let i = 0; i < args.length; i++) {
    const ch = args[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === "\\") escaped = true;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === "{") stack.push("}");
    else if (ch === "[") stack.push("]");
    else if (ch === "}" || ch === "]") stack.pop();
    else if (ch === ",") cuts.push({ at: i, closers: [...stack].reverse().join("") });
  }
  const closers = [...stack].reverse().join("");
  const tries = [(inString ? `${escaped ? args.slice(0, -1) : args}"` : args) + closers];
  for (let k = cuts.length - 1; k >= 0 && tries.length < 16; k--) {
    const cut = cuts[k] as { at: number; closers: string };
    tries.push(args.slice(0, cut.at) + cut.closers);
  }
  for (const text of tries) {
    try {
      const value: unknown = JSON.parse(text);
      if (typeof value === "object" && value !== null && !Array.isArray(value)) {
        return value as Record<string, unknown>;
      }
    } catch {
      // Not yet: try the next shorter cut.
    }
  }
  return {};
}

/** Upstreams that gave a call no id still need one the client can answer; deterministic. */
/** Whether tool-call arguments so far are a complete JSON object (so no fragment can follow). */
function isWholeObject(args: string): boolean {
  if (args === "") return false;
  try {
    const value: unknown = JSON.parse(args);
    return typeof value === "object" && value !== null && !Array.isArray(value);
  } catch {
    return false;
  }
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function toolUseId(id: string | undefined, messageId: string, index: number): string {
  if (id !== undefined && id !== "") return id;
  return `toolu_${messageId.replace(/[^a-zA-Z0-9_-]/g, "_")}_${index}`;
}

function newMessageId(): string {
  return `msg_${randomUUID().replaceAll("-", "")}`;
}

/**
 * The body of a non-streamed `POST /v1/messages` answer. Blocks the upstream numbered (an
 * Anthropic upstream's) keep their order and their bounds: two text blocks stay two, each with
 * its citations. Otherwise thinking, then text (one block; a refusal is text too), then tool
 * calls, which is the order the stream renderer produces for the same answer. Only choice 0:
 * Anthropic answers have one.
 */
export function renderMessage(c: ChatCompletion, options: RenderOptions = {}): AnthropicMessage {
  const id = c.id || newMessageId();
  const choice = c.choices.find((ch) => ch.index === 0) ?? c.choices[0];
  const content = choice === undefined ? [] : contentBlocks(choice, id);
  const toolCalls = choice?.message?.toolCalls ?? [];
  const stopReason = anthropicStopReason(
    choice?.finishReason ?? FinishReason.UNSPECIFIED,
    choice?.rawFinishReason,
    toolCalls.length > 0,
  );
  const container = choice?.anthropicContainerJson;
  return {
    id,
    type: "message",
    role: "assistant",
    model: c.upstreamModel || (options.publicModel ?? ""),
    content,
    stop_reason: stopReason,
    stop_sequence: stopSequence(stopReason, choice?.stopSequence, options),
    ...(container !== undefined && { container: JSON.parse(container) }),
    usage: renderUsage(c.usage),
  };
}

/** A choice's content blocks, in their order (see renderMessage). */
function contentBlocks(choice: Choice, id: string): AnthropicContentBlock[] {
  const message = choice.message;
  const content: AnthropicContentBlock[] = [];
  if ((message?.reasoningBlocks.length ?? 0) === 0 && choice.reasoning) {
    // Another upstream's reasoning has no signature to give.
    content.push({ type: "thinking", thinking: choice.reasoning, signature: "" });
  }
  if (message === undefined) return content;
  const numbered = isNumbered(message);
  const cutShort = choice.finishReason === FinishReason.LENGTH;
  /** Without numbered blocks, all the text is one block. */
  let joined: AnthropicTextBlock | undefined;
  for (const block of orderedBlocks(message)) {
    switch (block.kind) {
      case "reasoning":
        // Anthropic's own blocks, signed: the client sends them back as they are.
        content.push(thinkingBlock(block.block));
        break;
      case "content": {
        const { part } = block.part;
        if (part.case !== "text") break;
        if (numbered) {
          content.push(textBlock(part.value, block.part.citationsJson));
        } else if (joined === undefined) {
          joined = { type: "text", text: part.value };
          content.push(joined);
        } else {
          joined.text += part.value;
        }
        break;
      }
      case "tool_call": {
        const { call } = block;
        content.push({
          type: "tool_use",
          id: toolUseId(call.id, id, block.position),
          name: call.name,
          input:
            cutShort && !isJson(call.arguments)
              ? partialToolInput(call.arguments)
              : toolInput(call.arguments, call.name),
        });
        break;
      }
      case "anthropic":
        content.push(JSON.parse(block.block.json) as AnthropicOwnBlock);
        break;
    }
  }
  const refusal = message.refusal ?? "";
  if (refusal !== "") {
    if (joined !== undefined) joined.text += refusal;
    else content.push({ type: "text", text: refusal });
  }
  // Anthropic has no empty text blocks.
  return content.filter((b) => b.type !== "text" || b.text !== "" || b.citations !== undefined);
}

function textBlock(text: string, citationsJson: string): AnthropicTextBlock {
  if (citationsJson === "") return { type: "text", text };
  return { type: "text", text, citations: JSON.parse(citationsJson) as unknown[] };
}

function thinkingBlock(block: ReasoningBlock): AnthropicContentBlock {
  return block.redactedData !== ""
    ? { type: "redacted_thinking", data: block.redactedData }
    : { type: "thinking", thinking: block.text, signature: block.signature };
}

function sse(event: AnthropicStreamEvent): string {
  return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

function signatureDelta(index: number, signature: string): string {
  return sse({
    type: "content_block_delta",
    index,
    delta: { type: "signature_delta", signature },
  });
}

function toolStart(index: number, call: ToolCallState): string {
  return sse({
    type: "content_block_start",
    index,
    content_block: { type: "tool_use", id: call.id, name: call.name, input: {} },
  });
}

function inputDelta(index: number, fragment: string): string {
  return sse({
    type: "content_block_delta",
    index,
    delta: { type: "input_json_delta", partial_json: fragment },
  });
}

interface ToolCallState {
  /** The canonical tool-call index. */
  tool: number;
  id: string;
  name: string;
  args: string[];
}

type OpenBlock =
  /** `upstream`: the upstream's index of the text block, when it numbers them (see #write). */
  | { kind: "text" | "thinking"; index: number; upstream: number | undefined }
  | { kind: "tool"; index: number; call: ToolCallState };

/**
 * Frames one answer's canonical chunks as Anthropic SSE events, one renderer per stream:
 * `message_start` on the first chunk, then content blocks numbered from 0, each opened with
 * `content_block_start`, filled with deltas and closed with `content_block_stop` before the
 * next one opens. `message_delta` (stop reason, usage) and `message_stop` wait for `finish()`,
 * since an upstream's usage may come after its finish reason. Pings are not sent; they only
 * keep idle connections open.
 *
 * Anthropic blocks never interleave, but OpenAI-style upstreams may stream several tool calls
 * at once. A call that opens while another one's block is open is held back until the
 * upstream sends it a further fragment once the open call's arguments are a whole object
 * (then the open block closes and the held call's block opens with what it has so far), or
 * until the open block closes for another reason (then it is sent as one whole block). `render` and `finish` throw a Failure (502) for
 * what an Anthropic stream cannot hold — arguments that are not a JSON object, or a call
 * continued after its block closed — so the caller ends the stream with `error(…)` instead of
 * an answer that looks complete.
 */
export class MessageStreamRenderer {
  readonly #options: RenderOptions;
  #started = false;
  #finished = false;
  #id = "";
  #blocks = 0;
  #open: OpenBlock | undefined;
  /** Characters of thinking sent in the open thinking block. */
  #thinkingChars = 0;
  /** Tool calls that opened while another call's block was open, by canonical index. */
  readonly #held = new Map<number, ToolCallState>();
  readonly #closedTools = new Set<number>();
  #callsTools = false;
  #finishReason = FinishReason.UNSPECIFIED;
  #rawFinishReason: string | undefined;
  #stopSequence: string | undefined;
  #container: string | undefined;
  #usage: Usage | undefined;

  constructor(options: RenderOptions = {}) {
    this.#options = options;
  }

  /** The SSE events for one chunk; "" when the client is owed nothing for it. */
  render(chunk: ChatChunk): string {
    if (this.#finished) return "";
    if (chunk.usage !== undefined) this.#usage = chunk.usage;
    let out = this.#start(chunk.start);
    for (const d of chunk.choices) {
      if (d.index !== 0) continue;
      if (d.reasoning) out += this.#write("thinking", d.reasoning, undefined);
      for (const block of d.reasoningBlocks) out += this.#reasoningBlock(block);
      if (d.citationsJson !== undefined) out += this.#citations(d.citationsJson, d.blockIndex);
      if (d.content) out += this.#write("text", d.content, d.blockIndex);
      if (d.refusal) out += this.#write("text", d.refusal, undefined);
      for (const call of d.toolCalls) out += this.#toolCall(call);
      if (d.anthropicBlock !== undefined) out += this.#anthropicBlock(d.anthropicBlock);
      if (d.finishReason !== FinishReason.UNSPECIFIED) {
        this.#finishReason = d.finishReason;
        this.#rawFinishReason = d.rawFinishReason;
      } else if (d.rawFinishReason !== undefined) {
        this.#rawFinishReason = d.rawFinishReason;
      }
      if (d.stopSequence !== undefined) this.#stopSequence = d.stopSequence;
      if (d.anthropicContainerJson !== undefined) this.#container = d.anthropicContainerJson;
    }
    return out;
  }

  /** Closes what is open, then `message_delta` with the stop reason and usage, `message_stop`. */
  finish(): string {
    if (this.#finished) return "";
    let out = this.#start(undefined);
    out += this.#closeBlocks();
    this.#finished = true;
    const stopReason = anthropicStopReason(
      this.#finishReason,
      this.#rawFinishReason,
      this.#callsTools,
    );
    out += sse({
      type: "message_delta",
      delta: {
        stop_reason: stopReason,
        stop_sequence: stopSequence(stopReason, this.#stopSequence, this.#options),
        ...(this.#container !== undefined && { container: JSON.parse(this.#container) }),
      },
      usage: renderUsage(this.#usage, "message_delta"),
    });
    return out + sse({ type: "message_stop" });
  }

  /**
   * A failure after the stream began: an `error` event and no `message_stop`. The
   * @anthropic-ai/sdk throws an APIError when it reads one, so a truncated answer never looks
   * complete.
   */
  error(f: Failure, requestId?: string): string {
    this.#finished = true;
    return sse(anthropicError(f, requestId).body);
  }

  #start(start: ChatStart | undefined): string {
    if (this.#started) return "";
    this.#started = true;
    this.#id = start?.id || newMessageId();
    return sse({
      type: "message_start",
      message: {
        id: this.#id,
        type: "message",
        role: "assistant",
        model: start?.upstreamModel || (this.#options.publicModel ?? ""),
        content: [],
        stop_reason: null,
        stop_sequence: null,
        // The usage so far (prompt tokens, at most): its cost is not the answer's.
        usage: renderUsage(this.#usage, "message_start"),
      },
    });
  }

  /**
   * Text or thinking for the open block of its kind, or a new one. Text of another upstream
   * block (`upstream`, the index an Anthropic upstream gave it) is a new text block: two text
   * blocks stay two, as the upstream sent them.
   */
  #write(kind: "text" | "thinking", text: string, upstream: number | undefined): string {
    const out = this.#openFor(kind, upstream);
    const index = this.#open?.index ?? 0;
    if (kind === "thinking") this.#thinkingChars += text.length;
    return (
      out +
      sse({
        type: "content_block_delta",
        index,
        delta:
          kind === "text"
            ? { type: "text_delta", text }
            : { type: "thinking_delta", thinking: text },
      })
    );
  }

  /** Opens a text or thinking block unless one for this text is open; "" when one is. */
  #openFor(kind: "text" | "thinking", upstream: number | undefined): string {
    const open = this.#open;
    if (open?.kind === kind && (kind === "thinking" || open.upstream === upstream)) return "";
    const out = this.#closeBlocks();
    const index = this.#blocks++;
    this.#open = { kind, index, upstream };
    this.#thinkingChars = 0;
    return (
      out +
      sse({
        type: "content_block_start",
        index,
        content_block:
          kind === "text"
            ? { type: "text", text: "" }
            : { type: "thinking", thinking: "", signature: "" },
      })
    );
  }

  /**
   * Citations of a text block (a JSON array), as Anthropic streams them: one `citations_delta`
   * each, in the block they cite.
   */
  #citations(json: string, upstream: number | undefined): string {
    let out = this.#openFor("text", upstream);
    const index = this.#open?.index ?? 0;
    for (const citation of JSON.parse(json) as unknown[]) {
      out += sse({
        type: "content_block_delta",
        index,
        delta: { type: "citations_delta", citation },
      });
    }
    return out;
  }

  /**
   * One of Anthropic's own blocks (server tool and MCP calls and results), as Anthropic streams
   * it: a block with an `input` opens with `{}` and gets its input as one `input_json_delta`;
   * any other opens whole.
   */
  #anthropicBlock(block: AnthropicBlock): string {
    const whole = JSON.parse(block.json) as AnthropicOwnBlock;
    let out = this.#closeBlocks();
    const index = this.#blocks++;
    if ("input" in whole) {
      out += sse({ type: "content_block_start", index, content_block: { ...whole, input: {} } });
      out += inputDelta(index, JSON.stringify(whole.input));
    } else {
      out += sse({ type: "content_block_start", index, content_block: whole });
    }
    return out + sse({ type: "content_block_stop", index });
  }

  /**
   * A whole reasoning block. A signed one whose text has just streamed ends the open thinking
   * block with its signature; otherwise (encrypted, or text the stream did not show) it is sent
   * as a block of its own.
   */
  #reasoningBlock(block: ReasoningBlock): string {
    const open = this.#open;
    if (
      block.redactedData === "" &&
      open?.kind === "thinking" &&
      this.#thinkingChars === block.text.length
    ) {
      this.#open = undefined;
      return (
        signatureDelta(open.index, block.signature) +
        sse({ type: "content_block_stop", index: open.index })
      );
    }
    let out = this.#closeBlocks();
    const index = this.#blocks++;
    if (block.redactedData !== "") {
      out += sse({ type: "content_block_start", index, content_block: thinkingBlock(block) });
    } else {
      out += sse({
        type: "content_block_start",
        index,
        content_block: { type: "thinking", thinking: "", signature: "" },
      });
      if (block.text !== "") {
        out += sse({
          type: "content_block_delta",
          index,
          delta: { type: "thinking_delta", thinking: block.text },
        });
      }
      out += signatureDelta(index, block.signature);
    }
    return out + sse({ type: "content_block_stop", index });
  }

  #toolCall(t: ToolCallDelta): string {
    const fragment = t.arguments ?? "";
    const open = this.#open;
    if (open?.kind === "tool" && open.call.tool === t.index) {
      if (fragment === "") return "";
      open.call.args.push(fragment);
      return inputDelta(open.index, fragment);
    }
    if (this.#closedTools.has(t.index)) {
      throw new Failure({
        status: 502,
        kind: "upstream_error",
        code: "unframeable_stream",
        message: `tool call ${t.index} went on after its block was closed, which an Anthropic stream cannot hold`,
      });
    }
    const held = this.#held.get(t.index);
    if (held === undefined) {
      this.#callsTools = true;
      const call: ToolCallState = {
        tool: t.index,
        id: toolUseId(t.id, this.#id, t.index),
        name: t.name ?? "",
        args: fragment === "" ? [] : [fragment],
      };
      // The open call may not be done: OpenAI-style upstreams can interleave parallel calls.
      if (open?.kind === "tool") {
        this.#held.set(t.index, call);
        return "";
      }
      return this.#closeBlocks() + this.#openTool(call);
    }
    if (held.name === "" && t.name !== undefined) held.name = t.name;
    if (fragment !== "") held.args.push(fragment);
    // The upstream moved on to a held call, so the open one may be done: it is once its
    // arguments are a whole object. Until then both go on, the held one still held (some
    // upstreams send parallel calls' fragments in turns).
    if (open?.kind === "tool" && !isWholeObject(open.call.args.join(""))) return "";
    this.#held.delete(t.index);
    let out = this.#closeOpen();
    for (const earlier of this.#heldInOrder()) {
      if (earlier.tool > t.index) break;
      this.#held.delete(earlier.tool);
      out += this.#wholeTool(earlier);
    }
    return out + this.#openTool(held);
  }

  /** Opens a tool_use block that stays open for the call's further fragments. */
  #openTool(call: ToolCallState): string {
    const index = this.#blocks++;
    this.#open = { kind: "tool", index, call };
    const args = call.args.join("");
    return toolStart(index, call) + (args === "" ? "" : inputDelta(index, args));
  }

  /** A held call as one whole block: start, all its arguments at once, stop. */
  #wholeTool(call: ToolCallState): string {
    const args = call.args.join("");
    this.#checkInput(args, call.name);
    const index = this.#blocks++;
    this.#closedTools.add(call.tool);
    return (
      toolStart(index, call) +
      (args === "" ? "" : inputDelta(index, args)) +
      sse({ type: "content_block_stop", index })
    );
  }

  /**
   * Fails the answer for arguments that are not a JSON object (see toolInput), except when
   * max_tokens cut the answer off: then the fragments went out as they came, as Anthropic sends
   * them, and the stop reason tells the client the input is not whole.
   */
  #checkInput(args: string, name: string): void {
    if (this.#finishReason !== FinishReason.LENGTH || isJson(args)) toolInput(args, name);
  }

  #heldInOrder(): ToolCallState[] {
    return [...this.#held.values()].sort((a, b) => a.tool - b.tool);
  }

  #closeOpen(): string {
    const open = this.#open;
    if (open === undefined) return "";
    if (open.kind === "tool") {
      this.#checkInput(open.call.args.join(""), open.call.name);
      this.#closedTools.add(open.call.tool);
    }
    this.#open = undefined;
    return sse({ type: "content_block_stop", index: open.index });
  }

  /** Closes the open block, then sends each held tool call as a whole block, by index. */
  #closeBlocks(): string {
    let out = this.#closeOpen();
    for (const call of this.#heldInOrder()) out += this.#wholeTool(call);
    this.#held.clear();
    return out;
  }
}
