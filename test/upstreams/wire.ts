// What every fake upstream does the same way: its loopback server, the behaviours that are not
// provider-specific, and writing bodies, raw SSE, and text cut into pieces.
import { once } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** An HTTP server on a loopback port that counts the TCP connections it accepts. */
export interface LoopbackServer {
  /** "http://127.0.0.1:PORT". */
  origin: string;
  /** TCP connections accepted so far (to observe keep-alive reuse). */
  readonly connections: number;
  /** Stops listening and drops every open connection. */
  close(): Promise<void>;
}

/** Serves `handle` on a free loopback port; a handler that throws resets its connection. */
export async function serveOnLoopback(
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
): Promise<LoopbackServer> {
  let connections = 0;
  const server = createServer((req, res) => {
    void handle(req, res).catch(() => res.destroy());
  });
  server.on("connection", () => {
    connections += 1;
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

/** Accepts the request and never answers. */
export interface HangBehavior {
  kind: "hang";
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

/** Writes and waits until the bytes reached the socket, so a following destroy cannot eat them. */
export function write(res: ServerResponse, data: string | Uint8Array): Promise<void> {
  return new Promise((resolve) => {
    res.write(data, () => resolve());
  });
}

/** A whole answer: a string is sent as text, anything else as JSON. `headers` win. */
export function sendBody(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const payload = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": typeof body === "string" ? "text/plain" : "application/json",
    "content-length": Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

/** Sends `chunks` verbatim (see sendRaw): for what the provider's own format cannot say. */
export interface RawBehavior extends RawAnswer {
  kind: "raw";
}

export interface RawAnswer {
  /** Default 200. */
  status?: number;
  headers?: Record<string, string>;
  chunks: Array<string | Uint8Array>;
  chunkDelayMs?: number;
  /** How the response stops after the chunks; default "end". */
  endMode?: "end" | "destroy";
}

/** Writes `chunks` verbatim as an event stream, then ends (or resets) the response. */
export async function sendRaw(res: ServerResponse, raw: RawAnswer): Promise<void> {
  res.writeHead(raw.status ?? 200, { "content-type": "text/event-stream", ...raw.headers });
  res.flushHeaders();
  for (const chunk of raw.chunks) {
    if (raw.chunkDelayMs) await sleep(raw.chunkDelayMs);
    if (res.destroyed) return;
    await write(res, chunk);
  }
  if (raw.endMode === "destroy") res.destroy();
  else res.end();
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
