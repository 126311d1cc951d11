/**
 * How much slower this machine runs code right after a thread has been idle: a fixed piece of
 * JavaScript, the gateway's kind of work (parsing and re-serialising the mock upstream's 27
 * stream chunks of one unary answer), timed back to back and after the thread slept `gap` ms.
 * No I/O is timed, so what grows with the gap is the machine's, not the gateway's: on a virtual
 * machine whose idle CPUs halt (bench/README.md, "What an idle moment costs"), the first ~0.2 ms
 * of code after a wake-up runs at about half speed here, whatever the code.
 *
 * `npm run bench` and bench/gaps.ts print the probe's figures with their results, so a run on a
 * slow hour can be told from a slower gateway.
 *
 *   node --import tsx bench/cold.ts                      # gaps 0,1,5,20 ms, 300 runs each
 *   node --import tsx bench/cold.ts --gaps 0,5 --runs 1000
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { answerWordChunks } from "./mock-upstream.js";

/** The task's time after one idle gap, µs. */
export interface ColdRow {
  gapMs: number;
  runs: number;
  p50Us: number;
  p90Us: number;
}

export interface ColdProbe {
  task: string;
  rows: ColdRow[];
}

const TASK = "JSON.parse + JSON.stringify of 27 OpenAI stream chunks (~5 KB)";

function runTask(texts: readonly string[]): number {
  let bytes = 0;
  for (const text of texts) bytes += JSON.stringify(JSON.parse(text)).length;
  return bytes;
}

/** The p-th percentile (0–1) of values already sorted ascending. */
function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? Number.NaN;
}

function idle(ms: number): Promise<void> {
  // Gap 0 still yields to the event loop (as a request's handler does), without sleeping.
  return new Promise((resolve) => (ms === 0 ? setImmediate(resolve) : setTimeout(resolve, ms)));
}

/**
 * Times the task `runs` times at each gap, after warming it up (so the JIT has settled). Takes
 * about runs × Σgaps ms plus a second of warm-up (2.5 s by default); run it while nothing else of
 * the bench runs.
 */
export async function coldProbe(
  gapsMs: readonly number[] = [0, 5],
  runs = 300,
): Promise<ColdProbe> {
  const texts = answerWordChunks().map((chunk) => JSON.stringify(chunk));
  const warmUntil = performance.now() + 1000;
  while (performance.now() < warmUntil) runTask(texts);
  const rows: ColdRow[] = [];
  let sink = 0;
  for (const gapMs of gapsMs) {
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      await idle(gapMs);
      const t0 = performance.now();
      sink += runTask(texts);
      times.push((performance.now() - t0) * 1000);
    }
    times.sort((a, b) => a - b);
    rows.push({ gapMs, runs, p50Us: percentile(times, 0.5), p90Us: percentile(times, 0.9) });
  }
  if (sink === 0) throw new Error("the task did nothing");
  return { task: TASK, rows };
}

/** The task's median back to back and after each gap, with the ratio to back to back. */
export function coldFigures(probe: ColdProbe): string {
  const hot = probe.rows.find((r) => r.gapMs === 0);
  return probe.rows
    .map((r) => {
      const ratio = hot && r !== hot ? ` (${(r.p50Us / hot.p50Us).toFixed(1)}×)` : "";
      const when = r.gapMs === 0 ? "back to back" : `after ${r.gapMs} ms idle`;
      return `${r.p50Us.toFixed(0)} µs ${when}${ratio}`;
    })
    .join(", ");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      gaps: { type: "string", default: "0,1,5,20" },
      runs: { type: "string", default: "300" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "Usage: node --import tsx bench/cold.ts [--gaps 0,1,5,20] [--runs 300]\n\n" +
        "Times a fixed JavaScript task back to back and after the thread idled for each gap (ms).",
    );
    return;
  }
  const gaps = values.gaps.split(",").map(Number);
  const runs = Number(values.runs);
  if (gaps.some((g) => !Number.isInteger(g) || g < 0) || !Number.isInteger(runs) || runs < 1) {
    throw new Error("--gaps takes whole ms ≥ 0, --runs a whole number ≥ 1");
  }
  const probe = await coldProbe(gaps, runs);
  console.log(`${probe.task}, ${runs} runs per gap\n\ngap ms  p50 µs  p90 µs`);
  for (const r of probe.rows) {
    console.log(
      `${String(r.gapMs).padStart(6)}  ${r.p50Us.toFixed(1).padStart(6)}  ${r.p90Us.toFixed(1).padStart(6)}`,
    );
  }
  console.log(`\n${coldFigures(probe)}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
