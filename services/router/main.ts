import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import { RouterService } from "../../gen/switchyard/router/v1/router_pb.js";
import type { Bus } from "../lib/bus/bus.js";
import type { Config } from "../lib/config/types.js";
import type { ConnectorPool } from "../lib/connector-pool.js";
import type { Logger } from "../lib/logger.js";
import { CircuitBreakers } from "./circuit-breaker.js";
import { HealthView } from "./health-view.js";
import { createRouterService } from "./router-service.js";

export interface RouterBuild {
  routes(router: ConnectRouter): void;
  /** The service implementation, for in-process callers (createLocalTransport). */
  readonly impl: ServiceImpl<typeof RouterService>;
  readonly connectors: ConnectorPool;
  readonly health: HealthView;
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
  const impl = createRouterService({
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
    async close() {
      health.stop();
    },
  };
}
