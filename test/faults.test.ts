import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { type AnthropicUpstream, startAnthropicUpstream } from "./upstreams/anthropic-upstream.js";
import {
  type FaultMode,
  type FaultRequest,
  type FaultUpstream,
  startFaultUpstream,
} from "./upstreams/fault-upstream.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// README "Failure semantics", proved end to end: one process, a fault-injecting upstream as the
// first target, a healthy OpenAI-compatible upstream as the second, and the official openai
// client (no retries of its own) as the judge of what a client sees.

interface Timeouts {
  first_token_ms: number;
  idle_ms: number;
  total_ms: number;
}

const TIMEOUTS: Timeouts = { first_token_ms: 300, idle_ms: 300, total_ms: 3000 };
/** For tests where no timeout may fire. */
const PATIENT: Timeouts = { first_token_ms: 10_000, idle_ms: 10_000, total_ms: 20_000 };
/** Multi-byte characters, so an answer split byte by byte must be rejoined inside characters. */
const TEXT = "Fault lines — café, naïve, 🦊 jumps over 🐶 — and the answer arrives whole.";
const CHUNKS = 6;
const BACKUP_TEXT = "Hello from the healthy backup.";
/** Well past README's promise of 100 ms, so a loaded machine cannot fail the test. */
const CANCEL_WITHIN_MS = 1000;

let healthy: OpenAIUpstream;
let fault: FaultUpstream;
let gw: RunningFabric;

beforeAll(async () => {
  healthy = await startOpenAIUpstream({
    behavior: { kind: "answer", text: BACKUP_TEXT, chunks: 3 },
  });
});

afterAll(async () => {
  await healthy?.close();
});

/**
 * A fresh fault upstream and gateway for every test of the calling describe: shared health and
 * circuit breakers learn from failures, and one test's faults must not reorder the next one's
 * targets.
 */
