/**
 * Where one request's time goes, process by process: runs closed-loop unary load (c=1 by
 * default) through each variant while `perf trace` records every read, write and writev of the
 * load client, the mock upstream and the variant's processes, then splits the chain into
 *
 * - segments: inside one process, from the start of a read to the end of the write it leads to
 *   ("router: ingress → connector" is the router's time from reading the ingress's call to
 *   having written its own call to the connector), and
 * - handoffs: from the end of one process's write to the start of the peer's read of the same
 *   bytes (the kernel's delivery, the wake-up and scheduling of the reader).
 *
 * Each figure is the median over the traced requests. perf trace slows every system call it
 * records, so the absolute figures run high (a segment that is ~100 µs untraced reads ~150):
 * compare segments with each other and variants with each other, in one run. Needs `perf` and
 * the right to trace other processes (root, or kernel.perf_event_paranoid ≤ -1).
 *
 *   node --import tsx bench/timeline.ts                       # bare, one, four; c=1, 3 s each
 *   node --import tsx bench/timeline.ts --variants four --seconds 5 --concurrency 16
 */
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { parseVariants, startBench, unaryTarget, unaryToolOptions } from "./procs.js";
import { formatTable, median } from "./run.js";

/** One system call from `perf trace` output. */
export interface TracedCall {
  /** Start and end, µs from the trace's start. */
  start: number;
  end: number;
  pid: number;
  call: "read" | "write" | "writev";
  fd: number;
  bytes: number;
}

// "  171.389 ( 0.019 ms): node/6791 read(fd: 22, buf: 0x1bf945b0, count: 65536)   = 9"
const LINE =
  /^\s*(?<at>[\d.]+) \(\s*(?<ms>[\d.]+) ms\): [^/]+\/(?<pid>\d+) (?<call>read|writev|write)\(fd: (?<fd>\d+)[^)]*\)\s+= (?<bytes>\d+)$/;
// A call that another CPU's lines interrupted is split in two: its start,
// "   4.376 (         ): node/14370 read(fd: 25, buf: 0x171f8b70, count: 65536)   ...",
// then its end, "   4.376 ( 0.013 ms): node/14370  ... [continued]: read())   = 452".
const BEGUN = /^\s*[\d.]+ \(\s*\): [^/]+\/(\d+) (read|writev|write)\(fd: (\d+)[^)]*\)\s+\.\.\.$/;
const CONTINUED =
  /^\s*(?<at>[\d.]+) \(\s*(?<ms>[\d.]+) ms\): [^/]+\/(?<pid>\d+)\s+\.\.\. \[continued\]: (?<call>read|writev|write)\(\)\)\s+= (?<bytes>\d+)$/;

type CallFields = Record<"at" | "ms" | "pid" | "call" | "bytes", string>;

/**
 * The completed reads and writes of a `perf trace -e read,write,writev` output, in order of
 * their start (the output interleaves the CPUs' lines). Failed calls are left out.
 */
export function parseTrace(text: string): TracedCall[] {
  const calls: TracedCall[] = [];
  // The fd of each split call whose end has not come yet, by "pid call".
  const begun = new Map<string, number>();
  const add = (f: CallFields, fd: number) => {
    const start = Number(f.at) * 1000;
    calls.push({
      start,
      end: start + Number(f.ms) * 1000,
      pid: Number(f.pid),
      call: f.call as TracedCall["call"],
      fd,
      bytes: Number(f.bytes),
    });
  };
  for (const line of text.split("\n")) {
    const whole = LINE.exec(line)?.groups;
    if (whole) {
      add(whole as CallFields, Number(whole.fd));
      continue;
    }
    const start = BEGUN.exec(line);
    if (start) {
      begun.set(`${start[1]} ${start[2]}`, Number(start[3]));
      continue;
    }
    const end = CONTINUED.exec(line)?.groups as CallFields | undefined;
    const fd = end && begun.get(`${end.pid} ${end.call}`);
    if (end && fd !== undefined) {
      begun.delete(`${end.pid} ${end.call}`);
      add(end, fd);
    }
  }
  return calls.sort((a, b) => a.start - b.start);
}

/** "pid:fd" of a TCP socket → "pid:fd" of the socket at its other end, both traced. */
export type SocketPeers = ReadonlyMap<string, string>;

/**
 * Pairs the two ends of every loopback TCP connection among `pids`, from `ss -tanpH state
 * established` output: "0 0 127.0.0.1:41234 127.0.0.1:35419 users:(("node",pid=123,fd=25))".
 */
