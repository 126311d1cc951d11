import type { Transport } from "@connectrpc/connect";
import type { ConnectorAnnouncement } from "../../gen/switchyard/health/v1/health_pb.js";
import type { Bus } from "./bus/bus.js";
import type { ConnectorPool } from "./connector-pool.js";
import type { Logger } from "./logger.js";

/** Heartbeats a connector may miss before routers drop it. */
const MISSED_HEARTBEATS = 3;

export interface Membership {
  /** Connectors currently known from announcements (not counting the static list). */
  announced(): string[];
  stop(): void;
}

/**
 * Keeps a ConnectorPool in step with connector announcements on the bus: a connector is added
 * on its first heartbeat, dropped when it says it is leaving or misses three heartbeats.
 * Connectors from the static `peers.connectors` list stay whatever they announce; one that says
 * it is leaving (a drain: it refuses new calls) is marked so, and calls avoid it until it
 * announces itself again or `leavingMs` pass: by then its drain is over and whatever answers at
 * its address is a successor, which may never announce itself (started without NATS, or while
 * NATS was down). Endpoints are keyed by address, so a statically listed connector that also
 * announces itself counts once.
 */
export function followConnectors(opts: {
  bus: Bus;
  pool: ConnectorPool;
  staticAddresses: readonly string[];
  transportFor: (address: string) => Transport;
  logger: Logger;
  /** How long a listed connector that said it is leaving is passed over at most. */
  leavingMs: number;
  now?: () => number;
}): Membership {
  const { bus, pool, logger } = opts;
  const now = opts.now ?? Date.now;
  const fixed = new Set(opts.staticAddresses);
  const seen = new Map<string, { lastMs: number; heartbeatMs: number; id: string }>();
  /** Listed connectors marked leaving, to say once when the mark runs out. */
  const marked = new Set<string>();
  const abort = new AbortController();

  const drop = (address: string, why: string) => {
    seen.delete(address);
    if (fixed.has(address)) return;
    pool.remove(address);
    logger.info({ connector: address, why }, "connector left");
  };

  const apply = (a: ConnectorAnnouncement) => {
    if (!a.address) return;
    if (a.leaving) {
      drop(a.address, "leaving");
      // Listed in peers.connectors, it stays; its drain is expected, and said once here rather
      // than by a warning for every call it would refuse.
      if (fixed.has(a.address) && pool.setLeaving(a.address, true, opts.leavingMs)) {
        marked.add(a.address);
        logger.info({ connector: a.address, id: a.id }, "connector leaving");
      }
      return;
    }
    if (!seen.has(a.address) && !pool.has(a.address)) {
      pool.add(a.address, opts.transportFor(a.address));
      logger.info({ connector: a.address, id: a.id, providers: a.providers }, "connector joined");
    } else if (pool.setLeaving(a.address, false)) {
      marked.delete(a.address);
      logger.info({ connector: a.address, id: a.id, providers: a.providers }, "connector back");
    }
    seen.set(a.address, { lastMs: now(), heartbeatMs: a.heartbeatMs || 2_000, id: a.id });
  };

  void (async () => {
    while (!abort.signal.aborted) {
      try {
        for await (const a of bus.announcements(abort.signal)) apply(a);
      } catch (err) {
        if (!abort.signal.aborted) logger.warn({ err: String(err) }, "announcement stream failed");
      }
      if (!abort.signal.aborted) await new Promise((r) => setTimeout(r, 1_000).unref());
    }
  })();

  const sweep = setInterval(() => {
    const t = now();
    for (const address of marked) {
      if (pool.isLeaving(address)) continue;
      marked.delete(address);
      logger.info({ connector: address }, "connector drain over; calling it again");
    }
    // Without NATS no heartbeat can arrive: keep the last known members until it is back.
    if (!bus.connected()) {
      for (const s of seen.values()) s.lastMs = t;
      return;
    }
    for (const [address, s] of seen) {
      if (t - s.lastMs > MISSED_HEARTBEATS * s.heartbeatMs) drop(address, "silent");
    }
  }, 500);
  sweep.unref();

  return {
    announced: () => [...seen.keys()],
    stop() {
      abort.abort();
      clearInterval(sweep);
    },
  };
}
