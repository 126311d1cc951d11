import { setMaxListeners } from "node:events";
import type { Registry } from "prom-client";
import {
  HealthSource,
  PauseKind as SharedPauseKind,
  type TargetHealth,
  TargetHealthSchema,
  type TargetOutcome,
  type TargetOutcomeBatch,
  TargetSchema,
  TargetState,
} from "../../gen/switchyard/health/v1/health_pb.js";
import type { HealthStore, Lease } from "../lib/bus/bus.js";
import type { Config } from "../lib/config/types.js";
import type { ConnectorPool } from "../lib/connector-pool.js";
import { Failure, isPauseKind, type PauseKind, pauseAskedFor } from "../lib/errors.js";
import { makeMessage } from "../lib/hop/codec.js";
import type { Logger } from "../lib/logger.js";
import { counter, gauge, observedGauge } from "../lib/metrics.js";
import { distinctTargets, targetKey } from "../lib/targets.js";

export { distinctTargets };

const EWMA_ALPHA = 0.3;
/** Probe failures in a row after which a target that still answers is marked down. */
const DOWN_AFTER_FAILURES = 2;

export interface ProberDeps {
  config: Config;
  connectors: ConnectorPool;
  health: HealthStore;
  logger: Logger;
  registry: Registry;
  now?: () => number;
  /**
   * Held by the one active prober of a cluster; the others stand by, so adding prober replicas
   * does not multiply probes. Absent = always active.
   */
  lease?: Lease;
  /** Passive outcomes reported by connectors, folded into health by the active prober. */
  outcomes?: (signal: AbortSignal) => AsyncIterable<TargetOutcomeBatch>;
}

export interface Prober {
  /** Probes every target once now, then every `health.probe_interval_ms` until stopped. */
  start(): void;
  /** One round over all targets; resolves when every probe has answered or timed out. */
  probeAll(): Promise<void>;
  stop(): Promise<void>;
}

/** Folds one probe result into a target's previous health. */
export function nextHealth(
  prev: TargetHealth | undefined,
  target: { provider: string; model: string },
  result: { ok: true; latencyMs: number } | { ok: false; failure: Failure },
  now: number,
): TargetHealth {
  const ewma = (old: number | undefined, x: number) =>
    old === undefined || old === 0 ? x : old + EWMA_ALPHA * (x - old);
  if (result.ok) {
    // A model list answering does not prove completions work: live traffic that marked the
    // target down keeps it down until its cooldown ends.
    if (
      prev?.source === HealthSource.PASSIVE &&
      prev.state === TargetState.DOWN &&
      now < Number(prev.cooldownUntilMs)
    ) {
      // Written again now: the mark holds as of this probe, so routers must not take it for
      // stale state (updated_ms) while its cooldown lasts.
      return makeMessage(TargetHealthSchema, {
        ...prev,
        lastProbeMs: BigInt(now),
        updatedMs: BigInt(now),
      });
    }
    return makeMessage(TargetHealthSchema, {
      target: makeMessage(TargetSchema, target),
      state: TargetState.HEALTHY,
      ttftEwmaMs: ewma(prev?.ttftEwmaMs, result.latencyMs),
      errorRate: ewma(prev?.errorRate, 0),
      lastProbeMs: BigInt(now),
      updatedMs: BigInt(now),
      source: HealthSource.PROBE,
      // Nor does it end a pause the target asked for.
      ...pauseInForce(prev, now),
    });
  }
  const f = result.failure;
  const failures = (prev?.consecutiveFailures ?? 0) + 1;
  // Unreachable is down at once; an upstream that answers badly gets a second chance.
  const down = f.kind === "upstream_unavailable" || failures >= DOWN_AFTER_FAILURES;
  // Down by probe means down until a probe says otherwise (or the state goes stale), unless the
  // target named its own pause: a cooldown that ended between two probe rounds would send
  // traffic to a target known to be failing.
  const cooldown = f.retryAfterMs;
  return makeMessage(TargetHealthSchema, {
    target: makeMessage(TargetSchema, target),
    state: down ? TargetState.DOWN : TargetState.DEGRADED,
    ttftEwmaMs: prev?.ttftEwmaMs ?? 0,
    errorRate:
      prev?.errorRate === undefined ? 1 : prev.errorRate + EWMA_ALPHA * (1 - prev.errorRate),
    cooldownUntilMs: cooldown > 0 ? BigInt(now + cooldown) : 0n,
    lastProbeMs: BigInt(now),
    updatedMs: BigInt(now),
    source: HealthSource.PROBE,
    lastError: f.message,
    consecutiveFailures: failures,
    // A pause live traffic was asked for holds. A probe asks for none of its own: a model list
    // refused says little of the completions a pause would keep from the target.
    ...pauseInForce(prev, now),
  });
}

