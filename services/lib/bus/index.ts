import type { Logger } from "pino";
import type { Bus } from "./bus.js";
import { createMemoryBus } from "./memory.js";
import { connectNatsBusWithRetry } from "./nats.js";

export type { Bus, HealthStore } from "./bus.js";
export { ANNOUNCE_SUBJECT, HEALTH_BUCKET, OUTCOMES_SUBJECT } from "./bus.js";
export { createMemoryBus } from "./memory.js";
export {
  connectNatsBus,
  connectNatsBusWithRetry,
  decodeTargetKey,
  encodeTargetKey,
  type NatsBusOptions,
  redactNatsUrl,
} from "./nats.js";

export interface CreateBusOptions {
  /** `nats.url` from the config; absent or empty means the in-memory bus. */
  natsUrl?: string | undefined;
  /** Connection name, e.g. the service it serves. */
  name: string;
  logger: Logger;
  /** Gives up waiting for an unreachable NATS (shutdown during startup). */
  signal?: AbortSignal | undefined;
  onStatus?: ((connected: boolean) => void) | undefined;
}

/**
 * The bus a service runs with: NATS when configured (waiting for it if it is down at startup),
 * memory otherwise — which only shares state inside this process.
 */
export async function createBus(opts: CreateBusOptions): Promise<Bus> {
  if (opts.natsUrl === undefined || opts.natsUrl.trim() === "") return createMemoryBus();
  return connectNatsBusWithRetry({
    url: opts.natsUrl,
    name: opts.name,
    logger: opts.logger,
    ...(opts.signal === undefined ? {} : { signal: opts.signal }),
    ...(opts.onStatus === undefined ? {} : { onStatus: opts.onStatus }),
  });
}
