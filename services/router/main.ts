import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import { RouterService } from "../../gen/switchyard/router/v1/router_pb.js";
import type { Bus } from "../lib/bus/bus.js";
import type { Config } from "../lib/config/types.js";
import type { ConnectorPool } from "../lib/connector-pool.js";
import type { Logger } from "../lib/logger.js";
import { connectorsGauge, natsConnectedGauge, observedGauge } from "../lib/metrics.js";
import { distinctTargets } from "../lib/targets.js";
import { CircuitBreakers } from "./circuit-breaker.js";
import { HealthView } from "./health-view.js";
import { createRouterService, RouterDrain } from "./router-service.js";

export interface RouterBuild {
  routes(router: ConnectRouter): void;
  /** The service implementation, for in-process callers (createLocalClient). */
  readonly impl: ServiceImpl<typeof RouterService>;
  readonly connectors: ConnectorPool;
  readonly health: HealthView;
  /**
   * Called as a shutdown's drain time runs out: every call still open ends with UNAVAILABLE
   * (the gateway is shutting down), its upstream request stopped.
   */
  cutting(): void;
  close(): Promise<void>;
}

/** The router: model → targets, attempts across connectors, shared health from the bus. */
export function buildRouter(deps: {
  config: Config;
  logger: Logger;
  registry: Registry;
  bus: Bus;
  /** The connectors to spread calls over (kept current by the caller). */
  connectors: ConnectorPool;
}): RouterBuild {
  const { config, connectors } = deps;
  const health = new HealthView(config.health.stale_after_ms);
  health.follow(deps.bus.health, deps.logger);
  const breakers = new CircuitBreakers(
    config.routing.circuit_breaker.consecutive_failures,
    config.routing.circuit_breaker.cooldown_ms,
  );
  natsConnectedGauge(deps.registry, deps.bus);
  connectorsGauge(deps.registry, connectors);
  const targets = distinctTargets(config);
  observedGauge(
    deps.registry,
    "switchyard_router_target_health",
    "Target state in the shared health this router follows: 0 unknown, 1 healthy, 2 degraded, 3 down (stale entries read 0)",
    ["provider", "target"],
    (g) => {
      const now = Date.now();
      for (const t of targets) {
        const h = health.get(t.provider, t.model);
        const fresh = h !== undefined && now - Number(h.updatedMs) <= config.health.stale_after_ms;
        g.set({ provider: t.provider, target: t.model }, fresh ? h.state : 0);
      }
    },
  );
  // A target can be healthy and paused at once: it asked a router to wait (429 or 503 with
  // Retry-After) after a probe had found it answering.
  observedGauge(
    deps.registry,
    "switchyard_router_target_paused_seconds",
    "How long the pause a target asked for (Retry-After) still lasts, in the shared health this router follows; 0 when none",
    ["provider", "target"],
    (g) => {
      for (const t of targets) {
        g.set(
          { provider: t.provider, target: t.model },
          health.pausedMs(t.provider, t.model) / 1000,
        );
      }
    },
  );
  const drain = new RouterDrain();
  const impl = createRouterService({
    drain,
    config,
    connectors,
    health,
    breakers,
    logger: deps.logger,
    registry: deps.registry,
  });
  return {
    routes: (router) => router.service(RouterService, impl),
    impl,
    connectors,
    health,
    cutting: () => drain.cutAll(),
    async close() {
      health.stop();
    },
  };
}
