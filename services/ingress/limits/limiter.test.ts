import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  CLOSED_REDIS_URL,
  connectTestRedis,
  dropPrefix,
  startPrivateRedis,
  TEST_REDIS_URL,
  uniquePrefix,
} from "../../../test/helpers/redis.js";
import { hashKey } from "../../lib/config/keys.js";
import type { TenantConfig } from "../../lib/config/types.js";
import { Failure } from "../../lib/errors.js";
import { counter } from "../../lib/metrics.js";
import { type Clock, LimitExceeded, type Limiter, type LimitName } from "./limiter.js";
import { createMemoryLimiter } from "./memory.js";
import { createRedisLimiter } from "./redis.js";

const KEY_A = hashKey("key-a");
const KEY_B = hashKey("key-b");
const silent = pino({ level: "silent" });

type Tenants = Record<string, TenantConfig>;
type Make = (tenants: Tenants, clock: Clock) => Promise<Limiter>;

let redis: Awaited<ReturnType<typeof connectTestRedis>>;
let prefix: string;
const opened: Limiter[] = [];

beforeAll(async () => {
  redis = await connectTestRedis();
});
afterAll(async () => {
  redis?.disconnect();
});
beforeEach(() => {
  prefix = uniquePrefix();
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((l) => l.close()));
  await dropPrefix(redis, prefix);
});

function redisLimiter(
  tenants: Tenants,
  clock: Clock,
  more: { leaseMs?: number; url?: string; onError?: "fail_open" | "fail_closed" } = {},
) {
  const registry = new Registry();
  const errors = counter(registry, "switchyard_limits_backend_errors_total", "errors", ["op"]);
  return {
    registry,
    limiter: createRedisLimiter({
      url: more.url ?? TEST_REDIS_URL,
      prefix,
      onError: more.onError ?? "fail_closed",
      tenants,
      clock,
      maxLeaseMs: 600_000,
      ...(more.leaseMs === undefined ? {} : { leaseMs: more.leaseMs }),
      logger: silent,
      errors,
    }).then((l) => {
      opened.push(l);
      return l;
    }),
  };
}

const backends: Array<[string, Make]> = [
  [
    "memory",
    async (tenants, clock) => {
      const l = createMemoryLimiter({ tenants, clock, maxLeaseMs: 600_000 });
      opened.push(l);
      return l;
    },
  ],
  ["redis", (tenants, clock) => redisLimiter(tenants, clock).limiter],
];

/** The refusal an admission ends in, or a failed expectation if it was admitted. */
async function refusal(p: Promise<unknown>): Promise<LimitExceeded> {
  try {
    await p;
  } catch (err) {
    if (err instanceof LimitExceeded) return err;
    throw err;
  }
  throw new Error("expected the admission to be refused");
}

function tenant(limits: TenantConfig["limits"], extra: Partial<TenantConfig> = {}): Tenants {
  return { acme: { keys: [KEY_A, KEY_B], limits, ...extra } };
}

async function used(l: Limiter, limit: LimitName, key?: string): Promise<number | undefined> {
  const report = await l.usage("acme");
  const subject = report.subjects.find((s) => s.key === key);
  return subject?.lines.find((line) => line.limit === limit)?.used;
}