export function socketPeers(ssOutput: string, pids: ReadonlySet<number>): SocketPeers {
  const byAddress = new Map<string, string>();
  const ends: Array<{ end: string; local: string; remote: string }> = [];
  for (const line of ssOutput.split("\n")) {
    const m = /(\S+:\d+)\s+(\S+:\d+)\s+users:\(\("[^"]*",pid=(\d+),fd=(\d+)\)/.exec(line);
    if (!m || !pids.has(Number(m[3]))) continue;
    const end = `${m[3]}:${m[4]}`;
    byAddress.set(`${m[1]} ${m[2]}`, end);
    ends.push({ end, local: m[1] as string, remote: m[2] as string });
  }
  const peers = new Map<string, string>();
  for (const { end, local, remote } of ends) {
    const other = byAddress.get(`${remote} ${local}`);
    if (other !== undefined) peers.set(end, other);
  }
  return peers;
}

export interface Timeline {
  /** "router: ingress → connector" → µs per occurrence. */
  segments: Map<string, number[]>;
  /** "router → connector" → µs per occurrence. */
  handoffs: Map<string, number[]>;
}

/**
 * Reads and writes shorter than this are not messages of the chain: event-fd wake-ups (8 bytes)
 * and HTTP/2 frames without a payload (an empty DATA frame that ends a stream is 9).
 */
const MIN_BYTES = 16;

/**
 * Splits each process's calls into segments, from a read to the write that follows it, each
 * named by the processes at the other end of the read's and the write's connections; and pairs
 * each write with the next read at the other end of its connection (a handoff). A write whose
 * bytes the peer read together with an earlier write's is not a handoff of its own. `names`
 * labels the pids; other pids' calls, and connections to untraced processes, are left out.
 */
export function timeline(
  calls: readonly TracedCall[],
  names: ReadonlyMap<number, string>,
  peers: SocketPeers,
): Timeline {
  const ours = calls.filter(
    (c) => names.has(c.pid) && c.bytes >= MIN_BYTES && peers.has(`${c.pid}:${c.fd}`),
  );
  const nameOf = (c: TracedCall) => {
    const peer = peers.get(`${c.pid}:${c.fd}`) as string;
    return names.get(Number(peer.split(":")[0])) ?? "?";
  };
  const handoffs = new Map<string, number[]>();
  const taken = new Set<TracedCall>();
  for (const [i, w] of ours.entries()) {
    if (w.call === "read") continue;
    const peer = peers.get(`${w.pid}:${w.fd}`);
    for (let j = i + 1; j < ours.length; j++) {
      const r = ours[j] as TracedCall;
      if (r.call !== "read" || `${r.pid}:${r.fd}` !== peer) continue;
      if (!taken.has(r))
        push(handoffs, `${names.get(w.pid)} → ${names.get(r.pid)}`, r.start - w.end);
      taken.add(r);
      break;
    }
  }
  const segments = new Map<string, number[]>();
  const lastRead = new Map<number, TracedCall>();
  for (const c of ours) {
    if (c.call === "read") {
      lastRead.set(c.pid, c);
      continue;
    }
    const r = lastRead.get(c.pid);
    if (r === undefined) continue;
    lastRead.delete(c.pid);
    push(segments, `${names.get(c.pid)}: ${nameOf(r)} → ${nameOf(c)}`, c.end - r.start);
  }
  return { segments, handoffs };
}

function push(map: Map<string, number[]>, key: string, value: number): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** Table rows: each key seen at least `minCount` times, with its count and median µs. */
export function timelineRows(map: Map<string, number[]>, minCount: number): string[][] {
  return [...map]
    .filter(([, values]) => values.length >= minCount)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, values]) => [key, String(values.length), (median(values) ?? 0).toFixed(0)]);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      variants: { type: "string", default: "bare,one,four" },
      seconds: { type: "string", default: "3" },
      concurrency: { type: "string", default: "1" },
      nats: { type: "string", default: "nats://127.0.0.1:4222" },
      // A directory to keep each variant's raw trace in (as <variant>.trace).
      keep: { type: "string" },
    },
  });
  const perf = spawnSync("perf", ["--version"], { encoding: "utf8" });
  if (perf.status !== 0) {
    process.stderr.write("bench/timeline.ts needs `perf` (Debian: linux-perf) on the PATH\n");
    process.exit(2);
  }
  const variants = parseVariants(values.variants as string);
  const seconds = Number(values.seconds);
  const concurrency = Number(values.concurrency);
  const bench = await startBench(unaryToolOptions(variants, values.nats as string));
  try {
    for (const v of bench.variants) {
      if (v.name === "direct") continue;
      const target = unaryTarget(v.origin);
      // Warm-up at c=16 (JIT, pools), then the traced window inside a longer one at `concurrency`.
      await bench.driver.closed({ target, concurrency: 16, durationMs: 5000, stream: false });
      const names = new Map<number, string>([
        [bench.load.pid, "client"],
        [bench.upstream.pid, "upstream"],
        ...v.procs.map((p): [number, string] => [p.pid, p.name === "switchyard" ? "one" : p.name]),
      ]);
      const file = join(bench.dir, `${v.name}.trace`);
      const load = bench.driver.closed({
        target,
        concurrency,
        durationMs: (seconds + 2) * 1000,
        stream: false,
      });
      await new Promise((r) => setTimeout(r, 1000));
      const tracer = spawn(
        "perf",
        ["trace", "-p", [...names.keys()].join(","), "-e", "read,write,writev", "-o", file],
        { stdio: ["ignore", "ignore", "inherit"] },
      );
      await new Promise((r) => setTimeout(r, seconds * 1000));
      // The connections are kept alive, so those open now are the ones the trace saw.
      const ss = spawnSync("ss", ["-tanpH", "state", "established"], { encoding: "utf8" });
      tracer.kill("SIGINT");
      await once(tracer, "exit");
      const window = await load;
      if (values.keep) {
        mkdirSync(values.keep, { recursive: true });
        copyFileSync(file, join(values.keep, `${v.name}.trace`));
      }
      const { segments, handoffs } = timeline(
        parseTrace(readFileSync(file, "utf8")),
        names,
        socketPeers(ss.stdout, new Set(names.keys())),
      );
      const least = Math.max(10, Math.floor(window.rps * seconds * 0.2));
      console.log(
        `\n${v.label}: c=${concurrency}, ${seconds} s traced; the whole window (traced part included): ${window.rps.toFixed(0)} rps, p50 ${window.latency.p50.toFixed(3)} ms\n`,
      );
      console.log(formatTable(["segment", "n", "p50 µs"], timelineRows(segments, least)));
      console.log("");
      console.log(formatTable(["handoff", "n", "p50 µs"], timelineRows(handoffs, least)));
    }
  } finally {
    await bench.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
