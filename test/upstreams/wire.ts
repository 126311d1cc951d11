// What every fake upstream writes the same way: bodies, raw SSE, and text cut into pieces.
import type { ServerResponse } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";

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
