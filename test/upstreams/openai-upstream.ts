/**
 * A fake OpenAI-compatible upstream for tests: a real `node:http` server on 127.0.0.1 (port 0)
 * that speaks the Chat Completions wire format (JSON and SSE), records every request and does
 * what the test tells it to.
 *
 *   const upstream = await startOpenAIUpstream({ behavior: { kind: "answer", text: "Hi there" } });
 *   // providers: { local: { type: openai, base_url: upstream.url } }
 *   upstream.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "2" } });
 *   upstream.setBehavior((req) => (upstream.requests.length === 1 ? failOnce : answer));
 *   upstream.requests[0]?.body          // the parsed JSON the gateway sent
 *   await upstream.requests[0]?.closed  // resolves when that request's connection ended
 *   await upstream.close();
 *
 * Routes (under `url`, which ends in "/v1"):
 * - POST /v1/chat/completions — answers per the current behaviour; streams (SSE, ending with
 *   `data: [DONE]`) when the body has `stream: true`, and adds a usage chunk when it also has
 *   `stream_options.include_usage: true`, as OpenAI does.
 * - GET /v1/models — with an "answer" behaviour, an OpenAI model list of `models`; other
 *   behaviours apply here too (so probes can be made to fail).
 * - anything else — 404 with an OpenAI error body.
 *
 * Behaviours:
 * - `answer`: a normal answer — `text` split into `chunks` content chunks, optional `toolCalls`
 *   whose arguments stream in `fragments` pieces; `cutAfterChunks` stops a stream after that
 *   many SSE events without `[DONE]` (`cutMode` "end" ends the HTTP response cleanly,
 *   "destroy" resets the connection).
 * - `error`: answers `status` with `body` (an object is sent as JSON; default an OpenAI error
 *   envelope) and `headers` (e.g. `retry-after`).
 * - `hang`: reads the request and never sends headers (for timeouts and cancellation).
 * - `raw`: writes `chunks` verbatim after the headers, then ends (or resets) the response; for
 *   malformed streams and mid-stream error events.
 */

import { once } from "node:events";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

export interface FakeToolCall {
  /** Default `call_<n>`. */
  id?: string;
  name: string;
  /** The arguments JSON text, sent byte for byte. */
  arguments: string;
  /** How many pieces the arguments stream in; default 3. */
  fragments?: number;
}

export interface AnswerBehavior {
  kind: "answer";
  /** Default "Hello from the fake upstream." */
  text?: string;
  /** How many content chunks the text streams in; default 3. */
  chunks?: number;
  toolCalls?: FakeToolCall[];
  /** Default "tool_calls" when there are tool calls, else "stop". */
  finishReason?: string;
  /** Default: prompt 10, completion = chunks of text + tool-call fragments. */
  usage?: { prompt_tokens: number; completion_tokens: number };
  /** The model the answer names; default the requested model. */
  model?: string;
  /** Delay before the response headers. */
  headersDelayMs?: number;
  /** Delay before every SSE event. */
  chunkDelayMs?: number;
  /** Stream only: stop after this many SSE events, without `[DONE]`. */
  cutAfterChunks?: number;
  /** How a cut stream stops; default "end". */
  cutMode?: "end" | "destroy";
  /** Stream only: delay between `data: [DONE]` and the end of the HTTP body. */
  endDelayMs?: number;
}

export interface ErrorBehavior {
  kind: "error";
  status: number;
  /** An object is sent as JSON, a string as is; default an OpenAI error envelope. */
  body?: unknown;
  headers?: Record<string, string>;
}

export interface HangBehavior {
  kind: "hang";
}

export interface RawBehavior {
  kind: "raw";
  /** Default 200. */
  status?: number;
  /** Default `content-type: text/event-stream`. */
  headers?: Record<string, string>;
  chunks: Array<string | Uint8Array>;
  chunkDelayMs?: number;
  /** Default "end". */
  endMode?: "end" | "destroy";
}

