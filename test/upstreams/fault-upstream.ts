/**
 * A fault-injecting OpenAI-compatible upstream for tests: a real `node:http` server on 127.0.0.1
 * (port 0) that answers POST /v1/chat/completions and GET /v1/models, and fails the way the
 * current mode says. It counts attempts and records when each request's connection closed, so a
 * test can prove how many times the gateway tried it and that it let go of the request.
 *
 *   const fault = await startFaultUpstream({ text: "one two three", chunks: 3 });
 *   // providers: { flaky: { type: openai, base_url: fault.url, probe: none } }
 *   await fault.setMode({ kind: "stall-after", chunks: 2 });
 *   fault.attempts                  // chat requests received
 *   await fault.requests[0]?.closed // resolves when that request's connection ended
 *   fault.requests[0]?.closedAt     // when, in performance.now() milliseconds
 *   await fault.close();
 *
 * The answer is `text` in `chunks` content pieces (`fault.pieces`). Streamed (`stream: true`) it
 * is a sequence of SSE events: a role chunk, one chunk per piece, a finish chunk, a usage chunk
 * when `stream_options.include_usage` is set, then `data: [DONE]`. Without `stream: true` it is
 * one JSON completion, written in as many pieces as the stream would have events, so `chunks`
 * counts in faults mean the same thing for both.
 *
 * Modes:
 * - `answer`: the answer, whole and on time (the default).
 * - `refuse`: nothing is served. `how: "close"` (default) closes the listener, so connecting to
 *   `url` is refused (ECONNREFUSED) until another mode opens it again on the same port;
 *   `how: "reset"` accepts connections and resets them at once, counting `refusedConnections`.
 *   Either way open keep-alive connections are dropped, so none can slip a request through.
 * - `status`: answers `status` with `body` (default an OpenAI error envelope) and `headers`.
 * - `rate-limit`: 429 with `Retry-After: retryAfterSeconds` and OpenAI's rate-limit envelope.
 * - `hang-before-headers`: reads the request and never answers.
 * - `error-first-event`: 200, then an error as the first thing in the body: a first SSE event
 *   `data: {"error":{…}}` (then the body ends, no `[DONE]`), or a JSON `{"error":{…}}` body.
 * - `reset-after`: writes `chunks` events (or pieces), then resets the connection.
 * - `stall-after`: writes `chunks` events (or pieces), then sends nothing more and keeps the
 *   connection open until the other side closes it.
 * - `trickle`: the whole answer, one event (or piece) every `intervalMs`.
 * - `split-bytes`: the whole answer, one byte per write.
 */

import { once } from "node:events";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { errorEnvelope } from "./openai-upstream.js";
import { isRecord, sendBody, splitInto, write } from "./wire.js";

export type FaultMode =
  | { kind: "answer" }
  | { kind: "refuse"; how?: "close" | "reset" }
  | { kind: "status"; status: number; body?: unknown; headers?: Record<string, string> }
  | { kind: "rate-limit"; retryAfterSeconds: number }
  | { kind: "hang-before-headers" }
  | { kind: "error-first-event"; message?: string }
  | { kind: "reset-after"; chunks: number }
  | { kind: "stall-after"; chunks: number }
  | { kind: "trickle"; intervalMs: number }
  | { kind: "split-bytes" };

export type FaultKind = FaultMode["kind"];

export interface FaultRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body; undefined when there was none or it was not JSON. */
  body: unknown;
  /** The request asked for `stream: true`. */
  stream: boolean;
  /** The mode that answered it. */
  mode: FaultKind;
  /** performance.now() when the request was read. */
  receivedAt: number;
  /** performance.now() when its exchange ended; undefined while it is open. */
  closedAt?: number;
  /** Resolves when the exchange is over: response finished or connection closed. */
  closed: Promise<void>;
  /** The connection closed before the response finished. */
  aborted: boolean;
  /** SSE events (or JSON pieces) written so far. */
  chunksSent: number;
}

export interface FaultUpstreamOptions {
  /** Default "The quick brown fox jumps over the lazy dog." */
  text?: string;
  /** How many content pieces the answer streams in; default 4. */
  chunks?: number;
  /** Default `answer`. */
  mode?: FaultMode;
}

