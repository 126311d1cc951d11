/**
 * `npm run bench` — measures the gateway against its baselines in one run (see BENCH.md and
 * bench/README.md): starts the mock upstream, the load worker and every variant as child
 * processes, interleaves the variants through each scenario, prints a table per scenario and
 * writes everything to bench/results/.
 */

import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { request } from "undici";
import { coldFigures, coldProbe } from "./cold.js";
import type { ClosedResult, HoldResult, LoadTarget, OpenResult } from "./load.js";
import { SLOW_MODEL, UNARY_MODEL } from "./mock-upstream.js";
import {
  type BenchProcesses,
  CHAT_PATH,
  type ChildProc,
  CLIENT_KEY,
  cpuBetween,
  cpuIdleSettings,
  ensureFdLimit,
  fdRoom,
  type ProcUsage,
  rssOf,
  sample,
  startBench,
  streamsThatFit,
  type Variant,
  type VariantName,
} from "./procs.js";

const SCENARIOS = ["unary", "stream", "open-loop", "memory", "open-streams"] as const;
/**
 * How the stream scenario's clients start. `lockstep`: all at once, and since every stream lasts
 * the same time they stay in step, so each round's first tokens queue behind one burst of `c`
 * requests. `staggered`: spread evenly over one stream's length, as independent clients arrive.
 */
const STREAM_STARTS = ["staggered", "lockstep"] as const;
type StreamStart = (typeof STREAM_STARTS)[number];
type Scenario = (typeof SCENARIOS)[number];
const VARIANTS: readonly VariantName[] = ["direct", "bare", "one", "two", "four", "four-connect"];
/** `two` and `four-connect` (the hops on connect-node, for a before/after) only when asked for. */
const DEFAULT_VARIANTS: readonly VariantName[] = ["direct", "bare", "one", "four"];
/** The open-loop ceiling: the highest rate whose p99 stays within this of direct's. */
const OPEN_LOOP_BUDGET_MS = 10;
/** Client send lag (p99) above which an open-loop step is too noisy to judge. */
const OPEN_LOOP_MAX_LAG_MS = 5;

// ---------------------------------------------------------------------------------------------
// Pure helpers (tested in harness.test.ts)

export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** `xs` started at position k: with k = repeat index this gives A B C, B C A, C A B, … */
export function rotate<T>(xs: readonly T[], k: number): T[] {
  if (xs.length === 0) return [];
  const i = k % xs.length;
  return [...xs.slice(i), ...xs.slice(0, i)];
}

/** Columns padded to their widest cell; text left-aligned, numbers right-aligned. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const numeric = headers.map((_, i) =>
    rows.every((r) => /^[-+]?[\d.,]+%?$|^—$|^$|^overload$/.test(r[i] ?? "")),
  );
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (numeric[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

function fmt(n: number | undefined, digits = 2, signed = false): string {
  if (n === undefined || !Number.isFinite(n)) return "—";
  const s = n.toFixed(digits);
  return signed && n >= 0 ? `+${s}` : s;
}

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  quick: boolean;
  scenarios: Scenario[];
  variants: VariantName[];
  durationMs: number;
  repeats: number;
  warmupMs: number;
  concurrency: number[];
  streamConcurrency: number[];
  streamStarts: StreamStart[];
  openStreams: number[];
  /** KB of user message in each held stream's request; 0 = one short sentence. */
  openPromptKb: number;
  rates: number[];
  sustainMs: number;
  deltas: number;
  intervalMs: number;
  slowIntervalMs: number;
  logLevel: string;
  gatewayNodeOptions?: string;
  pin: boolean;
  keep: boolean;
  cpuProf?: string;
  out?: string;
  natsUrl: string;
}

const HELP = `Usage: npm run bench -- [options]

  --quick                  smoke run, 2–3 minutes (1 s windows, 2 repeats, 1k open streams)
  --scenarios LIST         ${SCENARIOS.join(",")} (default: all)
  --variants LIST          ${VARIANTS.join(",")} (default: ${DEFAULT_VARIANTS.join(",")};
                           direct is always included; two = ingress, router and prober in one
                           process, the connector in another; four-connect = four with the hops
                           on connect-node, SWITCHYARD_FABRIC_TRANSPORT=connect)
  --duration S             seconds per measured window (default 5, quick 1)
  --repeats N              windows per variant and setting; medians are reported (default 3, quick 2)
  --concurrency LIST       unary client concurrency (default 1,16,64)
  --stream-concurrency LIST  concurrent streams (default 16,64, quick 16)
  --stream-start LIST      staggered (clients spread over one stream's length, timed once all
                           have started), lockstep (all at once, so first tokens queue behind a
                           burst of c requests every round) (default staggered,lockstep, quick
                           staggered)
  --open-streams LIST      slow streams held at once (default 1000,10000, quick 1000)
  --open-prompt-kb N       a user message of about N KB in each held stream's request (default
                           0: one short sentence), as a long context brings
  --rates LIST             open-loop request rates per second, rising
  --sustain S              seconds of load for the memory-growth run (default 30, quick 5)
  --deltas N --interval-ms MS   stream shape (default 64 deltas, 20 ms apart)
  --slow-interval-ms MS    gap between chunks of a held slow stream (default 15000, quick 3000)
  --log-level LEVEL        the gateways' LOG_LEVEL (default info: one line per request, as deployed)
  --gateway-node-options S NODE_OPTIONS for the gateways' processes only (what NODE_OPTIONS
                           allows: --max-semi-space-size, yes; most other V8 flags, no)
  --pin                    pin upstream + load client to CPU 0, variants to CPU 1 (taskset)
  --keep                   keep the temp dir with configs and every process's output
  --cpu-prof DIR           run the gateways and the bare proxy under node --cpu-prof, a .cpuprofile
                           per process in DIR
                           (summarise with: node --import tsx bench/profile-summary.ts DIR/*.cpuprofile)
  --out FILE               results JSON (default bench/results/<time>[-quick].json)
  --nats URL               NATS for the 4-process variant (default nats://127.0.0.1:4222)`;

