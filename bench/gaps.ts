/**
 * What an idle moment before a request costs: one request at a time through each variant, with
 * the client idle for `gap` ms between the end of one request and the start of the next. At gap 0
 * the processes never sleep (the unary scenario's c=1); with a gap, every process on the path
 * goes idle and is woken by the request, as it is when requests arrive now and then, or when a
 * new stream's request arrives among other streams' tokens. Direct (the client and the upstream
 * alone) is measured the same way in the same repeat, so `+p50` is what the gateway adds.
 *
 *   node --import tsx bench/gaps.ts                                  # bare, one, four; 0,1,5,20,100 ms
 *   node --import tsx bench/gaps.ts --variants one --gaps 0,20 --requests 200
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { coldFigures, coldProbe } from "./cold.js";
import type { ClosedResult, LoadTarget } from "./load.js";
import {
  cpuIdleSettings,
  parseVariants,
  startBench,
  unaryTarget,
  unaryToolOptions,
  type VariantName,
} from "./procs.js";
import { formatTable, median, rotate } from "./run.js";

const HELP = `Usage: node --import tsx bench/gaps.ts [options]

  --variants LIST   bare, one, two, four (default bare,one,four; direct always runs)
  --gaps LIST       the client's idle ms between requests (default 0,1,5,20,100)
  --requests N      requests per window at each gap (default 60; gap 0 runs for 2 s instead)
  --repeats N       windows per variant and gap, rotated; medians are reported (default 3)
  --gateway-node-options S   NODE_OPTIONS for the gateways' processes only (what NODE_OPTIONS
                    allows: --max-semi-space-size, yes; most other V8 flags, no)
  --nats URL        NATS for the 4-process variant (default nats://127.0.0.1:4222)`;

/** One window's latencies (ms) and what it ran. */
interface Window {
  variant: VariantName;
  gap: number;
  repeat: number;
  result: ClosedResult;
}

const ms = (xs: number[]) => median(xs)?.toFixed(3) ?? "—";

/** Rows of the printed table: per gap and variant, medians over repeats; +p50 paired with direct. */
export function gapRows(
  windows: Window[],
  variants: Array<{ name: VariantName; label: string }>,
  gaps: number[],
): string[][] {
  const rows: string[][] = [];
  for (const gap of gaps) {
    const at = windows.filter((w) => w.gap === gap);
    for (const v of variants) {
      const mine = at.filter((w) => w.variant === v.name);
      if (mine.length === 0) continue;
      const added = mine.flatMap((w) => {
        const direct = at.find((d) => d.variant === "direct" && d.repeat === w.repeat);
        return direct ? [w.result.latency.p50 - direct.result.latency.p50] : [];
      });
      rows.push([
        String(gap),
        v.label,
        String(mine.reduce((n, w) => n + w.result.latency.count, 0)),
        ms(mine.map((w) => w.result.latency.p50)),
        ms(mine.map((w) => w.result.latency.p90)),
        v.name === "direct" || added.length === 0 ? "—" : `+${ms(added)}`,
      ]);
    }
  }
  return rows;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      variants: { type: "string", default: "bare,one,four" },
      gaps: { type: "string", default: "0,1,5,20,100" },
      requests: { type: "string", default: "60" },
      repeats: { type: "string", default: "3" },
      nats: { type: "string", default: "nats://127.0.0.1:4222" },
      "gateway-node-options": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const variants: VariantName[] = [
    "direct",
    ...parseVariants(values.variants as string).filter((v) => v !== "direct"),
  ];
  const gaps = (values.gaps as string).split(",").map(Number);
  const requests = Number(values.requests);
  const repeats = Number(values.repeats);
  // Before any process starts: how the machine runs code that follows an idle moment.
  const cold = await coldProbe();
  const bench = await startBench({
    ...unaryToolOptions(variants, values.nats as string),
    ...(values["gateway-node-options"] !== undefined && {
      gatewayNodeOptions: values["gateway-node-options"],
    }),
  });
  const windows: Window[] = [];
  const labels = bench.variants.map((v) => ({ name: v.name, label: v.label }));
  try {
    const targets = new Map<VariantName, LoadTarget>();
    for (const v of bench.variants) {
      const target = unaryTarget(v.origin);
      targets.set(v.name, target);
      // Warm-up at c=16 (JIT, pools), as the unary scenario does.
      await bench.driver.closed({ target, concurrency: 16, durationMs: 4000, stream: false });
    }
    for (const gap of gaps) {
      for (let repeat = 0; repeat < repeats; repeat++) {
        for (const v of rotate(bench.variants, repeat)) {
          process.stderr.write(
            `[gaps] gap ${gap} ms, repeat ${repeat + 1}/${repeats}, ${v.label}\n`,
          );
          const result = await bench.driver.closed({
            target: targets.get(v.name) as LoadTarget,
            concurrency: 1,
            // A request takes ~0.3-3 ms here; at gap 0 a fixed time gives thousands of samples.
            durationMs: gap === 0 ? 2000 : requests * (gap + 1),
            stream: false,
            pauseMs: gap,
          });
          windows.push({ variant: v.name, gap, repeat, result });
        }
      }
    }
  } finally {
    await bench.stop();
  }
  console.log(
    `\nUNARY, ONE REQUEST AT A TIME, THE CLIENT IDLE FOR gap ms BETWEEN REQUESTS; medians of ${repeats} windows; +p50 = variant − direct in the same repeat; ${cpuIdleSettings() ?? "cpuidle settings not exposed"}\ncold code (${cold.task}): ${coldFigures(cold)}\n`,
  );
  console.log(
    formatTable(
      ["gap ms", "variant", "requests", "p50 ms", "p90 ms", "+p50 ms"],
      gapRows(windows, labels, gaps),
    ),
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
