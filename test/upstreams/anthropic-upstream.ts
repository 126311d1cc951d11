import { createHash } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import type {
  AnthropicContentBlock,
  AnthropicErrorBody,
  AnthropicMessage,
  AnthropicStreamEvent,
  AnthropicUsage,
} from "../../services/connector/providers/anthropic/wire.js";
import {
  type HangBehavior,
  isRecord,
  type RawBehavior,
  sendBody,
  sendRaw,
  serveOnLoopback,
  splitInto,
  write,
} from "./wire.js";

/** Anthropic answers carry a request id; so do this fake's. */
function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  sendBody(res, status, body, { "request-id": "req_fake", ...headers });
}

export interface FakeToolUse {
  /** Default `toolu_fake_<n>`. */
  id?: string;
  name: string;
  /** The input as JSON text: streamed byte for byte, parsed for a whole answer. */
  input: string;
  /** How many input_json_delta pieces the input streams in; default 3. */
  fragments?: number;
}

export interface AnswerBehavior {
  kind: "answer";
  /** Default "Hello from the fake upstream."; "" sends no text block. */
  text?: string;
  /** How many text_delta events the text streams in; default 3. */
  chunks?: number;
  /**
   * A thinking block before the text, streamed in `thinkingChunks` pieces (default 2) and
   * signed: the fake accepts the block back only with the signature it issued for this text.
   */
  thinking?: string;
  thinkingChunks?: number;
  /** A redacted_thinking block after the thinking, with this encrypted data. */
  redactedThinking?: string;
  toolUses?: FakeToolUse[];
  /**
   * The answer's content blocks in this order, whole, as a non-streamed answer holds them;
   * replaces `text`, `thinking`, `redactedThinking` and `toolUses`. A stream sends each the way
   * Anthropic streams its type (see streamBlock); a thinking block without a signature gets the
   * one the fake issues for its text.
   */
  blocks?: Array<Record<string, unknown>>;
  /** Default "tool_use" when there are tool uses, else "end_turn". */
  stopReason?: string;
  /** The stop sequence named with stop reason "stop_sequence"; default none (null). */
  stopSequence?: string;
  /**
   * The container code execution ran in, named as Anthropic names it: on a whole answer, and
   * in a stream's message_delta. Default none (absent).
   */
  container?: Record<string, unknown>;
  /** Default: input 10, output = the number of deltas, no cache. */
  usage?: AnthropicUsage;
  /** The model the answer names; default the requested model. */
  model?: string;
  /** Delay before the response headers. */
  headersDelayMs?: number;
  /** Delay before every SSE event. */
  eventDelayMs?: number;
  /** Stream only: stop after this many events, without message_stop. */
  cutAfterEvents?: number;
  /** How a cut stream stops; default "end". */
  cutMode?: "end" | "destroy";
  /** Stream only: send an `error` event after this many events, then end the response. */
  errorAfterEvents?: number;
  /** The error that event carries; default overloaded_error "Overloaded". */
  streamError?: { type: string; message: string };
  /** Stream only: delay between message_stop and the end of the HTTP body. */
  endDelayMs?: number;
  /** What `POST /v1/messages/count_tokens` answers; default `fakeTokenCount(body)`. */
  inputTokens?: number;
}

export interface ErrorBehavior {
  kind: "error";
  status: number;
  /** An object is sent as JSON, a string as is; default an Anthropic error envelope. */
  body?: unknown;
  headers?: Record<string, string>;
}

export type UpstreamBehavior = AnswerBehavior | ErrorBehavior | HangBehavior | RawBehavior;

export interface RecordedRequest {
  method: string;
  /** Path and query, e.g. "/v1/messages". */
  path: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body; undefined when there was none or it was not JSON. */
  body: unknown;
  /** Resolves when the exchange is over: response finished or connection closed. */
  closed: Promise<void>;
  /** True once the client went away before the response was complete. */
  aborted: boolean;
}

export type BehaviorFn = (request: RecordedRequest) => UpstreamBehavior;

export interface AnthropicUpstreamOptions {
  /** Default `{ kind: "answer" }`. */
  behavior?: UpstreamBehavior | BehaviorFn;
  /** Ids for GET /v1/models; default ["claude-fake"]. */
  models?: string[];
}

export interface AnthropicUpstream {
  /** Base URL without a path, for a provider's `base_url`. */
  url: string;
  requests: RecordedRequest[];
  /** TCP connections accepted so far (to observe keep-alive reuse). */
  readonly connections: number;
  setBehavior(behavior: UpstreamBehavior | BehaviorFn): void;
  close(): Promise<void>;
}

