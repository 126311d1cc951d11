import type {
  ConnectorAnnouncement,
  TargetHealth,
  TargetOutcomeBatch,
} from "../../../gen/switchyard/health/v1/health_pb.js";
import type { Bus, Lease } from "./bus.js";

/**
 * A Bus usable at once while its NATS connection is still being made (NATS down at startup must
 * not stop a service from serving). Until it connects: publishing is dropped, except the latest
 * announcement, which goes out as soon as it connects (a connector announces itself at start,
 * before its connection is made, and would otherwise be unknown to routers for a heartbeat);
 * watches and subscriptions wait, puts wait, leases are not held; afterwards every call goes
 * straight through.
 */
export function deferBus(connecting: Promise<Bus>, abortConnect: () => void): Bus {
  let bus: Bus | undefined;
  let closed = false;
  let unsent: ConnectorAnnouncement | undefined;
  const ready = connecting.then(
    (b) => {
      bus = b;
      if (unsent) b.announce(unsent);
      unsent = undefined;
      return b;
    },
    () => undefined, // only when aborted by close()
  );

  async function* later<T>(
    signal: AbortSignal,
    open: (b: Bus) => AsyncIterable<T>,
  ): AsyncGenerator<T> {
    const b = bus ?? (await Promise.race([ready, aborted(signal)]));
    if (!b || signal.aborted) return;
    yield* open(b);
  }

  return {
    kind: "nats",
    health: {
      async put(health: TargetHealth) {
        const b = bus ?? (await ready);
        if (!b) throw new Error("bus closed");
        await b.health.put(health);
      },
      async all() {
        return bus ? bus.health.all() : [];
      },
      watch: (signal) => later(signal, (b) => b.health.watch(signal)),
    },
    publishOutcomes(batch: TargetOutcomeBatch) {
      bus?.publishOutcomes(batch);
    },
    outcomes: (signal) => later(signal, (b) => b.outcomes(signal)),
    announce(announcement: ConnectorAnnouncement) {
      if (bus) bus.announce(announcement);
      else unsent = announcement;
    },
    announcements: (signal) => later(signal, (b) => b.announcements(signal)),
    lease(name: string, holder: string): Lease {
      let inner: Lease | undefined;
      let released = false;
      void ready.then((b) => {
        if (b && !released) inner = b.lease(name, holder);
      });
      return {
        held: () => inner?.held() ?? false,
        async release() {
          released = true;
          await inner?.release();
        },
      };
    },
    connected: () => bus?.connected() ?? false,
    async close() {
      if (closed) return;
      closed = true;
      abortConnect();
      const b = await ready;
      await b?.close();
    },
  };
}

function aborted(signal: AbortSignal): Promise<undefined> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(undefined);
    else signal.addEventListener("abort", () => resolve(undefined), { once: true });
  });
}