/**
 * Folds one live-traffic outcome into a target's health: failures in a row (as many as the
 * circuit breaker's threshold) mark it down for the breaker's cooldown, a 429 or 503 with
 * Retry-After puts it in cooldown for that long (a 503 that also trips it: the longer of the
 * two), a success clears both. The Retry-After is also kept as the target's pause (`pause_until_ms`),
 * which routers skip the target for and which only its end clears. A cooldown runs from when the
 * call failed (the outcome's `at_ms`), not from when its batch is folded in. A failure leaves a
 * target that is down at least as down as it was, and an outcome older than the last probe
 * changes nothing but the pause it asked for.
 */
export function foldOutcome(
  prev: TargetHealth | undefined,
  o: TargetOutcome,
  now: number,
  breaker: { consecutive_failures: number; cooldown_ms: number },
): TargetHealth {
  const pause = pauseAskedFor(o.errorKind, o.retryAfterMs);
  // Connectors report in batches (every 250 ms, and a batch may wait longer to be folded in): a
  // cooldown starts when the call failed. A connector clock ahead of this one counts as now.
  const failedAt = o.atMs > 0n ? Math.min(Number(o.atMs), now) : now;
  // A probe's verdict is newer than what live traffic saw before it: outcomes from before the
  // probe (a connector's batch arrives up to a batch interval late) leave it as it is. Except
  // for a pause the target asked for: a model list answering says nothing of that.
  if (prev?.source === HealthSource.PROBE && o.atMs > 0n && o.atMs < prev.lastProbeMs) {
    const held = pauseInForce(prev, now);
    const asked = laterPause(held, pause > 0 ? failedAt + pause : 0, o.errorKind, now);
    return asked === held ? prev : targetHealth({ ...prev, ...asked, updatedMs: BigInt(now) });
  }
  // The target's message is shared from one health value to the next; no one changes it.
  const target = prev?.target ?? makeMessage(TargetSchema, o.target ?? {});
  const lastProbeMs = prev?.lastProbeMs ?? 0n;
  const updatedMs = BigInt(now);
  if (o.success) {
    const old = prev?.ttftEwmaMs ?? 0;
    return targetHealth({
      target,
      state: TargetState.HEALTHY,
      ttftEwmaMs: old === 0 ? o.firstTokenMs : old + EWMA_ALPHA * (o.firstTokenMs - old),
      errorRate: (prev?.errorRate ?? 0) * (1 - EWMA_ALPHA),
      cooldownUntilMs: 0n,
      lastProbeMs,
      source: HealthSource.PASSIVE,
      updatedMs,
      lastError: "",
      consecutiveFailures: 0,
      // A pause holds to its end, as in the router that was asked for it: a success reported now
      // may be from before it (batches from several connectors arrive in any order).
      ...pauseInForce(prev, now),
    });
  }
  const failures = (prev?.consecutiveFailures ?? 0) + 1;
  const errorRate = (prev?.errorRate ?? 0) + EWMA_ALPHA * (1 - (prev?.errorRate ?? 0));
  // As the routers' own breakers see it: a 429 that says when to come back is throttling, and
  // only its pause counts; any other failure in a row trips it, a 503 with Retry-After too.
  const tripped =
    failures >= breaker.consecutive_failures && !(o.errorKind === "rate_limited" && pause > 0);
  const cooldown = Math.max(pause, tripped ? breaker.cooldown_ms : 0);
  let until = cooldown > 0 ? failedAt + cooldown : 0;
  // A failure never makes a down target less down: one a probe marked down (no cooldown: until a
  // probe says otherwise) stays so, and a cooldown still running is only ever extended. Outcomes
  // arrive in batches, so a failure from before the mark is often folded in after it.
  const prevUntil = Number(prev?.cooldownUntilMs ?? 0n);
  const wasDown = prev?.state === TargetState.DOWN && (prevUntil === 0 || now < prevUntil);
  if (wasDown) until = prevUntil === 0 ? 0 : Math.max(prevUntil, until);
  // A cooldown that ended before its outcome was folded in leaves the target DEGRADED.
  const down = wasDown || (cooldown > 0 && until > now);
  return targetHealth({
    target,
    state: down ? TargetState.DOWN : TargetState.DEGRADED,
    ttftEwmaMs: prev?.ttftEwmaMs ?? 0,
    errorRate,
    cooldownUntilMs: BigInt(down ? until : 0),
    lastProbeMs,
    source: HealthSource.PASSIVE,
    updatedMs,
    lastError: `live traffic: ${o.errorKind}${o.upstreamStatus ? ` (HTTP ${o.upstreamStatus})` : ""}`,
    consecutiveFailures: failures,
    ...laterPause(pauseInForce(prev, now), pause > 0 ? failedAt + pause : 0, o.errorKind, now),
  });
}

