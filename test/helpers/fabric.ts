import pino from "pino";
import { type Fabric, SERVICE_NAMES, startFabric } from "../../services/fabric.js";
import type { Clock } from "../../services/ingress/limits/index.js";
import { parseConfigText } from "../../services/lib/config/load.js";
import type { Config } from "../../services/lib/config/types.js";
import type { Logger } from "../../services/lib/logger.js";

/** A Config from YAML text, failing loudly if the test wrote an invalid one. */
export function testConfig(yaml: string, env: Record<string, string> = {}): Config {
  const { config, problems } = parseConfigText(yaml, env, "test.yaml");
  if (!config)
    throw new Error(
      `invalid test config:\n${problems.map((p) => `${p.path}: ${p.reason}`).join("\n")}`,
    );
  return config;
}

export interface RunningFabric {
  fabric: Fabric;
  /** e.g. http://127.0.0.1:PORT */
  url: string;
  stop(): Promise<void>;
}

/**
 * All four services in this process, the ingress on a free loopback port. Logs go nowhere
 * unless `logger` is given (e.g. one writing to a stream the test reads); tenant limits count
 * by `clock` when it is given.
 */
export async function startOneProcess(
  config: Config,
  opts: { logger?: Logger; clock?: Clock } = {},
): Promise<RunningFabric> {
  const logger = opts.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
  const fabric = await startFabric({
    config,
    services: new Set(SERVICE_NAMES),
    logger,
    listen: { ingress: { host: "127.0.0.1", port: 0 } },
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  return {
    fabric,
    url: `http://127.0.0.1:${fabric.ports.ingress}`,
    stop: () => fabric.stop(1000),
  };
}
