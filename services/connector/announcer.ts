import { ConnectorAnnouncementSchema } from "../../gen/switchyard/health/v1/health_pb.js";
import type { Bus } from "../lib/bus/bus.js";
import { makeMessage } from "../lib/hop/codec.js";

export const HEARTBEAT_MS = 2_000;

/**
 * Announces this connector on the bus every HEARTBEAT_MS so routers and probers add it to the
 * set they call; `stop()` says it is leaving so they stop sending it new calls at once.
 */
export function startAnnouncer(opts: {
  bus: Bus;
  id: string;
  address: string;
  providers: string[];
  inflight: () => number;
}): { stop(): void } {
  const started = BigInt(Date.now());
  const send = (leaving: boolean) =>
    opts.bus.announce(
      makeMessage(ConnectorAnnouncementSchema, {
        id: opts.id,
        address: opts.address,
        providers: opts.providers,
        inflight: opts.inflight(),
        startedMs: started,
        sentMs: BigInt(Date.now()),
        heartbeatMs: HEARTBEAT_MS,
        leaving,
      }),
    );
  send(false);
  const timer = setInterval(() => send(false), HEARTBEAT_MS);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      send(true);
    },
  };
}
