/**
 * The load client: its own process (so the gateway under test keeps its CPU), driven over IPC by
 * bench/run.ts. Three kinds of job:
 *
 * - `closed`: `concurrency` workers, each sending its next request when the previous one ended;
 *   latency from the actual send. With `stream: true` each request is an SSE stream and the
 *   client records time to the first `data:` event, time to the first content token, the gaps
 *   between content tokens, and each stream's token sequence (for the fidelity check).
 * - `open`: requests at a fixed rate, latency from the *scheduled* send time, so queueing in the
 *   gateway (or in the client's connection pool) shows instead of being hidden by a client that
 *   waits (coordinated omission).
 * - `hold`: opens `streams` slow streams, reports once all are open, then waits for every one of
 *   them to finish and checks none lost a token.
 *
 * The pure parts (histogram summaries, the SSE chunk parser) are exported for the harness test.
 */

import type { ChildProcess } from "node:child_process";
import { setMaxListeners } from "node:events";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { build, type Histogram } from "hdr-histogram-js";
import { Pool } from "undici";

// ---------------------------------------------------------------------------------------------
// Histograms

/** Percentiles of one measured window, in milliseconds. */
export interface LatencySummary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

/** Values are recorded in microseconds: 1 µs resolution, 3 significant digits, up to 10 min. */
export function newHistogram(): Histogram {
  return build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 600_000_000,
    numberOfSignificantValueDigits: 3,
  });
}

export function recordMs(histogram: Histogram, ms: number): void {
  histogram.recordValue(Math.min(600_000_000, Math.max(1, Math.round(ms * 1000))));
}

const round3 = (n: number) => Math.round(n * 1000) / 1000;

