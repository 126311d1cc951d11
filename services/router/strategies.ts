import type { ChatParams, EmbedParams } from "../../gen/switchyard/chat/v1/chat_pb.js";
import type { ModelConfig, TargetConfig } from "../lib/config/types.js";
import { tokenInputCount } from "../lib/embed-inputs.js";
import { costUsd, priceFor } from "../lib/pricing.js";
import { targetKey } from "../lib/targets.js";

/** What a request asks for, as far as choosing a target goes. */
export type RequestParams = ChatParams | EmbedParams;

/** The part of shared health latency reads (HealthView satisfies it). */
export interface SharedLatency {
  get(provider: string, model: string): { ttftEwmaMs: number } | undefined;
}

/** How many tokens a completion is assumed to take when the request sets no max_tokens. */
export const DEFAULT_COMPLETION_TOKENS = 256;

/** Share of least-latency plans that put a random target first, so a recovered one is seen. */
export const DEFAULT_EXPLORATION_RATE = 0.05;

const EWMA_ALPHA = 0.3;

/** How long the router's own latency sample outranks shared health's. */
const LOCAL_LATENCY_FRESH_MS = 60_000;

/**
 * Time to first token per target: an EWMA of what this router saw on live traffic, and shared
 * health's (probes and every connector's traffic) for targets it has not measured lately.
 */
export class LatencyTracker {
  private readonly local = new Map<string, { ewmaMs: number; at: number }>();

  constructor(
    private readonly shared: SharedLatency | undefined,
    private readonly now: () => number = Date.now,
  ) {}

  observe(provider: string, model: string, ms: number): void {
    const key = targetKey(provider, model);
    const old = this.local.get(key);
    const ewmaMs = old === undefined ? ms : old.ewmaMs + EWMA_ALPHA * (ms - old.ewmaMs);
    this.local.set(key, { ewmaMs, at: this.now() });
  }

  /** Milliseconds, or undefined when nobody has measured the target yet. */
  estimate(provider: string, model: string): number | undefined {
    const local = this.local.get(targetKey(provider, model));
    if (local && this.now() - local.at <= LOCAL_LATENCY_FRESH_MS) return local.ewmaMs;
    const shared = this.shared?.get(provider, model)?.ttftEwmaMs;
    if (shared !== undefined && shared > 0) return shared;
    return local?.ewmaMs;
  }
}

/** Attempts this router has running per target. */
export class InflightTracker {
  private readonly counts = new Map<string, number>();

  /** Counts an attempt that starts now; call the returned function (once or more) when it ends. */
  begin(provider: string, model: string): () => void {
    const key = targetKey(provider, model);
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const left = (this.counts.get(key) ?? 1) - 1;
      if (left > 0) this.counts.set(key, left);
      else this.counts.delete(key);
    };
  }

  get(provider: string, model: string): number {
    return this.counts.get(targetKey(provider, model)) ?? 0;
  }
}

export interface Strategies {
  /** The model's targets in the order its strategy wants them tried for this request. */
  order(model: string, config: ModelConfig, params?: RequestParams): TargetConfig[];
  readonly latency: LatencyTracker;
  readonly inflight: InflightTracker;
}

export interface StrategyOptions {
  /** Uniform in [0, 1); default Math.random. */
  random?: () => number;
  now?: () => number;
  /** Shared health, for the latency of targets this router has not measured lately. */
  health?: SharedLatency;
  /** Default DEFAULT_EXPLORATION_RATE. */
  explorationRate?: number;
}