/** The error type Anthropic names for each status (https://docs.anthropic.com/en/api/errors). */
const ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  402: "billing_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
  429: "rate_limit_error",
  500: "api_error",
  504: "timeout_error",
  529: "overloaded_error",
};

/** The fields Anthropic's count_tokens reference lists; it refuses any other as an extra input. */
const COUNT_TOKENS_FIELDS = new Set([
  "model",
  "messages",
  "system",
  "tools",
  "tool_choice",
  "thinking",
  "mcp_servers",
  "context_management",
]);

/** The fake's stand-in for a tokenizer: a quarter of the prompt fields' JSON length, rounded up. */
export function fakeTokenCount(body: Record<string, unknown>): number {
  const { system, messages, tools } = body;
  return Math.ceil(JSON.stringify({ system, messages, tools }).length / 4);
}

/** Anthropic's answer to a count_tokens body that is not one (its own wording), or undefined. */
function countTokensProblem(body: unknown): string | undefined {
  if (!isRecord(body)) return "Input should be a valid dictionary";
  for (const key of Object.keys(body)) {
    if (!COUNT_TOKENS_FIELDS.has(key)) return `${key}: Extra inputs are not permitted`;
  }
  if (typeof body.model !== "string") return "model: Field required";
  if (!Array.isArray(body.messages)) return "messages: Field required";
  return undefined;
}

export function anthropicError(type: string, message: string): AnthropicErrorBody {
  return { type: "error", error: { type, message }, request_id: "req_fake" };
}

/** A signature Anthropic would issue for a thinking text: opaque, and bound to the text. */
export function signThinking(thinking: string): string {
  return `Eq${createHash("sha256").update(thinking).digest("base64url")}`;
}

const THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking";

/**
 * What Anthropic checks of the thinking in a request's history, worded as it words it: every
 * thinking block must carry the signature issued for its text, and with thinking enabled the
 * last assistant turn of a tool-use loop must start with its thinking. Returns the error
 * message, or undefined when the history passes.
 */
function thinkingHistoryError(request: Record<string, unknown>): string | undefined {
  const messages = Array.isArray(request.messages) ? request.messages : [];
  const blocksOf = (message: unknown): Record<string, unknown>[] =>
    isRecord(message) && Array.isArray(message.content) ? message.content.filter(isRecord) : [];
  for (const [i, message] of messages.entries()) {
    for (const [j, block] of blocksOf(message).entries()) {
      if (block.type === "thinking" && block.signature !== signThinking(String(block.thinking))) {
        return `messages.${i}.content.${j}: Invalid \`signature\` in \`thinking\` block`;
      }
    }
  }
  const thinking = isRecord(request.thinking) ? request.thinking : undefined;
  if (thinking?.type !== "enabled") return undefined;
  const last = messages.findLastIndex((m) => isRecord(m) && m.role === "assistant");
  const blocks = blocksOf(messages[last]);
  const inToolLoop =
    blocks.some((b) => b.type === "tool_use") &&
    messages.slice(last + 1).some((m) => blocksOf(m).some((b) => b.type === "tool_result"));
  const first = blocks[0]?.type;
  if (!inToolLoop || first === "thinking" || first === "redacted_thinking") return undefined;
  return (
    `messages.${last}.content.0.type: Expected \`thinking\` or \`redacted_thinking\`, but found \`${String(first)}\`. ` +
    "When `thinking` is enabled, a final `assistant` message must start with a thinking block " +
    "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you " +
    "include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. " +
    `Please consult our documentation at ${THINKING_DOCS}`
  );
}

/**
 * What Anthropic refuses beside enabled thinking, worded as it words it: a budget under 1,024 or
 * not under `max_tokens`, `temperature` other than 1, `top_p` under 0.95, `top_k`, and a tool
 * choice that forces a tool. Returns the error message, or undefined when the request passes.
 */