export function summarize(histogram: Histogram): LatencySummary {
  const ms = (us: number) => round3(us / 1000);
  if (histogram.totalCount === 0) {
    return { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
  }
  return {
    count: histogram.totalCount,
    mean: ms(histogram.mean),
    p50: ms(histogram.getValueAtPercentile(50)),
    p90: ms(histogram.getValueAtPercentile(90)),
    p99: ms(histogram.getValueAtPercentile(99)),
    p999: ms(histogram.getValueAtPercentile(99.9)),
    max: ms(histogram.maxValue),
  };
}

// ---------------------------------------------------------------------------------------------
// SSE timing

/** What one SSE response delivered, and when (times on the caller's clock, in ms). */
export interface SseRecord {
  /** Arrival of every `data:` event except `[DONE]`. */
  dataTimes: number[];
  /** `choices[0].delta.content` of each event that had some, in arrival order. */
  contents: string[];
  contentTimes: number[];
  /** `data: [DONE]` arrived. */
  done: boolean;
  /** Events whose JSON carried an `error`. */
  errorEvents: number;
}

/**
 * Splits a byte stream of SSE into events and stamps each with the time the read that completed
 * it arrived (an event split over two reads counts from the second).
 */
export class SseChunkParser {
  readonly record: SseRecord = {
    dataTimes: [],
    contents: [],
    contentTimes: [],
    done: false,
    errorEvents: 0,
  };
  private pending = "";

  feed(text: string, at: number): void {
    this.pending += text;
    for (;;) {
      const boundary = this.nextBoundary();
      if (boundary === undefined) return;
      const event = this.pending.slice(0, boundary.index);
      this.pending = this.pending.slice(boundary.index + boundary.length);
      this.onEvent(event, at);
    }
  }

  private nextBoundary(): { index: number; length: number } | undefined {
    const lf = this.pending.indexOf("\n\n");
    const crlf = this.pending.indexOf("\r\n\r\n");
    if (lf === -1 && crlf === -1) return undefined;
    if (crlf !== -1 && (lf === -1 || crlf < lf)) return { index: crlf, length: 4 };
    return { index: lf, length: 2 };
  }

  private onEvent(event: string, at: number): void {
    const data: string[] = [];
    for (const line of event.split(/\r?\n/)) {
      if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
    }
    if (data.length === 0) return;
    const payload = data.join("\n");
    if (payload === "[DONE]") {
      this.record.done = true;
      return;
    }
    this.record.dataTimes.push(at);
    let parsed: unknown;
    try {
      parsed = JSON.parse(payload);
    } catch {
      return;
    }
    if (typeof parsed !== "object" || parsed === null) return;
    const chunk = parsed as { error?: unknown; choices?: Array<{ delta?: { content?: unknown } }> };
    if (chunk.error !== undefined && chunk.error !== null) this.record.errorEvents++;
    const content = chunk.choices?.[0]?.delta?.content;
    if (typeof content === "string" && content !== "") {
      this.record.contents.push(content);
      this.record.contentTimes.push(at);
    }
  }
}

/** Time to the first event and the first token, and the gaps between tokens, all in ms. */
export function streamTimings(
  sentAt: number,
  record: SseRecord,
): { ttftData?: number; ttftContent?: number; gaps: number[] } {
  const out: { ttftData?: number; ttftContent?: number; gaps: number[] } = { gaps: [] };
  const firstData = record.dataTimes[0];
  const firstContent = record.contentTimes[0];
  if (firstData !== undefined) out.ttftData = firstData - sentAt;
  if (firstContent !== undefined) out.ttftContent = firstContent - sentAt;
  for (let i = 1; i < record.contentTimes.length; i++) {
    out.gaps.push((record.contentTimes[i] as number) - (record.contentTimes[i - 1] as number));
  }
  return out;
}

/** A slow stream came through whole: `t0 `, `t1 `, … in order, then `end`, then `[DONE]`. */
export function slowStreamComplete(record: SseRecord): boolean {
  const { contents } = record;
  if (!record.done || contents.at(-1) !== "end" || contents.length < 2) return false;
  for (let i = 0; i < contents.length - 1; i++) if (contents[i] !== `t${i} `) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Jobs

export interface LoadTarget {
  /** e.g. http://127.0.0.1:8080 */
  origin: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

export interface ClosedJob {
  kind: "closed";
  target: LoadTarget;
  concurrency: number;
  durationMs: number;
  stream: boolean;
  /**
   * Spread the workers' first requests evenly over this many ms, and time only what is sent
   * once it has passed (every worker has started by then). 0 or absent: all start at once.
   */
  staggerMs?: number;
  /** Each worker's idle time between the end of one request and the start of its next. */
  pauseMs?: number;
}

export interface OpenJob {
  kind: "open";
  target: LoadTarget;
  /** Requests per second. */
  rate: number;
  durationMs: number;
}

export interface HoldJob {
  kind: "hold";
  target: LoadTarget;
  streams: number;
  /** Streams sent but not yet answered with a first token, at most. */
  openConcurrency: number;
  openTimeoutMs: number;
  /** After release, how long every stream may take to finish. */
  finishTimeoutMs: number;
}

export type LoadJob = ClosedJob | OpenJob | HoldJob;

export interface StreamStats {
  ttftData: LatencySummary;
  ttftContent: LatencySummary;
  gap: LatencySummary;
  /** Token sequence (joined) → how many streams delivered exactly it. */
  sequences: Record<string, number>;
  /** `data:` events per stream → how many streams had that many. */
  dataEvents: Record<string, number>;
  /** Streams that ended without `data: [DONE]`. */
  withoutDone: number;
  errorEvents: number;
}

export interface ClosedResult {
  kind: "closed";
  completed: number;
  errors: number;
  firstError?: string;
  elapsedMs: number;
  rps: number;
  /** Whole request (unary) or whole stream. */
  latency: LatencySummary;
  stream?: StreamStats;
}

export interface OpenResult {
  kind: "open";
  rate: number;
  scheduled: number;
  completed: number;
  errors: number;
  firstError?: string;
  /** Requests in flight passed half a second's worth: the step was cut short. */
  overloaded: boolean;
  /** From each request's scheduled send time to the end of its answer. */
  latency: LatencySummary;
  /** How late the client sent each request after its scheduled time: its own stalls. */
  lag: LatencySummary;
}

export interface HoldProgress {
  opened: number;
  failedToOpen: number;
  openMs: number;
}

export interface HoldResult extends HoldProgress {
  kind: "hold";
  /** Opened streams that finished with every token in order, `end` and `[DONE]`. */
  complete: number;
  /** Opened streams that broke, lost or reordered a token, or did not finish in time. */
  lost: number;
  firstError?: string;
  /** Time to the first token while the streams were being opened. */
  openLatency: LatencySummary;
}

export type LoadResult = ClosedResult | OpenResult | HoldResult;

class HttpStatusError extends Error {
  constructor(readonly status: number) {
    super(`HTTP ${status}`);
  }
}

const errorText = (err: unknown) =>
  err instanceof Error ? `${err.name}: ${err.message}` : String(err);

const pools = new Map<string, Pool>();

/** One keep-alive pool per origin, reused across jobs so windows do not pay for connecting. */
function sharedPool(origin: string): Pool {
  let pool = pools.get(origin);
  if (!pool) {
    pool = new Pool(origin, {
      connections: 1024,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      keepAliveMaxTimeout: 600_000,
      bodyTimeout: 60_000,
      headersTimeout: 60_000,
    });
    pools.set(origin, pool);
  }
  return pool;
}

async function unary(pool: Pool, target: LoadTarget, signal?: AbortSignal): Promise<void> {
  const res = await pool.request({
    method: "POST",
    path: target.path,
    headers: target.headers,
    body: target.body,
    ...(signal && { signal }),
  });
  const bytes = await res.body.arrayBuffer();
  if (res.statusCode !== 200) throw new HttpStatusError(res.statusCode);
  if (bytes.byteLength === 0) throw new Error("empty answer");
}

async function sse(
  pool: Pool,
  target: LoadTarget,
  onChunk?: (parser: SseChunkParser) => void,
  signal?: AbortSignal,
): Promise<SseRecord> {
  const res = await pool.request({
    method: "POST",
    path: target.path,
    headers: target.headers,
    body: target.body,
    ...(signal && { signal }),
  });
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new HttpStatusError(res.statusCode);
  }
  const parser = new SseChunkParser();
  res.body.setEncoding("utf8");
  for await (const chunk of res.body) {
    parser.feed(chunk as string, performance.now());
    onChunk?.(parser);
  }
  return parser.record;
}

class StreamAccumulator {
  private readonly ttftData = newHistogram();
  private readonly ttftContent = newHistogram();
  private readonly gap = newHistogram();
  private readonly sequences: Record<string, number> = {};
  private readonly dataEvents: Record<string, number> = {};
  private withoutDone = 0;
  private errorEvents = 0;

  /** Every stream's tokens are checked; only a `timed` one's timings are recorded. */
  add(sentAt: number, record: SseRecord, timed = true): void {
    if (timed) {
      const t = streamTimings(sentAt, record);
      if (t.ttftData !== undefined) recordMs(this.ttftData, t.ttftData);
      if (t.ttftContent !== undefined) recordMs(this.ttftContent, t.ttftContent);
      for (const g of t.gaps) recordMs(this.gap, g);
    }
    const sequence = record.contents.join("");
    this.sequences[sequence] = (this.sequences[sequence] ?? 0) + 1;
    const events = String(record.dataTimes.length);
    this.dataEvents[events] = (this.dataEvents[events] ?? 0) + 1;
    if (!record.done) this.withoutDone++;
    this.errorEvents += record.errorEvents;
  }

  stats(): StreamStats {
    return {
      ttftData: summarize(this.ttftData),
      ttftContent: summarize(this.ttftContent),
      gap: summarize(this.gap),
      sequences: this.sequences,
      dataEvents: this.dataEvents,
      withoutDone: this.withoutDone,
      errorEvents: this.errorEvents,
    };
  }
}

export async function runClosed(job: ClosedJob): Promise<ClosedResult> {
  const pool = sharedPool(job.target.origin);
  const latency = newHistogram();
  const streams = job.stream ? new StreamAccumulator() : undefined;
  let completed = 0;
  let errors = 0;
  let firstError: string | undefined;
  const started = performance.now();
  const end = started + job.durationMs;
  const stagger = job.staggerMs ?? 0;
  const timedFrom = started + stagger;
  const worker = async (i: number) => {
    if (stagger > 0) await sleep((i * stagger) / job.concurrency);
    while (performance.now() < end) {
      const sentAt = performance.now();
      const timed = sentAt >= timedFrom;
      try {
        if (streams) streams.add(sentAt, await sse(pool, job.target), timed);
        else await unary(pool, job.target);
        if (timed) recordMs(latency, performance.now() - sentAt);
        completed++;
        if (job.pauseMs) await sleep(job.pauseMs);
      } catch (err) {
        errors++;
        firstError ??= errorText(err);
        // A refused connection fails in microseconds; do not spin on it.
        await sleep(10);
      }
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, (_, i) => worker(i)));
  const elapsedMs = performance.now() - started;
  return {
    kind: "closed",
    completed,
    errors,
    ...(firstError !== undefined && { firstError }),
    elapsedMs: round3(elapsedMs),
    rps: Math.round((completed / elapsedMs) * 1000),
    latency: summarize(latency),
    ...(streams && { stream: streams.stats() }),
  };
}

export async function runOpen(job: OpenJob): Promise<OpenResult> {
  const pool = sharedPool(job.target.origin);
  const latency = newHistogram();
  const lag = newHistogram();
  const intervalMs = 1000 / job.rate;
  const total = Math.max(1, Math.floor((job.rate * job.durationMs) / 1000));
  // Little's law: this many in flight means latency far past any threshold worth measuring.
  const backlogLimit = Math.max(256, Math.ceil(job.rate / 2));
  const abort = new AbortController();
  // Every request in the step listens on this one signal.
  setMaxListeners(0, abort.signal);
  let scheduled = 0;
  let completed = 0;
  let errors = 0;
  let inFlight = 0;
  let overloaded = false;
  let firstError: string | undefined;
  const { promise: settled, resolve: settle } = deferred();
  const maybeSettled = () => {
    if ((scheduled >= total || overloaded) && inFlight === 0) settle();
  };
  const cutShort = () => {
    overloaded = true;
    abort.abort();
    maybeSettled();
  };
  const send = (scheduledAt: number) => {
    inFlight++;
    unary(pool, job.target, abort.signal)
      .then(
        () => {
          recordMs(latency, performance.now() - scheduledAt);
          completed++;
        },
        (err: unknown) => {
          if (overloaded) return; // aborted by the cut, not failed by the gateway
          errors++;
          firstError ??= errorText(err);
        },
      )
      .finally(() => {
        inFlight--;
        maybeSettled();
      });
  };
  const start = performance.now() + 2;
  const tick = () => {
    const now = performance.now();
    while (scheduled < total && start + scheduled * intervalMs <= now) {
      const at = start + scheduled * intervalMs;
      recordMs(lag, now - at);
      send(at);
      scheduled++;
    }
    if (inFlight > backlogLimit) cutShort();
    else if (scheduled < total) setTimeout(tick, 1);
    else maybeSettled();
  };
  setTimeout(tick, 2);
  const drainLimit = setTimeout(cutShort, job.durationMs + 10_000);
  await settled;
  clearTimeout(drainLimit);
  return {
    kind: "open",
    rate: job.rate,
    scheduled,
    completed,
    errors,
    ...(firstError !== undefined && { firstError }),
    overloaded,
    latency: summarize(latency),
    lag: summarize(lag),
  };
}

export async function runHold(
  job: HoldJob,
  onOpen: (progress: HoldProgress) => void,
): Promise<HoldResult> {
  // A pool of its own, destroyed at the end, so thousands of idle connections do not linger
  // in the gateway through later scenarios.
  const pool = new Pool(job.target.origin, {
    connections: job.streams,
    pipelining: 1,
    bodyTimeout: 0,
    headersTimeout: job.openTimeoutMs,
    keepAliveTimeout: 60_000,
  });
  const openLatency = newHistogram();
  const started = performance.now();
  /** Streams sent and still waiting for their first token, each with its own abort. */
  const opening = new Set<AbortController>();
  const open = new Set<AbortController>();
  let launched = 0;
  let opened = 0;
  let complete = 0;
  let lost = 0;
  let firstError: string | undefined;
  let openPhaseOver = false;
  const openPhase = deferred();
  const finished = deferred();
  const check = () => {
    if (!openPhaseOver && launched === job.streams && opening.size === 0) openPhase.resolve();
    if (openPhaseOver && opening.size === 0 && open.size === 0) finished.resolve();
  };
  const one = () => {
    const sentAt = performance.now();
    const abort = new AbortController();
    opening.add(abort);
    const markOpen = (parser: SseChunkParser) => {
      if (!opening.has(abort) || parser.record.contents.length === 0) return;
      opening.delete(abort);
      open.add(abort);
      opened++;
      recordMs(openLatency, performance.now() - sentAt);
      launch();
    };
    const settle = (record: SseRecord | undefined, err: unknown) => {
      if (open.delete(abort)) {
        if (record && slowStreamComplete(record)) {
          complete++;
        } else {
          lost++;
          firstError ??= record
            ? `stream incomplete: ${record.contents.length} tokens, done=${record.done}`
            : errorText(err);
        }
      } else {
        opening.delete(abort);
        if (!openPhaseOver) firstError ??= record ? "stream ended before a token" : errorText(err);
        launch();
      }
      check();
    };
    sse(pool, job.target, markOpen, abort.signal).then(
      (record) => settle(record, undefined),
      (err: unknown) => settle(undefined, err),
    );
  };
  const launch = () => {
    while (!openPhaseOver && launched < job.streams && opening.size < job.openConcurrency) {
      launched++;
      one();
    }
    check();
  };
  launch();
  const openTimer = setTimeout(() => openPhase.resolve(), job.openTimeoutMs);
  await openPhase.promise;
  clearTimeout(openTimer);
  openPhaseOver = true;
  // Streams without a first token by now count as failed to open.
  for (const abort of opening) abort.abort();
  const progress: HoldProgress = {
    opened,
    failedToOpen: job.streams - opened,
    openMs: round3(performance.now() - started),
  };
  onOpen(progress);
  // The parent now releases the upstream, and every open stream should finish.
  const finishTimer = setTimeout(() => finished.resolve(), job.finishTimeoutMs);
  check();
  await finished.promise;
  clearTimeout(finishTimer);
  const unfinished = open.size;
  const lostInTime = lost;
  if (unfinished > 0) firstError ??= `${unfinished} streams did not finish in time`;
  for (const abort of open) abort.abort();
  await pool.destroy().catch(() => {});
  return {
    kind: "hold",
    ...progress,
    complete,
    lost: lostInTime + unfinished,
    ...(firstError !== undefined && { firstError }),
    openLatency: summarize(openLatency),
  };
}

function deferred<T = void>(): {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (err: Error) => void;
} {
  let resolve: (value: T) => void = () => {};
  let reject: (err: Error) => void = () => {};
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

// ---------------------------------------------------------------------------------------------
// IPC: the worker side (this file run as a child) and the driver side (used by run.ts)

interface JobMessage {
  id: number;
  job: LoadJob;
}

type WorkerMessage =
  | { type: "ready" }
  | { id: number; type: "progress"; progress: HoldProgress }
  | { id: number; type: "result"; result: LoadResult }
  | { id: number; type: "error"; message: string };

async function serve(): Promise<void> {
  const send = (m: WorkerMessage) => process.send?.(m);
  process.on("message", (message: JobMessage) => {
    const { id, job } = message;
    const run: Promise<LoadResult> =
      job.kind === "closed"
        ? runClosed(job)
        : job.kind === "open"
          ? runOpen(job)
          : runHold(job, (progress) => send({ id, type: "progress", progress }));
    run.then(
      (result) => send({ id, type: "result", result }),
      (err: unknown) => send({ id, type: "error", message: errorText(err) }),
    );
  });
  // The parent going away (even by SIGKILL) closes the channel: stop then.
  process.on("disconnect", () => process.exit(0));
  send({ type: "ready" });
}

/** Sends jobs to a load worker child (spawned with an IPC channel) and awaits their results. */
export class LoadDriver {
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    {
      resolve: (r: LoadResult) => void;
      reject: (e: Error) => void;
      onProgress?: (p: HoldProgress) => void;
    }
  >();
  readonly ready: Promise<void>;

  constructor(private readonly child: ChildProcess) {
    const ready = deferred();
    this.ready = ready.promise;
    child.on("message", (m: WorkerMessage) => {
      if (m.type === "ready") return ready.resolve();
      const w = this.waiting.get(m.id);
      if (!w) return;
      if (m.type === "progress") return w.onProgress?.(m.progress);
      this.waiting.delete(m.id);
      if (m.type === "result") w.resolve(m.result);
      else w.reject(new Error(`load worker: ${m.message}`));
    });
    child.on("exit", (code) => {
      const err = new Error(`load worker exited with ${code}`);
      ready.reject(err);
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    });
  }

  closed(job: Omit<ClosedJob, "kind">): Promise<ClosedResult> {
    return this.call({ kind: "closed", ...job }) as Promise<ClosedResult>;
  }

  open(job: Omit<OpenJob, "kind">): Promise<OpenResult> {
    return this.call({ kind: "open", ...job }) as Promise<OpenResult>;
  }

  hold(job: Omit<HoldJob, "kind">, onOpen: (p: HoldProgress) => void): Promise<HoldResult> {
    return this.call({ kind: "hold", ...job }, onOpen) as Promise<HoldResult>;
  }

  private call(job: LoadJob, onProgress?: (p: HoldProgress) => void): Promise<LoadResult> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, ...(onProgress && { onProgress }) });
      this.child.send({ id, job } satisfies JobMessage);
    });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.send) await serve();