/** A TargetHealth's pause: until when the target asked not to be called, and with what. */
type SharedPause = Pick<TargetHealth, "pauseUntilMs" | "pauseKind">;

const NO_PAUSE: SharedPause = { pauseUntilMs: 0n, pauseKind: SharedPauseKind.UNSPECIFIED };

/** The pause `prev` holds, unless it has ended by `now`. */
function pauseInForce(prev: TargetHealth | undefined, now: number): SharedPause {
  if (prev === undefined || Number(prev.pauseUntilMs) <= now) return NO_PAUSE;
  return { pauseUntilMs: prev.pauseUntilMs, pauseKind: prev.pauseKind };
}

/**
 * The pause `held`, or the one a failure of `kind` asked for until `until` if it ends later: as
 * the router's own pauses (CircuitBreakers.pauseFor), one in force is never shortened.
 */
function laterPause(held: SharedPause, until: number, kind: string, now: number): SharedPause {
  if (!isPauseKind(kind) || until <= now || until <= Number(held.pauseUntilMs)) return held;
  return { pauseUntilMs: BigInt(until), pauseKind: sharedPauseKind(kind) };
}

function sharedPauseKind(kind: PauseKind): SharedPauseKind {
  return kind === "rate_limited" ? SharedPauseKind.RATE_LIMITED : SharedPauseKind.UNAVAILABLE;
}

/**
 * `create(TargetHealthSchema, fields)` as an object literal: the active prober makes one for
 * every live call of the whole fleet (8 us each through create(), under 1 us as a literal).
 * Every field is required here, so a field added to the proto cannot be missed;
 * prober.test.ts checks what foldOutcome returns against create().
 */
function targetHealth(f: Omit<TargetHealth, "$typeName" | "$unknown">): TargetHealth {
  return {
    $typeName: "switchyard.health.v1.TargetHealth",
    target: f.target,
    state: f.state,
    ttftEwmaMs: f.ttftEwmaMs,
    errorRate: f.errorRate,
    cooldownUntilMs: f.cooldownUntilMs,
    lastProbeMs: f.lastProbeMs,
    source: f.source,
    updatedMs: f.updatedMs,
    lastError: f.lastError,
    consecutiveFailures: f.consecutiveFailures,
    pauseUntilMs: f.pauseUntilMs,
    pauseKind: f.pauseKind,
  };
}

