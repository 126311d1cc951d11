import { setMaxListeners } from "node:events";
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import { ConnectorService } from "../../gen/switchyard/connector/v1/connector_pb.js";
import type { Bus } from "../lib/bus/bus.js";
import type { Config } from "../lib/config/types.js";
import type { Logger } from "../lib/logger.js";
import { natsConnectedGauge } from "../lib/metrics.js";
import { CUT_BY_SHUTDOWN, createConnectorService } from "./connector-service.js";
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
  /**
   * For the servers that take this connector's calls from other processes (their
   * `shutdownSignal`): aborted by cutting().
   */
  readonly shutdownSignal: AbortSignal;
  /**
   * Called as the drain time runs out: every call still open over the network, and every one
   * that comes after, ends with shuttingDown, which the router takes for neither the target's
   * failure nor a lost connector (see RouterDrain for the router's own). In-process callers
   * (the router of this process) are not cut here: their own drain cuts them.
   */
  cutting(): void;
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
  const cut = new AbortController();
  // connect-node listens to it once per open call.
  setMaxListeners(0, cut.signal);
  return {
    routes: (router) => router.service(ConnectorService, impl),
    impl,
    providers: [...providers.keys()],
    load,
    shutdownSignal: cut.signal,
    cutting: () => cut.abort(CUT_BY_SHUTDOWN),
    async close() {
      outcomes?.flush();
      await Promise.all([...providers.values()].map((p) => p.close()));
    },
  };
}