describe.each(backends)("%s limiter", (_name, make) => {
  let now: number;
  const clock = () => now;
  beforeEach(() => {
    now = Date.UTC(2026, 2, 10, 12, 0, 0);
  });

  it("admits rpm requests up to the limit over a sliding minute, then says when one frees", async () => {
    const l = await make(tenant({ rpm: 3 }), clock);
    const remaining: Array<number | undefined> = [];
    for (let i = 0; i < 3; i++) {
      remaining.push(
        (await l.admit("acme", KEY_A, { tokens: 1, usd: 0 })).snapshot.requests?.remaining,
      );
      now += 10_000;
    }
    expect(remaining).toEqual([2, 1, 0]);
    const refused = await refusal(l.admit("acme", KEY_A, { tokens: 1, usd: 0 }));
    expect(refused.limit).toBe("rpm");
    expect(refused.status).toBe(429);
    expect(refused.retryAfterMs).toBe(30_000); // the first request leaves the window at +60 s
    now += 30_000;
    await l.admit("acme", KEY_A, { tokens: 1, usd: 0 });
    expect((await refusal(l.admit("acme", KEY_A, { tokens: 1, usd: 0 }))).retryAfterMs).toBe(
      10_000,
    );
  });

  it("reserves estimated tokens, then settles tpm and the daily count to the real usage", async () => {
    const l = await make(tenant({ tpm: 1000, daily_tokens: 10_000 }), clock);
    const first = await l.admit("acme", KEY_A, { tokens: 800, usd: 0 });
    expect(first.snapshot.tokens).toMatchObject({ limit: 1000, remaining: 200 });
    expect(await used(l, "tpm")).toBe(800);
    await l.settle(first, { tokens: 150 }, 0);
    expect(await used(l, "tpm")).toBe(150);
    expect(await used(l, "daily_tokens")).toBe(150);
    // Below the limit one more request is admitted, whatever its estimate; at it, none is.
    await l.admit("acme", KEY_A, { tokens: 900, usd: 0 });
    expect(await used(l, "tpm")).toBe(1050);
    now += 1500;
    const refused = await refusal(l.admit("acme", KEY_A, { tokens: 10, usd: 0 }));
    expect(refused.limit).toBe("tpm");
    expect(refused.retryAfterMs).toBe(60_000 - 1500);
    now += 60_000;
    await l.admit("acme", KEY_A, { tokens: 10, usd: 0 });
  });

  it("holds concurrency slots until requests settle, and frees each only once", async () => {
    const l = await make(tenant({ concurrency: 2 }), clock);
    const a = await l.admit("acme", KEY_A, { tokens: 1, usd: 0 });
    await l.admit("acme", KEY_A, { tokens: 1, usd: 0 });
    expect((await refusal(l.admit("acme", KEY_A, { tokens: 1, usd: 0 }))).limit).toBe(
      "concurrency",
    );
    await l.settle(a, { tokens: 1 }, 0);
    await l.admit("acme", KEY_B, { tokens: 1, usd: 0 });
    await l.settle(a, { tokens: 1 }, 0);
    expect((await refusal(l.admit("acme", KEY_A, { tokens: 1, usd: 0 }))).limit).toBe(
      "concurrency",
    );
    expect(await used(l, "concurrency")).toBe(2);
  });

  it("stops a tenant once its daily token budget is spent, and resumes the next UTC day", async () => {
    now = Date.UTC(2026, 2, 10, 23, 59, 0);
    const l = await make(tenant({ daily_tokens: 1000 }), clock);
    const r = await l.admit("acme", KEY_A, { tokens: 300, usd: 0 });
    await l.settle(r, { tokens: 1200 }, 0);
    const refused = await refusal(l.admit("acme", KEY_A, { tokens: 1, usd: 0 }));
    expect(refused.limit).toBe("daily_tokens");
    expect(refused.code).toBe("insufficient_quota");
    expect(refused.retryAfterMs).toBe(60_000);
    now += 60_000;
    await l.admit("acme", KEY_A, { tokens: 1, usd: 0 });
    expect(await used(l, "daily_tokens")).toBe(1);
  });

  it("stops a tenant once its monthly spend is reached, and resumes the next UTC month", async () => {
    now = Date.UTC(2026, 2, 31, 23, 0, 0);
    const l = await make(tenant({ monthly_usd: 2 }), clock);
    const r = await l.admit("acme", KEY_A, { tokens: 1, usd: 0.5 });
    expect(await used(l, "monthly_usd")).toBe(0.5);
    await l.settle(r, { tokens: 1 }, 2.25);
    expect(await used(l, "monthly_usd")).toBe(2.25);
    const refused = await refusal(l.admit("acme", KEY_A, { tokens: 1, usd: 0.01 }));
    expect(refused.limit).toBe("monthly_usd");
    expect(refused.retryAfterMs).toBe(3_600_000);
    now = Date.UTC(2026, 3, 1, 0, 0, 1);
    await l.admit("acme", KEY_A, { tokens: 1, usd: 0.01 });
    expect(await used(l, "monthly_usd")).toBe(0.01);
  });

  it("enforces a key's own limits on top of its tenant's", async () => {
    const l = await make(
      tenant({ rpm: 10 }, { key_options: { [KEY_A]: { limits: { rpm: 2 } } } }),
      clock,
    );
    await l.admit("acme", KEY_A, { tokens: 1, usd: 0 });
    const second = await l.admit("acme", KEY_A, { tokens: 1, usd: 0 });
    // The headers show the tighter of the two: the key's.
    expect(second.snapshot.requests).toMatchObject({ limit: 2, remaining: 0 });
    const refused = await refusal(l.admit("acme", KEY_A, { tokens: 1, usd: 0 }));
    expect([refused.limit, refused.scope]).toEqual(["rpm", "key"]);
    const other = await l.admit("acme", KEY_B, { tokens: 1, usd: 0 });
    expect(other.snapshot.requests).toMatchObject({ limit: 10, remaining: 7 });
  });

  it("counts nothing for a tenant without limits", async () => {
    const l = await make(tenant({}), clock);
    const r = await l.admit("acme", KEY_A, { tokens: 1, usd: 0 });
    expect(r.counted).toBe(false);
    expect(r.snapshot).toEqual({});
  });
});