function list(value: string | undefined): string[] | undefined {
  return value
    ?.split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

function numbers(value: string | undefined, flag: string): number[] | undefined {
  const items = list(value);
  if (!items) return undefined;
  const out = items.map(Number);
  if (out.some((n) => !Number.isFinite(n) || n <= 0)) throw new Error(`${flag}: positive numbers`);
  return out;
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      scenarios: { type: "string" },
      variants: { type: "string" },
      duration: { type: "string" },
      repeats: { type: "string" },
      concurrency: { type: "string" },
      "stream-concurrency": { type: "string" },
      "stream-start": { type: "string" },
      "open-streams": { type: "string" },
      "open-prompt-kb": { type: "string" },
      rates: { type: "string" },
      sustain: { type: "string" },
      deltas: { type: "string" },
      "interval-ms": { type: "string" },
      "slow-interval-ms": { type: "string" },
      "log-level": { type: "string", default: "info" },
      "gateway-node-options": { type: "string" },
      pin: { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
      "cpu-prof": { type: "string" },
      out: { type: "string" },
      nats: { type: "string", default: "nats://127.0.0.1:4222" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return undefined;
  }
  const quick = values.quick;
  const one = (v: string | undefined, flag: string) => numbers(v, flag)?.[0];
  const scenarios = (list(values.scenarios) ?? [...SCENARIOS]) as Scenario[];
  for (const s of scenarios) {
    if (!SCENARIOS.includes(s))
      throw new Error(`unknown scenario '${s}' (${SCENARIOS.join(", ")})`);
  }
  const chosen = (list(values.variants) ?? [...DEFAULT_VARIANTS]) as VariantName[];
  for (const v of chosen) {
    if (!VARIANTS.includes(v)) throw new Error(`unknown variant '${v}' (${VARIANTS.join(", ")})`);
  }
  // Every overhead is measured against direct in the same run.
  const variants = VARIANTS.filter((v) => v === "direct" || chosen.includes(v));
  const repeats = one(values.repeats, "--repeats") ?? (quick ? 2 : 3);
  const streamStarts = (list(values["stream-start"]) ??
    (quick ? ["staggered"] : [...STREAM_STARTS])) as StreamStart[];
  for (const s of streamStarts) {
    if (!STREAM_STARTS.includes(s))
      throw new Error(`unknown stream start '${s}' (${STREAM_STARTS.join(", ")})`);
  }
  return {
    quick,
    scenarios: SCENARIOS.filter((s) => scenarios.includes(s)),
    variants,
    durationMs: (one(values.duration, "--duration") ?? (quick ? 1 : 5)) * 1000,
    repeats: Math.round(repeats),
    warmupMs: quick ? 1500 : 4000,
    concurrency: numbers(values.concurrency, "--concurrency") ?? [1, 16, 64],
    streamConcurrency:
      numbers(values["stream-concurrency"], "--stream-concurrency") ?? (quick ? [16] : [16, 64]),
    streamStarts,
    openStreams:
      numbers(values["open-streams"], "--open-streams") ?? (quick ? [1000] : [1000, 10000]),
    openPromptKb: one(values["open-prompt-kb"], "--open-prompt-kb") ?? 0,
    rates: numbers(values.rates, "--rates") ?? [
      100, 250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000,
    ],
    sustainMs: (one(values.sustain, "--sustain") ?? (quick ? 5 : 30)) * 1000,
    deltas: one(values.deltas, "--deltas") ?? 64,
    intervalMs: one(values["interval-ms"], "--interval-ms") ?? 20,
    // Long gaps keep thousands of held streams cheap (under the gateway's 30 s idle timeout).
    slowIntervalMs: one(values["slow-interval-ms"], "--slow-interval-ms") ?? (quick ? 3000 : 15000),
    logLevel: values["log-level"],
    ...(values["gateway-node-options"] !== undefined && {
      gatewayNodeOptions: values["gateway-node-options"],
    }),
    pin: values.pin,
    keep: values.keep,
    ...(values.out !== undefined && { out: values.out }),
    ...(values["cpu-prof"] !== undefined && { cpuProf: resolve(values["cpu-prof"]) }),
    natsUrl: values.nats,
  };
}

// ---------------------------------------------------------------------------------------------
// Measuring

interface Measured<R> {
  variant: VariantName;
  repeat: number;
  result: R;
  /** CPU of the variant's own processes (none for direct), µs. */
  cpuUs: number;
  /** The same, process by process (by name). */
  cpuUsByProcess: Record<string, number>;
  clientCpuUs: number;
  upstreamCpuUs: number;
  wallMs: number;
}

/** A request body; `promptKb` > 0 pads the user message to about that many KB. */
function bodyFor(stream: boolean, model = stream ? "bench" : UNARY_MODEL, promptKb = 0): string {
  const sentence = "Say hello in one short sentence.";
  const content = promptKb > 0 ? `${sentence} `.padEnd(promptKb * 1024, "lorem ipsum ") : sentence;
  return JSON.stringify({
    model,
    messages: [{ role: "user", content }],
    ...(stream && { stream: true }),
  });
}

function target(v: Variant, stream: boolean, model?: string, promptKb?: number): LoadTarget {
  return {
    origin: v.origin,
    path: CHAT_PATH,
    headers: { "content-type": "application/json", authorization: `Bearer ${CLIENT_KEY}` },
    body: bodyFor(stream, model, promptKb),
  };
}

class Harness {
  readonly notes: string[] = [];
  private readonly dead = new Set<VariantName>();

  constructor(
    readonly bench: BenchProcesses,
    readonly opts: Options,
  ) {}

  /** Variants still running; one that died is reported once and skipped from then on. */
  live(): Variant[] {
    return this.bench.variants.filter((v) => {
      if (this.dead.has(v.name)) return false;
      const gone = v.procs.find((p) => p.exited() !== undefined);
      if (!gone) return true;
      this.dead.add(v.name);
      this.note(`${v.label}: process ${gone.name} exited (${gone.exited()}); skipped from here on`);
      return false;
    });
  }

  note(text: string): void {
    this.notes.push(text);
    progress(`note: ${text}`);
  }

  async measure<R>(v: Variant, repeat: number, run: () => Promise<R>): Promise<Measured<R>> {
    const { load, upstream } = this.bench;
    const procs = [...v.procs, load, upstream];
    const before = await sample(procs);
    const started = performance.now();
    const result = await run();
    const wallMs = performance.now() - started;
    const after = await sample(procs);
    return {
      variant: v.name,
      repeat,
      result,
      cpuUs: cpuBetween(v.procs, before, after),
      cpuUsByProcess: Object.fromEntries(
        v.procs.map((p) => [p.name, cpuBetween([p], before, after)]),
      ),
      clientCpuUs: cpuBetween([load], before, after),
      upstreamCpuUs: cpuBetween([upstream], before, after),
      wallMs,
    };
  }

  closed(v: Variant, concurrency: number, durationMs: number, stream: boolean, staggerMs = 0) {
    return this.bench.driver.closed({
      target: target(v, stream),
      concurrency,
      durationMs,
      stream,
      staggerMs,
    });
  }
}

function progress(text: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${text}\n`);
}

/** Median over repeats of (variant − direct) measured in the same repeat. */
function pairedAdded<R>(
  windows: Measured<R>[],
  variant: VariantName,
  pick: (r: R) => number | undefined,
): number | undefined {
  const diffs: number[] = [];
  for (const w of windows.filter((x) => x.variant === variant)) {
    const base = windows.find((x) => x.variant === "direct" && x.repeat === w.repeat);
    const a = pick(w.result);
    const b = base && pick(base.result);
    if (a !== undefined && b !== undefined) diffs.push(a - b);
  }
  return median(diffs);
}

function medianOf<R>(
  windows: Measured<R>[],
  variant: VariantName,
  pick: (w: Measured<R>) => number | undefined,
): number | undefined {
  return median(
    windows
      .filter((w) => w.variant === variant)
      .map(pick)
      .filter((x): x is number => x !== undefined),
  );
}

const pct = (cpuUs: number, wallMs: number) => (cpuUs / (wallMs * 1000)) * 100;

/** Long enough for a p99 at the lowest rates to rest on more than a handful of requests. */
const openLoopStepMs = (opts: Options) => Math.max(opts.durationMs, 2000);

// ---------------------------------------------------------------------------------------------
// Scenarios

async function warmUp(h: Harness): Promise<void> {
  for (const v of h.live()) {
    progress(`warm-up ${v.label}`);
    await h.closed(v, 16, h.opts.warmupMs, false);
    await h.closed(v, 8, 1, true);
  }
}

interface UnaryRow {
  concurrency: number;
  variant: VariantName;
  rps: number | undefined;
  p50: number | undefined;
  p99: number | undefined;
  addedP50?: number | undefined;
  addedP99?: number | undefined;
  cpuUsPerRequest?: number | undefined;
  /** CPU µs per request of each of the variant's processes (medians over the windows). */
  cpuUsPerRequestByProcess?: Record<string, number | undefined>;
  clientCpuPct: number | undefined;
  upstreamCpuPct: number | undefined;
  errors: number;
  firstError?: string;
}

async function unaryScenario(h: Harness) {
  const { opts } = h;
  const rows: UnaryRow[] = [];
  const windows: Array<Measured<ClosedResult> & { concurrency: number }> = [];
  for (const c of opts.concurrency) {
    const these: Measured<ClosedResult>[] = [];
    for (let rep = 0; rep < opts.repeats; rep++) {
      for (const v of rotate(h.live(), rep)) {
        progress(`unary c=${c} repeat ${rep + 1}/${opts.repeats} ${v.label}`);
        const w = await h.measure(v, rep, () => h.closed(v, c, opts.durationMs, false));
        these.push(w);
        windows.push({ ...w, concurrency: c });
      }
    }
    for (const v of h.bench.variants) {
      const mine = these.filter((w) => w.variant === v.name);
      if (mine.length === 0) continue;
      const errors = mine.reduce((n, w) => n + w.result.errors, 0);
      const firstError = mine.find((w) => w.result.firstError)?.result.firstError;
      rows.push({
        concurrency: c,
        variant: v.name,
        rps: medianOf(these, v.name, (w) => w.result.rps),
        p50: medianOf(these, v.name, (w) => w.result.latency.p50),
        p99: medianOf(these, v.name, (w) => w.result.latency.p99),
        ...(v.name !== "direct" && {
          addedP50: pairedAdded(these, v.name, (r) => r.latency.p50),
          addedP99: pairedAdded(these, v.name, (r) => r.latency.p99),
          cpuUsPerRequest: medianOf(these, v.name, (w) =>
            w.result.completed > 0 ? w.cpuUs / w.result.completed : undefined,
          ),
          cpuUsPerRequestByProcess: Object.fromEntries(
            v.procs.map((p) => [
              p.name,
              medianOf(these, v.name, (w) =>
                w.result.completed > 0
                  ? (w.cpuUsByProcess[p.name] ?? 0) / w.result.completed
                  : undefined,
              ),
            ]),
          ),
        }),
        clientCpuPct: medianOf(these, v.name, (w) => pct(w.clientCpuUs, w.wallMs)),
        upstreamCpuPct: medianOf(these, v.name, (w) => pct(w.upstreamCpuUs, w.wallMs)),
        errors,
        ...(firstError !== undefined && { firstError }),
      });
    }
  }
  const saturation = h.bench.variants.map((v) => {
    const best = Math.max(...rows.filter((r) => r.variant === v.name).map((r) => r.rps ?? 0));
    return { variant: v.name, rps: best };
  });
  const rpsOf = (name: VariantName) => saturation.find((s) => s.variant === name)?.rps;
  const label = (name: VariantName) => h.bench.variants.find((v) => v.name === name)?.label ?? name;
  const table = formatTable(
    [
      "c",
      "variant",
      "rps",
      "p50 ms",
      "p99 ms",
      "+p50 ms",
      "+p99 ms",
      "cpu µs/req",
      "client cpu",
      "upstr cpu",
      "errors",
    ],
    rows.map((r) => [
      String(r.concurrency),
      label(r.variant),
      fmt(r.rps, 0),
      fmt(r.p50, 3),
      fmt(r.p99, 3),
      fmt(r.addedP50, 3, true),
      fmt(r.addedP99, 3, true),
      fmt(r.cpuUsPerRequest, 0),
      `${fmt(r.clientCpuPct, 0)}%`,
      `${fmt(r.upstreamCpuPct, 0)}%`,
      String(r.errors),
    ]),
  );
  const satLines = saturation.map((s) => {
    const bare = rpsOf("bare");
    const direct = rpsOf("direct");
    const vsBare = bare && s.variant !== "bare" ? ` = ${fmt(s.rps / bare, 3)}× bare` : "";
    const vsDirect = direct && s.variant !== "direct" ? `, ${fmt(s.rps / direct, 3)}× direct` : "";
    return `  ${label(s.variant)}: ${fmt(s.rps, 0)} rps${vsBare}${vsDirect}`;
  });
  // Where a variant of several processes spends its CPU (one process is the table's column).
  const byProcess = rows
    .filter((r) => Object.keys(r.cpuUsPerRequestByProcess ?? {}).length > 1)
    .map((r) => {
      const parts = Object.entries(r.cpuUsPerRequestByProcess ?? {}).map(
        ([name, us]) => `${name} ${fmt(us, 0)}`,
      );
      return `  c=${r.concurrency} ${label(r.variant)}: ${parts.join(" · ")}`;
    });
  const byProcessText =
    byProcess.length > 0 ? `\n\nCPU µs per request by process:\n${byProcess.join("\n")}` : "";
  print(
    `UNARY — non-streaming chat, ~400-byte answer; medians of ${opts.repeats} × ${opts.durationMs / 1000} s windows; +p50/+p99 = variant − direct in the same repeat`,
    `${table}\n\nRPS at saturation (best over c):\n${satLines.join("\n")}${byProcessText}`,
  );
  for (const r of rows.filter((x) => x.errors > 0)) {
    h.note(`unary c=${r.concurrency} ${label(r.variant)}: ${r.errors} errors (${r.firstError})`);
  }
  return { rows, saturation, windows };
}

async function streamScenario(h: Harness) {
  const { opts } = h;
  const out: StreamResults = { rows: [], windows: [], printed: [] };
  for (const c of opts.streamConcurrency) {
    for (const start of opts.streamStarts) await streamCase(h, c, start, out);
  }
  const { rows, windows, printed } = out;
  print(
    `STREAM — ${opts.deltas} deltas ${opts.intervalMs} ms apart; TTFT = first data: event, 1st tok = first content; gap = between content chunks; medians of ${opts.repeats} × ${opts.durationMs / 1000} s timed; start: staggered = clients spread over one stream's length, lockstep = all at once (each round's first tokens queue behind a burst of c requests)`,
    formatTable(
      [
        "c",
        "start",
        "variant",
        "streams",
        "TTFT p50",
        "TTFT p99",
        "+TTFT p50",
        "+TTFT p99",
        "+1st tok p50",
        "gap p50",
        "+gap p50",
        "+gap p99",
        "tokens",
        "cpu µs/stream",
        "errors",
      ],
      printed,
    ),
  );
  return { rows, windows };
}

interface StreamResults {
  rows: Array<Record<string, unknown>>;
  windows: Array<Measured<ClosedResult> & { concurrency: number; start: StreamStart }>;
  printed: string[][];
}

/** One concurrency and way of starting: every variant's windows, then its row and printed line. */
async function streamCase(h: Harness, c: number, start: StreamStart, out: StreamResults) {
  const { opts } = h;
  const { rows, windows, printed } = out;
  // Staggered clients start over one stream's length; the window is timed once all have.
  const staggerMs = start === "staggered" ? opts.deltas * opts.intervalMs : 0;
  const windowMs = opts.durationMs + staggerMs;
  const these: Measured<ClosedResult>[] = [];
  for (let rep = 0; rep < opts.repeats; rep++) {
    for (const v of rotate(h.live(), rep)) {
      progress(`stream c=${c} ${start} repeat ${rep + 1}/${opts.repeats} ${v.label}`);
      const w = await h.measure(v, rep, () => h.closed(v, c, windowMs, true, staggerMs));
      these.push(w);
      windows.push({ ...w, concurrency: c, start });
    }
  }
  // The reference token sequence is what the upstream sent, as the client saw it direct.
  const reference = new Set<string>();
  for (const w of these.filter((x) => x.variant === "direct")) {
    for (const seq of Object.keys(w.result.stream?.sequences ?? {})) reference.add(seq);
  }
  for (const v of h.bench.variants) {
    const mine = these.filter((w) => w.variant === v.name);
    if (mine.length === 0) continue;
    const s = (w: Measured<ClosedResult>) => w.result.stream;
    let streams = 0;
    let faithful = 0;
    let errors = 0;
    for (const w of mine) {
      errors += w.result.errors + (s(w)?.errorEvents ?? 0) + (s(w)?.withoutDone ?? 0);
      for (const [seq, n] of Object.entries(s(w)?.sequences ?? {})) {
        streams += n;
        if (reference.size === 1 && reference.has(seq)) faithful += n;
      }
    }
    const row = {
      concurrency: c,
      start,
      variant: v.name,
      streams,
      faithful,
      errors,
      ttftP50: medianOf(these, v.name, (w) => s(w)?.ttftData.p50),
      ttftP99: medianOf(these, v.name, (w) => s(w)?.ttftData.p99),
      firstTokenP50: medianOf(these, v.name, (w) => s(w)?.ttftContent.p50),
      gapP50: medianOf(these, v.name, (w) => s(w)?.gap.p50),
      gapP99: medianOf(these, v.name, (w) => s(w)?.gap.p99),
      ...(v.name !== "direct" && {
        addedTtftP50: pairedAdded(these, v.name, (r) => r.stream?.ttftData.p50),
        addedTtftP99: pairedAdded(these, v.name, (r) => r.stream?.ttftData.p99),
        addedFirstTokenP50: pairedAdded(these, v.name, (r) => r.stream?.ttftContent.p50),
        addedGapP50: pairedAdded(these, v.name, (r) => r.stream?.gap.p50),
        addedGapP99: pairedAdded(these, v.name, (r) => r.stream?.gap.p99),
        cpuUsPerStream: medianOf(these, v.name, (w) =>
          w.result.completed > 0 ? w.cpuUs / w.result.completed : undefined,
        ),
      }),
      dataEvents: mine.map((w) => s(w)?.dataEvents),
      firstError: mine.find((w) => w.result.firstError)?.result.firstError,
    };
    rows.push(row);
    printed.push([
      String(c),
      start,
      v.label,
      String(streams),
      fmt(row.ttftP50, 2),
      fmt(row.ttftP99, 2),
      fmt(row.addedTtftP50, 2, true),
      fmt(row.addedTtftP99, 2, true),
      fmt(row.addedFirstTokenP50, 2, true),
      fmt(row.gapP50, 2),
      fmt(row.addedGapP50, 2, true),
      fmt(row.addedGapP99, 2, true),
      streams > 0 && faithful === streams && errors === 0 ? "ok" : `${faithful}/${streams}`,
      fmt(row.cpuUsPerStream, 0),
      String(errors),
    ]);
    if (errors > 0 || faithful !== streams) {
      h.note(
        `stream c=${c} ${start} ${v.label}: ${streams - faithful} of ${streams} streams differ from direct's tokens, ${errors} errors (${row.firstError ?? "no error message"})`,
      );
    }
  }
  if (reference.size !== 1) {
    h.note(
      `stream c=${c} ${start}: direct itself delivered ${reference.size} different token sequences`,
    );
  }
}

