import { create } from "@bufbuild/protobuf";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import {
  HealthSource,
  PauseKind,
  type TargetHealth,
  TargetHealthSchema,
  TargetState,
} from "../../gen/switchyard/health/v1/health_pb.js";
import type { HealthStore } from "../lib/bus/bus.js";
import { createMemoryBus } from "../lib/bus/memory.js";
import { HealthView } from "./health-view.js";

const STALE_AFTER = 60_000;
const NOW = 5_000_000;
const logger = pino({ level: "silent" });

function health(
  provider: string,
  model: string,
  state: TargetState,
  fields: {
    updatedMs?: number;
    cooldownUntilMs?: number;
    pauseUntilMs?: number;
    pauseKind?: PauseKind;
  } = {},
): TargetHealth {
  return create(TargetHealthSchema, {
    target: { provider, model },
    state,
    source: HealthSource.PROBE,
    updatedMs: BigInt(fields.updatedMs ?? NOW),
    cooldownUntilMs: BigInt(fields.cooldownUntilMs ?? 0),
    pauseUntilMs: BigInt(fields.pauseUntilMs ?? 0),
    pauseKind: fields.pauseKind ?? PauseKind.UNSPECIFIED,
  });
}

/** Resolves once `check` holds, failing after `ms`. */
async function until(check: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms}ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const views: HealthView[] = [];
afterEach(() => {
  for (const v of views.splice(0)) v.stop();
});

function view(now: () => number = () => NOW): HealthView {
  const v = new HealthView(STALE_AFTER, now);
  views.push(v);
  return v;
}

describe("HealthView.isDown", () => {
  it("knows nothing of a target no one reported", () => {
    expect(view().isDown("p", "m")).toBe(false);
    expect(view().get("p", "m")).toBeUndefined();
  });

  it("treats healthy and degraded targets as usable", () => {
    const v = view();
    v.apply(health("p", "healthy", TargetState.HEALTHY));
    v.apply(health("p", "degraded", TargetState.DEGRADED));
    expect(v.isDown("p", "healthy")).toBe(false);
    expect(v.isDown("p", "degraded")).toBe(false);
  });

  it("reports a fresh DOWN without a cooldown as down", () => {
    const v = view();
    v.apply(health("p", "m", TargetState.DOWN));
    expect(v.isDown("p", "m")).toBe(true);
    expect(v.isDown("p", "other")).toBe(false);
  });

  it("ignores a DOWN older than stale_after_ms", () => {
    const v = view();
    v.apply(health("p", "m", TargetState.DOWN, { updatedMs: NOW - STALE_AFTER - 1 }));
    expect(v.isDown("p", "m")).toBe(false);
    v.apply(health("p", "m", TargetState.DOWN, { updatedMs: NOW - STALE_AFTER }));
    expect(v.isDown("p", "m")).toBe(true);
  });

  it("honours the cooldown: down before cooldown_until_ms, usable from then on", () => {
    const clock = { now: NOW };
    const v = view(() => clock.now);
    v.apply(health("p", "m", TargetState.DOWN, { cooldownUntilMs: NOW + 1000 }));
    expect(v.isDown("p", "m")).toBe(true);
    clock.now = NOW + 999;
    expect(v.isDown("p", "m")).toBe(true);
    clock.now = NOW + 1000;
    expect(v.isDown("p", "m")).toBe(false);
  });

  it("keeps the latest report of each target", () => {
    const v = view();
    v.apply(health("p", "m", TargetState.DOWN));
    v.apply(health("p", "m", TargetState.HEALTHY));
    expect(v.isDown("p", "m")).toBe(false);
    expect(v.get("p", "m")?.state).toBe(TargetState.HEALTHY);
  });

  it("drops a report that names no target", () => {
    const v = view();
    v.apply(create(TargetHealthSchema, { state: TargetState.DOWN, updatedMs: BigInt(NOW) }));
    expect(v.get("", "")).toBeUndefined();
  });
});

describe("HealthView.pausedMs", () => {
  it("tells how much is left of a pause the target asked another router for, and its kind", () => {
    const clock = { now: NOW };
    const v = view(() => clock.now);
    const paused = { cooldownUntilMs: NOW + 10_000, pauseUntilMs: NOW + 10_000 };
    v.apply(health("p", "busy", TargetState.DOWN, { ...paused, pauseKind: PauseKind.UNAVAILABLE }));
    v.apply(
      health("p", "limited", TargetState.DOWN, { ...paused, pauseKind: PauseKind.RATE_LIMITED }),
    );
    expect(v.pausedMs("p", "busy")).toBe(10_000);
    expect(v.pauseKind("p", "busy")).toBe("upstream_unavailable");
    expect(v.pauseKind("p", "limited")).toBe("rate_limited");
    clock.now = NOW + 9_999;
    expect(v.pausedMs("p", "busy")).toBe(1);
    clock.now = NOW + 10_000;
    expect(v.pausedMs("p", "busy")).toBe(0);
    expect(v.pauseKind("p", "busy")).toBeUndefined();
  });

  it("finds no pause in a DOWN mark without one, as older probers write it, nor in stale state", () => {
    const v = view();
    v.apply(health("p", "old", TargetState.DOWN, { cooldownUntilMs: NOW + 10_000 }));
    expect(v.isDown("p", "old")).toBe(true);
    expect(v.pausedMs("p", "old")).toBe(0);
    expect(v.pauseKind("p", "old")).toBeUndefined();
    v.apply(
      health("p", "stale", TargetState.DOWN, {
        updatedMs: NOW - STALE_AFTER - 1,
        pauseUntilMs: NOW + 10_000,
        pauseKind: PauseKind.RATE_LIMITED,
      }),
    );
    expect(v.pausedMs("p", "stale")).toBe(0);
    expect(v.pausedMs("p", "unknown")).toBe(0);
  });
});

describe("HealthView.follow", () => {
  it("takes the store's current values, then its changes, until stopped", async () => {
    const bus = createMemoryBus();
    try {
      await bus.health.put(health("p", "before", TargetState.DOWN, { updatedMs: Date.now() }));
      const v = view(Date.now);
      v.follow(bus.health, logger);
      await until(() => v.isDown("p", "before"));

      await bus.health.put(health("p", "after", TargetState.DOWN, { updatedMs: Date.now() }));
      await until(() => v.isDown("p", "after"));
      await bus.health.put(health("p", "before", TargetState.HEALTHY, { updatedMs: Date.now() }));
      await until(() => !v.isDown("p", "before"));

      v.stop();
      await bus.health.put(health("p", "late", TargetState.DOWN, { updatedMs: Date.now() }));
      await new Promise((r) => setTimeout(r, 50));
      expect(v.get("p", "late")).toBeUndefined();
    } finally {
      await bus.close();
    }
  });

  it("starts watching again when a watch fails", async () => {
    const bus = createMemoryBus();
    let watches = 0;
    const flaky: HealthStore = {
      put: (h) => bus.health.put(h),
      all: () => bus.health.all(),
      watch(signal) {
        watches++;
        if (watches === 1) {
          return {
            [Symbol.asyncIterator]: () => ({
              next: () => Promise.reject(new Error("watch broke")),
            }),
          };
        }
        return bus.health.watch(signal);
      },
    };
    const v = view(Date.now);
    try {
      await bus.health.put(health("p", "m", TargetState.DOWN, { updatedMs: Date.now() }));
      v.follow(flaky, logger);
      // The retry waits a second so a broken store is not hammered.
      await until(() => v.isDown("p", "m"), 5000);
      expect(watches).toBe(2);
    } finally {
      await bus.close();
    }
  });
});
