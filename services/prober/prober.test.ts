import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { createServer, type Socket, connect as tcpConnect } from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createRouterTransport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pino from "pino";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import {
  HealthSource,
  PauseKind,
  type TargetHealth,
  TargetHealthSchema,
  TargetOutcomeSchema,
  TargetState,
} from "../../gen/switchyard/health/v1/health_pb.js";
import { testConfig } from "../../test/helpers/fabric.js";
import { captureLogs } from "../../test/helpers/logs.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "../../test/upstreams/openai-upstream.js";
import { buildConnector, type ConnectorBuild } from "../connector/main.js";
import type { Bus } from "../lib/bus/bus.js";
import { createMemoryBus } from "../lib/bus/memory.js";
import { ConnectorPool } from "../lib/connector-pool.js";
import { Failure } from "../lib/errors.js";
import { targetKey } from "../lib/targets.js";
import { createProber, distinctTargets, foldOutcome, nextHealth, type Prober } from "./prober.js";

const logger = pino({ level: "silent" });
const TARGET = { provider: "p", model: "m" };
const NOW = 1_700_000_000_000;

const unavailable = new Failure({
  status: 502,
  kind: "upstream_unavailable",
  retryable: true,
  message: "provider p unreachable: ECONNREFUSED",
});
const badAnswer = new Failure({
  status: 502,
  kind: "upstream_error",
  retryable: true,
  message: "provider p failed (500)",
});

describe("nextHealth", () => {
  it("marks a target that answers HEALTHY with its latency as the first TTFT sample", () => {
    const h = nextHealth(undefined, TARGET, { ok: true, latencyMs: 120 }, NOW);
    expect(h.target).toMatchObject(TARGET);
    expect(h.state).toBe(TargetState.HEALTHY);
    expect(h.ttftEwmaMs).toBe(120);
    expect(h.errorRate).toBe(0);
    expect(h.cooldownUntilMs).toBe(0n);
    expect(h.consecutiveFailures).toBe(0);
    expect(h.lastProbeMs).toBe(BigInt(NOW));
    expect(h.updatedMs).toBe(BigInt(NOW));
    expect(h.source).toBe(HealthSource.PROBE);
  });

  it("smooths latency over probes instead of jumping to the last one", () => {
    const first = nextHealth(undefined, TARGET, { ok: true, latencyMs: 100 }, NOW);
    const second = nextHealth(first, TARGET, { ok: true, latencyMs: 200 }, NOW + 1);
    expect(second.ttftEwmaMs).toBeGreaterThan(100);
    expect(second.ttftEwmaMs).toBeLessThan(200);
  });

  it("gives a target that answers badly a second chance: DEGRADED first, DOWN on the next", () => {
    const first = nextHealth(undefined, TARGET, { ok: false, failure: badAnswer }, NOW);
    expect(first.state).toBe(TargetState.DEGRADED);
    expect(first.consecutiveFailures).toBe(1);
    expect(first.cooldownUntilMs).toBe(0n);
    expect(first.errorRate).toBe(1);
    expect(first.lastError).toBe(badAnswer.message);

    const second = nextHealth(first, TARGET, { ok: false, failure: badAnswer }, NOW + 5);
    expect(second.state).toBe(TargetState.DOWN);
    expect(second.consecutiveFailures).toBe(2);
    expect(second.cooldownUntilMs).toBe(0n); // down until a probe says otherwise
  });

  it("marks an unreachable target DOWN at once, until a probe says otherwise", () => {
    const h = nextHealth(undefined, TARGET, { ok: false, failure: unavailable }, NOW);
    expect(h.state).toBe(TargetState.DOWN);
    expect(h.consecutiveFailures).toBe(1);
    expect(h.cooldownUntilMs).toBe(0n);
  });

  it("honours the upstream's Retry-After as the cooldown", () => {
    const limited = new Failure({
      status: 429,
      kind: "rate_limited",
      retryable: true,
      retryAfterMs: 3000,
      message: "slow down",
    });
    const h = nextHealth(undefined, TARGET, { ok: false, failure: limited }, NOW);
    expect(h.state).toBe(TargetState.DEGRADED);
    expect(h.cooldownUntilMs).toBe(BigInt(NOW + 3000));
    // Not a pause, which routers would skip it for: only live traffic's 429s and 503s are.
    expect(h.pauseUntilMs).toBe(0n);
  });

  it("keeps the latency estimate through failures", () => {
    const ok = nextHealth(undefined, TARGET, { ok: true, latencyMs: 80 }, NOW);
    const failed = nextHealth(ok, TARGET, { ok: false, failure: badAnswer }, NOW + 1);
    expect(failed.ttftEwmaMs).toBe(80);
    expect(failed.errorRate).toBeGreaterThan(0);
    expect(failed.errorRate).toBeLessThan(1);
  });

  it("brings a DOWN target back to HEALTHY with no cooldown on its first good probe", () => {
    const down = nextHealth(undefined, TARGET, { ok: false, failure: unavailable }, NOW);
    const back = nextHealth(down, TARGET, { ok: true, latencyMs: 50 }, NOW + 10);
    expect(back.state).toBe(TargetState.HEALTHY);
    expect(back.cooldownUntilMs).toBe(0n);
    expect(back.consecutiveFailures).toBe(0);
    expect(back.lastError).toBe("");
    expect(back.errorRate).toBeLessThan(down.errorRate);
  });
});