async function openLoopScenario(h: Harness) {
  const { opts } = h;
  const direct = h.bench.variants.find((v) => v.name === "direct") as Variant;
  let active = h.live().filter((v) => v.name !== "direct");
  const steps: Array<{ rate: number; variant: VariantName; attempt: number; result: OpenResult }> =
    [];
  const ceiling = new Map<
    VariantName,
    { rate: number | undefined; why: string; undetermined?: boolean }
  >();
  const lastPassed = new Map<VariantName, number>();
  const run = async (v: Variant, rate: number, attempt: number) => {
    progress(`open loop ${rate}/s ${v.label}${attempt > 0 ? " (re-measure)" : ""}`);
    const result = await h.bench.driver.open({
      target: target(v, false),
      rate,
      durationMs: openLoopStepMs(opts),
    });
    steps.push({ rate, variant: v.name, attempt, result });
    return result;
  };
  const judge = (r: OpenResult, base: OpenResult): "pass" | "fail" | "noisy" => {
    if (r.overloaded || r.errors > 0) return "fail";
    const added = r.latency.p99 - base.latency.p99;
    // Over budget by more than the client's own lateness could explain: the gateway's doing.
    if (added - r.lag.p99 > OPEN_LOOP_BUDGET_MS) return "fail";
    // Otherwise a step in which the client itself sent late measured the machine.
    if (r.lag.p99 > OPEN_LOOP_MAX_LAG_MS || base.lag.p99 > OPEN_LOOP_MAX_LAG_MS) return "noisy";
    return added > OPEN_LOOP_BUDGET_MS ? "fail" : "pass";
  };
  for (const [i, rate] of opts.rates.entries()) {
    active = active.filter((v) => h.live().includes(v));
    if (active.length === 0) break;
    const results = new Map<VariantName, OpenResult>();
    for (const v of rotate([direct, ...active], i)) results.set(v.name, await run(v, rate, 0));
    let base = results.get("direct") as OpenResult;
    // Overhead is relative to direct, so a noisy direct p99 is no reason to stop; a client or
    // upstream that cannot keep the rate at all is.
    if (base.overloaded || base.errors > 0) {
      for (const v of active) {
        ceiling.set(v.name, {
          rate: lastPassed.get(v.name),
          why: `direct itself could not sustain ${rate}/s: the client or upstream is the limit`,
        });
      }
      active = [];
      break;
    }
    const next: Variant[] = [];
    for (const v of active) {
      let r = results.get(v.name) as OpenResult;
      let verdict = judge(r, base);
      // Re-measures, each with a fresh baseline: one noisy step should not end the climb.
      const remeasures = opts.quick ? 1 : 2;
      for (let attempt = 1; verdict !== "pass" && attempt <= remeasures; attempt++) {
        base = await run(direct, rate, attempt);
        r = await run(v, rate, attempt);
        verdict = judge(r, base);
      }
      if (verdict === "pass") {
        lastPassed.set(v.name, rate);
        next.push(v);
        continue;
      }
      const why =
        verdict === "noisy"
          ? `too noisy to judge at ${rate}/s: the client sent late (lag p99 ${fmt(Math.max(r.lag.p99, base.lag.p99))} ms)`
          : r.overloaded
            ? `overloaded at ${rate}/s`
            : r.errors > 0
              ? `${r.errors} errors at ${rate}/s (${r.firstError})`
              : `p99 +${fmt(r.latency.p99 - base.latency.p99)} ms at ${rate}/s`;
      ceiling.set(v.name, {
        rate: lastPassed.get(v.name),
        why,
        ...(verdict === "noisy" && { undetermined: true }),
      });
    }
    active = next;
  }
  for (const v of active) {
    ceiling.set(v.name, {
      rate: lastPassed.get(v.name),
      why: "passed every rate tried (raise --rates)",
    });
  }
  const rateRows = opts.rates
    .map((rate) => {
      const at = (name: VariantName) =>
        steps.filter((s) => s.rate === rate && s.variant === name).at(-1)?.result;
      const cells = h.bench.variants.map((v) => {
        const r = at(v.name);
        if (!r) return "";
        if (r.overloaded) return "overload";
        return fmt(r.latency.p99, 2);
      });
      const lags = steps.filter((s) => s.rate === rate).map((s) => s.result.lag.p99);
      return cells.some((c) => c !== "")
        ? [String(rate), ...cells, fmt(Math.max(...lags), 2)]
        : undefined;
    })
    .filter((r): r is string[] => r !== undefined);
  const summary = h.bench.variants
    .filter((v) => v.name !== "direct")
    .map((v) => {
      const c = ceiling.get(v.name);
      const rate =
        c?.rate !== undefined
          ? `${c.rate}/s${c.undetermined ? " or more" : ""}`
          : c?.undetermined
            ? "undetermined"
            : "below the lowest rate";
      return `  ${v.label}: ${rate} (${c?.why ?? "not measured"})`;
    });
  print(
    `OPEN LOOP — fixed rate, latency from the scheduled send time; p99 ms per rate (${openLoopStepMs(opts) / 1000} s per step)`,
    `${formatTable(
      ["rate/s", ...h.bench.variants.map((v) => `${v.label} p99`), "client lag p99"],
      rateRows,
    )}\n\nHighest rate with p99 within ${OPEN_LOOP_BUDGET_MS} ms of direct:\n${summary.join("\n")}`,
  );
  return { steps, ceiling: Object.fromEntries(ceiling) };
}

