import type { Registry } from "prom-client";
import type { Config } from "../../lib/config/types.js";
import type { Logger } from "../../lib/logger.js";
import { counter, gauge } from "../../lib/metrics.js";
import { type Clock, LimitExceeded, type Limiter } from "./limiter.js";
import { createMemoryLimiter } from "./memory.js";
import { createRedisLimiter } from "./redis.js";

export type { Clock, Estimate, Limiter, Reservation } from "./limiter.js";
export { LimitExceeded } from "./limiter.js";

/** How long past the routing deadline a lease may live before it is taken for lost. */
const LEASE_GRACE_MS = 60_000;

/**
 * The limiter the config asks for: in Redis (shared by every ingress replica) when `redis` is
 * set, else in this process. Its metrics go to `registry`.
 */
export async function createLimiter(opts: {
  config: Config;
  logger: Logger;
  registry: Registry;
  clock?: Clock;
}): Promise<Limiter> {
  const { config, logger, registry } = opts;
  const clock = opts.clock ?? Date.now;
  const errors = counter(
    registry,
    "switchyard_limits_backend_errors_total",
    "Failed calls to the shared store of tenant limits (Redis), by operation",
    ["op"],
  );
  const rejections = counter(
    registry,
    "switchyard_limit_rejections_total",
    "Requests refused because a tenant or key limit was reached",
    ["tenant", "limit", "scope"],
  );
  // The budgets spend is measured against, so an alert can compare the two (budget burn).
  const budgets = gauge(
    registry,
    "switchyard_tenant_budget_usd",
    "Each tenant's configured monthly spend limit (limits.monthly_usd), in USD",
    ["tenant"],
  );
  for (const [tenant, t] of Object.entries(config.tenants ?? {})) {
    if (t.limits.monthly_usd !== undefined) budgets.set({ tenant }, t.limits.monthly_usd);
  }
  const maxLeaseMs = config.routing.timeouts.total_ms + LEASE_GRACE_MS;
  const inner = config.redis
    ? await createRedisLimiter({
        url: config.redis.url,
        prefix: config.redis.prefix ?? "switchyard",
        onError: config.redis.on_error,
        tenants: config.tenants,
        clock,
        maxLeaseMs,
        logger,
        errors,
      })
    : createMemoryLimiter({ tenants: config.tenants, clock, maxLeaseMs });
  return {
    backend: inner.backend,
    async admit(tenant, keyHash, estimate) {
      try {
        return await inner.admit(tenant, keyHash, estimate);
      } catch (err) {
        if (err instanceof LimitExceeded) {
          rejections.inc({ tenant, limit: err.limit, scope: err.scope });
        }
        throw err;
      }
    },
    settle: (reservation, usage, costUsd) => inner.settle(reservation, usage, costUsd),
    usage: (tenant) => inner.usage(tenant),
    close: () => inner.close(),
  };
}
