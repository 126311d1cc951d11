import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import {
  type ConnectorAnnouncement,
  ConnectorAnnouncementSchema,
  type Target,
  type TargetHealth,
  TargetHealthSchema,
  type TargetOutcomeBatch,
  TargetOutcomeBatchSchema,
} from "../../../gen/switchyard/health/v1/health_pb.js";
import { codecFor } from "../hop/codec.js";
import type { Bus, Lease } from "./bus.js";

/**
 * How many outcome batches or announcements may wait for one slow subscriber; beyond that the
 * oldest are dropped, as NATS drops messages for a slow consumer. Both are fire and forget.
 */
export const BROADCAST_BACKLOG = 1024;

/**
 * A single-consumer async queue between a publisher that must never block and a reader that may
 * be slow. A value offered under a key replaces a value still waiting under the same key (keeping
 * its place), so a health watcher that falls behind holds one value per target, never a backlog.
 * Values offered without a key wait in order, at most `limit` of them, the oldest dropped first.
 * Shared by the memory and NATS buses.
 */
export class Mailbox<T> implements AsyncIterableIterator<T> {
  readonly #pending = new Map<string | number, T>();
  readonly #waiters: Array<(result: IteratorResult<T, undefined>) => void> = [];
  readonly #limit: number;
  readonly #onEnd: (() => void) | undefined;
  #unkeyed = 0;
  #ended = false;
  #signal: AbortSignal | undefined;
  readonly #abort = () => this.end();

  constructor(opts: { limit?: number; onEnd?: () => void } = {}) {
    this.#limit = opts.limit ?? Number.POSITIVE_INFINITY;
    this.#onEnd = opts.onEnd;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Ends the mailbox when `signal` aborts (at once if it already has). */
  endOn(signal: AbortSignal): this {
    if (signal.aborted) {
      this.end();
    } else if (!this.#ended) {
      this.#signal = signal;
      signal.addEventListener("abort", this.#abort, { once: true });
    }
    return this;
  }

  offer(value: T, key?: string): void {
    if (this.#ended) return;
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter({ value, done: false });
      return;
    }
    this.#pending.set(key ?? this.#unkeyed++, value);
    if (this.#pending.size > this.#limit) {
      const oldest = this.#pending.keys().next();
      if (!oldest.done) this.#pending.delete(oldest.value);
    }
  }

  /** Stops delivery: values still waiting are discarded and every reader sees the end. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#pending.clear();
    this.#signal?.removeEventListener("abort", this.#abort);
    this.#signal = undefined;
    for (const waiter of this.#waiters.splice(0)) waiter({ value: undefined, done: true });
    this.#onEnd?.();
  }

  next(): Promise<IteratorResult<T, undefined>> {
    const first = this.#pending.entries().next();
    if (!first.done) {
      const [key, value] = first.value;
      this.#pending.delete(key);
      return Promise.resolve({ value, done: false });
    }
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  return(): Promise<IteratorResult<T, undefined>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** The memory bus's map key for a target; any string pair is distinct. */
function memoryKey(target: Target): string {
  return JSON.stringify([target.provider, target.model]);
}

/**
 * A copy of a message as NATS would deliver it: encoded and decoded with the hops' codec, which
 * is about three times faster than protobuf-es's reflective clone and allocates far less.
 */
function copier<D extends DescMessage>(schema: D): (message: MessageShape<D>) => MessageShape<D> {
  const codec = codecFor(schema);
  return (message) => codec.decode(codec.encode(message));
}

const copyHealth = copier(TargetHealthSchema);
const copyOutcomes = copier(TargetOutcomeBatchSchema);
const copyAnnouncement = copier(ConnectorAnnouncementSchema);

/**
 * The bus of one-process mode: every service shares this object, nothing leaves the process.
 * Values are copied on the way in and out, so no reader sees another's mutations, as over NATS;
 * an outcome batch, which its publisher hands over, goes to its first subscriber as it is.
 * It holds no timers or sockets, so it never keeps the process alive.
 */
export function createMemoryBus(): Bus {
  const current = new Map<string, TargetHealth>();
  const watchers = new Set<Mailbox<TargetHealth>>();
  const outcomeSubscribers = new Set<Mailbox<TargetOutcomeBatch>>();
  const announcementSubscribers = new Set<Mailbox<ConnectorAnnouncement>>();
  let closed = false;

  function join<T>(members: Set<Mailbox<T>>, signal: AbortSignal, limit?: number): Mailbox<T> {
    const box: Mailbox<T> = new Mailbox<T>({
      ...(limit === undefined ? {} : { limit }),
      onEnd: () => members.delete(box),
    });
    if (closed) {
      box.end();
      return box;
    }
    members.add(box);
    return box.endOn(signal);
  }

  const leases = new Map<string, string>();
  return {
    kind: "memory",
    health: {
      put(health: TargetHealth): Promise<void> {
        if (!health.target) {
          return Promise.reject(new Error("TargetHealth.target is required to store health"));
        }
        const key = memoryKey(health.target);
        const stored = copyHealth(health);
        current.set(key, stored);
        for (const watcher of watchers) watcher.offer(copyHealth(stored), key);
        return Promise.resolve();
      },
      all(): Promise<TargetHealth[]> {
        return Promise.resolve([...current.values()].map(copyHealth));
      },
      watch(signal: AbortSignal): AsyncIterable<TargetHealth> {
        const box = join(watchers, signal);
        for (const [key, health] of current) box.offer(copyHealth(health), key);
        return box;
      },
    },
    publishOutcomes(batch: TargetOutcomeBatch): void {
      // Every copy is made before any subscriber runs, so the first may have the batch itself.
      let first = true;
      for (const subscriber of outcomeSubscribers) {
        subscriber.offer(first ? batch : copyOutcomes(batch));
        first = false;
      }
    },
    outcomes(signal: AbortSignal): AsyncIterable<TargetOutcomeBatch> {
      return join(outcomeSubscribers, signal, BROADCAST_BACKLOG);
    },
    announce(announcement: ConnectorAnnouncement): void {
      for (const subscriber of announcementSubscribers) {
        subscriber.offer(copyAnnouncement(announcement));
      }
    },
    lease(name: string, holder: string): Lease {
      // One process: the first holder of a name keeps it until it releases it.
      if (!leases.has(name)) leases.set(name, holder);
      return {
        held: () => {
          if (!leases.has(name)) leases.set(name, holder);
          return leases.get(name) === holder;
        },
        release: () => {
          if (leases.get(name) === holder) leases.delete(name);
          return Promise.resolve();
        },
      };
    },
    announcements(signal: AbortSignal): AsyncIterable<ConnectorAnnouncement> {
      return join(announcementSubscribers, signal, BROADCAST_BACKLOG);
    },
    connected: () => true,
    close(): Promise<void> {
      closed = true;
      for (const members of [watchers, outcomeSubscribers, announcementSubscribers]) {
        for (const box of [...members]) box.end();
      }
      return Promise.resolve();
    },
  };
}