function thinkingSettingsError(request: Record<string, unknown>): string | undefined {
  const thinking = isRecord(request.thinking) ? request.thinking : undefined;
  if (thinking?.type !== "enabled") return undefined;
  const budget = Number(thinking.budget_tokens);
  if (!(budget >= 1024)) {
    return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024";
  }
  if (!(Number(request.max_tokens) > budget)) {
    return `\`max_tokens\` must be greater than \`thinking.budget_tokens\`. Please consult our documentation at ${THINKING_DOCS}#max-tokens-and-context-window-size`;
  }
  if (request.temperature !== undefined && request.temperature !== 1) {
    return `\`temperature\` may only be set to 1 when thinking is enabled. Please consult our documentation at ${THINKING_DOCS}#feature-compatibility`;
  }
  if (typeof request.top_p === "number" && request.top_p < 0.95) {
    return `\`top_p\` must be greater than or equal to 0.95 or unset when thinking is enabled. Please consult our documentation at ${THINKING_DOCS}#feature-compatibility`;
  }
  if (request.top_k !== undefined) {
    return `\`top_k\` must be unset when thinking is enabled. Please consult our documentation at ${THINKING_DOCS}#feature-compatibility`;
  }
  const choice = isRecord(request.tool_choice) ? request.tool_choice.type : undefined;
  if (choice === "any" || choice === "tool") {
    return "Thinking may not be enabled when tool_choice forces tool use.";
  }
  return undefined;
}

/** Request fields that exist only behind a beta, and the prefix of the betas that enable them. */
const BETA_FIELDS: ReadonlyMap<string, string> = new Map([["mcp_servers", "mcp-client-"]]);

/** Anthropic's answer to a beta field sent without its `anthropic-beta`, or undefined. */
function betaFieldError(
  body: Record<string, unknown>,
  headers: IncomingHttpHeaders,
): string | undefined {
  const betas = String(headers["anthropic-beta"] ?? "").split(",");
  for (const [field, prefix] of BETA_FIELDS) {
    if (body[field] !== undefined && !betas.some((b) => b.trim().startsWith(prefix))) {
      return `${field}: Extra inputs are not permitted`;
    }
  }
  return undefined;
}

export async function startAnthropicUpstream(
  options: AnthropicUpstreamOptions = {},
): Promise<AnthropicUpstream> {
  let behavior: UpstreamBehavior | BehaviorFn = options.behavior ?? { kind: "answer" };
  const models = options.models ?? ["claude-fake"];
  const requests: RecordedRequest[] = [];
  let answers = 0;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let body: unknown;
    try {
      body = text === "" ? undefined : JSON.parse(text);
    } catch {
      body = undefined;
    }
    let markClosed = () => {};
    const record: RecordedRequest = {
      method: req.method ?? "",
      path: req.url ?? "",
      headers: req.headers,
      body,
      closed: new Promise<void>((resolve) => {
        markClosed = resolve;
      }),
      aborted: false,
    };
    res.on("close", () => {
      record.aborted = !res.writableFinished;
      markClosed();
    });
    requests.push(record);

    const path = record.path.split("?")[0];
    const route = `${record.method} ${path}`;
    if (
      route !== "POST /v1/messages" &&
      route !== "POST /v1/messages/count_tokens" &&
      route !== "GET /v1/models"
    ) {
      sendJson(res, 404, anthropicError("not_found_error", `no route ${route}`));
      return;
    }
    const current = typeof behavior === "function" ? behavior(record) : behavior;
    switch (current.kind) {
      case "hang":
        return;
      case "error": {
        const errorBody =
          current.body ??
          anthropicError(
            ERROR_TYPES[current.status] ?? "api_error",
            current.status === 529 ? "Overloaded" : `fake upstream error ${current.status}`,
          );
        sendJson(res, current.status, errorBody, current.headers);
        return;
      }
      case "raw":
        await sendRaw(res, current);
        return;
      case "answer":
        if (current.headersDelayMs) await sleep(current.headersDelayMs);
        if (res.destroyed) return;
        if (path === "/v1/models") {
          sendJson(res, 200, {
            data: models.map((id) => ({
              type: "model",
              id,
              display_name: id,
              created_at: "2025-01-01T00:00:00Z",
            })),
            has_more: false,
            first_id: models[0] ?? null,
            last_id: models.at(-1) ?? null,
          });
          return;
        }
        if (path === "/v1/messages/count_tokens") {
          const problem = countTokensProblem(body);
          if (problem !== undefined || !isRecord(body)) {
            sendJson(res, 400, anthropicError("invalid_request_error", problem ?? ""));
            return;
          }
          sendJson(res, 200, { input_tokens: current.inputTokens ?? fakeTokenCount(body) });
          return;
        }
        {
          const problem = isRecord(body)
            ? (betaFieldError(body, record.headers) ??
              thinkingSettingsError(body) ??
              thinkingHistoryError(body))
            : undefined;
          if (problem !== undefined) {
            sendJson(res, 400, anthropicError("invalid_request_error", problem));
            return;
          }
        }
        answers += 1;
        await answer(res, current, isRecord(body) ? body : {}, `msg_fake${answers}`);
        return;
    }
  }

  const server = await serveOnLoopback(handle);
  return {
    url: server.origin,
    requests,
    get connections() {
      return server.connections;
    },
    setBehavior(next) {
      behavior = next;
    },
    close: () => server.close(),
  };
}

