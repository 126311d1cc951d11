import type { Registry } from "prom-client";
import type { Bus } from "../lib/bus/bus.js";
import type { Config } from "../lib/config/types.js";
import type { ConnectorPool } from "../lib/connector-pool.js";
import type { Logger } from "../lib/logger.js";
import { connectorsGauge, natsConnectedGauge } from "../lib/metrics.js";
import { createProber, type Prober } from "./prober.js";

/** The health-prober: probes every target through a connector and writes shared health. */
export function buildProber(deps: {
  config: Config;
  logger: Logger;
  registry: Registry;
  bus: Bus;
  connectors: ConnectorPool;
  /** This prober's identity in the election for the active prober. */
  holder: string;
}): Prober {
  natsConnectedGauge(deps.registry, deps.bus);
  connectorsGauge(deps.registry, deps.connectors);
  return createProber({
    config: deps.config,
    connectors: deps.connectors,
    health: deps.bus.health,
    logger: deps.logger,
    registry: deps.registry,
    lease: deps.bus.lease("prober", deps.holder),
    outcomes: (signal) => deps.bus.outcomes(signal),
  });
}