/** The state every strategy keeps across requests; the router makes one and keeps it. */
export function createStrategies(options: StrategyOptions = {}): Strategies {
  const random = options.random ?? Math.random;
  const explorationRate = options.explorationRate ?? DEFAULT_EXPLORATION_RATE;
  const latency = new LatencyTracker(options.health, options.now);
  const inflight = new InflightTracker();
  const rotations = new Map<string, SmoothRotation>();

  /** Uniform index below n. */
  const pick = (n: number) => Math.min(n - 1, Math.floor(random() * n));

  function weighted(model: string, targets: TargetConfig[]): TargetConfig[] {
    let rotation = rotations.get(model);
    // A reloaded config brings new target objects: start the rotation afresh.
    if (rotation?.targets !== targets) {
      rotation = new SmoothRotation(targets);
      rotations.set(model, rotation);
    }
    const chosen = rotation.next();
    const rest = stableSort(
      targets.filter((_, i) => i !== chosen),
      (a, b) => b.weight - a.weight,
    );
    const first = chosen === undefined ? undefined : targets[chosen];
    return first ? [first, ...rest] : rest;
  }

  function leastLatency(targets: TargetConfig[]): TargetConfig[] {
    const unmeasured: TargetConfig[] = [];
    const measured: Array<{ target: TargetConfig; ms: number }> = [];
    for (const target of targets) {
      const ms = latency.estimate(target.provider, target.model);
      if (ms === undefined) unmeasured.push(target);
      else measured.push({ target, ms });
    }
    const ordered = [
      ...unmeasured,
      ...stableSort(measured, (a, b) => a.ms - b.ms).map((m) => m.target),
    ];
    if (ordered.length > 1 && random() < explorationRate) {
      const [explored] = ordered.splice(pick(ordered.length), 1);
      if (explored) ordered.unshift(explored);
    }
    return ordered;
  }

  function lowestCost(targets: TargetConfig[], params: RequestParams | undefined): TargetConfig[] {
    const tokens = estimateTokens(params);
    const costed = targets.map((target) => {
      const price = priceFor(target);
      return { target, usd: price ? costUsd(price, tokens) : Number.POSITIVE_INFINITY };
    });
    // Equal costs compare as 0, unpriced ones (Infinity) included, to keep the configured order.
    return stableSort(costed, (a, b) => (a.usd === b.usd ? 0 : a.usd - b.usd)).map((c) => c.target);
  }

  function leastInflight(targets: TargetConfig[]): TargetConfig[] {
    const load = (t: TargetConfig) => inflight.get(t.provider, t.model);
    const byLoad = (rest: TargetConfig[]) => stableSort(rest, (a, b) => load(a) - load(b));
    if (targets.length < 2) return [...targets];
    // Power of two choices: two distinct random candidates, the less loaded one first. A tie
    // goes to the first drawn, so an idle model still spreads its traffic.
    const i = pick(targets.length);
    let j = pick(targets.length - 1);
    if (j >= i) j++;
    const a = targets[i] as TargetConfig;
    const b = targets[j] as TargetConfig;
    const first = load(b) < load(a) ? b : a;
    return [first, ...byLoad(targets.filter((t) => t !== first))];
  }

  return {
    latency,
    inflight,
    order(model, config, params) {
      const targets = config.targets;
      switch (config.strategy) {
        case "priority":
          return [...targets];
        case "weighted":
          return weighted(model, targets);
        case "least-latency":
          return leastLatency(targets);
        case "lowest-cost":
          return lowestCost(targets, params);
        case "least-inflight":
          return leastInflight(targets);
      }
    },
  };
}

/**
 * nginx's smooth weighted round-robin: every pick adds each target's weight to its running
 * score, takes the highest score and takes the total weight off it. Weights 3:1 give
 * A A B A per cycle rather than A A A B, and exactly the weights' ratio over every cycle.
 */
class SmoothRotation {
  private readonly scores: number[];

  constructor(readonly targets: readonly TargetConfig[]) {
    this.scores = targets.map(() => 0);
  }

  /** The index of the next target; undefined when every weight is 0. */
  next(): number | undefined {
    let total = 0;
    let best: number | undefined;
    this.targets.forEach((t, i) => {
      if (t.weight <= 0) return; // weight 0: a fallback only, never in the rotation
      total += t.weight;
      const score = (this.scores[i] ?? 0) + t.weight;
      this.scores[i] = score;
      if (best === undefined || score > (this.scores[best] ?? 0)) best = i;
    });
    if (best !== undefined) this.scores[best] = (this.scores[best] ?? 0) - total;
    return best;
  }
}

/**
 * A cheap guess at the tokens of one call, to compare targets' prices (not to bill): about four
 * characters per prompt token over message text and tool definitions, and max_tokens (or
 * DEFAULT_COMPLETION_TOKENS) for the completion. Images, audio and files are not counted.
 */
export function estimateTokens(params: RequestParams | undefined): {
  prompt: number;
  completion: number;
} {
  if (!params) return { prompt: 0, completion: DEFAULT_COMPLETION_TOKENS };
  if (params.$typeName === "switchyard.chat.v1.EmbedParams") {
    if (params.tokenInputs.length > 0) return { prompt: tokenInputCount(params), completion: 0 };
    const chars = params.inputs.reduce((n, s) => n + s.length, 0);
    return { prompt: Math.ceil(chars / 4), completion: 0 };
  }
  let chars = 0;
  for (const m of params.messages) {
    for (const c of m.content) if (c.part.case === "text") chars += c.part.value.length;
    for (const call of m.toolCalls) chars += call.name.length + call.arguments.length;
    chars += m.refusal?.length ?? 0;
  }
  for (const tool of params.tools) {
    chars +=
      tool.name.length +
      (tool.description?.length ?? 0) +
      tool.parametersJson.length +
      tool.anthropicJson.length;
  }
  return {
    prompt: Math.ceil(chars / 4),
    completion: params.maxTokens ?? DEFAULT_COMPLETION_TOKENS,
  };
}

/** A sorted copy; equal items keep their order (Array.prototype.sort is stable). */
function stableSort<T>(items: T[], compare: (a: T, b: T) => number): T[] {
  return [...items].sort(compare);
}
