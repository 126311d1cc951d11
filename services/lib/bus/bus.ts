import type {
  ConnectorAnnouncement,
  TargetHealth,
  TargetOutcomeBatch,
} from "../../../gen/switchyard/health/v1/health_pb.js";

/**
 * Target health shared by every router. The health-prober is its only writer; routers watch it.
 * Backed by a JetStream KV bucket when `nats.url` is configured, by memory otherwise.
 */
export interface HealthStore {
  /** Stores one target's health, replacing the previous value. */
  put(health: TargetHealth): Promise<void>;
  /** The current value of every target that has one. */
  all(): Promise<TargetHealth[]>;
  /**
   * Current values first, then every change, until `signal` aborts or the bus closes.
   * A watcher that falls behind sees the latest value of each target, not every step.
   */
  watch(signal: AbortSignal): AsyncIterable<TargetHealth>;
}

/**
 * A named lease that at most one holder has at a time (e.g. the active health-prober). Renewed in
 * the background; a holder that stops renewing loses it after LEASE_TTL_MS.
 */
export interface Lease {
  /** Whether this holder has the lease now. */
  held(): boolean;
  /** Stops renewing, and gives the lease up if held. */
  release(): Promise<void>;
}

/** How the services share state: health (KV), passive outcomes and membership (subjects). */
export interface Bus {
  readonly kind: "memory" | "nats";
  readonly health: HealthStore;
  /**
   * Connectors report what happened to live calls; fire and forget. The batch is handed over:
   * the publisher must not use it afterwards (in one process a subscriber may get it as is).
   */
  publishOutcomes(batch: TargetOutcomeBatch): void;
  outcomes(signal: AbortSignal): AsyncIterable<TargetOutcomeBatch>;
  /** Connectors announce themselves on a heartbeat; fire and forget. */
  announce(announcement: ConnectorAnnouncement): void;
  announcements(signal: AbortSignal): AsyncIterable<ConnectorAnnouncement>;
  /** Competes for the lease `name` as `holder` until released. */
  lease(name: string, holder: string): Lease;
  /** Whether shared state is flowing (always true in memory; NATS connection state otherwise). */
  connected(): boolean;
  close(): Promise<void>;
}

/** Names of what travels on NATS; documented in README.md ("What travels where"). */
export const HEALTH_BUCKET = "switchyard_health";
export const OUTCOMES_SUBJECT = "switchyard.health.outcomes";
export const ANNOUNCE_SUBJECT = "switchyard.connectors.announce";
export const LEASE_BUCKET = "switchyard_leases";
/** How long a lease outlives its holder's last renewal. */
export const LEASE_TTL_MS = 6_000;
