/**
 * Starts and stops everything a benchmark run needs as child processes of its own, and reads
 * their CPU time and memory from /proc:
 *
 * - the mock upstream (bench/mock-upstream.ts) and the load worker (bench/load.ts);
 * - the variants under test: `direct` (no process: the client talks to the upstream), `bare`
 *   (bench/bare-proxy.ts), `one` (`switchyard start`, all services in one process) and `four`
 *   (`switchyard start --service X` for each of the four services, NATS at 127.0.0.1:4222);
 *   `two` is the ingress, router and prober in one process (`edge`) and the connector, which
 *   alone holds upstream keys, in another: one hop on a request's way instead of two;
 *   `four-connect` is `four` with SWITCHYARD_FABRIC_TRANSPORT=connect (connect-node's client and
 *   server between the processes, as before the lean hop transport), for a before/after in one run.
 *
 * Each child writes its output to a file in the run's temp dir (no pipe for the harness to
 * drain, and the gateway's per-request log lines cost what they cost in production).
 */

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { request } from "undici";
import { hashKey } from "../services/lib/config/keys.js";
import { LoadDriver, type LoadTarget } from "./load.js";
import { UNARY_MODEL } from "./mock-upstream.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin", "switchyard.js");
const BENCH = join(ROOT, "bench");

/** The key the load client presents; the gateways know it only as a hash. */
export const CLIENT_KEY = `sk-bench-${randomUUID()}`;
export const CHAT_PATH = "/v1/chat/completions";

