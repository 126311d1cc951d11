import { createHash } from "node:crypto";
import type { TenantConfig } from "../../lib/config/types.js";
import { Failure, LIMITS_UNAVAILABLE } from "../../lib/errors.js";
import { newUuid } from "../../lib/ids.js";
import type { Logger } from "../../lib/logger.js";
import type { FastCounter } from "../../lib/metrics.js";
import {
  allSubjects,
  type Clock,
  DAY,
  type Estimate,
  LIMIT_NAMES,
  LimitExceeded,
  type Limiter,
  type LimitName,
  type Reservation,
  remainingOf,
  type Subject,
  snapshotOf,
  subjectsFor,
  toMicroUsd,
  type UsageLine,
  uncounted,
  utcDay,
  utcMonth,
  WINDOW_MS,
} from "./limiter.js";
import { ADMIT, CANCEL, PEEK, SETTLE } from "./redis-scripts.js";

export interface RedisLimiterOptions {
  url: string;
  /** Prepended to every key. */
  prefix: string;
  onError: "fail_open" | "fail_closed";
  tenants: Record<string, TenantConfig> | undefined;
  clock: Clock;
  /** A lease is renewed while its request lives, but never for longer than this. */
  maxLeaseMs: number;
  /** A lease not renewed for this long (its replica died) frees its slot. Default 30 s. */
  leaseMs?: number;
  /** How long a Redis call may take before it counts as failed. Default 1 s. */
  commandTimeoutMs?: number;
  logger: Logger;
  /** `switchyard_limits_backend_errors_total`, by operation. */
  errors: FastCounter;
}

interface Script {
  lua: string;
  sha: string;
}

const script = (lua: string): Script => ({
  lua,
  sha: createHash("sha1").update(lua).digest("hex"),
});
const ADMIT_SCRIPT = script(ADMIT);
const SETTLE_SCRIPT = script(SETTLE);
const PEEK_SCRIPT = script(PEEK);
const CANCEL_SCRIPT = script(CANCEL);

/** How ioredis refuses a command it never sent (disconnected, and no offline queue). */
const NOT_SENT = "Stream isn't writeable";
/** Settlements kept while Redis cannot be reached, at most; past it the oldest are dropped. */
const MAX_UNSENT_SETTLEMENTS = 10_000;

/** A counted reservation this replica still holds: its lease is renewed until it settles. */
interface Live {
  reservation: Reservation;
  subjects: Subject[];
}

/**
 * Limits shared by every ingress replica through one Redis. Each admission and settlement is one
 * Lua script over the request's keys, so replicas never race. Concurrency slots are leases that
 * this replica renews while the request lives; a replica that dies stops renewing, and its slots
 * come back within `leaseMs`.
 */
