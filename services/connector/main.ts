import type { ConnectRouter } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import { ConnectorService } from "../../gen/switchyard/connector/v1/connector_pb.js";
import type { Config } from "../lib/config/types.js";
import type { Logger } from "../lib/logger.js";
import { createConnectorService } from "./connector-service.js";
import type { Provider } from "./providers/provider.js";
import { createProvider } from "./providers/registry.js";

export interface ConnectorBuild {
  routes(router: ConnectRouter): void;
  close(): Promise<void>;
}

/** The provider-connector: one Provider (credentials + pool) per configured provider. */
export function buildConnector(deps: {
  config: Config;
  logger: Logger;
  registry: Registry;
}): ConnectorBuild {
  const providers = new Map<string, Provider>();
  for (const [name, pc] of Object.entries(deps.config.providers)) {
    providers.set(name, createProvider(name, pc));
  }
  const impl = createConnectorService({ providers, logger: deps.logger, registry: deps.registry });
  return {
    routes: (router) => router.service(ConnectorService, impl),
    async close() {
      await Promise.all([...providers.values()].map((p) => p.close()));
    },
  };
}