/** A non-streaming chat through a variant, as the one-request-at-a-time tools send it. */
export function unaryTarget(origin: string): LoadTarget {
  return {
    origin,
    path: CHAT_PATH,
    headers: { "content-type": "application/json", authorization: `Bearer ${CLIENT_KEY}` },
    body: JSON.stringify({
      model: UNARY_MODEL,
      messages: [{ role: "user", content: "Say hello in one short sentence." }],
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// /proc

export interface ProcStat {
  utimeTicks: number;
  stimeTicks: number;
}

/**
 * Fields of /proc/PID/stat. The command name (field 2) is in parentheses and may itself hold
 * spaces and parentheses, so the fields are counted from the last ')'.
 */
export function parseProcStat(text: string): ProcStat {
  const close = text.lastIndexOf(")");
  if (close === -1) throw new Error("not a /proc/PID/stat line");
  // After ')': field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
  const fields = text
    .slice(close + 2)
    .trim()
    .split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error("no utime/stime in /proc/PID/stat line");
  }
  return { utimeTicks: utime, stimeTicks: stime };
}

export interface ProcMemory {
  /** Resident set now, kB. */
  rssKb: number;
  /** Highest resident set so far, kB. */
  hwmKb: number;
}

/** VmRSS and VmHWM from /proc/PID/status. */
export function parseProcStatus(text: string): ProcMemory {
  const kb = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+)\\s+kB$`, "m").exec(text);
    if (!match) throw new Error(`no ${name} in /proc/PID/status`);
    return Number(match[1]);
  };
  return { rssKb: kb("VmRSS"), hwmKb: kb("VmHWM") };
}

/** The "Max open files" line of /proc/PID/limits. */
export function parseFdLimit(text: string): { soft: number; hard: number } {
  const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!match) throw new Error("no 'Max open files' in /proc/PID/limits");
  const n = (v: string | undefined) => (v === "unlimited" ? Number.POSITIVE_INFINITY : Number(v));
  return { soft: n(match[1]), hard: n(match[2]) };
}

/**
 * How this machine's CPUs sleep when idle, for the record of a run: the cpuidle driver, and on a
 * KVM guest with the haltpoll driver how long an idle CPU polls before it halts. A halted virtual
 * CPU is woken through the hypervisor, which at one request at a time costs more than the
 * gateway's own work (bench/README.md, "What an idle moment costs"). Undefined where not exposed.
 */
export function cpuIdleSettings(): string | undefined {
  const read = (path: string) => {
    try {
      return readFileSync(path, "utf8").trim();
    } catch {
      return undefined;
    }
  };
  const driver = read("/sys/devices/system/cpu/cpuidle/current_driver");
  if (driver === undefined) return undefined;
  const pollNs = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
  return `cpuidle ${driver}${pollNs === undefined ? "" : `, guest_halt_poll_ns ${pollNs}`}`;
}

let ticksPerSecond: number | undefined;

async function clockTicks(): Promise<number> {
  if (ticksPerSecond === undefined) {
    const { stdout } = await promisify(execFile)("getconf", ["CLK_TCK"]).catch(() => ({
      stdout: "100",
    }));
    ticksPerSecond = Number(stdout.trim()) || 100;
  }
  return ticksPerSecond;
}

export interface ProcUsage extends ProcMemory {
  /** User + system CPU time so far, µs (resolution one clock tick, 10 ms here). */
  cpuUs: number;
}

/** CPU time and memory of a live process; undefined once it is gone. */
export async function readUsage(pid: number): Promise<ProcUsage | undefined> {
  try {
    const stat = parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
    const memory = parseProcStatus(readFileSync(`/proc/${pid}/status`, "utf8"));
    const tick = await clockTicks();
    return { cpuUs: ((stat.utimeTicks + stat.stimeTicks) * 1_000_000) / tick, ...memory };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Child processes

export interface ChildProc {
  name: string;
  pid: number;
  child: ChildProcess;
  logFile: string;
  /** Exit code, once it exited. */
  exited(): number | null | undefined;
  stop(): Promise<void>;
}

interface ChildOptions {
  name: string;
  args: string[];
  dir: string;
  env?: NodeJS.ProcessEnv;
  /** taskset CPU list, e.g. "1". */
  cpus?: string;
  ipc?: boolean;
}

function startChild(opts: ChildOptions): ChildProc {
  const logFile = join(opts.dir, `${opts.name}.log`);
  const fd = openSync(logFile, "a");
  // taskset execs node, so the PID we get is the node process itself.
  const [command, ...args] = opts.cpus
    ? ["taskset", "-c", opts.cpus, process.execPath, ...opts.args]
    : [process.execPath, ...opts.args];
  const child = spawn(command as string, args, {
    cwd: ROOT,
    env: { ...process.env, ...opts.env },
    stdio: opts.ipc ? ["ignore", fd, fd, "ipc"] : ["ignore", fd, fd],
  });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`${opts.name}: could not start`);
  let exitCode: number | null | undefined;
  const exit = once(child, "exit").then(([code]) => {
    exitCode = code as number | null;
  });
  return {
    name: opts.name,
    pid: child.pid,
    child,
    logFile,
    exited: () => exitCode,
    async stop() {
      if (exitCode !== undefined) return;
      child.kill("SIGTERM");
      const killed = setTimeout(() => child.kill("SIGKILL"), 8000);
      await exit;
      clearTimeout(killed);
    },
  };
}

/** The last lines a child wrote, for error messages. */
export function tail(proc: ChildProc, lines = 20): string {
  try {
    return readFileSync(proc.logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

/** Free loopback ports (bound, read, released; the OS does not hand them out again at once). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, async () => {
      const s = net.createServer();
      s.listen(0, "127.0.0.1");
      await once(s, "listening");
      return s;
    }),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

async function waitUntil(
  what: string,
  procs: ChildProc[],
  ready: () => Promise<boolean>,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = procs.find((p) => p.exited() !== undefined);
    if (dead) throw new Error(`${dead.name} exited while starting:\n${tail(dead)}`);
    if (await ready().catch(() => false)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${what} not ready within ${timeoutMs} ms:\n${procs.map((p) => `--- ${p.name}\n${tail(p)}`).join("\n")}`,
      );
    }
    await sleep(100);
  }
}

async function answers(url: string, init?: { body: string; headers: Record<string, string> }) {
  const res = await request(url, init ? { method: "POST", ...init } : {});
  await res.body.dump();
  return res.statusCode === 200;
}