/** An answer given as ordered `blocks` has none of the blocks the other options describe. */
function onlyBlocks(behavior: AnswerBehavior): AnswerBehavior {
  if (behavior.blocks === undefined) return behavior;
  const { thinking: _t, redactedThinking: _r, ...rest } = behavior;
  const calls = behavior.blocks.some((b) => b.type === "tool_use");
  return { stopReason: calls ? "tool_use" : "end_turn", ...rest, text: "", toolUses: [] };
}

async function answer(
  res: ServerResponse,
  asked: AnswerBehavior,
  request: Record<string, unknown>,
  id: string,
): Promise<void> {
  const behavior = onlyBlocks(asked);
  const text = behavior.text ?? "Hello from the fake upstream.";
  const textPieces = text === "" ? [] : splitInto(text, behavior.chunks ?? 3);
  const thinkingPieces =
    behavior.thinking === undefined
      ? []
      : splitInto(behavior.thinking, behavior.thinkingChunks ?? 2);
  const toolUses = (behavior.toolUses ?? []).map((use, i) => ({
    id: use.id ?? `toolu_fake_${i + 1}`,
    name: use.name,
    input: use.input,
    fragments: splitInto(use.input, use.fragments ?? 3),
  }));
  const model =
    behavior.model ?? (typeof request.model === "string" ? request.model : "claude-fake");
  const stopReason = behavior.stopReason ?? (toolUses.length > 0 ? "tool_use" : "end_turn");
  const signature = behavior.thinking === undefined ? "" : signThinking(behavior.thinking);
  const blocks = behavior.blocks?.map(signed);
  const deltas =
    blocks !== undefined
      ? blocks.length
      : textPieces.length +
        thinkingPieces.length +
        toolUses.reduce((n, use) => n + use.fragments.length, 0);
  const usage: AnthropicUsage = {
    input_tokens: 10,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
    output_tokens: deltas,
    ...behavior.usage,
  };

  if (request.stream !== true) {
    const content: AnthropicContentBlock[] = (blocks ?? []) as unknown as AnthropicContentBlock[];
    if (behavior.thinking !== undefined) {
      content.push({ type: "thinking", thinking: behavior.thinking, signature });
    }
    if (behavior.redactedThinking !== undefined) {
      content.push({ type: "redacted_thinking", data: behavior.redactedThinking });
    }
    if (text !== "") content.push({ type: "text", text });
    for (const use of toolUses) {
      content.push({
        type: "tool_use",
        id: use.id,
        name: use.name,
        input: JSON.parse(use.input) as Record<string, unknown>,
      });
    }
    const message: AnthropicMessage = {
      id,
      type: "message",
      role: "assistant",
      model,
      content,
      stop_reason: stopReason as AnthropicMessage["stop_reason"],
      stop_sequence: behavior.stopSequence ?? null,
      ...(behavior.container !== undefined && { container: behavior.container }),
      usage,
    };
    sendJson(res, 200, message);
    return;
  }

  const events: AnthropicStreamEvent[] = [];
  events.push({
    type: "message_start",
    message: {
      id,
      type: "message",
      role: "assistant",
      model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      // Anthropic states the prompt up front and a first output token count.
      usage: { ...usage, output_tokens: 1 },
    },
  });
  let index = 0;
  const block = (start: AnthropicContentBlock, deltas: AnthropicStreamEvent[]) => {
    events.push({ type: "content_block_start", index, content_block: start });
    if (index === 0) events.push({ type: "ping" });
    events.push(...deltas);
    events.push({ type: "content_block_stop", index });
    index += 1;
  };
  for (const whole of blocks ?? []) {
    const at = index;
    const { start, deltas } = streamBlock(whole);
    block(
      start as unknown as AnthropicContentBlock,
      deltas.map(
        (delta) => ({ type: "content_block_delta", index: at, delta }) as AnthropicStreamEvent,
      ),
    );
  }
  if (behavior.thinking !== undefined) {
    const at = index;
    block({ type: "thinking", thinking: "", signature: "" }, [
      ...thinkingPieces.map(
        (thinking): AnthropicStreamEvent => ({
          type: "content_block_delta",
          index: at,
          delta: { type: "thinking_delta", thinking },
        }),
      ),
      {
        type: "content_block_delta",
        index: at,
        delta: { type: "signature_delta", signature },
      },
    ]);
  }
  if (behavior.redactedThinking !== undefined) {
    block({ type: "redacted_thinking", data: behavior.redactedThinking }, []);
  }
  if (text !== "") {
    const at = index;
    block(
      { type: "text", text: "" },
      textPieces.map((piece) => ({
        type: "content_block_delta",
        index: at,
        delta: { type: "text_delta", text: piece },
      })),
    );
  }
  for (const use of toolUses) {
    const at = index;
    block(
      { type: "tool_use", id: use.id, name: use.name, input: {} },
      use.fragments.map((partial_json) => ({
        type: "content_block_delta",
        index: at,
        delta: { type: "input_json_delta", partial_json },
      })),
    );
  }
  events.push({
    type: "message_delta",
    delta: {
      stop_reason: stopReason as AnthropicMessage["stop_reason"],
      stop_sequence: behavior.stopSequence ?? null,
      ...(behavior.container !== undefined && { container: behavior.container }),
    },
    // Cumulative; the server tool counts come again here (the tier does not).
    usage: {
      output_tokens: usage.output_tokens ?? 0,
      ...(usage.server_tool_use != null && { server_tool_use: usage.server_tool_use }),
    },
  });
  events.push({ type: "message_stop" });

  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "request-id": "req_fake",
  });
  res.flushHeaders();
  for (const [i, event] of events.entries()) {
    if (behavior.errorAfterEvents !== undefined && i >= behavior.errorAfterEvents) {
      const error = behavior.streamError ?? { type: "overloaded_error", message: "Overloaded" };
      await write(res, frame(anthropicError(error.type, error.message)));
      res.end();
      return;
    }
    if (behavior.cutAfterEvents !== undefined && i >= behavior.cutAfterEvents) {
      if (behavior.cutMode === "destroy") res.destroy();
      else res.end();
      return;
    }
    if (behavior.eventDelayMs) await sleep(behavior.eventDelayMs);
    if (res.destroyed) return;
    if (behavior.endDelayMs && event.type === "message_stop") {
      await write(res, frame(event));
      await sleep(behavior.endDelayMs);
      res.end();
      return;
    }
    await write(res, frame(event));
  }
  res.end();
}