function useFabric(timeouts: Timeouts = TIMEOUTS): void {
  beforeEach(async () => {
    fault = await startFaultUpstream({ text: TEXT, chunks: CHUNKS });
    gw = await startOneProcess(
      testConfig(`
providers:
  fault: { type: openai, base_url: "${fault.url}", api_key: sk-fault-secret, probe: none }
  healthy: { type: openai, base_url: "${healthy.url}", api_key: sk-healthy-secret, probe: none }
models:
  with-backup:
    targets:
      - { provider: fault, model: fault-primary }
      - { provider: healthy, model: healthy-backup }
  fault-only:
    targets: [{ provider: fault, model: fault-solo }]
routing:
  retries: 2
  backoff: { base_ms: 1, max_ms: 5 }
  timeouts: { first_token_ms: ${timeouts.first_token_ms}, idle_ms: ${timeouts.idle_ms}, total_ms: ${timeouts.total_ms} }
  # Out of the way: these tests are about single requests, not about a target's track record.
  circuit_breaker: { consecutive_failures: 1000, cooldown_ms: 1000 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
  });
  afterEach(async () => {
    await gw?.stop();
    await fault?.close();
    healthy.requests.length = 0;
  });
}

/** What one call looked like from the client's side. */
interface Seen {
  /** The HTTP status; undefined when the call never got one (e.g. the client aborted first). */
  status: number | undefined;
  headers: Headers | undefined;
  /** Streamed: each non-empty content delta in order. Not streamed: the whole content. */
  pieces: string[];
  /** What the SDK threw; undefined when the call succeeded. */
  error: InstanceType<typeof OpenAI.APIError> | undefined;
  /** The response body exactly as it came over the wire. */
  wire: string;
  /** Wall time from the call until it settled. */
  ms: number;
}

interface AskOptions {
  signal?: AbortSignal;
  /** Called with each streamed content delta as it arrives. */
  onPiece?: (piece: string) => void;
}

/** One chat call with the official client; a failure is recorded, never thrown. */
async function ask(model: string, stream: boolean, options: AskOptions = {}): Promise<Seen> {
  const tap = { wire: "" };
  const client = new OpenAI({
    baseURL: `${gw.url}/v1`,
    apiKey: "unused",
    maxRetries: 0,
    timeout: 20_000,
    fetch: tappedFetch(tap),
  });
  const seen: Seen = {
    status: undefined,
    headers: undefined,
    pieces: [],
    error: undefined,
    wire: "",
    ms: 0,
  };
  const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "hi" }];
  const requestOptions = options.signal ? { signal: options.signal } : {};
  const started = performance.now();
  try {
    if (stream) {
      const { data, response } = await client.chat.completions
        .create({ model, messages, stream: true }, requestOptions)
        .withResponse();
      seen.status = response.status;
      seen.headers = response.headers;
      for await (const chunk of data) {
        const piece = chunk.choices[0]?.delta.content;
        if (!piece) continue;
        seen.pieces.push(piece);
        options.onPiece?.(piece);
      }
    } else {
      const { data, response } = await client.chat.completions
        .create({ model, messages }, requestOptions)
        .withResponse();
      seen.status = response.status;
      seen.headers = response.headers;
      seen.pieces.push(data.choices[0]?.message.content ?? "");
    }
  } catch (err) {
    if (!(err instanceof OpenAI.APIError)) throw err;
    seen.error = err;
    seen.status ??= err.status;
    seen.headers ??= err.headers;
  }
  seen.ms = performance.now() - started;
  seen.wire = tap.wire;
  return seen;
}

/** A fetch that also keeps a copy of every response body as it streams past the SDK. */
function tappedFetch(tap: { wire: string }): typeof fetch {
  return async (input, init) => {
    const res = await fetch(input, init);
    if (!res.body) return res;
    const decoder = new TextDecoder();
    const copy = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        tap.wire += decoder.decode(chunk, { stream: true });
        controller.enqueue(chunk);
      },
    });
    return new Response(res.body.pipeThrough(copy), {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  };
}

/** Resolves with `promise`, or fails the test if it takes longer than `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for the upstream request's connection to close; fails the test if it stays open. */
async function upstreamClosed(req: FaultRequest | undefined, ms: number): Promise<void> {
  if (!req) throw new Error("the upstream got no request");
  await within(req.closed, ms, "the upstream request to close");
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 5000;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Every call settles well before twice the total deadline: nothing hangs. */
function expectSettledInTime(seen: Seen, timeouts: Timeouts = TIMEOUTS): void {
  expect(seen.ms).toBeLessThan(timeouts.total_ms * 2);
}

/** The SSE `data:` payloads of a streamed body, in order. */
function sseData(wire: string): string[] {
  return wire
    .split("\n\n")
    .filter((event) => event.startsWith("data: "))
    .map((event) => event.slice("data: ".length));
}

const chatAttempts = (up: OpenAIUpstream) =>
  up.requests.filter((r) => r.path.startsWith("/v1/chat/")).length;

/** A fault that happens before the first chunk, and how many attempts reach the fault upstream. */
interface EarlyFault {
  name: string;
  mode: FaultMode;
  /** Attempts the fault upstream sees (a closed port sees none). */
  attempts: number;
  /** The fault holds the request open, so the gateway must close it itself. */
  holds?: boolean;
}

const EARLY_FAULTS: EarlyFault[] = [
  { name: "connection refused", mode: { kind: "refuse" }, attempts: 0 },
  { name: "connection reset on accept", mode: { kind: "refuse", how: "reset" }, attempts: 0 },
  { name: "500", mode: { kind: "status", status: 500 }, attempts: 1 },
  { name: "503", mode: { kind: "status", status: 503 }, attempts: 1 },
  { name: "429 with Retry-After", mode: { kind: "rate-limit", retryAfterSeconds: 7 }, attempts: 1 },
  {
    name: "no headers within first_token_ms",
    mode: { kind: "hang-before-headers" },
    attempts: 1,
    holds: true,
  },
  { name: "an error as the first event", mode: { kind: "error-first-event" }, attempts: 1 },
  { name: "a reset before the first event", mode: { kind: "reset-after", chunks: 0 }, attempts: 1 },
  {
    name: "a stall before the first event",
    mode: { kind: "stall-after", chunks: 0 },
    attempts: 1,
    holds: true,
  },
];

const STREAMING = [
  ["streaming", true],
  ["not streaming", false],
] as const;

describe.each(STREAMING)("a fault before the first token (%s)", (_label, stream) => {
  useFabric();

  it.each(EARLY_FAULTS)(
    "$name: the next target answers and the client sees no trace",
    async ({ mode, attempts, holds }) => {
      await fault.setMode(mode);
      const seen = await ask("with-backup", stream);
      expect(seen.error).toBeUndefined();
      expect(seen.status).toBe(200);
      expect(seen.pieces.join("")).toBe(BACKUP_TEXT);
      expect(seen.headers?.get("x-switchyard-provider")).toBe("healthy");
      expect(seen.headers?.get("x-switchyard-attempts")).toBe("2");
      expect(fault.attempts).toBe(attempts);
      // A reset connection is an attempt too, counted where the upstream can see it.
      if (mode.kind === "refuse" && mode.how === "reset") expect(fault.refusedConnections).toBe(1);
      expect(chatAttempts(healthy)).toBe(1);
      if (stream) expect(sseData(seen.wire).at(-1)).toBe("[DONE]");
      if (holds) {
        // The abandoned attempt is cancelled, not left open at the upstream.
        const held = fault.requests[0];
        await upstreamClosed(held, 1000);
        expect(held?.aborted).toBe(true);
      }
      expectSettledInTime(seen);
    },
  );
});

/**
 * What a client sees when the fault target is the only one: the last failure, scrubbed. With
 * `retries: 2` the only target is tried three times, except after a 429 with Retry-After, which
 * cools it down for that long.
 */
const FINAL_FAILURES: Array<{
  name: string;
  mode: FaultMode;
  status: number;
  type: string;
  code?: string;
  /** Requests the fault upstream saw. */
  attempts: number;
  /** Attempts the router made, when the upstream saw fewer (a refused connection is one). */
  tried?: number;
}> = [
  {
    name: "connection refused",
    mode: { kind: "refuse" },
    status: 502,
    type: "server_error",
    attempts: 0,
    tried: 3,
  },
  {
    name: "connection reset on accept",
    mode: { kind: "refuse", how: "reset" },
    status: 502,
    type: "server_error",
    attempts: 0,
    tried: 3,
  },
  {
    name: "500",
    mode: { kind: "status", status: 500 },
    status: 502,
    type: "server_error",
    attempts: 3,
  },
  {
    name: "503",
    mode: { kind: "status", status: 503 },
    status: 503,
    type: "server_error",
    attempts: 3,
  },
  {
    name: "429 with Retry-After",
    mode: { kind: "rate-limit", retryAfterSeconds: 7 },
    status: 429,
    type: "requests",
    code: "rate_limit_exceeded",
    attempts: 1,
  },
  {
    name: "no headers within first_token_ms",
    mode: { kind: "hang-before-headers" },
    status: 504,
    type: "server_error",
    code: "timeout",
    attempts: 3,
  },
  {
    name: "an error as the first event",
    mode: { kind: "error-first-event", message: "the model crashed" },
    status: 502,
    type: "server_error",
    attempts: 3,
  },
  {
    name: "a reset before the first event",
    mode: { kind: "reset-after", chunks: 0 },
    status: 502,
    type: "server_error",
    attempts: 3,
  },
  {
    name: "a stall before the first event",
    mode: { kind: "stall-after", chunks: 0 },
    status: 504,
    type: "server_error",
    code: "timeout",
    attempts: 3,
  },
];

describe.each(STREAMING)("a fault on the only target (%s)", (_label, stream) => {
  useFabric();

  it.each(FINAL_FAILURES)("$name: the client gets $status in OpenAI's envelope", async (f) => {
    await fault.setMode(f.mode);
    const seen = await ask("fault-only", stream);
    expect(seen.status).toBe(f.status);
    expect(seen.error).toBeInstanceOf(OpenAI.APIError);
    expect(seen.error?.type).toBe(f.type);
    if (f.code) expect(seen.error?.code).toBe(f.code);
    expect(seen.error?.message).toBeTruthy();
    expect(seen.headers?.get("x-request-id")).toBeTruthy();
    // An error answer is plain JSON, never a half-open stream.
    expect(seen.headers?.get("content-type")).toContain("application/json");
    expect(seen.wire).not.toContain("sk-fault-secret");
    expect(fault.attempts).toBe(f.attempts);
    expect(seen.headers?.get("x-switchyard-attempts")).toBe(String(f.tried ?? f.attempts));
    if (f.mode.kind === "refuse" && f.mode.how === "reset") {
      expect(fault.refusedConnections).toBe(3);
    }
    if (f.mode.kind === "rate-limit") {
      expect(seen.error).toBeInstanceOf(OpenAI.RateLimitError);
      expect(seen.headers?.get("retry-after")).toBe("7");
    }
    if (f.mode.kind === "error-first-event")
      expect(seen.error?.message).toContain("the model crashed");
    expectSettledInTime(seen);
  });
});

describe.each(STREAMING)("an upstream 400 (%s)", (_label, stream) => {
  useFabric();

  it("is the client's answer at once: no other target is tried", async () => {
    await fault.setMode({
      kind: "status",
      status: 400,
      body: {
        error: {
          message: "Invalid 'messages[0].content': too long",
          type: "invalid_request_error",
          param: "messages",
          code: null,
        },
      },
    });
    const seen = await ask("with-backup", stream);
    expect(seen.status).toBe(400);
    expect(seen.error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(seen.error?.type).toBe("invalid_request_error");
    expect(seen.error?.message).toContain("Invalid 'messages[0].content'");
    expect(fault.attempts).toBe(1);
    expect(chatAttempts(healthy)).toBe(0);
    expectSettledInTime(seen);
  });

  it("keeps an upstream 413: the body is too large for it, not malformed", async () => {
    await fault.setMode({
      kind: "status",
      status: 413,
      body: { error: { message: "Request too large", type: "invalid_request_error" } },
    });
    const seen = await ask("with-backup", stream);
    expect(seen.status).toBe(413);
    expect(seen.error?.message).toContain("Request too large");
    expect(fault.attempts).toBe(1);
    expect(chatAttempts(healthy)).toBe(0);
    expectSettledInTime(seen);
  });
});

describe("a stream that breaks after its role chunk, before any token", () => {
  useFabric();

  // The role chunk (`{"role":"assistant","content":""}`) comes first and alone: the client has
  // been shown nothing yet, so the request still moves on to the next target.
  it.each([
    { name: "connection reset", mode: { kind: "reset-after", chunks: 1 } as FaultMode },
    { name: "stall", mode: { kind: "stall-after", chunks: 1 } as FaultMode },
  ])(
    "$name: is retried on the next target, and the client sees only its answer",
    async ({ mode }) => {
      await fault.setMode(mode);
      const seen = await ask("with-backup", true);
      expect(seen.error).toBeUndefined();
      expect(seen.status).toBe(200);
      expect(seen.pieces.join("")).toBe(BACKUP_TEXT);
      expect(seen.headers?.get("x-switchyard-provider")).toBe("healthy");
      expect(seen.headers?.get("x-switchyard-attempts")).toBe("2");
      // One role chunk reached the client, the answering target's.
      expect(sseData(seen.wire).filter((e) => e.includes('"role"'))).toHaveLength(1);
      expect(fault.attempts).toBe(1);
      expect(chatAttempts(healthy)).toBe(1);
    },
  );
});

describe("a stream that breaks after its first token", () => {
  useFabric();

  // Two events reach the client first: the role chunk and the first content piece.
  const cuts: Array<{ name: string; mode: FaultMode }> = [
    { name: "connection reset", mode: { kind: "reset-after", chunks: 2 } },
    { name: "stall", mode: { kind: "stall-after", chunks: 2 } },
  ];

  it.each(cuts)(
    "$name: ends with an error event, without [DONE], and is not retried",
    async ({ mode }) => {
      await fault.setMode(mode);
      const seen = await ask("with-backup", true);
      expect(seen.status).toBe(200);
      expect(seen.headers?.get("x-switchyard-provider")).toBe("fault");
      expect(seen.headers?.get("x-switchyard-attempts")).toBe("1");
      expect(seen.pieces).toEqual(fault.pieces.slice(0, 1));
      // The SDK raises the error event: a cut answer cannot pass for a complete one.
      expect(seen.error).toBeInstanceOf(OpenAI.APIError);
      expect(seen.error?.status).toBeUndefined();
      expect(seen.error?.type).toBe("server_error");
      if (mode.kind === "stall-after") expect(seen.error?.code).toBe("timeout");
      const events = sseData(seen.wire);
      expect(events).not.toContain("[DONE]");
      expect(JSON.parse(events.at(-1) ?? "{}")).toHaveProperty("error.message");
      expect(seen.wire).not.toContain("sk-fault-secret");
      expect(fault.attempts).toBe(1);
      expect(chatAttempts(healthy)).toBe(0);
      const upstream = fault.requests[0];
      await upstreamClosed(upstream, 1000);
      expect(upstream?.aborted).toBe(true);
      expectSettledInTime(seen);
    },
  );

  it.each(cuts)(
    "not streaming, a $name mid-answer is retried whole on the next target",
    async ({ mode }) => {
      await fault.setMode(mode);
      const seen = await ask("with-backup", false);
      expect(seen.status).toBe(200);
      expect(seen.pieces).toEqual([BACKUP_TEXT]);
      expect(seen.headers?.get("x-switchyard-attempts")).toBe("2");
      expect(fault.attempts).toBe(1);
      expect(chatAttempts(healthy)).toBe(1);
      expectSettledInTime(seen);
    },
  );
});

describe("an answer written one byte at a time", () => {
  // Byte by byte, the role chunk alone takes hundreds of event-loop turns; on a loaded machine
  // that can outlast a 300 ms first_token_ms. This is about framing, not timing.
  useFabric(PATIENT);

  it("streaming, one byte per write: the exact text in the same chunks, then [DONE]", async () => {
    await fault.setMode({ kind: "split-bytes" });
    const seen = await ask("with-backup", true);
    expect(seen.error).toBeUndefined();
    expect(seen.pieces).toEqual([...fault.pieces]);
    expect(seen.pieces.join("")).toBe(TEXT);
    expect(sseData(seen.wire).at(-1)).toBe("[DONE]");
    expect(seen.headers?.get("x-switchyard-attempts")).toBe("1");
    expect(fault.attempts).toBe(1);
    expect(chatAttempts(healthy)).toBe(0);
    expectSettledInTime(seen);
  });

  it("not streaming, one byte per write: the exact text", async () => {
    await fault.setMode({ kind: "split-bytes" });
    const seen = await ask("with-backup", false);
    expect(seen.error).toBeUndefined();
    expect(seen.pieces).toEqual([TEXT]);
    expect(fault.attempts).toBe(1);
    expect(chatAttempts(healthy)).toBe(0);
    expectSettledInTime(seen);
  });
});

describe("slow answers", () => {
  useFabric();

  it("streaming, a chunk every 100 ms for longer than first_token_ms: whole and in order", async () => {
    await fault.setMode({ kind: "trickle", intervalMs: 100 });
    const arrivals: number[] = [];
    const seen = await ask("with-backup", true, {
      onPiece: () => arrivals.push(performance.now()),
    });
    expect(seen.error).toBeUndefined();
    expect(seen.pieces).toEqual([...fault.pieces]);
    expect(sseData(seen.wire).at(-1)).toBe("[DONE]");
    expect(fault.attempts).toBe(1);
    expect(chatAttempts(healthy)).toBe(0);
    // Passed through as they come, not gathered: the pieces arrive spread over the answer.
    const first = arrivals[0] ?? 0;
    const last = arrivals.at(-1) ?? 0;
    expect(last - first).toBeGreaterThanOrEqual((CHUNKS - 1) * 100 * 0.5);
    expect(seen.ms).toBeGreaterThan(TIMEOUTS.first_token_ms);
    expectSettledInTime(seen);
  });

  it("not streaming, an answer generated for longer than first_token_ms: the exact text", async () => {
    // Upstreams are asked to stream even for a client that is not, so a slow generation is not
    // mistaken for a hung target: only the gaps count against idle_ms.
    await fault.setMode({ kind: "trickle", intervalMs: 100 });
    const seen = await ask("with-backup", false);
    expect(seen.error).toBeUndefined();
    expect(seen.pieces).toEqual([TEXT]);
    expect(fault.attempts).toBe(1);
    expect(chatAttempts(healthy)).toBe(0);
    expect(seen.ms).toBeGreaterThan(TIMEOUTS.first_token_ms);
    expectSettledInTime(seen);
  });
});

describe("total_ms bounds a stream that keeps trickling", () => {
  const short: Timeouts = { first_token_ms: 300, idle_ms: 300, total_ms: 500 };
  useFabric(short);

  it("cuts it at the deadline with a timeout error event and no [DONE]", async () => {
    // Ten events 100 ms apart: every gap is inside idle_ms, the whole is past total_ms.
    await fault.setMode({ kind: "trickle", intervalMs: 100 });
    const seen = await ask("with-backup", true);
    expect(seen.status).toBe(200);
    expect(seen.pieces.length).toBeGreaterThan(0);
    expect(seen.pieces.length).toBeLessThan(CHUNKS);
    expect(seen.error?.code).toBe("timeout");
    expect(sseData(seen.wire)).not.toContain("[DONE]");
    expect(chatAttempts(healthy)).toBe(0);
    expect(seen.ms).toBeGreaterThanOrEqual(short.total_ms * 0.9);
    expectSettledInTime(seen, short);
    const upstream = fault.requests[0];
    await upstreamClosed(upstream, 1000);
    expect(upstream?.aborted).toBe(true);
  });
});

describe("a client that disconnects", () => {
  // Timeouts far away, so only the client's leaving can close the upstream request in time.
  useFabric(PATIENT);

  it.each(STREAMING)(
    "%s, while the upstream hangs before headers: the upstream request closes",
    async (_label, stream) => {
      await fault.setMode({ kind: "hang-before-headers" });
      const ac = new AbortController();
      const call = ask("fault-only", stream, { signal: ac.signal });
      await until(() => fault.attempts === 1, "the upstream request");
      const abortedAt = performance.now();
      ac.abort();
      const seen = await call;
      expect(seen.error).toBeInstanceOf(OpenAI.APIUserAbortError);
      const upstream = fault.requests[0];
      await upstreamClosed(upstream, 3000);
      expect(upstream?.aborted).toBe(true);
      expect((upstream?.closedAt ?? Number.POSITIVE_INFINITY) - abortedAt).toBeLessThanOrEqual(
        CANCEL_WITHIN_MS,
      );
    },
  );

  const midStream: Array<{ name: string; mode: FaultMode }> = [
    { name: "trickling", mode: { kind: "trickle", intervalMs: 400 } },
    { name: "stalled", mode: { kind: "stall-after", chunks: 2 } },
  ];

  it.each(midStream)(
    "mid-stream while the upstream is $name: the upstream request closes",
    async ({ mode }) => {
      await fault.setMode(mode);
      const ac = new AbortController();
      let abortedAt = 0;
      const seen = await ask("fault-only", true, {
        signal: ac.signal,
        onPiece: () => {
          abortedAt = performance.now();
          ac.abort();
        },
      });
      expect(seen.status).toBe(200);
      // The SDK ends an aborted stream's iteration quietly; the pieces stop at the abort.
      expect(seen.pieces).toEqual(fault.pieces.slice(0, 1));
      const upstream = fault.requests[0];
      await upstreamClosed(upstream, 3000);
      expect(upstream?.aborted).toBe(true);
      expect((upstream?.closedAt ?? Number.POSITIVE_INFINITY) - abortedAt).toBeLessThanOrEqual(
        CANCEL_WITHIN_MS,
      );
      // The answer was not generated to its end for nobody.
      expect(upstream?.chunksSent).toBeLessThan(CHUNKS + 3);
    },
  );
});

describe("Anthropic's overloaded_error right after message_start", () => {
  let anthropic: AnthropicUpstream;
  let anthropicGw: RunningFabric;

  beforeAll(async () => {
    // Model "busy" sends message_start, then the error event, as a loaded Anthropic does.
    anthropic = await startAnthropicUpstream({
      behavior: (req) => {
        const model = (req.body as { model?: string }).model;
        if (model === "busy") return { kind: "answer", errorAfterEvents: 1 };
        // message_start, content_block_start and two text deltas, then the error.
        if (model === "busy-later") return { kind: "answer", errorAfterEvents: 4 };
        return { kind: "answer", text: BACKUP_TEXT };
      },
    });
    anthropicGw = await startOneProcess(
      testConfig(`
providers:
  claude: { type: anthropic, base_url: "${anthropic.url}", api_key: sk-ant-secret, probe: none }
models:
  claude-with-backup:
    targets: [{ provider: claude, model: busy }, { provider: claude, model: idle }]
  claude-busy-later:
    targets: [{ provider: claude, model: busy-later }, { provider: claude, model: idle }]
routing:
  retries: 2
  backoff: { base_ms: 1, max_ms: 5 }
  circuit_breaker: { consecutive_failures: 1000, cooldown_ms: 1000 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
  });
  afterAll(async () => {
    await anthropicGw?.stop();
    await anthropic?.close();
  });

  it("is retried on the next target for a streaming client, which sees one clean answer", async () => {
    const client = new Anthropic({ baseURL: anthropicGw.url, apiKey: "unused", maxRetries: 0 });
    const { data: stream, response } = await client.messages
      .create({
        model: "claude-with-backup",
        max_tokens: 50,
        stream: true,
        messages: [{ role: "user", content: "hi" }],
      })
      .withResponse();
    const types: string[] = [];
    let text = "";
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "content_block_delta" && event.delta.type === "text_delta") {
        text += event.delta.text;
      }
    }
    expect(text).toBe(BACKUP_TEXT);
    expect(response.headers.get("x-switchyard-attempts")).toBe("2");
    expect(types.filter((t) => t === "message_start")).toHaveLength(1);
    expect(types.at(-1)).toBe("message_stop");
    expect(anthropic.requests.map((r) => (r.body as { model: string }).model)).toEqual([
      "busy",
      "idle",
    ]);
  });

  it("after a token, ends the stream with the same overloaded_error, not a generic api_error", async () => {
    const res = await fetch(`${anthropicGw.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": "unused" },
      body: JSON.stringify({
        model: "claude-busy-later",
        max_tokens: 50,
        stream: true,
        messages: [{ role: "user", content: "hi" }],
      }),
    });
    const wire = await res.text();
    expect(res.status).toBe(200);
    expect(wire).toContain("text_delta");
    expect(wire).not.toContain("message_stop");
    const last = wire.trim().split("\n").at(-1) ?? "";
    expect(JSON.parse(last.replace(/^data: /, ""))).toMatchObject({
      type: "error",
      error: { type: "overloaded_error" },
    });
  });
});

describe("a client that reads a long answer slowly", () => {
  it("gets all of it after a pause longer than idle_ms: its own pause is not the upstream's", async () => {
    // 4 MB in 4,000 chunks, sent as fast as the connection takes it: more than sockets buffer,
    // so the gateway, then the upstream, wait for the client.
    const text = "0123456789abcdef".repeat(262_144);
    const big = await startOpenAIUpstream({ behavior: { kind: "answer", text, chunks: 4_000 } });
    const gwSlow = await startOneProcess(
      testConfig(`
providers: { big: { type: openai, base_url: "${big.url}", probe: none } }
models: { big: { targets: [{ provider: big, model: m-big }] } }
routing:
  retries: 0
  timeouts: { first_token_ms: 5000, idle_ms: 300, total_ms: 60000 }
`),
    );
    try {
      const res = await fetch(`${gwSlow.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "big",
          stream: true,
          messages: [{ role: "user", content: "x" }],
        }),
      });
      const reader = res.body?.getReader();
      if (!reader) throw new Error("no body");
      const decoder = new TextDecoder();
      let wire = decoder.decode((await reader.read()).value, { stream: true });
      await new Promise((r) => setTimeout(r, 1_500)); // five idle windows
      for (let r = await reader.read(); !r.done; r = await reader.read()) {
        wire += decoder.decode(r.value, { stream: true });
      }
      const events = sseData(wire);
      expect(events.at(-1)).toBe("[DONE]");
      const got = events
        .slice(0, -1)
        .map((e) => (JSON.parse(e) as { choices: Array<{ delta: { content?: string } }> }).choices)
        .map((c) => c[0]?.delta.content ?? "")
        .join("");
      expect(got).toBe(text);
    } finally {
      await gwSlow.stop();
      await big.close();
    }
  });
});
