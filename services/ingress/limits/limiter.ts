// Tenant limits as the ingress enforces them: `admit` before a request is routed (counts the
// request, takes a concurrency slot, reserves the estimated tokens and cost), `settle` once its
// real usage is known (gives the slot back, replaces the estimate with what was used).
//
// Both backends share these semantics:
// - rpm: a sliding log of admitted requests over the last 60 s; exact.
// - tpm: tokens per one-second bucket, summed over the last 60 buckets; a reservation's bucket is
//   corrected in place when it settles.
// - concurrency: leases that expire unless renewed, so a crashed replica's slots come back.
// - daily_tokens / monthly_usd: counters per UTC day / UTC month.
// A request is refused while a counter is at or over its limit; a token or money counter below
// it admits one more request, whose reservation may take it past. That bounds an overshoot by one
// request's usage and never refuses a request early because of a pessimistic estimate.

import type { TenantConfig, TenantLimits } from "../../lib/config/types.js";
import { Failure } from "../../lib/errors.js";

/** Epoch milliseconds; injected so tests can move time. */
export type Clock = () => number;

export type LimitName = "rpm" | "tpm" | "concurrency" | "daily_tokens" | "monthly_usd";
export const LIMIT_NAMES: readonly LimitName[] = [
  "rpm",
  "tpm",
  "concurrency",
  "daily_tokens",
  "monthly_usd",
];

/** The span rpm and tpm count over. */
export const WINDOW_MS = 60_000;
/** What a refused concurrency slot tells the client to wait: slots free when requests end. */
export const CONCURRENCY_RETRY_MS = 1000;

/** What a request is expected to use, reserved at admission. */
export interface Estimate {
  tokens: number;
  usd: number;
}

/** Where one counter stands, as the rate-limit response headers tell it. */
export interface Quota {
  limit: number;
  remaining: number;
  /** Until the counter is back to empty, if nothing else is admitted. */
  resetMs: number;
}

/** Requests and tokens left in the current window: the tightest of the tenant's and the key's. */
export interface LimitSnapshot {
  requests?: Quota;
  tokens?: Quota;
}

export interface Reservation {
  readonly id: string;
  readonly tenant: string;
  readonly keyHash: string;
  /** Clock time of admission: names the tpm bucket and the day and month it was counted in. */
  readonly at: number;
  readonly estimate: Estimate;
  /** Counters after this admission, for the response headers. */
  readonly snapshot: LimitSnapshot;
  /** False when nothing was counted: no limits apply, or the backend failed open. */
  readonly counted: boolean;
}

export interface UsageLine {
  limit: LimitName;
  used: number;
  max: number;
  remaining: number;
  /** Until the counter is back to empty (rpm, tpm) or its period ends (budgets); 0 if empty. */
  resetMs: number;
}

export interface SubjectUsage {
  tenant: string;
  /** Set for per-key limits: the first characters of the key's hash (never the key). */
  key?: string;
  lines: UsageLine[];
}

export interface UsageReport {
  backend: "memory" | "redis";
  /** Clock time the report was taken. */
  at: number;
  subjects: SubjectUsage[];
}

export interface Limiter {
  readonly backend: "memory" | "redis";
  /**
   * Counts a request of `tenant` (through the key with hash `keyHash`) and reserves `estimate`.
   * Throws LimitExceeded (429) when a limit is reached, or a 503 Failure when the backend fails
   * and the config says fail_closed.
   */
  admit(tenant: string, keyHash: string, estimate: Estimate): Promise<Reservation>;
  /**
   * Ends a reservation with the request's real usage: releases its concurrency slot and replaces
   * the estimate with `usage.tokens` and `costUsd`. Never throws; settling twice does nothing.
   */
  settle(reservation: Reservation, usage: { tokens: number }, costUsd: number): Promise<void>;
  /** Current usage against limits, for one tenant or all. */
  usage(tenant?: string): Promise<UsageReport>;
  close(): Promise<void>;
}

/** A refused admission: which limit, for whom, and when to retry. */
export class LimitExceeded extends Failure {
  constructor(
    readonly limit: LimitName,
    readonly scope: "tenant" | "key",
    max: number,
    retryAfterMs: number,
    readonly snapshot: LimitSnapshot,
  ) {
    const budget = limit === "daily_tokens" || limit === "monthly_usd";
    const who = scope === "key" ? "this API key" : "this tenant";
    super({
      status: 429,
      kind: "rate_limited",
      code: budget ? "insufficient_quota" : "rate_limit_exceeded",
      retryable: true,
      retryAfterMs: Math.max(1, Math.ceil(retryAfterMs)),
      message: `${DESCRIPTIONS[limit]} of ${who} reached (${limit}: ${max}). Retry in ${retryText(retryAfterMs)}.`,
    });
    this.name = "LimitExceeded";
  }
}

const DESCRIPTIONS: Record<LimitName, string> = {
  rpm: "Rate limit on requests per minute",
  tpm: "Rate limit on tokens per minute",
  concurrency: "Limit on concurrent requests",
  daily_tokens: "Daily token budget",
  monthly_usd: "Monthly spend budget",
};

