import type { Logger } from "pino";
import { type Bus, HEALTH_BUCKET, LEASE_BUCKET } from "./bus.js";
import { deferBus } from "./deferred.js";
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
  /** `nats.namespace`: keeps deployments that share a NATS server apart. */
  namespace?: string | undefined;
  /** Connection name, e.g. the service it serves. */
  name: string;
  logger: Logger;
  /** Gives up waiting for an unreachable NATS (shutdown during startup). */
  signal?: AbortSignal | undefined;
  onStatus?: ((connected: boolean) => void) | undefined;
  /**
   * false: resolve at once with a bus that connects in the background (deferBus), so a service
   * serves while NATS is unreachable. Default true: resolve once connected.
   */
  wait?: boolean;
}

/**
 * The bus a service runs with: NATS when configured (waiting for it if it is down at startup),
 * memory otherwise — which only shares state inside this process.
 */
export async function createBus(opts: CreateBusOptions): Promise<Bus> {
  if (opts.natsUrl === undefined || opts.natsUrl.trim() === "") return createMemoryBus();
  const ns = opts.namespace;
  const giveUp = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, giveUp.signal]) : giveUp.signal;
  const connecting = connectNatsBusWithRetry({
    url: opts.natsUrl,
    ...(ns
      ? {
          bucket: `${HEALTH_BUCKET}_${ns}`,
          leaseBucket: `${LEASE_BUCKET}_${ns}`,
          subjectPrefix: ns,
        }
      : {}),
    name: opts.name,
    logger: opts.logger,
    signal,
    ...(opts.onStatus === undefined ? {} : { onStatus: opts.onStatus }),
  });
  if (opts.wait === false) return deferBus(connecting, () => giveUp.abort());
  return connecting;
}