export interface FaultUpstream {
  /** e.g. http://127.0.0.1:PORT/v1 — the `base_url` of a `type: openai` provider. */
  readonly url: string;
  /** Every request that reached a handler (chat and model list), in arrival order. */
  readonly requests: FaultRequest[];
  /** Chat completion requests received: the gateway's attempts at this upstream. */
  readonly attempts: number;
  /** Connections reset while refusing (at accept, or a kept-alive one that sent a request). */
  readonly refusedConnections: number;
  /** The content pieces of the answer, in order: what a client should reassemble. */
  readonly pieces: readonly string[];
  /** Switches the mode for the next requests; resolves once the listener is in that state. */
  setMode(mode: FaultMode): Promise<void>;
  /** Forgets recorded requests and counters. */
  reset(): void;
  close(): Promise<void>;
}

export async function startFaultUpstream(
  options: FaultUpstreamOptions = {},
): Promise<FaultUpstream> {
  const text = options.text ?? "The quick brown fox jumps over the lazy dog.";
  const pieces = splitInto(text, options.chunks ?? 4);
  let mode: FaultMode = options.mode ?? { kind: "answer" };
  const requests: FaultRequest[] = [];
  let refusedConnections = 0;
  let answers = 0;
  const sockets = new Set<Socket>();

  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.on("connection", (socket) => {
    if (refusing("reset")) {
      refusedConnections++;
      socket.resetAndDestroy();
      return;
    }
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  function refusing(how: "close" | "reset"): boolean {
    return mode.kind === "refuse" && (mode.how ?? "close") === how;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parts: Buffer[] = [];
    for await (const part of req) parts.push(part as Buffer);
    // A request that raced the switch to `refuse` on a kept-alive connection is refused too.
    if (mode.kind === "refuse") {
      refusedConnections++;
      req.socket.resetAndDestroy();
      return;
    }
    let body: unknown;
    try {
      body = parts.length > 0 ? JSON.parse(Buffer.concat(parts).toString("utf8")) : undefined;
    } catch {
      body = undefined;
    }
    let markClosed = () => {};
    const record: FaultRequest = {
      method: req.method ?? "",
      path: req.url ?? "",
      headers: req.headers,
      body,
      stream: isRecord(body) && body.stream === true,
      mode: mode.kind,
      receivedAt: performance.now(),
      closed: new Promise<void>((resolve) => {
        markClosed = resolve;
      }),
      aborted: false,
      chunksSent: 0,
    };
    res.on("close", () => {
      record.closedAt = performance.now();
      record.aborted = !res.writableFinished;
      markClosed();
    });
    requests.push(record);

    const path = (req.url ?? "").split("?", 1)[0];
    if (req.method === "GET" && path === "/v1/models") {
      sendBody(res, 200, {
        object: "list",
        data: [{ id: "fault-model", object: "model", created: 1700000000, owned_by: "fake" }],
      });
      return;
    }
    if (req.method !== "POST" || path !== "/v1/chat/completions") {
      sendBody(res, 404, errorEnvelope(`no route ${req.method} ${path}`, "invalid_request_error"));
      return;
    }
    answers++;
    await answerChat(res, record, isRecord(body) ? body : {}, mode);
  }

  async function answerChat(
    res: ServerResponse,
    record: FaultRequest,
    request: Record<string, unknown>,
    current: FaultMode,
  ): Promise<void> {
    switch (current.kind) {
      case "hang-before-headers":
        return;
      case "status":
        sendBody(
          res,
          current.status,
          current.body ??
            errorEnvelope(`fault upstream error ${current.status}`, statusType(current.status)),
          current.headers,
        );
        return;
      case "rate-limit":
        sendBody(
          res,
          429,
          errorEnvelope(
            "Rate limit reached for requests. Please try again later.",
            "requests",
            "rate_limit_exceeded",
          ),
          { "retry-after": String(current.retryAfterSeconds) },
        );
        return;
      case "error-first-event": {
        const error = errorEnvelope(
          current.message ?? "The server had an error while processing your request.",
          "server_error",
        );
        if (record.stream) {
          writeHead(res, true);
          await write(res, `data: ${JSON.stringify(error)}\n\n`);
          record.chunksSent = 1;
          res.end();
        } else {
          sendBody(res, 200, error);
        }
        return;
      }
    }
    const frames = record.stream
      ? streamFrames(request, pieces, `chatcmpl-fault${answers}`)
      : jsonFrames(request, pieces, `chatcmpl-fault${answers}`);
    writeHead(res, record.stream);
    res.flushHeaders();
    const stopAt =
      current.kind === "reset-after" || current.kind === "stall-after"
        ? current.chunks
        : Number.POSITIVE_INFINITY;
    for (const frame of frames) {
      if (record.chunksSent >= stopAt) break;
      if (current.kind === "trickle") await sleep(current.intervalMs);
      if (res.destroyed) return;
      if (current.kind === "split-bytes") {
        for (const byte of Buffer.from(frame)) {
          if (res.destroyed) return;
          await write(res, Buffer.of(byte));
        }
      } else {
        await write(res, frame);
      }
      record.chunksSent++;
    }
    if (current.kind === "reset-after" && record.chunksSent >= current.chunks) {
      res.socket?.resetAndDestroy();
      return;
    }
    // Stalled: nothing more, and the connection stays open until the gateway closes it.
    if (current.kind === "stall-after" && record.chunksSent >= current.chunks) return;
    res.end();
  }

  async function listen(port: number): Promise<number> {
    server.listen(port, "127.0.0.1");
    await once(server, "listening");
    return (server.address() as AddressInfo).port;
  }

  /** Stops accepting; resolves once every connection is gone (drop them first). */
  function closeListener(): Promise<void> {
    return new Promise((resolve) => server.close(() => resolve()));
  }

  function dropConnections(): void {
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  }

  const port = await listen(0);

  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    get attempts() {
      return requests.filter((r) => r.method === "POST" && r.path.startsWith("/v1/chat/")).length;
    },
    get refusedConnections() {
      return refusedConnections;
    },
    pieces,
    async setMode(next) {
      const wasClosed = !server.listening;
      mode = next;
      if (next.kind === "refuse") dropConnections();
      if (refusing("close") && !wasClosed) await closeListener();
      else if (!refusing("close") && wasClosed) await listen(port);
    },
    reset() {
      requests.length = 0;
      refusedConnections = 0;
    },
    async close() {
      dropConnections();
      if (server.listening) await closeListener();
    },
  };
}

/** The SSE events of the answer, `data: [DONE]` last. */
function streamFrames(request: Record<string, unknown>, pieces: readonly string[], id: string) {
  const head = {
    id,
    object: "chat.completion.chunk",
    created: Math.floor(Date.now() / 1000),
    model: typeof request.model === "string" ? request.model : "fault-model",
    system_fingerprint: "fp_fault",
  };
  const options = request.stream_options;
  const includeUsage = isRecord(options) && options.include_usage === true;
  const chunk = (delta: Record<string, unknown>, finish: string | null = null) => ({
    ...head,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    ...(includeUsage && { usage: null }),
  });
  const events: unknown[] = [chunk({ role: "assistant", content: "", refusal: null })];
  for (const piece of pieces) events.push(chunk({ content: piece }));
  events.push(chunk({}, "stop"));
  if (includeUsage) events.push({ ...head, choices: [], usage: usageOf(pieces) });
  return [...events.map((e) => `data: ${JSON.stringify(e)}\n\n`), "data: [DONE]\n\n"];
}

/** The JSON completion, cut into as many pieces as the streamed answer has events. */
function jsonFrames(request: Record<string, unknown>, pieces: readonly string[], id: string) {
  const completion = JSON.stringify({
    id,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: typeof request.model === "string" ? request.model : "fault-model",
    system_fingerprint: "fp_fault",
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: pieces.join(""), refusal: null },
        logprobs: null,
        finish_reason: "stop",
      },
    ],
    usage: usageOf(pieces),
  });
  // Role, pieces, finish and [DONE]: the event count of the same answer streamed.
  return splitInto(completion, pieces.length + 3);
}

function usageOf(pieces: readonly string[]) {
  return { prompt_tokens: 10, completion_tokens: pieces.length, total_tokens: 10 + pieces.length };
}

function statusType(status: number): string {
  if (status === 429) return "requests";
  return status >= 500 ? "server_error" : "invalid_request_error";
}

function writeHead(res: ServerResponse, stream: boolean): void {
  res.writeHead(200, {
    "content-type": stream ? "text/event-stream; charset=utf-8" : "application/json",
    "cache-control": "no-cache",
  });
}