interface ProcMemoryRow {
  variant: string;
  process: string;
  rssMb: number | undefined;
}

function memoryRows(
  h: Harness,
  at: Map<number, ProcUsage>,
  extra: ChildProc[] = [],
): ProcMemoryRow[] {
  const rows: ProcMemoryRow[] = [];
  for (const v of h.bench.variants) {
    for (const p of v.procs)
      rows.push({ variant: v.label, process: p.name, rssMb: mb(at.get(p.pid)?.rssKb) });
  }
  for (const p of extra)
    rows.push({ variant: "(support)", process: p.name, rssMb: mb(at.get(p.pid)?.rssKb) });
  return rows;
}

const mb = (kb: number | undefined) => (kb === undefined ? undefined : kb / 1024);

async function memoryScenario(
  h: Harness,
  idle: Map<number, ProcUsage>,
  warm: Map<number, ProcUsage>,
) {
  const { opts } = h;
  const sustained: Array<Record<string, unknown>> = [];
  const printed: string[][] = [];
  for (const v of h.live().filter((x) => x.name !== "direct")) {
    progress(`memory: ${opts.sustainMs / 1000} s of unary c=16 + streams c=16 through ${v.label}`);
    const before = await sample(v.procs);
    const series: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        series.push(rssOf(v.procs, await sample(v.procs)));
        await sleep(1000);
      }
    })();
    const [unary, stream] = await Promise.all([
      h.closed(v, 16, opts.sustainMs, false),
      h.closed(v, 16, opts.sustainMs, true),
    ]);
    sampling = false;
    await sampler;
    const end = await sample(v.procs);
    await sleep(2000);
    const settled = await sample(v.procs);
    const startKb = rssOf(v.procs, before);
    const endKb = rssOf(v.procs, end);
    const row = {
      variant: v.name,
      requests: unary.completed,
      streams: stream.completed,
      errors: unary.errors + stream.errors,
      idleMb: mb(rssOf(v.procs, idle)),
      warmMb: mb(rssOf(v.procs, warm)),
      startMb: mb(startKb),
      peakMb: mb(Math.max(startKb, endKb, ...series)),
      endMb: mb(endKb),
      settledMb: mb(rssOf(v.procs, settled)),
      growthMb: mb(endKb - startKb),
      perProcess: v.procs.map((p) => ({
        process: p.name,
        startMb: mb(before.get(p.pid)?.rssKb),
        endMb: mb(end.get(p.pid)?.rssKb),
        hwmMb: mb(end.get(p.pid)?.hwmKb),
      })),
      seriesMb: series.map(mb),
    };
    sustained.push(row);
    printed.push([
      v.label,
      String(row.requests + row.streams),
      fmt(row.idleMb, 1),
      fmt(row.startMb, 1),
      fmt(row.peakMb, 1),
      fmt(row.endMb, 1),
      fmt(row.settledMb, 1),
      fmt(row.growthMb, 1, true),
      String(row.errors),
    ]);
  }
  const idleRows = memoryRows(h, idle, [h.bench.upstream, h.bench.load]);
  print(
    "MEMORY — idle RSS per process right after start (MB)",
    formatTable(
      ["variant", "process", "idle RSS MB", "after warm-up MB"],
      idleRows.map((r, i) => [
        r.variant,
        r.process,
        fmt(r.rssMb, 1),
        fmt(memoryRows(h, warm, [h.bench.upstream, h.bench.load])[i]?.rssMb, 1),
      ]),
    ),
  );
  print(
    `MEMORY — growth over ${opts.sustainMs / 1000} s of sustained load (unary c=16 + streams c=16), RSS summed over the variant's processes, MB`,
    formatTable(
      ["variant", "reqs+streams", "idle", "start", "peak", "end", "end+2s", "growth", "errors"],
      printed,
    ),
  );
  return { idle: idleRows, sustained };
}

