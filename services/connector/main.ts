import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import { ConnectorService } from "../../gen/switchyard/connector/v1/connector_pb.js";
import type { Bus } from "../lib/bus/bus.js";
import type { Config } from "../lib/config/types.js";
import type { Logger } from "../lib/logger.js";
import { natsConnectedGauge } from "../lib/metrics.js";
import { createConnectorService } from "./connector-service.js";
import { OutcomeReporter } from "./outcomes.js";
import type { Provider } from "./providers/provider.js";
import { createProvider } from "./providers/registry.js";

export interface ConnectorBuild {
  routes(router: ConnectRouter): void;
  /** The service implementation, for in-process callers (createLocalClient). */
  readonly impl: ServiceImpl<typeof ConnectorService>;
  /** Names of the providers this connector serves. */
  readonly providers: string[];
  /** Calls in flight right now. */
  readonly load: { inflight: number };
  close(): Promise<void>;
}

/** The provider-connector: one Provider (credentials + pool) per configured provider. */
export function buildConnector(deps: {
  config: Config;
  logger: Logger;
  registry: Registry;
  /** Where passive health outcomes go (with the id they are reported under). */
  outcomes?: { bus: Bus; connectorId: string };
}): ConnectorBuild {
  const providers = new Map<string, Provider>();
  for (const [name, pc] of Object.entries(deps.config.providers)) {
    const provider = createProvider(name, pc);
    providers.set(name, provider);
    for (const caveat of provider.caveats ?? []) deps.logger.warn({ provider: name }, caveat);
  }
  if (deps.outcomes) natsConnectedGauge(deps.registry, deps.outcomes.bus);
  const load = { inflight: 0 };
  const outcomes = deps.outcomes
    ? new OutcomeReporter(deps.outcomes.bus, deps.outcomes.connectorId)
    : undefined;
  const impl = createConnectorService({
    providers,
    logger: deps.logger,
    registry: deps.registry,
    load,
    ...(outcomes ? { outcomes } : {}),
  });
  return {
    routes: (router) => router.service(ConnectorService, impl),
    impl,
    providers: [...providers.keys()],
    load,
    async close() {
      outcomes?.flush();
      await Promise.all([...providers.values()].map((p) => p.close()));
    },
  };
}