/** Actively probes every target through a connector and publishes the result as shared health. */
export function createProber(deps: ProberDeps): Prober {
  const now = deps.now ?? Date.now;
  const interval = deps.config.health.probe_interval_ms;
  const last = new Map<string, TargetHealth>();
  const probes = counter(
    deps.registry,
    "switchyard_prober_probes_total",
    "Probes sent, by outcome",
    ["provider", "target", "outcome"],
  );
  const healthGauge = gauge(
    deps.registry,
    "switchyard_target_health",
    "Target state as last probed: 1 healthy, 2 degraded, 3 down",
    ["provider", "target"],
  );
  observedGauge(
    deps.registry,
    "switchyard_prober_active",
    "1 on the prober replica that holds the lease and probes, 0 on a standby",
    [],
    (g) => g.set((deps.lease?.held() ?? true) ? 1 : 0),
  );
  let timer: NodeJS.Timeout | undefined;
  let round: Promise<void> | undefined;
  const abort = new AbortController();
  // Every target's probe in flight listens to it (a round probes all of them at once): as many
  // listeners as targets is the design, not a leak for Node to warn of.
  setMaxListeners(0, abort.signal);

  async function probeOne(t: { provider: string; model: string }): Promise<void> {
    const connector = deps.connectors.pick();
    // Nothing to probe through: keep the last known state rather than inventing one.
    if (!connector) return;
    try {
      const res = await connector.client.probe(
        { target: makeMessage(TargetSchema, t) },
        { signal: abort.signal, timeoutMs: Math.min(interval, 10_000) },
      );
      if (res.ok) return settle(t, { ok: true, latencyMs: res.latencyMs });
      const failure = res.error
        ? Failure.fromProto(res.error)
        : new Failure({ status: 502, kind: "upstream_error", message: "probe failed" });
      return settle(t, { ok: false, failure });
    } catch (err) {
      if (abort.signal.aborted) return;
      const failure = Failure.from(err);
      // The connector took the probe but the target never answered: the target's fault.
      if (failure.kind === "timeout") return settle(t, { ok: false, failure });
      // The connector did not answer: that says nothing about the target. Keep its last known
      // state; the next round goes through another connector.
      deps.connectors.suspect(connector.id);
      // One that said it is leaving was only tried for want of another: no surprise.
      deps.logger[deps.connectors.isLeaving(connector.id) ? "debug" : "warn"](
        { connector: connector.id, provider: t.provider, target: t.model, err: failure.message },
        "probe could not reach a connector",
      );
    }
  }

  async function settle(
    t: { provider: string; model: string },
    result: { ok: true; latencyMs: number } | { ok: false; failure: Failure },
  ): Promise<void> {
    const key = targetKey(t.provider, t.model);
    const health = nextHealth(last.get(key), t, result, now());
    last.set(key, health);
    probes.inc({
      provider: t.provider,
      target: t.model,
      outcome: result.ok ? "ok" : result.failure.kind,
    });
    healthGauge.set({ provider: t.provider, target: t.model }, health.state);
    if (!result.ok) {
      deps.logger.warn(
        {
          provider: t.provider,
          target: t.model,
          state: TargetState[health.state],
          error: health.lastError,
        },
        "probe failed",
      );
    }
    await deps.health.put(health);
  }

  async function probeAll(): Promise<void> {
    await Promise.all(
      distinctTargets(deps.config).map((t) =>
        probeOne(t).catch((err) =>
          deps.logger.error(
            { err: String(err), provider: t.provider, target: t.model },
            "could not publish target health",
          ),
        ),
      ),
    );
  }

  // A standby prober checks often whether it has become the active one.
  const standbyMs = Math.min(interval, 1_000);

  async function followOutcomes(
    source: (signal: AbortSignal) => AsyncIterable<TargetOutcomeBatch>,
  ): Promise<void> {
    const breaker = deps.config.routing.circuit_breaker;
    while (!abort.signal.aborted) {
      try {
        for await (const batch of source(abort.signal)) {
          if (!(deps.lease?.held() ?? true)) continue;
          // One write per target per batch, whatever the batch holds.
          const changed = new Map<string, TargetHealth>();
          for (const o of batch.outcomes) {
            if (!o.target) continue;
            const key = targetKey(o.target.provider, o.target.model);
            const health = foldOutcome(last.get(key), o, now(), breaker);
            last.set(key, health);
            changed.set(key, health);
          }
          for (const health of changed.values()) {
            const t = health.target;
            if (t) healthGauge.set({ provider: t.provider, target: t.model }, health.state);
            await deps.health
              .put(health)
              .catch((err) =>
                deps.logger.warn({ err: String(err) }, "could not publish target health"),
              );
          }
        }
      } catch (err) {
        if (!abort.signal.aborted) deps.logger.warn({ err: String(err) }, "outcome stream failed");
      }
      if (!abort.signal.aborted) await new Promise((r) => setTimeout(r, 1_000).unref());
    }
  }

  return {
    start() {
      const tick = () => {
        const active = deps.lease?.held() ?? true;
        round = (active ? probeAll() : Promise.resolve()).finally(() => {
          if (!abort.signal.aborted) timer = setTimeout(tick, active ? interval : standbyMs);
        });
      };
      tick();
      if (deps.outcomes) void followOutcomes(deps.outcomes);
    },
    probeAll,
    async stop() {
      abort.abort();
      await deps.lease?.release();
      clearTimeout(timer);
      await round;
    },
  };
}
