import type { Client } from "@connectrpc/connect";
import pino from "pino";
import { Registry } from "prom-client";
import type { RouterService } from "../../gen/switchyard/router/v1/router_pb.js";
import { createLimiter, type Limiter } from "../../services/ingress/limits/index.js";
import { buildIngress, type IngressBuild } from "../../services/ingress/main.js";
import type { Config } from "../../services/lib/config/types.js";
import { createDualServer, type DualServer } from "../../services/lib/http/dual-server.js";
import type { Logger } from "../../services/lib/logger.js";

/** What a test's stand-in router answers; a method it leaves out fails every call. */
export type RouterStandIn = Partial<Record<"chat" | "embed", (...args: never[]) => unknown>>;

export interface IngressRig {
  ingress: IngressBuild;
  server: DualServer;
  limiter: Limiter;
  registry: Registry;
  port: number;
  url: string;
  /** Closes the server at once (unless the test closed it itself) and the limiter. */
  close(): Promise<void>;
}

/**
 * The ingress alone, on its dual server at 127.0.0.1 (a free port), in front of a stand-in for
 * the router: for tests of what the edge does with a request or an answer, whatever the router's
 * answer was made of.
 */
export async function startIngress(opts: {
  config: Config;
  router: RouterStandIn;
  logger?: Logger;
}): Promise<IngressRig> {
  const { config } = opts;
  const logger = opts.logger ?? pino({ level: "silent" });
  const registry = new Registry();
  const limiter = await createLimiter({ config, logger, registry });
  const notHere = () => Promise.reject(new Error("not here"));
  const router = { chat: notHere, embed: notHere, ...opts.router } as unknown as Client<
    typeof RouterService
  >;
  const ingress = buildIngress({
    config,
    logger,
    registry,
    router,
    limiter,
    renderMetrics: async () => ({ contentType: "text/plain", body: "" }),
    ready: async () => true,
  });
  const server = createDualServer(ingress.handler);
  const port = await server.listen(0, "127.0.0.1");
  return {
    ingress,
    server,
    limiter,
    registry,
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      if (server.server.listening) await server.close(0);
      await limiter.close();
    },
  };
}