/** Descriptors kept back in every process for what is not a held stream (listeners, logs, IPC). */
const FD_RESERVE = 64;

async function openStreamsScenario(h: Harness) {
  const { opts, bench } = h;
  const rows: Array<Record<string, unknown>> = [];
  const printed: string[][] = [];
  for (const [i, n] of opts.openStreams.entries()) {
    for (const v of rotate(h.live(), i)) {
      // Descriptors each process holds per stream: a proxy in one process holds both sides.
      const perStream = (p: ChildProc) =>
        v.name === "bare" || v.name === "one"
          ? 2
          : p.name.startsWith("ingress") || p.name.startsWith("connector") || p.name === "edge"
            ? 1
            : 0;
      // Connections left idle by the previous run close on the upstream's keep-alive timeout.
      await upstreamSettled(bench);
      const perProc: Array<[ChildProc, number]> = [
        [bench.load, 1],
        [bench.upstream, 1],
        ...v.procs.map((p): [ChildProc, number] => [p, perStream(p)]),
      ];
      // A proxy in one process holds two descriptors per stream, so 10,000 streams need just
      // over a hard limit of 20,000: hold as many as fit, if that is within 10 % of the count.
      let held = n;
      try {
        const fit = streamsThatFit(
          n,
          perProc.map(([p, per]) => ({ room: fdRoom(p.pid), reserve: FD_RESERVE, perStream: per })),
        );
        if (fit < n && fit >= n * 0.9) {
          held = fit;
          h.note(
            `open streams ${n} ${v.label}: ${fit} held, as many as the open-files limit allows`,
          );
        }
      } catch {
        // ensureFdLimit below says why /proc could not be read.
      }
      const refused: string[] = [];
      for (const [p, per] of perProc) {
        const check = await ensureFdLimit(p.pid, per * held + FD_RESERVE);
        if (!check.ok) refused.push(`${p.name}: ${check.reason}`);
      }
      if (refused.length > 0) {
        h.note(`open streams ${n} ${v.label}: not run — ${refused.join("; ")}`);
        rows.push({ streams: n, variant: v.name, skipped: refused });
        printed.push([String(n), v.label, ...Array<string>(9).fill("—"), "skipped: fd limit"]);
        continue;
      }
      progress(`open streams: ${held} through ${v.label}`);
      const watched = [...v.procs, bench.upstream, bench.load];
      const before = await sample(watched);
      let atOpen = before;
      const result: HoldResult = await bench.driver.hold(
        {
          target: target(v, true, SLOW_MODEL, opts.openPromptKb),
          streams: held,
          openConcurrency: 256,
          openTimeoutMs: Math.max(60_000, held * 20),
          finishTimeoutMs: opts.slowIntervalMs * 2 + 30_000,
        },
        (opened) => {
          void (async () => {
            progress(`  ${opened.opened} open after ${fmt(opened.openMs / 1000, 1)} s; releasing`);
            await sleep(500);
            atOpen = await sample(watched);
            await upstreamControl(bench, "POST", "/bench/release");
          })();
        },
      );
      const grownKb = rssOf(v.procs, atOpen) - rssOf(v.procs, before);
      const row = {
        streams: n,
        held,
        promptKb: opts.openPromptKb,
        variant: v.name,
        ...result,
        rssBeforeMb: v.procs.length > 0 ? mb(rssOf(v.procs, before)) : undefined,
        rssOpenMb: v.procs.length > 0 ? mb(rssOf(v.procs, atOpen)) : undefined,
        kbPerStream: v.procs.length > 0 && result.opened > 0 ? grownKb / result.opened : undefined,
        perProcess: watched.map((p) => ({
          process: p.name,
          beforeMb: mb(before.get(p.pid)?.rssKb),
          openMb: mb(atOpen.get(p.pid)?.rssKb),
        })),
      };
      rows.push(row);
      printed.push([
        String(n),
        v.label,
        String(result.opened),
        String(result.complete),
        String(result.lost + result.failedToOpen),
        fmt(result.openMs / 1000, 1),
        fmt(result.openLatency.p50, 1),
        fmt(result.openLatency.p99, 1),
        fmt(row.rssBeforeMb, 1),
        fmt(row.rssOpenMb, 1),
        fmt(row.kbPerStream, 1),
        held < n ? `${held} held: fd limit` : "",
      ]);
      if (result.lost + result.failedToOpen > 0) {
        h.note(
          `open streams ${n} ${v.label}: ${result.failedToOpen} failed to open, ${result.lost} lost (${result.firstError})`,
        );
      }
    }
  }
  print(
    `OPEN STREAMS — slow streams (a chunk every ${opts.slowIntervalMs} ms) held at once, then released; ${
      opts.openPromptKb > 0 ? `a ${opts.openPromptKb} KB prompt each; ` : ""
    }RSS summed over the variant's processes`,
    formatTable(
      [
        "streams",
        "variant",
        "opened",
        "complete",
        "lost",
        "open s",
        "1st tok p50",
        "1st tok p99",
        "RSS before MB",
        "RSS open MB",
        "KB/stream",
        "note",
      ],
      printed,
    ),
  );
  return { rows };
}

