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

/** How the services share state: health (KV), passive outcomes and membership (subjects). */
export interface Bus {
  readonly kind: "memory" | "nats";
  readonly health: HealthStore;
  /** Connectors report what happened to live calls; fire and forget. */
  publishOutcomes(batch: TargetOutcomeBatch): void;
  outcomes(signal: AbortSignal): AsyncIterable<TargetOutcomeBatch>;
  /** Connectors announce themselves on a heartbeat; fire and forget. */
  announce(announcement: ConnectorAnnouncement): void;
  announcements(signal: AbortSignal): AsyncIterable<ConnectorAnnouncement>;
  /** Whether shared state is flowing (always true in memory; NATS connection state otherwise). */
  connected(): boolean;
  close(): Promise<void>;
}

/** Names of what travels on NATS; documented in README.md ("What travels where"). */
export const HEALTH_BUCKET = "switchyard_health";
export const OUTCOMES_SUBJECT = "switchyard.health.outcomes";
export const ANNOUNCE_SUBJECT = "switchyard.connectors.announce";