// ---------------------------------------------------------------------------------------------
// The run's processes

export type VariantName = "direct" | "bare" | "one" | "two" | "four" | "four-connect";

export const VARIANT_LABELS: Record<VariantName, string> = {
  direct: "direct",
  bare: "bare proxy",
  one: "one process",
  two: "2 processes",
  four: "4 processes",
  "four-connect": "4 procs, connect-node",
};

/** The variants a comma-separated list names; an unknown name is an error, not a default. */
export function parseVariants(list: string): VariantName[] {
  return list.split(",").map((name) => {
    if (!(name in VARIANT_LABELS)) {
      throw new Error(`unknown variant '${name}' (${Object.keys(VARIANT_LABELS).join(", ")})`);
    }
    return name as VariantName;
  });
}

export interface Variant {
  name: VariantName;
  label: string;
  /** Where the load client sends requests. */
  origin: string;
  /** The processes under test (none for `direct`). */
  procs: ChildProc[];
}

export interface BenchProcesses {
  dir: string;
  upstream: ChildProc;
  upstreamOrigin: string;
  load: ChildProc;
  driver: LoadDriver;
  variants: Variant[];
  /** Stops every child this run started; removes the temp dir unless `keep`. */
  stop(keep?: boolean): Promise<void>;
}

/** startBench's options for the tools that send unary requests only (timeline, gaps). */
export function unaryToolOptions(variants: VariantName[], natsUrl: string): StartOptions {
  return {
    variants,
    deltas: 64,
    intervalMs: 20,
    slowIntervalMs: 5000,
    logLevel: "info",
    maxConnections: 128,
    pin: false,
    natsUrl,
  };
}

export interface StartOptions {
  variants: VariantName[];
  /** Mock upstream stream shape. */
  deltas: number;
  intervalMs: number;
  slowIntervalMs: number;
  /** The gateways' LOG_LEVEL. */
  logLevel: string;
  /** NODE_OPTIONS for the gateways' processes only (V8 flags under test); none by default. */
  gatewayNodeOptions?: string;
  /** Upstream connection cap written into the gateways' provider config. */
  maxConnections: number;
  /** Pin the upstream and load client to CPU 0 and the variants to CPU 1. */
  pin: boolean;
  natsUrl: string;
  /** Run the gateways and the bare proxy under `node --cpu-prof`, one .cpuprofile per process here. */
  cpuProfDir?: string;
}

function gatewayConfig(o: {
  ports: { ingress: number; router: number; connector: number; prober: number };
  upstreamOrigin: string;
  maxConnections: number;
  nats?: { url: string; namespace: string };
}): string {
  const { ports } = o;
  const lines = [
    "server:",
    `  ingress: { host: 127.0.0.1, port: ${ports.ingress} }`,
    `  router: { host: 127.0.0.1, port: ${ports.router} }`,
    `  connector: { host: 127.0.0.1, port: ${ports.connector} }`,
    `  prober: { host: 127.0.0.1, port: ${ports.prober} }`,
    "  drain_timeout_ms: 2000",
  ];
  if (o.nats) {
    lines.push(
      "peers:",
      `  router: http://127.0.0.1:${ports.router}`,
      `  connectors: [http://127.0.0.1:${ports.connector}]`,
      `nats: { url: "${o.nats.url}", namespace: ${o.nats.namespace} }`,
    );
  }
  lines.push(
    "providers:",
    `  bench: { type: openai, base_url: "${o.upstreamOrigin}/v1", api_key: sk-bench-upstream, max_connections: ${o.maxConnections} }`,
    "models:",
    "  bench: { targets: [{ provider: bench, model: bench }] }",
    "  bench-slow: { targets: [{ provider: bench, model: bench-slow }] }",
    "  bench-unary: { targets: [{ provider: bench, model: bench-unary }] }",
    "tenants:",
    `  bench: { keys: ["${hashKey(CLIENT_KEY)}"] }`,
  );
  return `${lines.join("\n")}\n`;
}

