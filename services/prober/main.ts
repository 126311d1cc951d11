import type { Transport } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import type { Bus } from "../lib/bus/bus.js";
import type { Config } from "../lib/config/types.js";
import { ConnectorPool } from "../lib/connector-pool.js";
import type { Logger } from "../lib/logger.js";
import { createProber, type Prober } from "./prober.js";

/** The health-prober: probes every target through a connector and writes shared health. */
export function buildProber(deps: {
  config: Config;
  logger: Logger;
  registry: Registry;
  bus: Bus;
  connectors: ReadonlyMap<string, Transport>;
}): Prober {
  const connectors = new ConnectorPool();
  for (const [id, transport] of deps.connectors) connectors.add(id, transport);
  return createProber({
    config: deps.config,
    connectors,
    health: deps.bus.health,
    logger: deps.logger,
    registry: deps.registry,
  });
}
