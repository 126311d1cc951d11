/**
 * What a held stream costs each process, exactly: starts the mock upstream and one variant
 * (bench/procs.ts), warms up, holds N slow streams, and asks every process of the variant for a
 * process.memoryUsage() after a full GC (and with --snap a heap snapshot) before, while the
 * streams are open, and after their release. The open-streams scenario of `npm run bench` reads
 * RSS 0.5 s after opening, garbage included (at 1,000 streams that can be most of it); the JS
 * heap after a GC is what the streams themselves keep.
 *
 * node --import tsx bench/mem-probe.ts --variant one|four|bare --streams 1000 [--snap] [--out DIR]
 *
 * Prints KB per stream per process: raw RSS (as the harness reads it), RSS after the GC, JS heap
 * used and total, external. Heap snapshots (DIR/PID-N.heapsnapshot, N = 0 before, 1 open,
 * 2 after) open in Chrome DevTools' Memory tab: compare 1 against 0, by constructor.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { request } from "undici";
import { SLOW_MODEL } from "./mock-upstream.js";
import {
  CHAT_PATH,
  type ChildProc,
  CLIENT_KEY,
  readUsage,
  startBench,
  type VariantName,
} from "./procs.js";

const { values } = parseArgs({
  options: {
    variant: { type: "string", default: "one" },
    streams: { type: "string", default: "1000" },
    snap: { type: "boolean", default: false },
    out: { type: "string", default: "/tmp/switchyard-mem-probe" },
    rounds: { type: "string", default: "1" },
    "prompt-kb": { type: "string", default: "0" },
  },
});
const out = values.out as string;
mkdirSync(out, { recursive: true });
// Loaded into every child (NODE_OPTIONS): on SIGUSR2, a full GC, then the numbers (and a
// snapshot) written where this process waits for them.
const PRELOAD = `
import v8 from "node:v8";
import { writeFileSync } from "node:fs";
const dir = process.env.MEMPROBE_DIR;
let n = 0;
if (dir) process.on("SIGUSR2", () => {
  const tag = process.pid + "-" + n++;
  globalThis.gc?.();
  globalThis.gc?.();
  const mu = process.memoryUsage();
  let snap;
  if (process.env.MEMPROBE_SNAP === "1") snap = v8.writeHeapSnapshot(dir + "/" + tag + ".heapsnapshot");
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((x) => [x.space_name, x.physical_space_size]));
  writeFileSync(dir + "/" + tag + ".json", JSON.stringify({ argv: process.argv.slice(2), mu, spaces, snap }));
});
`;
writeFileSync(`${out}/preload.mjs`, PRELOAD);
process.env.MEMPROBE_DIR = out;
process.env.MEMPROBE_SNAP = values.snap ? "1" : "0";
process.env.NODE_OPTIONS = `--expose-gc --import ${out}/preload.mjs`;
const n = Number(values.streams);
const variant = values.variant as VariantName;
const bench = await startBench({
  variants: [variant],
  deltas: 64,
  intervalMs: 20,
  slowIntervalMs: 600_000,
  logLevel: "info",
  maxConnections: n + 256,
  pin: false,
  natsUrl: "nats://127.0.0.1:4222",
});
const v = bench.variants.find((x) => x.name === variant);
if (!v) throw new Error(`variant ${variant} did not start`);
const procs = v.procs;
// --prompt-kb N: a user message of about N KB, as a long context would bring.
const filler = " lorem ipsum".repeat(Math.round((Number(values["prompt-kb"]) * 1024) / 12));
const body = (stream: boolean, model: string) =>
  JSON.stringify({
    model,
    messages: [{ role: "user", content: `Say hello in one short sentence.${filler}` }],
    ...(stream && { stream: true }),
  });
const target = (stream: boolean, model: string) => ({
  origin: v.origin,
  path: CHAT_PATH,
  headers: { "content-type": "application/json", authorization: `Bearer ${CLIENT_KEY}` },
  body: body(stream, model),
});

let seq = 0;
interface Sample {
  /** VmRSS after the GC. */
  rssKb: number;
  mu: NodeJS.MemoryUsage;
  /** Committed physical memory of each V8 heap space, by name. */
  spaces: Record<string, number>;
  file: string;
}

