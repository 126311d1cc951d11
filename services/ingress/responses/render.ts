import { randomBytes } from "node:crypto";
import {
  type ChatChunk,
  type ChatCompletion,
  type ChoiceDelta,
  FinishReason,
  type ReasoningBlock,
  type Usage,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import type { Failure } from "../../lib/errors.js";
import { openAIError } from "../openai/errors.js";
import type { ResponsesEcho } from "./parse-request.js";
import { encodeReasoningBlocks } from "./reasoning-content.js";

type JsonObject = Record<string, unknown>;

/** An id in OpenAI's shape (`resp_…`, `msg_…`, `fc_…`, `rs_…`). */
export function itemId(prefix: string): string {
  return `${prefix}_${randomBytes(16).toString("hex")}`;
}

/** The Responses API's usage object, plus what it cost (as Chat Completions' carries it). */
export function renderResponsesUsage(u: Usage): JsonObject {
  const out: JsonObject = {
    input_tokens: u.promptTokens,
    input_tokens_details: { cached_tokens: u.cachedPromptTokens ?? 0 },
    output_tokens: u.completionTokens,
    output_tokens_details: { reasoning_tokens: u.reasoningTokens ?? 0 },
    total_tokens: u.totalTokens || u.promptTokens + u.completionTokens,
  };
  if (u.costUsd !== undefined) out.cost_usd = u.costUsd;
  return out;
}

/** Why an answer stopped short, in the Responses API's words; undefined when it is complete. */
function incompleteReason(reason: FinishReason): string | undefined {
  if (reason === FinishReason.LENGTH) return "max_output_tokens";
  if (reason === FinishReason.CONTENT_FILTER) return "content_filter";
  return undefined;
}

/** The Response object around its output, in the state `status` says. */
function responseObject(
  id: string,
  createdAt: number,
  model: string,
  echo: ResponsesEcho,
  status: "in_progress" | "completed" | "incomplete" | "failed",
  output: JsonObject[],
  extra: { usage?: Usage | undefined; reason?: string | undefined; error?: JsonObject },
): JsonObject {
  return {
    id,
    object: "response",
    created_at: createdAt,
    status,
    background: false,
    error: extra.error ?? null,
    incomplete_details: extra.reason !== undefined ? { reason: extra.reason } : null,
    instructions: echo.instructions,
    max_output_tokens: echo.max_output_tokens,
    metadata: echo.metadata,
    model,
    output,
    parallel_tool_calls: echo.parallel_tool_calls,
    previous_response_id: null,
    reasoning: echo.reasoning,
    // Nothing is kept: a client cannot refer back to this response.
    store: false,
    temperature: echo.temperature,
    text: echo.text,
    tool_choice: echo.tool_choice,
    tools: echo.tools,
    top_p: echo.top_p,
    truncation: echo.truncation,
    usage: extra.usage !== undefined ? renderResponsesUsage(extra.usage) : null,
    user: echo.user,
  };
}

/** The body of a non-streamed `POST /v1/responses` answer (the first choice: there is only one). */
export function renderResponse(
  c: ChatCompletion,
  publicModel: string,
  echo: ResponsesEcho,
): JsonObject {
  const choice = c.choices[0];
  const reason = incompleteReason(choice?.finishReason ?? FinishReason.UNSPECIFIED);
  const itemStatus = reason === undefined ? "completed" : "incomplete";
  const output: JsonObject[] = [];
  const message = choice?.message;
  const blocks = echo.encrypted_reasoning ? (message?.reasoningBlocks ?? []) : [];
  if (choice?.reasoning || blocks.length > 0) {
    const encrypted = blocks.length > 0 ? encodeReasoningBlocks(blocks) : undefined;
    output.push(reasoningItem(itemId("rs"), choice?.reasoning ?? "", encrypted));
  }
  let text = "";
  for (const part of message?.content ?? []) {
    if (part.part.case === "text") text += part.part.value;
  }
  const content: JsonObject[] = [];
  if (text !== "") content.push(outputText(text));
  if (message?.refusal) content.push({ type: "refusal", refusal: message.refusal });
  if (content.length > 0) {
    output.push({
      id: itemId("msg"),
      type: "message",
      status: itemStatus,
      role: "assistant",
      content,
    });
  }
  for (const call of message?.toolCalls ?? []) {
    output.push(functionCall(itemId("fc"), call.id, call.name, call.arguments, itemStatus));
  }
  return responseObject(
    itemId("resp"),
    Number(c.created) || Math.floor(Date.now() / 1000),
    c.upstreamModel || publicModel,
    echo,
    reason === undefined ? "completed" : "incomplete",
    output,
    { usage: c.usage, reason },
  );
}

function outputText(text: string): JsonObject {
  return { type: "output_text", text, annotations: [], logprobs: [] };
}

/** A reasoning item; `encrypted` is its `encrypted_content`, when the client asked for it. */
function reasoningItem(id: string, text: string, encrypted?: string): JsonObject {
  const item: JsonObject = { id, type: "reasoning", summary: [{ type: "summary_text", text }] };
  if (encrypted !== undefined) item.encrypted_content = encrypted;
  return item;
}

function functionCall(
  id: string,
  callId: string,
  name: string,
  args: string,
  status: string,
): JsonObject {
  return { id, type: "function_call", status, arguments: args, call_id: callId, name };
}

/** One output item of a streamed response, open until its `response.output_item.done`. */
interface OpenItem {
  kind: "message" | "function_call" | "reasoning";
  index: number;
  id: string;
  /** message: its parts; the last may still be open. */
  parts: Array<{ type: "output_text" | "refusal"; text: string }>;
  partOpen: boolean;
  /** reasoning: the summary text; function_call: the arguments. */
  text: string;
  /** reasoning, when the client asked for `encrypted_content`: the blocks that came with it. */
  blocks?: ReasoningBlock[];
  /** Their `encrypted_content`, made once for `output_item.done` and the final response. */
  encrypted?: string;
  callId: string;
  name: string;
  done: boolean;
  /** The status it was closed with. */
  status?: string;
}

/**
 * Frames one answer's canonical chunks as the Responses API's typed SSE events, one renderer per
 * stream. Text, refusals and reasoning each open an output item that closes when something else
 * begins; function calls stay open until the end, since a provider may interleave their arguments.
 */
export class ResponseStreamRenderer {
  readonly #id = itemId("resp");
  readonly #createdAt = Math.floor(Date.now() / 1000);
  #model: string;
  #seq = 0;
  #started = false;
  readonly #items: OpenItem[] = [];
  /** The item text and refusals go to, while it is the last one opened. */
  #current: OpenItem | undefined;
  readonly #calls = new Map<number, OpenItem>();
  #finish = FinishReason.UNSPECIFIED;
  #usage: Usage | undefined;

  constructor(
    publicModel: string,
    private readonly echo: ResponsesEcho,
  ) {
    this.#model = publicModel;
  }

  render(chunk: ChatChunk): string {
    let out = this.#begin(chunk.start?.upstreamModel);
    if (chunk.usage !== undefined) this.#usage = chunk.usage;
    for (const d of chunk.choices) {
      // The Responses API has no `n`: only the first choice is an answer.
      if (d.index === 0) out += this.#delta(d);
    }
    return out;
  }

  /** `response.created` and `response.in_progress`, before anything else. */
  #begin(upstreamModel: string | undefined): string {
    if (this.#started) return "";
    this.#started = true;
    // The model that really answered, as OpenAI reports the dated snapshot behind an alias.
    if (upstreamModel) this.#model = upstreamModel;
    const response = this.#response("in_progress", {});
    return (
      this.#event("response.created", { response }) +
      this.#event("response.in_progress", { response })
    );
  }

  /** Closes every open item and sends the finished response (completed or incomplete). */
  finish(): string {
    let out = this.#begin(undefined);
    const reason = incompleteReason(this.#finish);
    out += this.#closeAll(reason === undefined ? "completed" : "incomplete");
    const status = reason === undefined ? "completed" : "incomplete";
    const response = this.#response(status, { usage: this.#usage, reason });
    out += this.#event(reason === undefined ? "response.completed" : "response.incomplete", {
      response,
    });
    return out;
  }

  /**
   * A failure after the stream began: `response.failed` (never `response.completed`), then an
   * `error` event. The openai SDK throws an APIError for any event whose JSON has an `error` key
   * (core/streaming.ts), so the `error` event carries the OpenAI error object there too, and
   * a truncated answer cannot be taken for a complete one.
   */
  error(f: Failure): string {
    let out = this.#begin(undefined);
    const e = openAIError(f).body.error;
    // Clients that check these events' schemas (the AI SDK's) want a string code.
    const code = e.code ?? e.type;
    const response = this.#response("failed", {
      usage: this.#usage,
      error: { code, message: e.message },
    });
    out += this.#event("response.failed", { response });
    out += this.#event("error", {
      code,
      message: e.message,
      param: e.param,
      error: e,
    });
    return out;
  }

  #delta(d: ChoiceDelta): string {
    let out = "";
    if (d.reasoning) {
      out += this.#ensure("reasoning");
      const item = this.#current as OpenItem;
      item.text += d.reasoning;
      out += this.#event("response.reasoning_summary_text.delta", {
        item_id: item.id,
        output_index: item.index,
        summary_index: 0,
        delta: d.reasoning,
      });
    }
    if (d.reasoningBlocks.length > 0 && this.echo.encrypted_reasoning) {
      // A signed block completes after its text, while its reasoning item is still open; a
      // redacted one has no text and opens an item of its own.
      out += this.#ensure("reasoning");
      const item = this.#current as OpenItem;
      item.blocks = [...(item.blocks ?? []), ...d.reasoningBlocks];
    }
    if (d.content) out += this.#text("output_text", d.content);
    if (d.refusal) out += this.#text("refusal", d.refusal);
    for (const t of d.toolCalls) {
      let item = this.#calls.get(t.index);
      if (item === undefined) {
        out += this.#closeCurrent("completed");
        item = this.#open("function_call");
        item.callId = t.id ?? itemId("call");
        item.name = t.name ?? "";
        this.#calls.set(t.index, item);
        out += this.#event("response.output_item.added", {
          output_index: item.index,
          item: functionCall(item.id, item.callId, item.name, "", "in_progress"),
        });
      }
      // Some upstreams name the call in a later fragment than the one that opened it.
      if (t.name !== undefined && item.name === "") item.name = t.name;
      if (t.arguments) {
        item.text += t.arguments;
        out += this.#event("response.function_call_arguments.delta", {
          item_id: item.id,
          output_index: item.index,
          delta: t.arguments,
        });
      }
    }
    if (d.finishReason !== FinishReason.UNSPECIFIED) this.#finish = d.finishReason;
    return out;
  }

  /** Text or refusal for the open message (opened, or given a new part, as needed). */
  #text(type: "output_text" | "refusal", text: string): string {
    let out = this.#ensure("message");
    const item = this.#current as OpenItem;
    let part = item.parts.at(-1);
    if (part === undefined || part.type !== type || !item.partOpen) {
      out += this.#closePart(item);
      part = { type, text: "" };
      item.parts.push(part);
      item.partOpen = true;
      out += this.#event("response.content_part.added", {
        item_id: item.id,
        output_index: item.index,
        content_index: item.parts.length - 1,
        part: renderPart({ type, text: "" }),
      });
    }
    part.text += text;
    out += this.#event(
      type === "refusal" ? "response.refusal.delta" : "response.output_text.delta",
      {
        item_id: item.id,
        output_index: item.index,
        content_index: item.parts.length - 1,
        delta: text,
        ...(type === "output_text" ? { logprobs: [] } : {}),
      },
    );
    return out;
  }

  /** Makes the current item one of `kind`, closing another and opening a new one. */
  #ensure(kind: "message" | "reasoning"): string {
    if (this.#current?.kind === kind && !this.#current.done) return "";
    let out = this.#closeCurrent("completed");
    const item = this.#open(kind);
    this.#current = item;
    if (kind === "message") {
      out += this.#event("response.output_item.added", {
        output_index: item.index,
        item: {
          id: item.id,
          type: "message",
          status: "in_progress",
          role: "assistant",
          content: [],
        },
      });
    } else {
      out += this.#event("response.output_item.added", {
        output_index: item.index,
        item: { id: item.id, type: "reasoning", summary: [] },
      });
      out += this.#event("response.reasoning_summary_part.added", {
        item_id: item.id,
        output_index: item.index,
        summary_index: 0,
        part: { type: "summary_text", text: "" },
      });
    }
    return out;
  }

  #open(kind: OpenItem["kind"]): OpenItem {
    const prefix = kind === "message" ? "msg" : kind === "reasoning" ? "rs" : "fc";
    const item: OpenItem = {
      kind,
      index: this.#items.length,
      id: itemId(prefix),
      parts: [],
      partOpen: false,
      text: "",
      callId: "",
      name: "",
      done: false,
    };
    this.#items.push(item);
    return item;
  }

  #closeCurrent(status: string): string {
    const item = this.#current;
    this.#current = undefined;
    return item === undefined ? "" : this.#close(item, status);
  }

  #closeAll(status: string): string {
    let out = this.#closeCurrent(status);
    for (const item of this.#items) out += this.#close(item, status);
    return out;
  }

  #closePart(item: OpenItem): string {
    const part = item.parts.at(-1);
    if (part === undefined || !item.partOpen) return "";
    item.partOpen = false;
    const at = { item_id: item.id, output_index: item.index, content_index: item.parts.length - 1 };
    const done =
      part.type === "refusal"
        ? this.#event("response.refusal.done", { ...at, refusal: part.text })
        : this.#event("response.output_text.done", { ...at, text: part.text, logprobs: [] });
    return done + this.#event("response.content_part.done", { ...at, part: renderPart(part) });
  }

  #close(item: OpenItem, status: string): string {
    if (item.done) return "";
    item.done = true;
    item.status = status;
    let out = "";
    if (item.kind === "message") {
      out += this.#closePart(item);
    } else if (item.kind === "reasoning") {
      const at = { item_id: item.id, output_index: item.index, summary_index: 0 };
      out += this.#event("response.reasoning_summary_text.done", { ...at, text: item.text });
      out += this.#event("response.reasoning_summary_part.done", {
        ...at,
        part: { type: "summary_text", text: item.text },
      });
    } else {
      out += this.#event("response.function_call_arguments.done", {
        item_id: item.id,
        output_index: item.index,
        name: item.name,
        arguments: item.text,
      });
    }
    return (
      out +
      this.#event("response.output_item.done", {
        output_index: item.index,
        item: renderItem(item, status),
      })
    );
  }

  #response(
    status: "in_progress" | "completed" | "incomplete" | "failed",
    extra: { usage?: Usage | undefined; reason?: string | undefined; error?: JsonObject },
  ): JsonObject {
    const output =
      status === "in_progress" ? [] : this.#items.map((i) => renderItem(i, itemState(i)));
    return responseObject(this.#id, this.#createdAt, this.#model, this.echo, status, output, extra);
  }

  #event(type: string, fields: JsonObject): string {
    const data = JSON.stringify({ type, sequence_number: this.#seq++, ...fields });
    return `event: ${type}\ndata: ${data}\n\n`;
  }
}

/** An item's status in a final response: what it was closed with, or cut short. */
function itemState(item: OpenItem): string {
  return item.done ? (item.status ?? "completed") : "incomplete";
}

function renderPart(part: { type: "output_text" | "refusal"; text: string }): JsonObject {
  return part.type === "refusal" ? { type: "refusal", refusal: part.text } : outputText(part.text);
}

function renderItem(item: OpenItem, status: string): JsonObject {
  switch (item.kind) {
    case "message":
      return {
        id: item.id,
        type: "message",
        status,
        role: "assistant",
        content: item.parts.map(renderPart),
      };
    case "reasoning":
      if (item.blocks !== undefined) item.encrypted ??= encodeReasoningBlocks(item.blocks);
      return reasoningItem(item.id, item.text, item.encrypted);
    default:
      return functionCall(item.id, item.callId, item.name, item.text, status);
  }
}