export async function createRedisLimiter(opts: RedisLimiterOptions): Promise<Limiter> {
  const { tenants, clock, maxLeaseMs, logger, errors } = opts;
  const leaseMs = opts.leaseMs ?? 30_000;
  // ioredis is loaded only when a config uses Redis (~6 MB of RSS otherwise spent for nothing).
  const { Redis } = await import("ioredis");
  const redis = new Redis(opts.url, {
    lazyConnect: true,
    // While disconnected, calls fail at once (and on_error decides) instead of queueing.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: opts.commandTimeoutMs ?? 1000,
    connectTimeout: 2000,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
  });
  const report = throttledReporter(logger, errors);
  let lost = false;
  let closed = false;
  // Settlements of requests that ended while Redis could not be reached, sent once it is back:
  // else a network partition would leave their slots taken until the leases lapse, and their
  // estimates (max_tokens, the dearest target's price) charged to the day's and month's budgets.
  // Only calls never sent are kept; one that timed out may still run, and must not run twice.
  const unsent: Array<{ keys: string[]; args: string[] }> = [];
  let sending = false;
  redis.on("error", (err: Error) => {
    lost = true;
    report("connection", err);
  });
  redis.on("ready", () => {
    if (lost) logger.info("redis for tenant limits is reachable again");
    lost = false;
    void sendUnsent();
  });
  // Startup does not wait for an unreachable Redis: requests meanwhile follow on_error.
  await redis.connect().catch(() => {});

  const live = new Map<string, Live>();

  const renewal = setInterval(() => void renew(), Math.max(50, Math.floor(leaseMs / 3)));
  renewal.unref();

  function keysOf(s: Subject, at: number): string[] {
    const base = `${opts.prefix}:limits:{${encodeURIComponent(s.tenant)}}:${s.scope === "key" ? `key:${s.key}` : "tenant"}`;
    return [
      `${base}:rpm`,
      `${base}:tpm`,
      `${base}:concurrency`,
      `${base}:day:${utcDay(at).id}`,
      `${base}:usd:${utcMonth(at).id}`,
    ];
  }

  function limitArgs(s: Subject): string[] {
    const l = s.limits;
    return [
      String(l.rpm ?? 0),
      String(l.tpm ?? 0),
      String(l.concurrency ?? 0),
      String(l.daily_tokens ?? 0),
      String(l.monthly_usd === undefined ? 0 : toMicroUsd(l.monthly_usd)),
    ];
  }

  async function run(s: Script, keys: string[], args: string[]): Promise<number[]> {
    let reply: unknown;
    try {
      reply = await redis.evalsha(s.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw err;
      reply = await redis.eval(s.lua, keys.length, ...keys, ...args);
    }
    if (!Array.isArray(reply)) throw new Error("unexpected reply from a limits script");
    return reply.map(Number);
  }

  async function renew(): Promise<void> {
    if (closed || live.size === 0) return;
    const now = clock();
    const pipeline = redis.pipeline();
    let renewing = false;
    for (const [id, { reservation, subjects }] of live) {
      // A request cannot outlive the routing deadline; one that seems to was lost without
      // settling, and its lease is left to lapse.
      if (now - reservation.at > maxLeaseMs) {
        live.delete(id);
        continue;
      }
      for (const s of subjects) {
        if (s.limits.concurrency === undefined) continue;
        const key = keysOf(s, reservation.at)[2] as string;
        pipeline.zadd(key, "XX", now + leaseMs, id);
        pipeline.pexpire(key, leaseMs * 2);
        renewing = true;
      }
    }
    if (!renewing) return;
    try {
      const results = (await pipeline.exec()) ?? [];
      const failed = results.find(([err]) => err);
      if (failed?.[0]) throw failed[0];
    } catch (err) {
      report("renew", err);
    }
  }

  async function admit(tenant: string, keyHash: string, estimate: Estimate): Promise<Reservation> {
    const now = clock();
    const id = newUuid();
    const subjects = subjectsFor(tenants, tenant, keyHash);
    if (subjects.length === 0 || closed) return uncounted(id, tenant, keyHash, now, estimate);
    const tokens = Math.max(0, Math.ceil(estimate.tokens));
    const day = utcDay(now);
    const month = utcMonth(now);
    const args = [
      String(now),
      id,
      String(tokens),
      String(toMicroUsd(estimate.usd)),
      String(WINDOW_MS),
      String(now + leaseMs),
      String(leaseMs * 2),
      // Counters outlive their period a little, for settlements that straddle its end and for
      // usage reports.
      String(day.endsAt + DAY - now),
      String(month.endsAt + 7 * DAY - now),
      String(day.endsAt),
      String(month.endsAt),
      String(subjects.length),
      ...subjects.flatMap(limitArgs),
    ];
    let reply: number[];
    const keys = subjects.flatMap((s) => keysOf(s, now));
    try {
      reply = await run(ADMIT_SCRIPT, keys, args);
    } catch (err) {
      report("admit", err);
      // A call that timed out may still run when Redis catches up: its counts are undone then,
      // or a request this replica refused (or let through uncounted) would hold a slot. (Off
      // the connection, nothing was sent: ioredis does not queue.)
      if (redis.status === "ready")
        void run(CANCEL_SCRIPT, keys, [
          id,
          String(tokens),
          String(toMicroUsd(estimate.usd)),
          String(Math.floor(now / 1000)),
          String(subjects.length),
          ...subjects.flatMap(limitArgs),
        ]).catch((e: unknown) => report("cancel", e));
      if (opts.onError === "fail_closed") {
        throw new Failure({
          status: 503,
          kind: "upstream_unavailable",
          code: LIMITS_UNAVAILABLE,
          retryable: true,
          retryAfterMs: 1000,
          message: "Tenant limits cannot be checked right now; try again shortly.",
        });
      }
      return uncounted(id, tenant, keyHash, now, estimate);
    }

    const [allowed, limitIndex = 0, subjectIndex = 0, retryMs = 0] = reply;
    const before = subjects.map((s, i) => {
      const at = 4 + i * 4;
      return {
        limits: s.limits,
        requests: reply[at] ?? 0,
        requestsResetMs: reply[at + 1] ?? 0,
        tokens: reply[at + 2] ?? 0,
        tokensResetMs: reply[at + 3] ?? 0,
      };
    });
    if (allowed !== 1) {
      const limit = LIMIT_NAMES[limitIndex - 1] as LimitName;
      const s = subjects[subjectIndex] as Subject;
      throw new LimitExceeded(
        limit,
        s.scope,
        s.limits[limit] ?? 0,
        retryMs,
        snapshotOf(before, now, 0, 0),
      );
    }
    const reservation: Reservation = {
      id,
      tenant,
      keyHash,
      at: now,
      estimate,
      snapshot: snapshotOf(before, now, 1, tokens),
      counted: true,
    };
    live.set(id, { reservation, subjects });
    return reservation;
  }

  async function settle(reservation: Reservation, usage: { tokens: number }, costUsd: number) {
    const held = live.get(reservation.id);
    if (!held) return;
    live.delete(reservation.id);
    const now = clock();
    const tokenDelta =
      Math.max(0, Math.ceil(usage.tokens)) - Math.max(0, Math.ceil(reservation.estimate.tokens));
    const microDelta = toMicroUsd(costUsd) - toMicroUsd(reservation.estimate.usd);
    const settlement = {
      keys: held.subjects.flatMap((s) => keysOf(s, reservation.at)),
      args: [
        String(now),
        reservation.id,
        String(tokenDelta),
        String(microDelta),
        String(WINDOW_MS),
        String(Math.floor(reservation.at / 1000)),
        String(held.subjects.length),
        ...held.subjects.flatMap(limitArgs),
      ],
    };
    try {
      await run(SETTLE_SCRIPT, settlement.keys, settlement.args);
    } catch (err) {
      report("settle", err);
      if (notSent(err)) keep(settlement);
      // Otherwise the call may yet run; if it does not, the lease lapses on its own and only
      // the usage correction is lost.
    }
  }

  function keep(settlement: { keys: string[]; args: string[] }) {
    if (closed) return;
    if (unsent.length >= MAX_UNSENT_SETTLEMENTS) unsent.shift();
    unsent.push(settlement);
  }

  /** Sends the settlements kept while Redis was unreachable, oldest first. */
  async function sendUnsent() {
    if (sending) return;
    sending = true;
    try {
      let settlement = unsent.shift();
      while (settlement && !closed) {
        try {
          await run(SETTLE_SCRIPT, settlement.keys, settlement.args);
        } catch (err) {
          report("settle", err);
          if (notSent(err)) {
            unsent.unshift(settlement); // gone again: the next "ready" goes on from here
            return;
          }
        }
        settlement = unsent.shift();
      }
    } finally {
      sending = false;
    }
  }

  async function usage(tenant?: string) {
    const now = clock();
    const subjects = await Promise.all(
      allSubjects(tenants, tenant).map(async (s) => {
        let v: number[];
        try {
          v = await run(PEEK_SCRIPT, keysOf(s, now), [String(now), String(WINDOW_MS), "1"]);
        } catch (err) {
          report("usage", err);
          throw new Failure({
            status: 503,
            kind: "upstream_unavailable",
            code: LIMITS_UNAVAILABLE,
            message: "Redis, where tenant usage is kept, cannot be reached right now.",
          });
        }
        const [requests = 0, requestsReset = 0, tokens = 0, tokensReset = 0, leases = 0] = v;
        const [dayTokens = 0, monthMicro = 0] = v.slice(5);
        const l = s.limits;
        const lines: UsageLine[] = [];
        const line = (limit: LimitName, used: number, max: number, resetMs: number) =>
          lines.push({ limit, used, max, remaining: remainingOf(max, used), resetMs });
        if (l.rpm !== undefined) line("rpm", requests, l.rpm, requestsReset);
        if (l.tpm !== undefined) line("tpm", tokens, l.tpm, tokensReset);
        if (l.concurrency !== undefined) line("concurrency", leases, l.concurrency, 0);
        if (l.daily_tokens !== undefined)
          line("daily_tokens", dayTokens, l.daily_tokens, utcDay(now).endsAt - now);
        if (l.monthly_usd !== undefined)
          line("monthly_usd", monthMicro / 1_000_000, l.monthly_usd, utcMonth(now).endsAt - now);
        return s.scope === "key"
          ? { tenant: s.tenant, key: s.key, lines }
          : { tenant: s.tenant, lines };
      }),
    );
    return { backend: "redis" as const, at: now, subjects };
  }

  async function close() {
    if (closed) return;
    closed = true;
    clearInterval(renewal);
    // Slots of requests cut by the shutdown go back now rather than when their leases lapse.
    const pipeline = redis.pipeline();
    for (const { reservation, subjects } of live.values()) {
      for (const s of subjects) {
        if (s.limits.concurrency !== undefined)
          pipeline.zrem(keysOf(s, reservation.at)[2] as string, reservation.id);
      }
    }
    live.clear();
    if (pipeline.length > 0) await pipeline.exec().catch(() => {});
    await redis.quit().catch(() => redis.disconnect());
  }

  return { backend: "redis", admit, settle, usage, close };
}

function notSent(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith(NOT_SENT);
}

/**
 * Counts every backend error and logs it, but at most one line per operation every 10 s: an
 * outage must not turn into a log line per request.
 */
function throttledReporter(logger: Logger, errors: FastCounter) {
  const lastLogged = new Map<string, number>();
  const suppressed = new Map<string, number>();
  return (op: string, err: unknown) => {
    errors.inc({ op });
    const t = performance.now();
    const last = lastLogged.get(op);
    if (last !== undefined && t - last < 10_000) {
      suppressed.set(op, (suppressed.get(op) ?? 0) + 1);
      return;
    }
    lastLogged.set(op, t);
    const more = suppressed.get(op) ?? 0;
    suppressed.delete(op);
    logger.error(
      { op, err: err instanceof Error ? err.message : String(err), suppressed: more || undefined },
      "redis for tenant limits failed",
    );
  };
}