/** A block as the fake answers it: thinking carries the signature the fake issues for its text. */
function signed(block: Record<string, unknown>): Record<string, unknown> {
  if (block.type !== "thinking" || typeof block.signature === "string") return block;
  return { ...block, signature: signThinking(String(block.thinking)) };
}

/**
 * How Anthropic streams a block of each type: text and thinking open empty and fill with deltas
 * (citations first, then the text; the thinking's signature last); a block with an `input`
 * (tool_use, server_tool_use, mcp_tool_use) opens with `{}` and streams the input's JSON; any
 * other block (redacted thinking, server tool and MCP results) comes whole in its start.
 */
function streamBlock(block: Record<string, unknown>): {
  start: Record<string, unknown>;
  deltas: Array<Record<string, unknown>>;
} {
  if (block.type === "text") {
    const text = String(block.text);
    const citations = Array.isArray(block.citations) ? block.citations : [];
    return {
      start: { type: "text", text: "" },
      deltas: [
        ...citations.map((citation: unknown) => ({ type: "citations_delta", citation })),
        ...splitInto(text, 2).map((piece) => ({ type: "text_delta", text: piece })),
      ],
    };
  }
  if (block.type === "thinking") {
    return {
      start: { type: "thinking", thinking: "", signature: "" },
      deltas: [
        ...splitInto(String(block.thinking), 2).map((thinking) => ({
          type: "thinking_delta",
          thinking,
        })),
        { type: "signature_delta", signature: block.signature },
      ],
    };
  }
  if ("input" in block) {
    return {
      start: { ...block, input: {} },
      deltas: splitInto(JSON.stringify(block.input), 2).map((partial_json) => ({
        type: "input_json_delta",
        partial_json,
      })),
    };
  }
  return { start: block, deltas: [] };
}

/** One named SSE event, the way Anthropic writes them. */
export function frame(event: AnthropicStreamEvent): string {
  return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}
