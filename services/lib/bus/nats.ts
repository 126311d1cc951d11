import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { KV, KvWatchEntry } from "@nats-io/kv";
import type { NatsConnection, QueuedIterator, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import {
  type ConnectorAnnouncement,
  ConnectorAnnouncementSchema,
  type Target,
  type TargetHealth,
  TargetHealthSchema,
  type TargetOutcomeBatch,
  TargetOutcomeBatchSchema,
  TargetSchema,
} from "../../../gen/switchyard/health/v1/health_pb.js";
import { codecFor, makeMessage } from "../hop/codec.js";
import {
  ANNOUNCE_SUBJECT,
  type Bus,
  HEALTH_BUCKET,
  LEASE_BUCKET,
  LEASE_TTL_MS,
  type Lease,
  OUTCOMES_SUBJECT,
} from "./bus.js";
import { BROADCAST_BACKLOG, Mailbox } from "./memory.js";

export interface NatsBusOptions {
  /** One server or a comma-separated list; `user:pass@` or `token@` in a URL is used to log in. */
  url: string;
  /** Connection name, shown by the server's monitoring. */
  name: string;
  logger: Logger;
  /** Called whenever the connection goes down or comes back. */
  onStatus?: (connected: boolean) => void;
  /** JetStream KV bucket for target health; tests use their own. Default HEALTH_BUCKET. */
  bucket?: string;
  /** Prepended (with a dot) to OUTCOMES_SUBJECT and ANNOUNCE_SUBJECT; tests use their own. */
  subjectPrefix?: string;
  /** JetStream KV bucket for leases. Default LEASE_BUCKET. */
  leaseBucket?: string;
}

const RECONNECT_WAIT_MS = 500;
const RETRY_FIRST_MS = 500;
const RETRY_CAP_MS = 5_000;
/**
 * Bus messages in the hops' compiled codec: the same bytes as protobuf-es's toBinary/fromBinary,
 * several times faster (connectors encode, and the prober decodes, every live call's outcome).
 */
const healthCodec = codecFor(TargetHealthSchema);
const outcomesCodec = codecFor(TargetOutcomeBatchSchema);
const announcementCodec = codecFor(ConnectorAnnouncementSchema);
/** Every health key starts with this token, so a watch can filter on `t.>`. */
const TARGET_KEY_PREFIX = "t";
/** Stands for an empty name: unpadded base64url output is never one character long. */
const EMPTY_TOKEN = "_";

/**
 * The KV key of a target: `t.<base64url(provider)>.<base64url(model)>`, UTF-8, unpadded.
 * Model names hold ':', '/', '@', spaces, dots and more, none of which are safe in a key (a dot
 * even splits subject tokens); base64url only uses `[A-Za-z0-9_-]`, which every KV key allows,
 * and the two dots keep provider and model apart. An empty name becomes `_`.
 */
export function encodeTargetKey(target: Pick<Target, "provider" | "model">): string {
  return [TARGET_KEY_PREFIX, encodeToken(target.provider), encodeToken(target.model)].join(".");
}

/** The inverse of encodeTargetKey; undefined for a key it did not make. */
export function decodeTargetKey(key: string): { provider: string; model: string } | undefined {
  const parts = key.split(".");
  if (parts.length !== 3 || parts[0] !== TARGET_KEY_PREFIX) return undefined;
  const provider = decodeToken(parts[1] ?? "");
  const model = decodeToken(parts[2] ?? "");
  if (provider === undefined || model === undefined) return undefined;
  return { provider, model };
}

function encodeToken(name: string): string {
  return name === "" ? EMPTY_TOKEN : Buffer.from(name, "utf8").toString("base64url");
}

function decodeToken(token: string): string | undefined {
  if (token === EMPTY_TOKEN) return "";
  if (!/^[A-Za-z0-9_-]+$/.test(token)) return undefined;
  const name = Buffer.from(token, "base64url").toString("utf8");
  // Buffer decoding is lenient; only the canonical form of a name is a key we made.
  return encodeToken(name) === token ? name : undefined;
}

/**
 * `nats://user:pass@host:4222,token@host2` → `nats://host:4222,host2`: safe to log. Everything up
 * to the last `@` of each server goes, so an unencoded `/` or `@` in a password cannot leak.
 */
export function redactNatsUrl(url: string): string {
  return url
    .split(",")
    .map((server) => {
      const at = server.lastIndexOf("@");
      if (at === -1) return server;
      return (/^\s*[a-z][a-z0-9+.-]*:\/\//i.exec(server)?.[0] ?? "") + server.slice(at + 1);
    })
    .join(",");
}

interface ServerList {
  servers: string[];
  user?: string;
  pass?: string;
  token?: string;
}

/** nats.js ignores credentials in server URLs, so they are lifted out into connect options. */
function parseServers(url: string): ServerList {
  const list: ServerList = { servers: [] };
  for (const raw of url.split(",")) {
    const server = raw.trim();
    if (server === "") continue;
    const at = server.lastIndexOf("@");
    if (at === -1) {
      list.servers.push(server);
      continue;
    }
    const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(server)?.[0] ?? "";
    const userinfo = server.slice(scheme.length, at);
    list.servers.push(scheme + server.slice(at + 1));
    const colon = userinfo.indexOf(":");
    if (colon === -1) {
      list.token = decodeUserinfo(userinfo);
    } else {
      list.user = decodeUserinfo(userinfo.slice(0, colon));
      list.pass = decodeUserinfo(userinfo.slice(colon + 1));
    }
  }
  if (list.servers.length === 0) throw new Error("nats url names no server");
  return list;
}

/** Percent-decoded as URLs require; a stray `%` (a password typed as is) is kept literally. */
function decodeUserinfo(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** nats.js only ever sees servers without credentials, so its messages are safe to log. */
function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Resolves after `ms`, or at once when `signal` aborts; the timer never outlives either. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

function nextDelay(ms: number): number {
  return Math.min(ms * 2, RETRY_CAP_MS);
}

/**
 * Connects to NATS and opens (creating if needed) the health bucket. Rejects if the server is
 * unreachable or has no JetStream; once connected it reconnects forever. Health lives in the KV
 * bucket under encodeTargetKey keys, outcomes and announcements travel on core subjects; all as
 * protobuf binary.
 */
export async function connectNatsBus(opts: NatsBusOptions): Promise<Bus> {
  const { logger } = opts;
  const address = redactNatsUrl(opts.url);
  const bucket = opts.bucket ?? HEALTH_BUCKET;
  const prefix = opts.subjectPrefix === undefined ? "" : `${opts.subjectPrefix}.`;
  const outcomesSubject = prefix + OUTCOMES_SUBJECT;
  const announceSubject = prefix + ANNOUNCE_SUBJECT;
  const { servers, ...credentials } = parseServers(opts.url);

  // The NATS client is loaded when a bus is first connected, not by every process that imports
  // this module: a one-process gateway without NATS saves its ~4 MB of RSS.
  const [{ connect }, { Kvm }] = await Promise.all([
    import("@nats-io/transport-node"),
    import("@nats-io/kv"),
  ]);
  const nc: NatsConnection = await connect({
    servers,
    name: opts.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: RECONNECT_WAIT_MS,
    ...credentials,
  });
  const kvm = new Kvm(nc);
  let kv: KV;
  try {
    kv = await kvm.create(bucket, { history: 1 });
  } catch (err) {
    await nc.close().catch(() => {});
    throw new Error(`NATS at ${address}: cannot open KV bucket ${bucket}: ${reason(err)}`, {
      cause: err,
    });
  }

  // Ends every retry pause and watch loop at close().
  const closing = new AbortController();
  let connected = true;
  const watches = new Set<HealthWatch>();
  const subscribers = new Set<{ end(): void }>();
  const loops = new Set<Promise<void>>();

  function track(loop: Promise<void>): void {
    loops.add(loop);
    void loop.finally(() => loops.delete(loop));
  }

  function setConnected(value: boolean): void {
    if (connected === value) return;
    connected = value;
    opts.onStatus?.(value);
  }

  /**
   * A restarted server may have lost its store (no persistent volume): re-create the bucket so
   * puts land again. Watches re-create themselves in the meantime.
   */
  async function ensureBucket(): Promise<void> {
    for (let wait = RETRY_FIRST_MS; !closing.signal.aborted; wait = nextDelay(wait)) {
      try {
        await kvm.create(bucket, { history: 1 });
        return;
      } catch (err) {
        if (closing.signal.aborted) return;
        logger.debug({ err: reason(err), bucket }, "NATS health bucket not ready; retrying");
        await pause(wait, closing.signal);
      }
    }
  }

  track(
    (async () => {
      for await (const status of nc.status()) {
        switch (status.type) {
          case "disconnect":
            setConnected(false);
            logger.warn({ nats: redactNatsUrl(status.server) }, "NATS disconnected; reconnecting");
            break;
          case "reconnect":
            setConnected(true);
            logger.info({ nats: redactNatsUrl(status.server) }, "NATS reconnected");
            track(ensureBucket());
            // The server may have lost the watchers' consumers (or their whole stream); nats.js
            // would only notice after a minute of missed heartbeats, so start them afresh.
            for (const watch of watches) watch.restart();
            break;
          case "ldm":
            logger.info({ nats: redactNatsUrl(status.server) }, "NATS server is shutting down");
            break;
          case "staleConnection":
            logger.warn({ nats: address }, "NATS connection went stale; reconnecting");
            break;
          case "error":
            logger.warn({ nats: address, err: reason(status.error) }, "NATS server error");
            break;
          case "close":
            setConnected(false);
            break;
          default:
            break;
        }
      }
    })(),
  );

  /** One health watcher: a kv.watch pumped into a coalescing mailbox, re-created when lost. */
  class HealthWatch {
    readonly box: Mailbox<TargetHealth>;
    #iterator: QueuedIterator<KvWatchEntry> | undefined;
    #restarting = false;
    /** Cuts a retry pause short once the watch ends. */
    readonly #stopped = new AbortController();

    constructor(signal: AbortSignal) {
      this.box = new Mailbox<TargetHealth>({ onEnd: () => this.#stop() });
      if (closing.signal.aborted) {
        this.box.end();
        return;
      }
      watches.add(this);
      this.box.endOn(signal);
      if (!this.box.ended) track(this.#run());
    }

    restart(): void {
      this.#restarting = true;
      this.#iterator?.stop();
    }

    #stop(): void {
      watches.delete(this);
      this.#stopped.abort();
      this.#iterator?.stop();
    }

    async #run(): Promise<void> {
      for (let wait = RETRY_FIRST_MS; !this.box.ended && !closing.signal.aborted; ) {
        this.#restarting = false;
        try {
          const iterator = await kv.watch({ key: `${TARGET_KEY_PREFIX}.>` });
          this.#iterator = iterator;
          // Ended or restarted while the watch was being set up.
          if (this.box.ended || this.#restarting) iterator.stop();
          wait = RETRY_FIRST_MS;
          for await (const entry of iterator) this.#deliver(entry);
        } catch (err) {
          if (this.box.ended || closing.signal.aborted) return;
          logger.debug({ err: reason(err), bucket }, "NATS health watch failed; retrying");
        }
        if (this.box.ended || closing.signal.aborted) return;
        if (!this.#restarting) {
          await pause(wait, this.#stopped.signal);
          wait = nextDelay(wait);
        }
      }
    }

    #deliver(entry: KvWatchEntry): void {
      // Health is only ever replaced; a deleted or purged key just stops being reported and
      // routers age its last value out (health.stale_after_ms).
      if (entry.operation !== "PUT") return;
      let health: TargetHealth;
      try {
        health = healthCodec.decode(entry.value);
      } catch (err) {
        logger.warn({ key: entry.key, err: reason(err) }, "undecodable health value skipped");
        return;
      }
      if (!health.target) {
        const target = decodeTargetKey(entry.key);
        if (!target) return;
        health.target = makeMessage(TargetSchema, target);
      }
      this.box.offer(health, entry.key);
    }
  }

  function subscribe<Desc extends DescMessage>(
    subject: string,
    schema: Desc,
    signal: AbortSignal,
  ): Mailbox<MessageShape<Desc>> {
    let sub: Subscription | undefined;
    const codec = codecFor(schema);
    const box: Mailbox<MessageShape<Desc>> = new Mailbox<MessageShape<Desc>>({
      limit: BROADCAST_BACKLOG,
      onEnd: () => {
        subscribers.delete(box);
        if (!nc.isClosed() && !nc.isDraining()) sub?.unsubscribe();
      },
    });
    if (closing.signal.aborted || signal.aborted) {
      box.end();
      return box;
    }
    sub = nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err) {
          logger.warn({ subject, err: reason(err) }, "NATS subscription ended");
          box.end();
          return;
        }
        try {
          box.offer(codec.decode(msg.data));
        } catch (decodeErr) {
          logger.warn({ subject, err: reason(decodeErr) }, "undecodable message skipped");
        }
      },
    });
    subscribers.add(box);
    return box.endOn(signal);
  }

  /** Fire and forget: nats.js buffers while reconnecting and throws only once closed. */
  function publish(subject: string, data: Uint8Array): void {
    try {
      nc.publish(subject, data);
    } catch (err) {
      logger.debug({ subject, err: reason(err) }, "NATS publish dropped");
    }
  }

  /**
   * Leases live in their own bucket whose values expire LEASE_TTL_MS after their last write: the
   * holder renews with a compare-and-set update every third of that; anyone else tries `create`,
   * which only succeeds once the key is gone (expired or released).
   */
  let leaseBucket: Promise<KV> | undefined;
  const openLeases = () => {
    leaseBucket ??= kvm
      .create(opts.leaseBucket ?? LEASE_BUCKET, { history: 1, ttl: LEASE_TTL_MS })
      .catch((err) => {
        leaseBucket = undefined;
        throw err;
      });
    return leaseBucket;
  };
  const leaseKey = (name: string) => `lease.${Buffer.from(name).toString("base64url")}`;

  function startLease(name: string, holder: string): Lease {
    const key = leaseKey(name);
    const stop = new AbortController();
    let held = false;
    let revision = 0;
    const setHeld = (value: boolean) => {
      if (held === value) return;
      held = value;
      logger.info({ lease: name, holder }, value ? "lease acquired" : "lease lost");
    };
    const tick = async () => {
      try {
        const kv = await openLeases();
        if (held) {
          revision = await kv.update(key, holder, revision);
          return;
        }
        try {
          revision = await kv.create(key, holder);
          setHeld(true);
        } catch {
          // Taken: by us before a restart (adopt it) or by someone else (wait for it to expire).
          const entry = await kv.get(key);
          if (entry?.operation === "PUT" && entry.string() === holder) {
            revision = entry.revision;
            setHeld(true);
          }
        }
      } catch (err) {
        logger.debug({ lease: name, err: reason(err) }, "lease renewal failed");
        setHeld(false);
        // A server restarted without its store has lost the bucket too: the next tick creates
        // it again (create is a no-op for a bucket that is there).
        leaseBucket = undefined;
      }
    };
    const loop = (async () => {
      while (!stop.signal.aborted && !closing.signal.aborted) {
        await tick();
        await pause(LEASE_TTL_MS / 3, AbortSignal.any([stop.signal, closing.signal]));
      }
    })();
    track(loop);
    return {
      held: () => held,
      async release() {
        stop.abort();
        await loop;
        if (!held) return;
        held = false;
        try {
          const kv = await openLeases();
          await kv.delete(key, { previousSeq: revision });
        } catch (err) {
          logger.debug({ lease: name, err: reason(err) }, "lease release failed; it will expire");
        }
      },
    };
  }

  let closed: Promise<void> | undefined;

  return {
    kind: "nats",
    health: {
      async put(health: TargetHealth): Promise<void> {
        if (!health.target) throw new Error("TargetHealth.target is required to store health");
        await kv.put(encodeTargetKey(health.target), healthCodec.encode(health));
      },
      async all(): Promise<TargetHealth[]> {
        const keys: string[] = [];
        for await (const key of await kv.keys(`${TARGET_KEY_PREFIX}.>`)) keys.push(key);
        const entries = await Promise.all(keys.map((key) => kv.get(key)));
        const values: TargetHealth[] = [];
        for (const entry of entries) {
          if (entry?.operation !== "PUT") continue;
          try {
            values.push(healthCodec.decode(entry.value));
          } catch (err) {
            logger.warn({ key: entry.key, err: reason(err) }, "undecodable health value skipped");
          }
        }
        return values;
      },
      watch(signal: AbortSignal): AsyncIterable<TargetHealth> {
        return new HealthWatch(signal).box;
      },
    },
    publishOutcomes(batch: TargetOutcomeBatch): void {
      publish(outcomesSubject, outcomesCodec.encode(batch));
    },
    outcomes(signal: AbortSignal): AsyncIterable<TargetOutcomeBatch> {
      return subscribe(outcomesSubject, TargetOutcomeBatchSchema, signal);
    },
    announce(announcement: ConnectorAnnouncement): void {
      publish(announceSubject, announcementCodec.encode(announcement));
    },
    announcements(signal: AbortSignal): AsyncIterable<ConnectorAnnouncement> {
      return subscribe(announceSubject, ConnectorAnnouncementSchema, signal);
    },
    lease(name: string, holder: string): Lease {
      return startLease(name, holder);
    },
    connected: () => connected,
    close(): Promise<void> {
      closed ??= (async () => {
        closing.abort();
        for (const watch of [...watches]) watch.box.end();
        for (const box of [...subscribers]) box.end();
        try {
          await nc.drain();
        } catch {
          // Draining needs the server; while it is away, closing is all that is left.
          if (!nc.isClosed()) await nc.close();
        }
        await Promise.allSettled([...loops]);
      })();
      return closed;
    },
  };
}

/**
 * connectNatsBus that survives NATS being down at startup: logs one error line, then retries
 * with backoff (0.5s doubling to every 5s) until it connects or `signal` aborts (rejecting with
 * the abort reason), so a service started before NATS waits for it instead of crash-looping.
 */
export async function connectNatsBusWithRetry(
  opts: NatsBusOptions & { signal?: AbortSignal },
): Promise<Bus> {
  const { signal, ...busOpts } = opts;
  const address = redactNatsUrl(opts.url);
  const never = new AbortController().signal;
  let failed = false;
  for (let wait = RETRY_FIRST_MS; ; wait = nextDelay(wait)) {
    signal?.throwIfAborted();
    try {
      const bus = await connectNatsBus(busOpts);
      if (signal?.aborted) {
        await bus.close();
        signal.throwIfAborted();
      }
      if (failed) opts.logger.info({ nats: address }, `NATS at ${address} reachable; connected`);
      return bus;
    } catch (err) {
      signal?.throwIfAborted();
      if (!failed) {
        failed = true;
        opts.logger.error(
          `NATS at ${address} unreachable: ${reason(err)}; retrying every ${RETRY_CAP_MS / 1000}s`,
        );
      } else {
        opts.logger.debug({ nats: address, err: reason(err) }, "NATS still unreachable");
      }
    }
    await pause(wait, signal ?? never);
  }
}
