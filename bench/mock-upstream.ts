/**
 * The OpenAI-compatible upstream behind every benchmark variant. Every byte it sends is built
 * before the first request arrives, so serving an answer costs a parse of the small request body
 * and a write: the upstream must never be what limits a run.
 *
 * Routes:
 * - POST /v1/chat/completions — a ~400-byte JSON answer; with `"stream": true` an SSE stream of
 *   `deltas` content chunks `intervalMs` apart (the first at once), a finish chunk and
 *   `data: [DONE]`. Model `bench-slow` streams a delta every `slowIntervalMs` until released.
 *   Model `bench-unary` streams the JSON answer's text at once, a word per chunk, with its
 *   usage: the gateway always asks upstreams to stream, also for a client that is not, so this
 *   is what a non-streaming request through the gateway costs against the same answer direct.
 * - GET /v1/models — a model list (the gateway's prober asks for it).
 * - POST /bench/release — every open slow stream finishes at its next tick; answers the count.
 * - GET /bench/stats — `{ "slowOpen": n, "connections": n }`.
 *
 * Content deltas read `t0 `, `t1 `, … and a slow stream's last one `end`, so a client can check
 * that none went missing or out of order.
 *
 * Run alone: node --import tsx bench/mock-upstream.ts --port P [--deltas 64] [--interval-ms 20]
 * [--slow-interval-ms 5000]; prints `{"listening":P}` once it accepts connections.
 */

import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

export const SLOW_MODEL = "bench-slow";
/** The model the unary scenario asks for (see the header). */
export const UNARY_MODEL = "bench-unary";

export interface MockUpstreamOptions {
  /** Content chunks in a normal stream; default 64. */
  deltas?: number;
  /** Time between them; default 20 ms. */
  intervalMs?: number;
  /** Time between the chunks of a slow stream; default 5000 ms. */
  slowIntervalMs?: number;
}

export interface MockUpstream {
  server: Server;
  port: number;
  /** Finishes every open slow stream at its next tick; returns how many there were. */
  release(): number;
  close(): Promise<void>;
}

const ANSWER_TEXT =
  "Hello! This is the benchmark upstream answering with a fixed sentence so that every " +
  "response has the same size, about the size of a short chat reply.";
const ANSWER_USAGE = { prompt_tokens: 14, completion_tokens: 30, total_tokens: 44 };

const STREAM_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache",
};

/** The unary answer's 27 words as OpenAI stream chunks, a word each (the first with the role). */
export function answerWordChunks(): object[] {
  return ANSWER_TEXT.split(/(?<= )/).map((word, i) => ({
    id: "chatcmpl-bench",
    object: "chat.completion.chunk",
    created: 1_700_000_000,
    model: UNARY_MODEL,
    choices: [
      {
        index: 0,
        delta: i === 0 ? { role: "assistant", content: word } : { content: word },
        logprobs: null,
        finish_reason: null,
      },
    ],
  }));
}

function sseEvent(payload: unknown): Buffer {
  return Buffer.from(`data: ${JSON.stringify(payload)}\n\n`);
}

function deltaChunk(content: string): Buffer {
  return sseEvent({
    id: "chatcmpl-bench",
    object: "chat.completion.chunk",
    created: 1_700_000_000,
    model: "bench",
    choices: [{ index: 0, delta: { content }, logprobs: null, finish_reason: null }],
  });
}

/** Bytes built once: the JSON answer, the stream chunks, the model list. */
class Bodies {
  readonly answer = Buffer.from(
    JSON.stringify({
      id: "chatcmpl-bench",
      object: "chat.completion",
      created: 1_700_000_000,
      model: "bench",
      system_fingerprint: "fp_bench",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: ANSWER_TEXT, refusal: null },
          logprobs: null,
          finish_reason: "stop",
        },
      ],
      usage: ANSWER_USAGE,
    }),
  );
  /** The same answer as an OpenAI stream sent at once: a word per chunk, then finish and usage. */
  readonly answerStream = Buffer.concat([
    ...answerWordChunks().map(sseEvent),
    sseEvent({
      id: "chatcmpl-bench",
      object: "chat.completion.chunk",
      created: 1_700_000_000,
      model: UNARY_MODEL,
      choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }],
    }),
    sseEvent({
      id: "chatcmpl-bench",
      object: "chat.completion.chunk",
      created: 1_700_000_000,
      model: UNARY_MODEL,
      choices: [],
      usage: ANSWER_USAGE,
    }),
    Buffer.from("data: [DONE]\n\n"),
  ]);
  readonly answerHeaders = {
    "content-type": "application/json",
    "content-length": String(this.answer.length),
  };
  readonly models = Buffer.from(
    JSON.stringify({
      object: "list",
      data: ["bench", SLOW_MODEL, UNARY_MODEL].map((id) => ({
        id,
        object: "model",
        created: 0,
        owned_by: "b",
      })),
    }),
  );
  readonly finish = sseEvent({
    id: "chatcmpl-bench",
    object: "chat.completion.chunk",
    created: 1_700_000_000,
    model: "bench",
    choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }],
  });
  readonly end = deltaChunk("end");
  readonly done = Buffer.from("data: [DONE]\n\n");
  private readonly deltas: Buffer[] = [];

  constructor(normalDeltas: number) {
    for (let i = 0; i < normalDeltas; i++) this.delta(i);
  }

  /** Slow streams can run past the precomputed count; later ones are built once on first use. */
  delta(i: number): Buffer {
    let chunk = this.deltas[i];
    if (!chunk) {
      chunk = deltaChunk(`t${i} `);
      this.deltas[i] = chunk;
    }
    return chunk;
  }
}

