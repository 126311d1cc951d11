/**
 * Summarises V8 CPU profiles (`node --cpu-prof`, e.g. from `npm run bench -- --cpu-prof DIR`):
 * per file, where the sampled time went — self time by code group (a package under
 * node_modules, node's own internals, the project's own files, GC, idle) and by function, and
 * total (inclusive) time of the functions most often on the stack.
 *
 * Run: node --import tsx bench/profile-summary.ts [--top N] [--last S] FILE.cpuprofile...
 * (`--last S`: only the profile's last S seconds, e.g. the measured windows without start-up).
 */

import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** What a sample's code belongs to: a package, node's internals, the project, or V8's own. */
export function codeGroup(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === "") {
    if (functionName === "(garbage collector)") return "(gc)";
    if (functionName === "(idle)" || functionName === "(program)") return functionName;
    return "(native)";
  }
  const nm = url.lastIndexOf("/node_modules/");
  if (nm !== -1) {
    const rest = url.slice(nm + "/node_modules/".length).split("/");
    return rest[0]?.startsWith("@") ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url);
  }
  // node:internal/http2/core, node:internal/streams/readable, …: which part of node matters.
  if (url.startsWith("node:")) {
    const parts = url.slice(5).split("/");
    return `node:${parts.slice(0, parts[0] === "internal" ? 3 : 1).join("/")}`;
  }
  const root = fileURLToPath(new URL("..", import.meta.url));
  const path = url.startsWith("file://") ? fileURLToPath(url) : url;
  return path.startsWith(root) ? path.slice(root.length).split("/").slice(0, 2).join("/") : path;
}

function frameName(f: CallFrame): string {
  const file = f.url === "" ? "" : ` ${basename(f.url)}:${f.lineNumber + 1}`;
  return `${f.functionName || "(anonymous)"}${file}`;
}

export interface Summary {
  totalMs: number;
  /** Sampled time that was not idle. */
  busyMs: number;
  groups: Array<[string, number]>;
  selfByFunction: Array<[string, number]>;
  totalByFunction: Array<[string, number]>;
}

/** `lastMs`: only the samples of the profile's last so many ms (leaves start-up out). */
export function summarise(profile: CpuProfile, lastMs = Number.POSITIVE_INFINITY): Summary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const selfUs = new Map<number, number>();
  const from = profile.endTime - lastMs * 1000;
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    if (at < from) continue;
    const id = profile.samples[i] as number;
    // The delta *after* a sample is the time it stands for (the next delta, as DevTools does).
    const dt = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  }
  const groups = new Map<string, number>();
  const selfFn = new Map<string, number>();
  const totalFn = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    totalUs += us;
    const group = codeGroup(node.callFrame);
    if (group === "(idle)") idleUs += us;
    groups.set(group, (groups.get(group) ?? 0) + us);
    const name = frameName(node.callFrame);
    selfFn.set(name, (selfFn.get(name) ?? 0) + us);
    // Inclusive: each function once per sample, however deep the recursion.
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)?.callFrame;
      if (!frame || frame.functionName === "(root)") continue;
      const fn = frameName(frame);
      if (seen.has(fn)) continue;
      seen.add(fn);
      totalFn.set(fn, (totalFn.get(fn) ?? 0) + us);
    }
  }
  const sorted = (m: Map<string, number>) =>
    [...m.entries()].map(([k, v]): [string, number] => [k, v / 1000]).sort((a, b) => b[1] - a[1]);
  return {
    totalMs: totalUs / 1000,
    busyMs: (totalUs - idleUs) / 1000,
    groups: sorted(groups),
    selfByFunction: sorted(selfFn),
    totalByFunction: sorted(totalFn),
  };
}

function main(): void {
  const { values, positionals } = parseArgs({
    options: { top: { type: "string", default: "25" }, last: { type: "string" } },
    allowPositionals: true,
  });
  const top = Number(values.top);
  for (const file of positionals) {
    const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
    const s = summarise(
      profile,
      values.last === undefined ? undefined : Number(values.last) * 1000,
    );
    const pct = (ms: number) => `${((ms / s.busyMs) * 100).toFixed(1).padStart(5)}%`;
    const rows = (xs: Array<[string, number]>) =>
      xs
        .filter(([k]) => k !== "(idle)")
        .slice(0, top)
        .map(([k, ms]) => `  ${ms.toFixed(0).padStart(7)} ms ${pct(ms)}  ${k}`)
        .join("\n");
    process.stdout.write(
      [
        `== ${file}: ${s.totalMs.toFixed(0)} ms sampled, ${s.busyMs.toFixed(0)} ms busy (percentages of busy)`,
        "-- self time by code group",
        rows(s.groups),
        "-- self time by function",
        rows(s.selfByFunction),
        "-- total time by function (on the stack)",
        rows(s.totalByFunction),
        "",
      ].join("\n"),
    );
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