/** A GC'd memoryUsage (and snapshot) from every process of the variant, by process name. */
async function probe(procs: ChildProc[]): Promise<Map<string, Sample>> {
  const files = procs.map((p) => `${out}/${p.pid}-${seq}.json`);
  for (const p of procs) process.kill(p.pid, "SIGUSR2");
  seq++;
  for (const f of files) while (!existsSync(f)) await sleep(100);
  await sleep(200);
  const rows = new Map<string, Sample>();
  for (const [i, p] of procs.entries()) {
    const file = files[i] as string;
    const m = JSON.parse(readFileSync(file, "utf8")) as Pick<Sample, "mu" | "spaces">;
    rows.set(p.name, { rssKb: (await readUsage(p.pid))?.rssKb ?? 0, ...m, file });
  }
  return rows;
}

async function upstream(method: "GET" | "POST", path: string) {
  const res = await request(`${bench.upstreamOrigin}${path}`, { method });
  return res.body.text();
}

try {
  await bench.driver.closed({
    target: target(false, "bench-unary"),
    concurrency: 16,
    durationMs: 4000,
    stream: false,
  });
  await bench.driver.closed({
    target: target(true, "bench"),
    concurrency: 16,
    durationMs: 3000,
    stream: true,
  });
  const results: unknown[] = [];
  for (let r = 0; r < Number(values.rounds); r++) {
    for (let t = 0; t < 300; t++) {
      const stats = JSON.parse(await upstream("GET", "/bench/stats"));
      if (stats.slowOpen === 0 && stats.connections < 64) break;
      await sleep(100);
    }
    const before = await probe(procs);
    let open = before;
    const raw = new Map<string, number>();
    const hold = await bench.driver.hold(
      {
        target: target(true, SLOW_MODEL),
        streams: n,
        openConcurrency: 256,
        openTimeoutMs: 120_000,
        finishTimeoutMs: 60_000,
      },
      () => {
        void (async () => {
          // RSS as the harness reads it (0.5 s after opening, garbage included), then GC'd.
          await sleep(500);
          for (const p of procs) raw.set(p.name, (await readUsage(p.pid))?.rssKb ?? 0);
          open = await probe(procs);
          await upstream("POST", "/bench/release");
        })();
      },
    );
    await sleep(1000);
    const after = await probe(procs);
    results.push({
      round: r,
      hold,
      before: [...before],
      open: [...open],
      after: [...after],
      raw: [...raw],
    });
    for (const p of procs) {
      const b = before.get(p.name);
      const o = open.get(p.name);
      if (!b || !o) continue;
      const per = (x: number, y: number) => ((y - x) / hold.opened).toFixed(1);
      const mu = (k: keyof NodeJS.MemoryUsage) => per(b.mu[k] / 1024, o.mu[k] / 1024);
      const space = (k: string) => per((b.spaces[k] ?? 0) / 1024, (o.spaces[k] ?? 0) / 1024);
      console.log(
        `${variant} round ${r} ${p.name}: ${hold.opened} open; KB/stream: raw RSS ${per(b.rssKb, raw.get(p.name) ?? 0)}, RSS after GC ${per(b.rssKb, o.rssKb)}, heap used ${mu("heapUsed")}, heap total ${mu("heapTotal")} (new space ${space("new_space")}, old ${space("old_space")}), external ${mu("external")}`,
      );
    }
  }
  writeFileSync(`${out}/results-${variant}-${n}.json`, JSON.stringify(results, null, 1));
  console.log(`raw figures in ${out}`);
} finally {
  await bench.stop(false);
}