interface SlowStream {
  released: boolean;
}

export async function startMockUpstream(
  port = 0,
  options: MockUpstreamOptions = {},
): Promise<MockUpstream> {
  const deltas = options.deltas ?? 64;
  const intervalMs = options.intervalMs ?? 20;
  const slowIntervalMs = options.slowIntervalMs ?? 5000;
  const bodies = new Bodies(deltas);
  const slow = new Set<SlowStream>();

  function stream(res: ServerResponse): void {
    res.writeHead(200, STREAM_HEADERS);
    res.write(bodies.delta(0));
    // Ticks are anchored to the start so timer lateness does not accumulate over 64 chunks.
    const start = performance.now();
    let sent = 1;
    let timer: NodeJS.Timeout | undefined;
    const tick = () => {
      if (sent < deltas) res.write(bodies.delta(sent++));
      if (sent >= deltas) {
        res.write(bodies.finish);
        res.end(bodies.done);
        return;
      }
      timer = setTimeout(tick, Math.max(0, start + sent * intervalMs - performance.now()));
    };
    if (deltas <= 1) tick();
    else timer = setTimeout(tick, intervalMs);
    res.on("close", () => clearTimeout(timer));
  }

  function slowStream(res: ServerResponse): void {
    res.writeHead(200, STREAM_HEADERS);
    res.write(bodies.delta(0));
    const state: SlowStream = { released: false };
    slow.add(state);
    let sent = 1;
    const timer = setInterval(() => {
      if (!state.released) {
        res.write(bodies.delta(sent++));
        return;
      }
      clearInterval(timer);
      slow.delete(state);
      res.write(bodies.end);
      res.write(bodies.finish);
      res.end(bodies.done);
    }, slowIntervalMs);
    res.on("close", () => {
      clearInterval(timer);
      slow.delete(state);
    });
  }

  function chat(req: IncomingMessage, res: ServerResponse): void {
    const parts: Buffer[] = [];
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => {
      let body: { stream?: unknown; model?: unknown };
      try {
        body = JSON.parse(Buffer.concat(parts).toString("utf8")) as typeof body;
      } catch {
        res.writeHead(400, { "content-type": "application/json" });
        res.end('{"error":{"message":"body is not JSON","type":"invalid_request_error"}}');
        return;
      }
      if (body.stream !== true) {
        res.writeHead(200, bodies.answerHeaders);
        res.end(bodies.answer);
      } else if (body.model === UNARY_MODEL) {
        res.writeHead(200, STREAM_HEADERS);
        res.end(bodies.answerStream);
      } else if (body.model === SLOW_MODEL) {
        slowStream(res);
      } else {
        stream(res);
      }
    });
  }

  function release(): number {
    for (const s of slow) s.released = true;
    return slow.size;
  }

  // Node's default keep-alive (5 s): the thousands of connections a gateway opens for held
  // streams close soon after, instead of lingering into the next variant's run.
  const server = createServer(
    { keepAliveTimeout: 5000, requestTimeout: 0, headersTimeout: 60_000, noDelay: true },
    (req, res) => {
      const path = req.url ?? "";
      if (req.method === "POST" && path === "/v1/chat/completions") return chat(req, res);
      if (req.method === "GET" && path === "/v1/models") {
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(bodies.models);
      }
      if (req.method === "POST" && path === "/bench/release") {
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(JSON.stringify({ released: release() }));
      }
      if (req.method === "GET" && path === "/bench/stats") {
        return void server.getConnections((_err, connections) => {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify({ slowOpen: slow.size, connections }));
        });
      }
      req.resume();
      res.writeHead(404, { "content-type": "application/json" });
      res.end('{"error":{"message":"no such route","type":"invalid_request_error"}}');
    },
  );
  // A deep accept queue: the open-streams scenario connects thousands of clients at once.
  server.listen({ port, host: "127.0.0.1", backlog: 65_535 });
  await once(server, "listening");
  return {
    server,
    port: (server.address() as AddressInfo).port,
    release,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "0" },
      deltas: { type: "string" },
      "interval-ms": { type: "string" },
      "slow-interval-ms": { type: "string" },
    },
  });
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const options: MockUpstreamOptions = {};
  const deltas = num(values.deltas);
  const intervalMs = num(values["interval-ms"]);
  const slowIntervalMs = num(values["slow-interval-ms"]);
  if (deltas !== undefined) options.deltas = deltas;
  if (intervalMs !== undefined) options.intervalMs = intervalMs;
  if (slowIntervalMs !== undefined) options.slowIntervalMs = slowIntervalMs;
  const upstream = await startMockUpstream(Number(values.port), options);
  process.stdout.write(`${JSON.stringify({ listening: upstream.port })}\n`);
  process.on("SIGTERM", () => void upstream.close().then(() => process.exit(0)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