async function upstreamControl(bench: BenchProcesses, method: "GET" | "POST", path: string) {
  const res = await request(`${bench.upstreamOrigin}${path}`, { method });
  return res.body.text();
}

/** Waits (up to 30 s) until the upstream holds no slow stream and few connections. */
async function upstreamSettled(bench: BenchProcesses): Promise<void> {
  for (let t = 0; t < 300; t++) {
    const stats = JSON.parse(await upstreamControl(bench, "GET", "/bench/stats")) as {
      slowOpen: number;
      connections: number;
    };
    if (stats.slowOpen === 0 && stats.connections < 512) return;
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------
// Main

const printed: string[] = [];

function print(title: string, body: string): void {
  const text = `\n${title}\n\n${body}\n`;
  printed.push(text);
  process.stdout.write(text);
}

function gitCommit(): string | undefined {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  } catch {
    return undefined;
  }
}

async function main(argv: string[]): Promise<number> {
  const opts = parseOptions(argv);
  if (!opts) return 0;
  const started = new Date();
  const machine = {
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    loadavgStart: loadavg(),
    commit: gitCommit(),
    cpuIdle: cpuIdleSettings(),
    // How the machine runs code that follows an idle moment (bench/cold.ts), before any process
    // starts; coldEnd is measured after all have stopped.
    coldStart: await coldProbe(),
  };
  progress(
    `starting ${opts.variants.join(", ")} (load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")})`,
  );
  const maxStreams = Math.max(0, ...opts.openStreams);
  const bench = await startBench({
    variants: opts.variants,
    deltas: opts.deltas,
    intervalMs: opts.intervalMs,
    slowIntervalMs: opts.slowIntervalMs,
    logLevel: opts.logLevel,
    ...(opts.gatewayNodeOptions !== undefined && { gatewayNodeOptions: opts.gatewayNodeOptions }),
    // Room for every held stream on its own upstream connection (the default is 128).
    maxConnections: Math.max(128, maxStreams + 256),
    pin: opts.pin,
    natsUrl: opts.natsUrl,
    ...(opts.cpuProf !== undefined && { cpuProfDir: opts.cpuProf }),
  });
  let stopping = false;
  const interrupt = () => {
    if (stopping) return;
    stopping = true;
    progress("interrupted: stopping every child process");
    void bench.stop(opts.keep).then(() => process.exit(130));
  };
  process.on("SIGINT", interrupt);
  process.on("SIGTERM", interrupt);
  const h = new Harness(bench, opts);
  const everyone = [bench.upstream, bench.load, ...bench.variants.flatMap((v) => v.procs)];
  const results: Record<string, unknown> = {};
  try {
    await sleep(2000);
    const idle = await sample(everyone);
    await warmUp(h);
    const warm = await sample(everyone);
    for (const scenario of opts.scenarios) {
      const t0 = performance.now();
      if (scenario === "unary") results.unary = await unaryScenario(h);
      if (scenario === "stream") results.stream = await streamScenario(h);
      if (scenario === "open-loop") results.openLoop = await openLoopScenario(h);
      if (scenario === "memory") results.memory = await memoryScenario(h, idle, warm);
      if (scenario === "open-streams") results.openStreams = await openStreamsScenario(h);
      progress(`${scenario} took ${fmt((performance.now() - t0) / 1000, 0)} s`);
    }
  } finally {
    await bench.stop(opts.keep);
    if (opts.keep) progress(`configs and process output kept in ${bench.dir}`);
  }
  const coldEnd = await coldProbe();
  const finished = new Date();
  const placement = opts.pin
    ? "upstream + load client pinned to CPU 0, variants to CPU 1"
    : "no pinning: upstream, load client and each variant's processes share both CPUs";
  const context = [
    `Run ${started.toISOString()} → ${finished.toISOString()} (${fmt((finished.getTime() - started.getTime()) / 1000, 0)} s), node ${machine.node}, ${machine.cpus} CPUs${machine.cpuIdle ? ` (${machine.cpuIdle})` : ""}, commit ${machine.commit ?? "?"}`,
    `Load average at start ${machine.loadavgStart.map((l) => l.toFixed(1)).join(" ")}, at end ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}; ${placement}; gateway LOG_LEVEL=${opts.logLevel}${
      opts.gatewayNodeOptions !== undefined ? `, NODE_OPTIONS=${opts.gatewayNodeOptions}` : ""
    }`,
    `Cold code (${machine.coldStart.task}): at start ${coldFigures(machine.coldStart)}; at end ${coldFigures(coldEnd)}`,
    ...h.notes.map((n) => `note: ${n}`),
  ];
  process.stdout.write(`\n${context.join("\n")}\n`);
  const out =
    opts.out ??
    join(
      fileURLToPath(new URL("results", import.meta.url)),
      `${started.toISOString().replace(/[:.]/g, "-")}${opts.quick ? "-quick" : ""}.json`,
    );
  mkdirSync(join(out, ".."), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify(
      {
        started: started.toISOString(),
        finished: finished.toISOString(),
        argv,
        options: opts,
        machine: { ...machine, coldEnd, loadavgEnd: loadavg(), placement },
        notes: h.notes,
        results,
        tables: printed,
      },
      null,
      2,
    )}\n`,
  );
  process.stdout.write(`results: ${out}\n`);
  return 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : err}\n`);
      process.exit(1);
    },
  );
}