export async function startBench(opts: StartOptions): Promise<BenchProcesses> {
  const dir = mkdtempSync(join(tmpdir(), "switchyard-bench-"));
  const support: ChildProc[] = [];
  const underTest: ChildProc[] = [];
  const stop = async (keep = false) => {
    // Gateways first, so they do not log the upstream vanishing.
    await Promise.all(underTest.map((p) => p.stop()));
    await Promise.all(support.map((p) => p.stop()));
    if (!keep) rmSync(dir, { recursive: true, force: true });
  };
  try {
    const clientSide = opts.pin ? "0" : undefined;
    const gatewaySide = opts.pin ? "1" : undefined;
    const [upstreamPort] = (await freePorts(1)) as [number];
    const upstream = startChild({
      name: "upstream",
      dir,
      args: [
        "--import",
        "tsx",
        join(BENCH, "mock-upstream.ts"),
        "--port",
        String(upstreamPort),
        "--deltas",
        String(opts.deltas),
        "--interval-ms",
        String(opts.intervalMs),
        "--slow-interval-ms",
        String(opts.slowIntervalMs),
      ],
      ...(clientSide && { cpus: clientSide }),
    });
    support.push(upstream);
    const load = startChild({
      name: "load",
      dir,
      args: ["--import", "tsx", join(BENCH, "load.ts")],
      ipc: true,
      ...(clientSide && { cpus: clientSide }),
    });
    support.push(load);
    const driver = new LoadDriver(load.child);
    const upstreamOrigin = `http://127.0.0.1:${upstreamPort}`;
    await waitUntil("mock upstream", [upstream], () => answers(`${upstreamOrigin}/v1/models`));
    await driver.ready;

    const variants: Variant[] = [];
    const sanity = {
      body: JSON.stringify({ model: UNARY_MODEL, messages: [{ role: "user", content: "hi" }] }),
      headers: { "content-type": "application/json", authorization: `Bearer ${CLIENT_KEY}` },
    };
    const env: NodeJS.ProcessEnv = {
      LOG_LEVEL: opts.logLevel,
      ...(opts.gatewayNodeOptions !== undefined && { NODE_OPTIONS: opts.gatewayNodeOptions }),
    };
    const gateway = (name: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}) =>
      startChild({
        name,
        dir,
        args: [
          ...(opts.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`] : []),
          BIN,
          ...args,
        ],
        env: { ...env, ...extraEnv },
        ...(gatewaySide && { cpus: gatewaySide }),
      });

    for (const name of opts.variants) {
      if (name === "direct") {
        variants.push({ name, label: VARIANT_LABELS[name], origin: upstreamOrigin, procs: [] });
        continue;
      }
      let procs: ChildProc[];
      let origin: string;
      if (name === "bare") {
        const [port] = (await freePorts(1)) as [number];
        origin = `http://127.0.0.1:${port}`;
        procs = [
          startChild({
            name: "bare-proxy",
            dir,
            args: [
              ...(opts.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`] : []),
              "--import",
              "tsx",
              join(BENCH, "bare-proxy.ts"),
              "--port",
              String(port),
              "--upstream",
              upstreamOrigin,
            ],
            ...(gatewaySide && { cpus: gatewaySide }),
          }),
        ];
      } else {
        const [ingress, router, connector, prober] = (await freePorts(4)) as [
          number,
          number,
          number,
          number,
        ];
        origin = `http://127.0.0.1:${ingress}`;
        const config = join(dir, `${name}.yaml`);
        writeFileSync(
          config,
          gatewayConfig({
            ports: { ingress, router, connector, prober },
            upstreamOrigin,
            maxConnections: opts.maxConnections,
            ...(name !== "one" && {
              nats: { url: opts.natsUrl, namespace: `bench-${randomUUID().slice(0, 8)}` },
            }),
          }),
        );
        const connectNode = name === "four-connect";
        const start = ["start", "--config", config];
        const serve = (...services: string[]) => [
          ...start,
          ...services.flatMap((s) => ["--service", s]),
        ];
        procs =
          name === "one"
            ? [gateway("switchyard", start)]
            : name === "two"
              ? [
                  gateway("connector", serve("connector")),
                  gateway("edge", serve("ingress", "router", "prober")),
                ]
              : ["connector", "router", "prober", "ingress"].map((service) =>
                  gateway(
                    connectNode ? `${service}-cn` : service,
                    serve(service),
                    connectNode ? { SWITCHYARD_FABRIC_TRANSPORT: "connect" } : {},
                  ),
                );
      }
      underTest.push(...procs);
      await waitUntil(VARIANT_LABELS[name], procs, async () => {
        if (name !== "bare" && !(await answers(`${origin}/readyz`))) return false;
        return answers(`${origin}${CHAT_PATH}`, sanity);
      });
      variants.push({ name, label: VARIANT_LABELS[name], origin, procs });
    }
    return { dir, upstream, upstreamOrigin, load, driver, variants, stop };
  } catch (err) {
    await stop(true);
    throw err;
  }
}

/** CPU and memory of each process, by PID. */
export async function sample(procs: ChildProc[]): Promise<Map<number, ProcUsage>> {
  const out = new Map<number, ProcUsage>();
  for (const p of procs) {
    const usage = await readUsage(p.pid);
    if (usage) out.set(p.pid, usage);
  }
  return out;
}

/** CPU µs spent by `procs` between two samples, summed. */
export function cpuBetween(
  procs: ChildProc[],
  before: Map<number, ProcUsage>,
  after: Map<number, ProcUsage>,
): number {
  let us = 0;
  for (const p of procs) {
    const a = before.get(p.pid);
    const b = after.get(p.pid);
    if (a && b) us += b.cpuUs - a.cpuUs;
  }
  return us;
}

/** RSS of `procs` in a sample, summed, kB. */
export function rssOf(procs: ChildProc[], at: Map<number, ProcUsage>): number {
  let kb = 0;
  for (const p of procs) kb += at.get(p.pid)?.rssKb ?? 0;
  return kb;
}

/**
 * How many descriptors a process can still open: its hard limit (the soft one can be raised to
 * it, see ensureFdLimit) less those it holds now.
 */
export function fdRoom(pid: number): number {
  const { hard } = parseFdLimit(readFileSync(`/proc/${pid}/limits`, "utf8"));
  return hard - readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * The most streams, up to `wanted`, that every process can hold: each has `room` descriptors to
 * spare, `reserve` of them kept back, and needs `perStream` more per stream (0: none).
 */
export function streamsThatFit(
  wanted: number,
  processes: ReadonlyArray<{ room: number; reserve: number; perStream: number }>,
): number {
  let fit = wanted;
  for (const p of processes) {
    if (p.perStream > 0) fit = Math.min(fit, Math.floor((p.room - p.reserve) / p.perStream));
  }
  return Math.max(0, fit);
}

/**
 * Makes sure a process may open `more` descriptors on top of those it holds now, raising its
 * limit with prlimit(1) if its hard limit allows or we are privileged to; otherwise says why not.
 */
export async function ensureFdLimit(
  pid: number,
  more: number,
): Promise<{ ok: true } | { ok: false; reason: string }> {
  let limit: { soft: number; hard: number };
  let need: number;
  try {
    limit = parseFdLimit(readFileSync(`/proc/${pid}/limits`, "utf8"));
    need = readdirSync(`/proc/${pid}/fd`).length + more;
  } catch (err) {
    return { ok: false, reason: `cannot read /proc/${pid}: ${(err as Error).message}` };
  }
  if (limit.soft >= need) return { ok: true };
  try {
    await promisify(execFile)("prlimit", [`--pid=${pid}`, `--nofile=${need}:${need}`]);
    return { ok: true };
  } catch (err) {
    const why = ((err as { stderr?: string }).stderr ?? (err as Error).message).trim();
    return {
      ok: false,
      reason: `needs ~${need} open files, limit is ${limit.soft} (hard ${limit.hard}); raising it failed: ${why}`,
    };
  }
}