function retryText(ms: number): string {
  const s = Math.max(1, Math.ceil(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.ceil(s / 60)}m`;
  return `${Math.ceil(s / 3600)}h`;
}

/** The limits one request is counted against: its tenant's, then its key's own. */
export interface Subject {
  scope: "tenant" | "key";
  tenant: string;
  /** "" for the tenant; the key's id for a key. */
  key: string;
  limits: TenantLimits;
}

/** A stable short id for a key's counters: its hash, shortened; never the key itself. */
export function keyId(keyHash: string): string {
  return keyHash.replace(/^sha256:/, "").slice(0, 16);
}

export function subjectsFor(
  tenants: Record<string, TenantConfig> | undefined,
  tenant: string,
  keyHash: string,
): Subject[] {
  const t = tenants?.[tenant];
  if (!t) return [];
  const out: Subject[] = [];
  if (hasLimits(t.limits)) out.push({ scope: "tenant", tenant, key: "", limits: t.limits });
  const own = t.key_options?.[keyHash]?.limits;
  if (own && hasLimits(own)) out.push({ scope: "key", tenant, key: keyId(keyHash), limits: own });
  return out;
}

/** Every subject of a tenant (or of all tenants) that has limits, for usage reports. */
export function allSubjects(
  tenants: Record<string, TenantConfig> | undefined,
  only?: string,
): Subject[] {
  const out: Subject[] = [];
  for (const [tenant, t] of Object.entries(tenants ?? {})) {
    if (only !== undefined && tenant !== only) continue;
    out.push({ scope: "tenant", tenant, key: "", limits: t.limits });
    for (const [hash, options] of Object.entries(t.key_options ?? {})) {
      if (options.limits && hasLimits(options.limits)) {
        out.push({ scope: "key", tenant, key: keyId(hash), limits: options.limits });
      }
    }
  }
  return out;
}

function hasLimits(limits: TenantLimits): boolean {
  return LIMIT_NAMES.some((name) => limits[name] !== undefined);
}

/** What is left under a limit, without float dust on money (counted in micro-dollars). */
export function remainingOf(max: number, used: number): number {
  return Math.max(0, Math.round((max - used) * 1_000_000) / 1_000_000);
}

/** Money is counted in whole micro-dollars so counters add up exactly. */
export function toMicroUsd(usd: number): number {
  return Math.max(0, Math.round(usd * 1_000_000));
}

/** The UTC day of `now` as YYYYMMDD, and when it ends. */
export function utcDay(now: number): { id: string; endsAt: number } {
  const d = new Date(now);
  const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
  return {
    id: new Date(start).toISOString().slice(0, 10).replaceAll("-", ""),
    endsAt: start + DAY,
  };
}

/** The UTC month of `now` as YYYYMM, and when it starts and ends. */
export function utcMonth(now: number): { id: string; startsAt: number; endsAt: number } {
  const d = new Date(now);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  return {
    id: `${y}${String(m + 1).padStart(2, "0")}`,
    startsAt: Date.UTC(y, m, 1),
    endsAt: Date.UTC(y, m + 1, 1),
  };
}

export const DAY = 86_400_000;

/** One subject's rpm and tpm windows as an admission found them. */
export interface WindowCounts {
  limits: TenantLimits;
  requests: number;
  /** Until the newest counted request leaves the window; 0 when empty. */
  requestsResetMs: number;
  tokens: number;
  /** Until the newest tokens bucket leaves the window; 0 when empty. */
  tokensResetMs: number;
}

/**
 * The headers' view of the counters after `requests` and `tokens` were added at `now`: per
 * dimension, the subject (tenant or key) with the fewest left.
 */
export function snapshotOf(
  counts: readonly WindowCounts[],
  now: number,
  requests: number,
  tokens: number,
): LimitSnapshot {
  const out: LimitSnapshot = {};
  for (const c of counts) {
    const { rpm, tpm } = c.limits;
    if (rpm !== undefined) {
      out.requests = tightest(out.requests, {
        limit: rpm,
        remaining: Math.max(0, rpm - c.requests - requests),
        resetMs: requests > 0 ? WINDOW_MS : Math.max(0, c.requestsResetMs),
      });
    }
    if (tpm !== undefined) {
      out.tokens = tightest(out.tokens, {
        limit: tpm,
        remaining: Math.max(0, tpm - c.tokens - tokens),
        // The bucket of this second is the newest; it leaves the window 60 s after it began.
        resetMs:
          tokens > 0
            ? Math.floor(now / 1000) * 1000 + WINDOW_MS - now
            : Math.max(0, c.tokensResetMs),
      });
    }
  }
  return out;
}

function tightest(a: Quota | undefined, b: Quota): Quota {
  return a && a.remaining <= b.remaining ? a : b;
}

/** A reservation that counted nothing (no limits apply, or the backend failed open). */
export function uncounted(
  id: string,
  tenant: string,
  keyHash: string,
  at: number,
  estimate: Estimate,
): Reservation {
  return { id, tenant, keyHash, at, estimate, snapshot: {}, counted: false };
}
