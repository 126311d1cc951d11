/**
 * Two commits, one run: the same variants started from this checkout and from another, measured
 * in alternating windows, so that whatever slows the machine in a minute slows both sides alike.
 * On the 2-core VM this was written on, the same code's CPU per request moved by ±15–30% between
 * runs minutes apart, which hides a 5% change; paired windows, one right after the other, do not.
 *
 *   git worktree add /tmp/base <commit> && ln -s "$PWD/node_modules" /tmp/base/node_modules
 *   node --import tsx bench/ab.ts --base /tmp/base --variants one,four [--rounds 8]
 *
 * Each side has its own mock upstream, load client and gateways, started from its own checkout's
 * bench/procs.ts (so each runs exactly its commit's code, bundle included). Both warm up, then
 * every round runs each variant on one side and then the other (the order flips every round),
 * unary at `--concurrency`. Printed per variant: the median CPU µs per request and rps of each
 * side, and the median and range over rounds of this checkout's figure divided by the base's in
 * the same round. Written as JSON to bench/results/ab-<time>.json.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { UNARY_MODEL } from "./mock-upstream.js";
import * as here from "./procs.js";
import { formatTable, median } from "./run.js";

type Procs = typeof here;

const { values } = parseArgs({
  options: {
    base: { type: "string" },
    variants: { type: "string", default: "one,four" },
    rounds: { type: "string", default: "8" },
    duration: { type: "string", default: "3" },
    concurrency: { type: "string", default: "16" },
    warmup: { type: "string", default: "8" },
    nats: { type: "string", default: "nats://127.0.0.1:4222" },
    pin: { type: "boolean", default: false },
  },
});
if (!values.base) {
  process.stderr.write("usage: bench/ab.ts --base DIR [--variants one,four] [--rounds 8]\n");
  process.exit(2);
}
const variants = (values.variants as string).split(",") as here.VariantName[];
const rounds = Number(values.rounds);
const durationMs = Number(values.duration) * 1000;
const concurrency = Number(values.concurrency);
const warmupMs = Number(values.warmup) * 1000;

const baseProcs = (await import(
  join(resolve(values.base as string), "bench", "procs.ts")
)) as Procs;

interface Side {
  name: "this" | "base";
  procs: Procs;
  bench: here.BenchProcesses;
}

const options: here.StartOptions = {
  variants,
  deltas: 64,
  intervalMs: 20,
  slowIntervalMs: 5000,
  logLevel: "info",
  maxConnections: 128,
  pin: values.pin as boolean,
  natsUrl: values.nats as string,
};
const body = JSON.stringify({
  model: UNARY_MODEL,
  messages: [{ role: "user", content: "Say hello in one short sentence." }],
});

function progress(text: string): void {
  process.stderr.write(`[ab ${new Date().toISOString().slice(11, 19)}] ${text}\n`);
}

async function window(side: Side, vi: number, ms: number) {
  const v = side.bench.variants[vi] as here.Variant;
  const target = {
    origin: v.origin,
    path: side.procs.CHAT_PATH,
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${side.procs.CLIENT_KEY}`,
    },
    body,
  };
  const before = await side.procs.sample(v.procs);
  const r = await side.bench.driver.closed({ target, concurrency, durationMs: ms, stream: false });
  const after = await side.procs.sample(v.procs);
  if (r.errors > 0) progress(`${side.name} ${v.name}: ${r.errors} errors`);
  return {
    cpuUsPerReq: r.completed > 0 ? side.procs.cpuBetween(v.procs, before, after) / r.completed : 0,
    rps: r.rps,
  };
}

const sides: Side[] = [];
try {
  progress(`starting ${variants.join(", ")} from this checkout and from ${values.base}`);
  sides.push({ name: "this", procs: here, bench: await here.startBench(options) });
  sides.push({ name: "base", procs: baseProcs, bench: await baseProcs.startBench(options) });
  for (const side of sides) {
    for (const vi of variants.keys()) {
      progress(`warm-up ${side.name} ${variants[vi]}`);
      await window(side, vi, warmupMs);
    }
  }
  const windows: Array<{
    round: number;
    variant: string;
    side: string;
    cpuUsPerReq: number;
    rps: number;
  }> = [];
  for (let round = 0; round < rounds; round++) {
    progress(`round ${round + 1}/${rounds}`);
    for (const [vi, variant] of variants.entries()) {
      const order = round % 2 === 0 ? sides : [...sides].reverse();
      for (const side of order) {
        windows.push({ round, variant, side: side.name, ...(await window(side, vi, durationMs)) });
      }
    }
  }

  const rows = variants.map((variant) => {
    const of = (side: string) => windows.filter((w) => w.variant === variant && w.side === side);
    const [mine, base] = [of("this"), of("base")];
    const ratios = (pick: (w: (typeof windows)[number]) => number) =>
      mine.map((w, i) => pick(w) / pick(base[i] as (typeof windows)[number]));
    const cpu = ratios((w) => w.cpuUsPerReq);
    const rps = ratios((w) => w.rps);
    return {
      variant,
      cpuThis: median(mine.map((w) => w.cpuUsPerReq)) ?? 0,
      cpuBase: median(base.map((w) => w.cpuUsPerReq)) ?? 0,
      cpuRatio: median(cpu) ?? 0,
      cpuRatioRange: [Math.min(...cpu), Math.max(...cpu)],
      rpsThis: median(mine.map((w) => w.rps)) ?? 0,
      rpsBase: median(base.map((w) => w.rps)) ?? 0,
      rpsRatio: median(rps) ?? 0,
      rpsRatioRange: [Math.min(...rps), Math.max(...rps)],
    };
  });

  const f = (x: number, d = 0) => x.toFixed(d);
  console.log(
    `\nA/B — unary c=${concurrency}, ${rounds} rounds of ${values.duration} s per side; this = ${process.cwd()}, base = ${values.base}\n`,
  );
  const range = (r: number[]) => `${f(r[0] as number, 2)}–${f(r[1] as number, 2)}`;
  console.log(
    formatTable(
      [
        "variant",
        "cpu µs/req this",
        "base",
        "this/base",
        "range",
        "rps this",
        "base",
        "this/base",
        "range",
      ],
      rows.map((r) => [
        r.variant,
        f(r.cpuThis),
        f(r.cpuBase),
        f(r.cpuRatio, 3),
        range(r.cpuRatioRange),
        f(r.rpsThis),
        f(r.rpsBase),
        f(r.rpsRatio, 3),
        range(r.rpsRatioRange),
      ]),
    ),
  );
  const dir = join(dirname(fileURLToPath(import.meta.url)), "results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `ab-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      { base: values.base, options, concurrency, rounds, durationMs, rows, windows },
      null,
      2,
    ),
  );
  console.log(`\nresults: ${file}`);
} finally {
  await Promise.all(sides.map((s) => s.bench.stop()));
}