describe("a target live traffic marked down", () => {
  it("stays down through good probes until its cooldown ends, and stays fresh meanwhile", () => {
    const BREAKER = { consecutive_failures: 1, cooldown_ms: 30_000 };
    const failed = create(TargetOutcomeSchema, {
      target: TARGET,
      success: false,
      errorKind: "timeout",
    });
    const marked = foldOutcome(undefined, failed, NOW, BREAKER);
    expect(marked).toMatchObject({ state: TargetState.DOWN, source: HealthSource.PASSIVE });
    // A probe 25 s later answers: the mark holds, written as of that probe, so a router whose
    // stale_after_ms is shorter than the cooldown still sees it.
    const later = nextHealth(marked, TARGET, { ok: true, latencyMs: 5 }, NOW + 25_000);
    expect(later.state).toBe(TargetState.DOWN);
    expect(later.updatedMs).toBe(BigInt(NOW + 25_000));
    expect(later.cooldownUntilMs).toBe(marked.cooldownUntilMs);
    // After the cooldown a good probe brings it back.
    const back = nextHealth(later, TARGET, { ok: true, latencyMs: 5 }, NOW + 31_000);
    expect(back.state).toBe(TargetState.HEALTHY);
  });
});

describe("foldOutcome", () => {
  const BREAKER = { consecutive_failures: 5, cooldown_ms: 30_000 };
  const failed = (extra: { errorKind?: string; retryAfterMs?: number; atMs?: bigint } = {}) =>
    create(TargetOutcomeSchema, {
      target: TARGET,
      success: false,
      errorKind: "upstream_error",
      upstreamStatus: 503,
      ...extra,
    });

  it("builds health values that are exactly the messages create() makes", () => {
    const ok = create(TargetOutcomeSchema, { target: TARGET, success: true, firstTokenMs: 12 });
    const healthy = foldOutcome(undefined, ok, NOW, BREAKER);
    const degraded = foldOutcome(healthy, failed(), NOW + 1, BREAKER);
    for (const h of [healthy, degraded]) {
      // A field the literal lacks, or one the schema does not have, makes these differ.
      const { $typeName: _, ...fields } = h;
      expect(h).toEqual(create(TargetHealthSchema, fields));
      expect(fromBinary(TargetHealthSchema, toBinary(TargetHealthSchema, h))).toEqual(h);
    }
    expect(healthy).toMatchObject({ state: TargetState.HEALTHY, ttftEwmaMs: 12 });
    expect(degraded).toMatchObject({ state: TargetState.DEGRADED, consecutiveFailures: 1 });
  });

  it("marks a target DOWN for the breaker's cooldown after its threshold of failures in a row", () => {
    let h: TargetHealth | undefined;
    for (let i = 0; i < 4; i++) h = foldOutcome(h, failed(), NOW, BREAKER);
    expect(h?.state).toBe(TargetState.DEGRADED);
    h = foldOutcome(h, failed(), NOW, BREAKER);
    expect(h.state).toBe(TargetState.DOWN);
    expect(Number(h.cooldownUntilMs)).toBe(NOW + BREAKER.cooldown_ms);
  });

  it("never makes a target a probe marked DOWN less down", () => {
    // Two failed probes: DOWN until a probe says otherwise. A live failure from before the mark,
    // folded in after it, must not turn it into DEGRADED (routers would try it again).
    const probed = nextHealth(
      nextHealth(undefined, TARGET, { ok: false, failure: badAnswer }, NOW),
      TARGET,
      { ok: false, failure: badAnswer },
      NOW,
    );
    expect(probed.state).toBe(TargetState.DOWN);
    const h = foldOutcome(probed, failed(), NOW + 10, BREAKER);
    expect(h.state).toBe(TargetState.DOWN);
    expect(h.cooldownUntilMs).toBe(0n);
    // And a good probe still brings it back.
    expect(nextHealth(h, TARGET, { ok: true, latencyMs: 5 }, NOW + 20).state).toBe(
      TargetState.HEALTHY,
    );
  });

  it("ignores a success from before the probe that found the target down", () => {
    // Batched outcomes arrive late: a call that succeeded before the target failed must not
    // bring it back after a probe marked it down.
    const probed = nextHealth(undefined, TARGET, { ok: false, failure: unavailable }, NOW);
    expect(probed.state).toBe(TargetState.DOWN);
    const ok = (atMs: number) =>
      create(TargetOutcomeSchema, {
        target: TARGET,
        success: true,
        firstTokenMs: 5,
        atMs: BigInt(atMs),
      });
    expect(foldOutcome(probed, ok(NOW - 100), NOW + 50, BREAKER)).toBe(probed);
    expect(foldOutcome(probed, ok(NOW + 10), NOW + 50, BREAKER).state).toBe(TargetState.HEALTHY);
  });

  it("only ever extends a running cooldown", () => {
    const limited = foldOutcome(
      undefined,
      failed({ errorKind: "rate_limited", retryAfterMs: 60_000 }),
      NOW,
      BREAKER,
    );
    expect(Number(limited.cooldownUntilMs)).toBe(NOW + 60_000);
    const h = foldOutcome(limited, failed(), NOW + 1_000, BREAKER);
    expect(h.state).toBe(TargetState.DOWN);
    expect(Number(h.cooldownUntilMs)).toBe(NOW + 60_000);
    // Once it has run out, a single failure is one failure again.
    const later = foldOutcome(limited, failed(), NOW + 61_000, BREAKER);
    expect(later.state).toBe(TargetState.DEGRADED);
  });

  it("starts a cooldown when the call failed, not when its batch is folded in", () => {
    const at = { atMs: BigInt(NOW - 2_000) };
    const limited = foldOutcome(
      undefined,
      failed({ errorKind: "rate_limited", retryAfterMs: 10_000, ...at }),
      NOW,
      BREAKER,
    );
    expect(Number(limited.cooldownUntilMs)).toBe(NOW + 8_000);
    expect(limited.updatedMs).toBe(BigInt(NOW));
    let h: TargetHealth | undefined;
    for (let i = 0; i < 5; i++) h = foldOutcome(h, failed(at), NOW, BREAKER);
    expect(h?.state).toBe(TargetState.DOWN);
    expect(Number(h?.cooldownUntilMs)).toBe(NOW - 2_000 + BREAKER.cooldown_ms);
    // A pause that was over before its outcome was folded in marks nothing down.
    const over = foldOutcome(
      undefined,
      failed({ errorKind: "rate_limited", retryAfterMs: 1_000, ...at }),
      NOW,
      BREAKER,
    );
    expect(over).toMatchObject({ state: TargetState.DEGRADED, cooldownUntilMs: 0n });
    // A connector whose clock is ahead does not push the cooldown further than from now.
    const ahead = foldOutcome(
      undefined,
      failed({ errorKind: "rate_limited", retryAfterMs: 10_000, atMs: BigInt(NOW + 5_000) }),
      NOW,
      BREAKER,
    );
    expect(Number(ahead.cooldownUntilMs)).toBe(NOW + 10_000);
  });

  it("puts a target that answered 503 with Retry-After in cooldown for that long", () => {
    const busy = failed({ errorKind: "upstream_unavailable", retryAfterMs: 10_000 });
    const h = foldOutcome(undefined, busy, NOW, BREAKER);
    expect(h.state).toBe(TargetState.DOWN);
    expect(Number(h.cooldownUntilMs)).toBe(NOW + 10_000);
    // A 500's Retry-After is no promise: one failure, not a pause.
    const other = foldOutcome(undefined, failed({ retryAfterMs: 10_000 }), NOW, BREAKER);
    expect(other).toMatchObject({ state: TargetState.DEGRADED, cooldownUntilMs: 0n });
  });

  it("keeps a 429's or 503's Retry-After as the target's pause, from when the call failed", () => {
    const at = { atMs: BigInt(NOW - 2_000) };
    const limited = foldOutcome(
      undefined,
      failed({ errorKind: "rate_limited", retryAfterMs: 10_000, ...at }),
      NOW,
      BREAKER,
    );
    expect(limited).toMatchObject({
      pauseUntilMs: BigInt(NOW + 8_000),
      pauseKind: PauseKind.RATE_LIMITED,
    });
    const busy = foldOutcome(
      undefined,
      failed({ errorKind: "upstream_unavailable", retryAfterMs: 10_000 }),
      NOW,
      BREAKER,
    );
    expect(busy).toMatchObject({
      pauseUntilMs: BigInt(NOW + 10_000),
      pauseKind: PauseKind.UNAVAILABLE,
    });
    // Tripping the breaker is no pause (it is tried last, not skipped), nor is a 500's
    // Retry-After, nor a pause that was over before its outcome was folded in.
    let tripped: TargetHealth | undefined;
    for (let i = 0; i < 5; i++) tripped = foldOutcome(tripped, failed(), NOW, BREAKER);
    expect(tripped).toMatchObject({ state: TargetState.DOWN, pauseUntilMs: 0n });
    expect(
      foldOutcome(undefined, failed({ retryAfterMs: 10_000 }), NOW, BREAKER).pauseUntilMs,
    ).toBe(0n);
    const over = failed({ errorKind: "rate_limited", retryAfterMs: 1_000, ...at });
    expect(foldOutcome(undefined, over, NOW, BREAKER)).toMatchObject({
      pauseUntilMs: 0n,
      pauseKind: PauseKind.UNSPECIFIED,
    });
  });

  it("holds a pause to its end through successes, failures and good probes, and never shortens it", () => {
    const paused = foldOutcome(
      undefined,
      failed({ errorKind: "upstream_unavailable", retryAfterMs: 30_000 }),
      NOW,
      BREAKER,
    );
    const ok = create(TargetOutcomeSchema, { target: TARGET, success: true, firstTokenMs: 5 });
    // A success reported meanwhile (it may be from before the pause) clears the cooldown only.
    const succeeded = foldOutcome(paused, ok, NOW + 1_000, BREAKER);
    expect(succeeded).toMatchObject({
      state: TargetState.HEALTHY,
      cooldownUntilMs: 0n,
      pauseUntilMs: BigInt(NOW + 30_000),
      pauseKind: PauseKind.UNAVAILABLE,
    });
    // A shorter pause asked for later, or another failure, leaves it as it is.
    const shorter = foldOutcome(
      succeeded,
      failed({ errorKind: "rate_limited", retryAfterMs: 1_000 }),
      NOW + 2_000,
      BREAKER,
    );
    expect(shorter).toMatchObject({
      pauseUntilMs: BigInt(NOW + 30_000),
      pauseKind: PauseKind.UNAVAILABLE,
    });
    const failedAgain = foldOutcome(shorter, failed(), NOW + 3_000, BREAKER);
    expect(failedAgain.pauseUntilMs).toBe(BigInt(NOW + 30_000));
    // A model list that answers, or one that fails, says nothing of it either.
    const probed = nextHealth(failedAgain, TARGET, { ok: true, latencyMs: 5 }, NOW + 4_000);
    expect(probed.pauseUntilMs).toBe(BigInt(NOW + 30_000));
    const probeFailed = nextHealth(probed, TARGET, { ok: false, failure: badAnswer }, NOW + 5_000);
    expect(probeFailed.pauseUntilMs).toBe(BigInt(NOW + 30_000));
    // A longer one replaces it, with its kind.
    const longer = foldOutcome(
      probeFailed,
      failed({ errorKind: "rate_limited", retryAfterMs: 60_000 }),
      NOW + 6_000,
      BREAKER,
    );
    expect(longer).toMatchObject({
      pauseUntilMs: BigInt(NOW + 66_000),
      pauseKind: PauseKind.RATE_LIMITED,
    });
    // Once it has ended, the next value carries none.
    const after = foldOutcome(longer, ok, NOW + 66_000, BREAKER);
    expect(after).toMatchObject({ pauseUntilMs: 0n, pauseKind: PauseKind.UNSPECIFIED });
  });

  it("keeps the pause a call asked for before the last probe, and nothing else of it", () => {
    const probed = nextHealth(undefined, TARGET, { ok: true, latencyMs: 5 }, NOW);
    const before = { atMs: BigInt(NOW - 100) };
    const limited = foldOutcome(
      probed,
      failed({ errorKind: "rate_limited", retryAfterMs: 10_000, ...before }),
      NOW + 50,
      BREAKER,
    );
    // The probe's verdict stands (HEALTHY, no failure counted); the pause is added to it.
    expect(limited).toMatchObject({
      state: TargetState.HEALTHY,
      consecutiveFailures: 0,
      source: HealthSource.PROBE,
      pauseUntilMs: BigInt(NOW - 100 + 10_000),
      pauseKind: PauseKind.RATE_LIMITED,
      updatedMs: BigInt(NOW + 50),
    });
    const { $typeName: _, ...fields } = limited;
    expect(limited).toEqual(create(TargetHealthSchema, fields));
    // Any other outcome from before the probe still changes nothing.
    expect(foldOutcome(limited, failed(before), NOW + 60, BREAKER)).toBe(limited);
  });

  it("counts 503s with Retry-After towards the threshold, and 429s with it not", () => {
    const fold = (o: ReturnType<typeof failed>) => {
      let h: TargetHealth | undefined;
      for (let i = 0; i < 5; i++) h = foldOutcome(h, o, NOW + i * 2_000, BREAKER);
      return h;
    };
    // The fifth 503 in a row trips it: the breaker's cooldown, longer than the pause.
    const busy = fold(failed({ errorKind: "upstream_unavailable", retryAfterMs: 1_000 }));
    expect(Number(busy?.cooldownUntilMs)).toBe(NOW + 8_000 + BREAKER.cooldown_ms);
    // 429s in a row, each waited out, are only ever their pause.
    const limited = fold(failed({ errorKind: "rate_limited", retryAfterMs: 1_000 }));
    expect(Number(limited?.cooldownUntilMs)).toBe(NOW + 8_000 + 1_000);
  });
});