describe("redis limiter across replicas", () => {
  it("admits exactly rpm requests when three replicas race for them", async () => {
    const tenants = tenant({ rpm: 60 });
    const replicas = await Promise.all(
      [0, 1, 2].map(() => redisLimiter(tenants, Date.now).limiter),
    );
    const results = await Promise.allSettled(
      Array.from({ length: 150 }, (_, i) =>
        replicas[i % 3]?.admit("acme", KEY_A, { tokens: 1, usd: 0 }),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(60);
    const refused = results.filter((r) => r.status === "rejected");
    expect(
      refused.every((r) => r.reason instanceof LimitExceeded && r.reason.limit === "rpm"),
    ).toBe(true);
  });

  it("shares concurrency slots, and a replica that stops renewing loses them after the lease", async () => {
    let now = Date.UTC(2026, 2, 10, 12, 0, 0);
    const tenants = tenant({ concurrency: 1 });
    const a = await redisLimiter(tenants, () => now, { leaseMs: 30_000 }).limiter;
    const b = await redisLimiter(tenants, () => now, { leaseMs: 30_000 }).limiter;
    await a.admit("acme", KEY_A, { tokens: 1, usd: 0 });
    expect((await refusal(b.admit("acme", KEY_A, { tokens: 1, usd: 0 }))).limit).toBe(
      "concurrency",
    );
    // Replica a "crashes": its clock-time lease is never renewed past now + 30 s.
    now += 30_001;
    await b.admit("acme", KEY_A, { tokens: 1, usd: 0 });
  });

  it("renews the leases of requests still running", async () => {
    const tenants = tenant({ concurrency: 1 });
    const a = await redisLimiter(tenants, Date.now, { leaseMs: 300 }).limiter;
    const b = await redisLimiter(tenants, Date.now, { leaseMs: 300 }).limiter;
    const held = await a.admit("acme", KEY_A, { tokens: 1, usd: 0 });
    await new Promise((r) => setTimeout(r, 1000));
    expect((await refusal(b.admit("acme", KEY_A, { tokens: 1, usd: 0 }))).limit).toBe(
      "concurrency",
    );
    await a.settle(held, { tokens: 1 }, 0);
    await b.admit("acme", KEY_A, { tokens: 1, usd: 0 });
  });
});

describe("redis limiter with a Redis that stalls past the command timeout", () => {
  it("undoes an admission that ran after its call had timed out", async () => {
    const own = await startPrivateRedis();
    try {
      const registry = new Registry();
      const errors = counter(registry, "switchyard_limits_backend_errors_total", "errors", ["op"]);
      const l = await createRedisLimiter({
        url: own.url,
        prefix,
        onError: "fail_closed",
        tenants: tenant({ rpm: 10, tpm: 100_000, concurrency: 1 }),
        clock: Date.now,
        maxLeaseMs: 600_000,
        commandTimeoutMs: 200,
        logger: silent,
        errors,
      });
      opened.push(l);
      // Loads the script, so the stalled call is a plain EVALSHA that Redis runs when it wakes.
      const warm = await l.admit("acme", KEY_A, { tokens: 50, usd: 0 });
      await l.settle(warm, { tokens: 50 }, 0);
      own.pause();
      const refused = await l.admit("acme", KEY_A, { tokens: 50, usd: 0 }).catch((e: unknown) => e);
      expect(refused).toMatchObject({ status: 503, code: "limits_unavailable" });
      own.resume();
      // Redis now runs the stalled admission, then its undoing: the slot is free, the request
      // and its estimate are not counted.
      for (let i = 0; i < 50 && (await used(l, "rpm")) !== 1; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await used(l, "rpm")).toBe(1);
      expect(await used(l, "concurrency")).toBe(0);
      expect(await used(l, "tpm")).toBe(50);
      // And the tenant is not locked out.
      expect((await l.admit("acme", KEY_A, { tokens: 1, usd: 0 })).counted).toBe(true);
    } finally {
      await own.stop();
    }
  });
});

describe("redis limiter with Redis unreachable", () => {
  it("fails open: admits without counting, and counts the backend error", async () => {
    const { limiter, registry } = redisLimiter(tenant({ rpm: 1 }), Date.now, {
      url: CLOSED_REDIS_URL,
      onError: "fail_open",
    });
    const l = await limiter;
    for (let i = 0; i < 3; i++) {
      expect((await l.admit("acme", KEY_A, { tokens: 1, usd: 0 })).counted).toBe(false);
    }
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/switchyard_limits_backend_errors_total\{op="admit"\} 3/);
  });

  it("fails closed: refuses with 503", async () => {
    const l = await redisLimiter(tenant({ rpm: 1 }), Date.now, {
      url: CLOSED_REDIS_URL,
      onError: "fail_closed",
    }).limiter;
    const err = await l.admit("acme", KEY_A, { tokens: 1, usd: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Failure);
    expect(err).toMatchObject({ status: 503, code: "limits_unavailable" });
  });
});