export type UpstreamBehavior = AnswerBehavior | ErrorBehavior | HangBehavior | RawBehavior;

export interface RecordedRequest {
  method: string;
  /** Path and query, e.g. "/v1/chat/completions". */
  path: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body; undefined when there was none or it was not JSON. */
  body: unknown;
  /** Resolves when the exchange is over: response finished or connection closed. */
  closed: Promise<void>;
  /** True once the client went away before the response was complete. */
  aborted: boolean;
}

export interface OpenAIUpstreamOptions {
  /** Default `{ kind: "answer" }`. */
  behavior?: UpstreamBehavior | BehaviorFn;
  /** Ids for GET /v1/models; default ["fake-model"]. */
  models?: string[];
}

export type BehaviorFn = (request: RecordedRequest) => UpstreamBehavior;

export interface OpenAIUpstream {
  /** Base URL ending in "/v1", for a provider's `base_url`. */
  url: string;
  requests: RecordedRequest[];
  /** TCP connections accepted so far (to observe keep-alive reuse). */
  readonly connections: number;
  setBehavior(behavior: UpstreamBehavior | BehaviorFn): void;
  close(): Promise<void>;
}

export async function startOpenAIUpstream(
  options: OpenAIUpstreamOptions = {},
): Promise<OpenAIUpstream> {
  let behavior: UpstreamBehavior | BehaviorFn = options.behavior ?? { kind: "answer" };
  const models = options.models ?? ["fake-model"];
  const requests: RecordedRequest[] = [];
  let connections = 0;
  let answers = 0;

  const server = createServer((req, res) => {
    void handle(req, res).catch(() => res.destroy());
  });
  server.on("connection", () => {
    connections += 1;
  });

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
    if (path !== "/v1/chat/completions" && path !== "/v1/models") {
      sendJson(
        res,
        404,
        errorEnvelope(`no route ${record.method} ${path}`, "invalid_request_error"),
      );
      return;
    }
    const current = typeof behavior === "function" ? behavior(record) : behavior;
    switch (current.kind) {
      case "hang":
        return;
      case "error": {
        const errorBody =
          current.body ?? errorEnvelope(`fake upstream error ${current.status}`, "server_error");
        const payload = typeof errorBody === "string" ? errorBody : JSON.stringify(errorBody);
        res.writeHead(current.status, {
          "content-type": typeof errorBody === "string" ? "text/plain" : "application/json",
          ...current.headers,
        });
        res.end(payload);
        return;
      }
      case "raw": {
        res.writeHead(current.status ?? 200, {
          "content-type": "text/event-stream",
          ...current.headers,
        });
        res.flushHeaders();
        for (const chunk of current.chunks) {
          if (current.chunkDelayMs) await sleep(current.chunkDelayMs);
          if (res.destroyed) return;
          await write(res, chunk);
        }
        if (current.endMode === "destroy") res.destroy();
        else res.end();
        return;
      }
      case "answer":
        if (current.headersDelayMs) await sleep(current.headersDelayMs);
        if (res.destroyed) return;
        if (path === "/v1/models") {
          sendJson(res, 200, {
            object: "list",
            data: models.map((id) => ({
              id,
              object: "model",
              created: 1700000000,
              owned_by: "fake",
            })),
          });
          return;
        }
        answers += 1;
        await answer(res, current, isRecord(body) ? body : {}, `chatcmpl-fake${answers}`);
        return;
    }
  }

  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    get connections() {
      return connections;
    },
    setBehavior(next) {
      behavior = next;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

async function answer(
  res: ServerResponse,
  behavior: AnswerBehavior,
  request: Record<string, unknown>,
  id: string,
): Promise<void> {
  const text = behavior.text ?? "Hello from the fake upstream.";
  const pieces = text === "" ? [] : splitInto(text, behavior.chunks ?? 3);
  const calls = (behavior.toolCalls ?? []).map((call, i) => ({
    id: call.id ?? `call_${i + 1}`,
    name: call.name,
    arguments: call.arguments,
    fragments: splitInto(call.arguments, call.fragments ?? 3),
  }));
  const model =
    behavior.model ?? (typeof request.model === "string" ? request.model : "fake-model");
  const created = Math.floor(Date.now() / 1000);
  const finishReason = behavior.finishReason ?? (calls.length > 0 ? "tool_calls" : "stop");
  const fragmentCount = calls.reduce((n, call) => n + call.fragments.length, 0);
  const promptTokens = behavior.usage?.prompt_tokens ?? 10;
  const completionTokens = behavior.usage?.completion_tokens ?? pieces.length + fragmentCount;
  const usage = {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0 },
  };

  if (request.stream !== true) {
    const message: Record<string, unknown> = {
      role: "assistant",
      content: text === "" && calls.length > 0 ? null : text,
      refusal: null,
    };
    if (calls.length > 0) {
      message.tool_calls = calls.map((call) => ({
        id: call.id,
        type: "function",
        function: { name: call.name, arguments: call.arguments },
      }));
    }
    sendJson(res, 200, {
      id,
      object: "chat.completion",
      created,
      model,
      system_fingerprint: "fp_fake",
      choices: [{ index: 0, message, logprobs: null, finish_reason: finishReason }],
      usage,
    });
    return;
  }

  const streamOptions = request.stream_options;
  const includeUsage = isRecord(streamOptions) && streamOptions.include_usage === true;
  const head = {
    id,
    object: "chat.completion.chunk",
    created,
    model,
    system_fingerprint: "fp_fake",
  };
  const events: unknown[] = [];
  const chunk = (delta: Record<string, unknown>, finish: string | null = null) => ({
    ...head,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    ...(includeUsage && { usage: null }),
  });
  events.push(chunk({ role: "assistant", content: "", refusal: null }));
  for (const piece of pieces) events.push(chunk({ content: piece }));
  for (const [index, call] of calls.entries()) {
    events.push(
      chunk({
        tool_calls: [
          { index, id: call.id, type: "function", function: { name: call.name, arguments: "" } },
        ],
      }),
    );
    for (const fragment of call.fragments) {
      events.push(chunk({ tool_calls: [{ index, function: { arguments: fragment } }] }));
    }
  }
  events.push(chunk({}, finishReason));
  if (includeUsage) events.push({ ...head, choices: [], usage });

  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
  });
  res.flushHeaders();
  for (const [i, event] of events.entries()) {
    if (behavior.cutAfterChunks !== undefined && i >= behavior.cutAfterChunks) {
      if (behavior.cutMode === "destroy") res.destroy();
      else res.end();
      return;
    }
    if (behavior.chunkDelayMs) await sleep(behavior.chunkDelayMs);
    if (res.destroyed) return;
    await write(res, `data: ${JSON.stringify(event)}\n\n`);
  }
  if (behavior.endDelayMs) {
    await write(res, "data: [DONE]\n\n");
    await sleep(behavior.endDelayMs);
    res.end();
  } else {
    res.end("data: [DONE]\n\n");
  }
}

/** Splits text into `n` pieces of near-equal length, never inside a code point. */
export function splitInto(text: string, n: number): string[] {
  const chars = Array.from(text);
  const count = Math.max(1, Math.min(n, chars.length));
  const pieces: string[] = [];
  for (let i = 0; i < count; i++) {
    const from = Math.floor((i * chars.length) / count);
    const to = Math.floor(((i + 1) * chars.length) / count);
    pieces.push(chars.slice(from, to).join(""));
  }
  return pieces;
}

export function errorEnvelope(message: string, type: string, code: string | null = null) {
  return { error: { message, type, param: null, code } };
}

/** Writes and waits until the bytes reached the socket, so a following destroy cannot eat them. */
function write(res: ServerResponse, data: string | Uint8Array): Promise<void> {
  return new Promise((resolve) => {
    res.write(data, () => resolve());
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(payload),
  });
  res.end(payload);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