describe("distinctTargets", () => {
  it("lists each upstream target once, however many models name it", () => {
    const config = testConfig(`
providers:
  a: { type: mock }
  b: { type: mock }
models:
  one:
    targets: [{ provider: a, model: x }, { provider: b, model: x }]
  two:
    targets: [{ provider: a, model: x }, { provider: a, model: y }]
`);
    expect(distinctTargets(config)).toEqual([
      { provider: "a", model: "x" },
      { provider: "b", model: "x" },
      { provider: "a", model: "y" },
    ]);
  });
});

/** A TCP port nothing listens on (for a moment: it was just freed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Forwards every connection on `port` to `target`, so a dead address comes back to life.
 * Resolves to the function that closes it, cutting the connections it carries.
 */
async function forward(port: number, target: number): Promise<() => Promise<void>> {
  const sockets = new Set<Socket>();
  const proxy = createServer((client) => {
    const upstream = tcpConnect(target, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  proxy.listen(port, "127.0.0.1");
  await once(proxy, "listening");
  return async () => {
    const closed = new Promise<void>((resolve) => proxy.close(() => resolve()));
    for (const s of sockets) s.destroy();
    await closed;
  };
}

interface Rig {
  bus: Bus;
  prober: Prober;
  clock: { now: number };
  health(provider: string, model: string): Promise<TargetHealth | undefined>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A prober over a real in-process connector, writing to a memory bus. */
function rig(yaml: string, opts: { connector?: boolean } = {}): Rig {
  const config = testConfig(yaml);
  const bus = createMemoryBus();
  const pool = new ConnectorPool();
  let connector: ConnectorBuild | undefined;
  if (opts.connector !== false) {
    connector = buildConnector({ config, logger, registry: new Registry() });
    pool.add("c1", createRouterTransport(connector.routes));
  }
  const clock = { now: NOW };
  const prober = createProber({
    config,
    connectors: pool,
    health: bus.health,
    logger,
    registry: new Registry(),
    now: () => clock.now,
  });
  cleanups.push(async () => {
    await prober.stop();
    await connector?.close();
    await bus.close();
  });
  return {
    bus,
    prober,
    clock,
    async health(provider, model) {
      const all = await bus.health.all();
      return all.find(
        (h) =>
          h.target && targetKey(h.target.provider, h.target.model) === targetKey(provider, model),
      );
    },
  };
}

async function upstream(): Promise<OpenAIUpstream> {
  const u = await startOpenAIUpstream({ models: ["fake-model"] });
  cleanups.push(() => u.close());
  return u;
}

function openaiConfig(baseUrl: string, intervalMs = 1000): string {
  return `
providers:
  demo: { type: mock }
  local: { type: openai, base_url: "${baseUrl}" }
models:
  chat:
    targets: [{ provider: demo, model: demo-1 }, { provider: local, model: fake-model }]
  same:
    targets: [{ provider: local, model: fake-model }]
health: { probe_interval_ms: ${intervalMs}, stale_after_ms: ${intervalMs * 4} }
`;
}

describe("createProber", () => {
  it("probes many targets at once without Node warning of an abort-listener leak", async () => {
    const targets = Array.from({ length: 15 }, (_, i) => `{ provider: demo, model: m${i} }`);
    const r = rig(`
providers: { demo: { type: mock } }
models: { many: { targets: [${targets.join(", ")}] } }
`);
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    try {
      await r.prober.probeAll();
      await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on a tick
    } finally {
      process.off("warning", onWarning);
    }
    expect(await r.bus.health.all()).toHaveLength(15);
    expect(warnings).not.toContain("MaxListenersExceededWarning");
  });

  it("writes HEALTHY for a mock target and for an OpenAI upstream that lists its models", async () => {
    const u = await upstream();
    const r = rig(openaiConfig(u.url));
    await r.prober.probeAll();

    const all = await r.bus.health.all();
    expect(all).toHaveLength(2);
    for (const h of all) {
      expect(h.state).toBe(TargetState.HEALTHY);
      expect(h.source).toBe(HealthSource.PROBE);
      expect(h.lastProbeMs).toBe(BigInt(NOW));
    }
    expect((await r.health("demo", "demo-1"))?.state).toBe(TargetState.HEALTHY);
    expect((await r.health("local", "fake-model"))?.state).toBe(TargetState.HEALTHY);
    // Two models name the OpenAI target: it is probed once, with the free model list.
    expect(u.requests.map((q) => `${q.method} ${q.path}`)).toEqual(["GET /v1/models"]);
  });

  it("marks an unreachable upstream DOWN, and HEALTHY again once it answers", async () => {
    const port = await closedPort();
    const r = rig(openaiConfig(`http://127.0.0.1:${port}/v1`));
    await r.prober.probeAll();

    const down = await r.health("local", "fake-model");
    expect(down?.state).toBe(TargetState.DOWN);
    expect(down?.cooldownUntilMs).toBe(0n);
    expect(down?.lastError).toContain("unreachable");
    expect((await r.health("demo", "demo-1"))?.state).toBe(TargetState.HEALTHY);

    const u = await upstream();
    cleanups.push(await forward(port, Number(new URL(u.url).port)));
    r.clock.now += 1000;
    await r.prober.probeAll();

    const back = await r.health("local", "fake-model");
    expect(back?.state).toBe(TargetState.HEALTHY);
    expect(back?.cooldownUntilMs).toBe(0n);
    expect(back?.consecutiveFailures).toBe(0);
    expect(back?.lastProbeMs).toBe(BigInt(NOW + 1000));
    expect(u.requests).toHaveLength(1);
  });

  it("marks an upstream that answers 500 DEGRADED, then DOWN on the next round", async () => {
    const u = await upstream();
    u.setBehavior({ kind: "error", status: 500 });
    const r = rig(openaiConfig(u.url));

    await r.prober.probeAll();
    const first = await r.health("local", "fake-model");
    expect(first?.state).toBe(TargetState.DEGRADED);
    expect(first?.consecutiveFailures).toBe(1);

    r.clock.now += 1000;
    await r.prober.probeAll();
    const second = await r.health("local", "fake-model");
    expect(second?.state).toBe(TargetState.DOWN);
    expect(second?.consecutiveFailures).toBe(2);
    expect(second?.cooldownUntilMs).toBe(0n);
  });

  it("puts a rate-limited upstream in cooldown for its Retry-After", async () => {
    const u = await upstream();
    u.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "7" } });
    const r = rig(openaiConfig(u.url));
    await r.prober.probeAll();
    const h = await r.health("local", "fake-model");
    expect(h?.state).toBe(TargetState.DEGRADED);
    expect(h?.cooldownUntilMs).toBe(BigInt(NOW + 7000));
  });

  it("counts a probe that gets no answer within the interval as a failure", async () => {
    const u = await upstream();
    u.setBehavior({ kind: "hang" });
    const r = rig(openaiConfig(u.url, 100));
    await r.prober.probeAll();
    const h = await r.health("local", "fake-model");
    expect(h?.state).toBe(TargetState.DEGRADED);
    expect(h?.consecutiveFailures).toBe(1);
    // The probe's deadline closes the upstream request rather than leaving it open.
    await u.requests[0]?.closed;
    expect(u.requests[0]?.aborted).toBe(true);
  });

  it("writes nothing when there is no connector to probe through", async () => {
    const r = rig(openaiConfig("http://127.0.0.1:9/v1"), { connector: false });
    await r.prober.probeAll();
    expect(await r.bus.health.all()).toEqual([]);
  });

  it("warns of a connector that does not answer a probe, unless it said it is leaving", async () => {
    // A real refusal: nothing listens there.
    const address = `http://127.0.0.1:${await closedPort()}`;
    const connectors = new ConnectorPool();
    connectors.add(address, createConnectTransport({ baseUrl: address, httpVersion: "2" }));
    const logs = captureLogs("debug");
    const bus = createMemoryBus();
    cleanups.push(() => bus.close());
    const prober = createProber({
      config: testConfig(
        "providers: { demo: { type: mock } }\nmodels: { m: { targets: [{ provider: demo, model: d }] } }",
      ),
      connectors,
      health: bus.health,
      logger: logs.logger,
      registry: new Registry(),
    });
    const unreached = () =>
      logs
        .lines()
        .filter((l) => l.msg === "probe could not reach a connector")
        .map((l) => l.level);
    await prober.probeAll();
    expect(unreached()).toEqual([40]);
    connectors.setLeaving(address, true);
    await prober.probeAll();
    expect(unreached()).toEqual([40, 20]);
    // Either way the target's health is left as it was.
    expect(await bus.health.all()).toEqual([]);
  });

  it("probes at once on start, again every interval, and never after stop", async () => {
    const u = await upstream();
    const r = rig(openaiConfig(u.url, 30));
    const seen: bigint[] = [];
    const watching = new AbortController();
    const watch = (async () => {
      for await (const h of r.bus.health.watch(watching.signal)) {
        if (h.target?.provider === "local") seen.push(h.lastProbeMs);
        r.clock.now += 1;
        if (seen.length >= 3) return;
      }
    })();
    r.prober.start();
    await watch;
    watching.abort();
    expect(seen).toHaveLength(3);
    expect(new Set(seen).size).toBe(3);

    const atStop = u.requests.length;
    await r.prober.stop();
    // A probe written just before the stop may still reach the upstream after it (the stop
    // aborts the call, not the bytes already sent): at most that one. A prober still running
    // would probe every 30 ms, so in 100 ms and then 300 ms it would send several more.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const after = u.requests.length;
    expect(after - atStop).toBeLessThanOrEqual(1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(u.requests.length).toBe(after);
  });
});
