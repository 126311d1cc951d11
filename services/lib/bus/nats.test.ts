import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import pino, { type Logger } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ConnectorAnnouncementSchema,
  HealthSource,
  type TargetHealth,
  TargetHealthSchema,
  TargetOutcomeBatchSchema,
  TargetState,
} from "../../../gen/switchyard/health/v1/health_pb.js";
import type { Bus } from "./bus.js";
import { createBus } from "./index.js";
import {
  connectNatsBus,
  connectNatsBusWithRetry,
  decodeTargetKey,
  encodeTargetKey,
  type NatsBusOptions,
  redactNatsUrl,
} from "./nats.js";

const SHARED_HOST = "127.0.0.1";
const SHARED_PORT = 4222;
const SHARED_URL = `nats://${SHARED_HOST}:${SHARED_PORT}`;
const NATS_SERVER = "/usr/sbin/nats-server";
const START_SHARED_NATS =
  "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- " +
  "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log";

// Unique per run, so parallel runs on the shared server never see each other's state.
const RUN = `t${process.pid}_${Date.now().toString(36)}`;
let bucketCount = 0;
const buckets: string[] = [];
const openBuses: Bus[] = [];

function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port, timeout: 1000 });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
    socket.once("timeout", () => done(false));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function eventually(check: () => boolean | Promise<boolean>, ms: number, what: string) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms}ms`);
    await sleep(25);
  }
}

interface Captured {
  logger: Logger;
  lines: Array<{ level: number; msg: string; raw: string }>;
}

function captureLogs(): Captured {
  const lines: Captured["lines"] = [];
  const logger = pino(
    { level: "debug" },
    {
      write(raw: string) {
        const line = JSON.parse(raw) as { level: number; msg: string };
        lines.push({ level: line.level, msg: line.msg, raw });
      },
    },
  );
  return { logger, lines };
}

function uniqueNames(): Pick<NatsBusOptions, "bucket" | "subjectPrefix"> {
  const bucket = `${RUN}_${++bucketCount}`;
  buckets.push(bucket);
  return { bucket, subjectPrefix: `test.${RUN}.${bucketCount}` };
}

async function open(opts: Partial<NatsBusOptions> = {}): Promise<Bus> {
  const bus = await connectNatsBus({
    url: SHARED_URL,
    name: "bus-test",
    logger: pino({ level: "silent" }),
    ...opts,
  });
  openBuses.push(bus);
  return bus;
}

function health(provider: string, model: string, ttftEwmaMs: number): TargetHealth {
  return create(TargetHealthSchema, {
    target: { provider, model },
    state: TargetState.HEALTHY,
    ttftEwmaMs,
    source: HealthSource.PROBE,
    updatedMs: BigInt(Date.now()),
  });
}

function iterate<T>(iterable: AsyncIterable<T>): AsyncIterator<T> {
  return iterable[Symbol.asyncIterator]();
}

/** The next value of `iterator`, failing the test if none comes within `ms`. */
async function nextWithin<T>(iterator: AsyncIterator<T>, ms = 2000): Promise<IteratorResult<T>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`nothing arrived within ${ms}ms`)), ms);
  });
  try {
    return await Promise.race([iterator.next(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads `iterator` until a value passes `wanted`; fails after `ms`. */
async function until<T>(iterator: AsyncIterator<T>, wanted: (value: T) => boolean, ms: number) {
  const deadline = Date.now() + ms;
  for (;;) {
    const result = await nextWithin(iterator, Math.max(1, deadline - Date.now()));
    if (result.done) throw new Error("iterator ended before the wanted value arrived");
    if (wanted(result.value)) return result.value;
  }
}

beforeAll(async () => {
  if (!(await reachable(SHARED_HOST, SHARED_PORT))) {
    throw new Error(
      `These tests need NATS with JetStream at ${SHARED_HOST}:${SHARED_PORT}, which is unreachable. ` +
        `Start it with:\n  ${START_SHARED_NATS}`,
    );
  }
});

afterEach(async () => {
  await Promise.all(openBuses.splice(0).map((bus) => bus.close()));
});

afterAll(async () => {
  if (buckets.length === 0 || !(await reachable(SHARED_HOST, SHARED_PORT))) return;
  const nc = await connect({ servers: SHARED_URL });
  const kvm = new Kvm(nc);
  for (const bucket of buckets) {
    await kvm
      .open(bucket)
      .then((kv) => kv.destroy())
      .catch(() => {});
  }
  await nc.drain();
});

describe("target keys", () => {
  const odd = [
    "llama3.1:70b-instruct-q4_K_M",
    "meta-llama/Llama-3.3-70B-Instruct",
    "org/model@2024-10-21 beta",
    "gpt-4o",
    "*>.. $KV.x",
    "ünïcødé 模型 🚀",
    "",
  ];

  it("round-trip any provider and model name through a valid KV key", () => {
    for (const provider of ["openai", "my provider.eu", ""]) {
      for (const model of odd) {
        const key = encodeTargetKey({ provider, model });
        expect(key).toMatch(/^[-/=.\w]+$/);
        expect(key.split(".").every((token) => token.length > 0)).toBe(true);
        expect(decodeTargetKey(key)).toEqual({ provider, model });
      }
    }
  });

  it("differ for every distinct target", () => {
    const keys = odd.flatMap((a) => odd.map((b) => encodeTargetKey({ provider: a, model: b })));
    expect(new Set(keys).size).toBe(keys.length);
  });

  it("are not decoded from keys this code did not make", () => {
    for (const key of [
      "t.a",
      "x.b3Blbm.Z3B0",
      "t.b3Blbm.Z3B0.extra",
      "t.b3Blbm=.Z3B0",
      "t.!.Z3B0",
    ]) {
      expect(decodeTargetKey(key)).toBeUndefined();
    }
  });
});

describe("redactNatsUrl", () => {
  it("drops credentials from every server in the list", () => {
    expect(redactNatsUrl("nats://user:p%40ss@nats-1:4222,nats://tok@nats-2:4222,nats-3")).toBe(
      "nats://nats-1:4222,nats://nats-2:4222,nats-3",
    );
    expect(redactNatsUrl("user:secret@127.0.0.1:4222")).toBe("127.0.0.1:4222");
    expect(redactNatsUrl("nats://u:pa/ss@wd@host:4222")).toBe("nats://host:4222");
  });
});

describe("NATS bus on the shared server", () => {
  it("a watch sees a value put before it started", async () => {
    const bus = await open(uniqueNames());
    await bus.health.put(health("openai", "gpt-4o", 120));
    const watch = iterate(bus.health.watch(new AbortController().signal));
    const seen = (await nextWithin(watch)).value;
    expect(seen?.target?.model).toBe("gpt-4o");
    expect(seen?.ttftEwmaMs).toBe(120);
    expect(bus.kind).toBe("nats");
    expect(bus.connected()).toBe(true);
  });

  it("a watcher on another connection sees a change within 1s", async () => {
    const names = uniqueNames();
    const writer = await open(names);
    const reader = await open(names);
    await writer.health.put(health("openai", "gpt-4o", 1));
    const watch = iterate(reader.health.watch(new AbortController().signal));
    await until(watch, (h) => h.ttftEwmaMs === 1, 2000);

    const started = Date.now();
    await writer.health.put(health("openai", "gpt-4o", 2));
    await until(watch, (h) => h.ttftEwmaMs === 2, 1000);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("all() returns the current value of every target", async () => {
    const names = uniqueNames();
    const writer = await open(names);
    const reader = await open(names);
    expect(await reader.health.all()).toEqual([]);
    await writer.health.put(health("openai", "gpt-4o", 1));
    await writer.health.put(health("openai", "gpt-4o", 2));
    await writer.health.put(health("anthropic", "claude-sonnet-4-5", 3));
    const all = await reader.health.all();
    expect(all.map((h) => [h.target?.provider, h.target?.model, h.ttftEwmaMs]).sort()).toEqual([
      ["anthropic", "claude-sonnet-4-5", 3],
      ["openai", "gpt-4o", 2],
    ]);
  });

  it("stores and watches targets whose model names are not valid KV keys", async () => {
    const names = uniqueNames();
    const writer = await open(names);
    const reader = await open(names);
    const models = ["llama3.1:70b", "meta-llama/Llama-3.3-70B", "org/m@v1 beta", "a.b*>", "模型"];
    const watch = iterate(reader.health.watch(new AbortController().signal));
    for (const [i, model] of models.entries()) await writer.health.put(health("local", model, i));

    const watched = new Set<string>();
    for (const _ of models) watched.add((await nextWithin(watch)).value?.target?.model ?? "");
    expect([...watched].sort()).toEqual([...models].sort());
    const all = await reader.health.all();
    expect(all.map((h) => h.target?.model).sort()).toEqual([...models].sort());
  });

  it("outcomes and announcements reach every subscriber on every connection", async () => {
    const names = uniqueNames();
    const publisher = await open(names);
    const first = await open(names);
    const second = await open(names);
    const signal = new AbortController().signal;
    const outcomeSubs = [first, second].map((bus) => iterate(bus.outcomes(signal)));
    const announceSubs = [first, second].map((bus) => iterate(bus.announcements(signal)));
    // A round trip on each subscriber's connection: the server has its subscriptions after it.
    await Promise.all([first.health.all(), second.health.all()]);

    publisher.publishOutcomes(
      create(TargetOutcomeBatchSchema, {
        connectorId: "connector-1",
        outcomes: [
          { target: { provider: "openai", model: "gpt-4o" }, success: false, errorKind: "rate" },
        ],
      }),
    );
    publisher.announce(
      create(ConnectorAnnouncementSchema, {
        id: "connector-1",
        address: "http://10.0.0.5:8082",
        providers: ["openai"],
        sentMs: 5n,
      }),
    );

    for (const sub of outcomeSubs) {
      const batch = (await nextWithin(sub)).value;
      expect(batch?.connectorId).toBe("connector-1");
      expect(batch?.outcomes[0]?.errorKind).toBe("rate");
    }
    for (const sub of announceSubs) {
      const announcement = (await nextWithin(sub)).value;
      expect(announcement?.address).toBe("http://10.0.0.5:8082");
      expect(announcement?.sentMs).toBe(5n);
    }
  });

  it("createBus connects to NATS when a URL is configured", async () => {
    const bus = await createBus({
      natsUrl: SHARED_URL,
      name: "bus-test",
      logger: pino({ level: "silent" }),
    });
    openBuses.push(bus);
    expect(bus.kind).toBe("nats");
    expect(bus.connected()).toBe(true);
  });

  it("sends an announcement made while still connecting once connected, not a heartbeat later", async () => {
    // A connector announces itself as it starts, before its bus has connected; routers must
    // hear of it then, not only at its next heartbeat 2 s later.
    const namespace = `announce_${RUN}`;
    const opts = { natsUrl: SHARED_URL, namespace, logger: pino({ level: "silent" }) };
    const router = await createBus({ ...opts, name: "bus-test-router" });
    openBuses.push(router);
    const heard = iterate(router.announcements(new AbortController().signal));
    await router.health.all(); // a round trip: the server has the subscription after it
    buckets.push(`switchyard_health_${namespace}`);

    const connector = await createBus({ ...opts, name: "bus-test-connector", wait: false });
    openBuses.push(connector);
    expect(connector.connected()).toBe(false);
    connector.announce(
      create(ConnectorAnnouncementSchema, { id: "c-1", address: "http://10.0.0.9:8082" }),
    );

    const announcement = (await nextWithin(heard)).value;
    expect(announcement?.address).toBe("http://10.0.0.9:8082");
  });

  it("aborting a signal ends that iterator only", async () => {
    const bus = await open(uniqueNames());
    const controller = new AbortController();
    const watch = iterate(bus.health.watch(controller.signal));
    const outcomes = iterate(bus.outcomes(controller.signal));
    const kept = iterate(bus.health.watch(new AbortController().signal));
    const pending = [watch.next(), outcomes.next()];
    controller.abort();
    for (const result of await Promise.all(pending)) expect(result.done).toBe(true);

    await bus.health.put(health("openai", "gpt-4o", 9));
    expect((await nextWithin(kept)).value?.ttftEwmaMs).toBe(9);
  });

  it("close() ends every iterator and leaves no open handles", async () => {
    const before = process.getActiveResourcesInfo().length;
    const bus = await connectNatsBus({
      url: SHARED_URL,
      name: "bus-test",
      logger: pino({ level: "silent" }),
      ...uniqueNames(),
    });
    const signal = new AbortController().signal;
    const watch = iterate(bus.health.watch(signal));
    const outcomes = iterate(bus.outcomes(signal));
    const announcements = iterate(bus.announcements(signal));
    await bus.health.put(health("openai", "gpt-4o", 1));
    await nextWithin(watch);
    const pending = [watch.next(), outcomes.next(), announcements.next()];

    await bus.close();
    for (const result of await Promise.all(pending)) expect(result.done).toBe(true);
    expect((await nextWithin(iterate(bus.health.watch(signal)))).done).toBe(true);
    expect(bus.connected()).toBe(false);
    expect(() => bus.publishOutcomes(create(TargetOutcomeBatchSchema, {}))).not.toThrow();
    await eventually(
      () => process.getActiveResourcesInfo().length <= before,
      2000,
      `handles left open: ${process.getActiveResourcesInfo().join(", ")}`,
    );
  });
});

describe("NATS bus against a private server that goes away", () => {
  let port = 0;
  let storeDir = "";
  let server: ChildProcess | undefined;

  async function freePort(): Promise<number> {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const address = probe.address();
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    if (address === null || typeof address === "string") throw new Error("no port");
    return address.port;
  }

  async function startServer(): Promise<void> {
    const child = spawn(
      NATS_SERVER,
      ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir],
      {
        stdio: "ignore",
      },
    );
    server = child;
    await eventually(() => reachable("127.0.0.1", port), 10_000, "private nats-server start");
  }

  async function stopServer(): Promise<void> {
    const child = server;
    server = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  }

  beforeAll(async () => {
    port = await freePort();
    storeDir = await mkdtemp(join(tmpdir(), "switchyard-nats-"));
    await startServer();
  });

  afterAll(async () => {
    await stopServer();
    await rm(storeDir, { recursive: true, force: true });
  });

  it("reports the outage, drops publishes quietly, then resumes watches after a restart", async () => {
    // Credentials in the URL must never reach the logs (the server has no auth and ignores them).
    const url = `nats://tester:s3cret-pw@127.0.0.1:${port}`;
    const logs = captureLogs();
    const statuses: boolean[] = [];
    const names = uniqueNames();
    const writer = await connectNatsBus({ url, name: "writer", logger: logs.logger, ...names });
    openBuses.push(writer);
    const reader = await connectNatsBus({
      url,
      name: "reader",
      logger: logs.logger,
      onStatus: (connected) => statuses.push(connected),
      ...names,
    });
    openBuses.push(reader);

    const watch = iterate(reader.health.watch(new AbortController().signal));
    await writer.health.put(health("openai", "gpt-4o", 1));
    await until(watch, (h) => h.ttftEwmaMs === 1, 2000);

    await stopServer();
    await eventually(() => !writer.connected() && !reader.connected(), 5000, "disconnected");
    expect(statuses).toEqual([false]);
    expect(() =>
      writer.publishOutcomes(create(TargetOutcomeBatchSchema, { connectorId: "c" })),
    ).not.toThrow();
    expect(() => writer.announce(create(ConnectorAnnouncementSchema, { id: "c" }))).not.toThrow();

    await startServer();
    await eventually(() => writer.connected() && reader.connected(), 10_000, "reconnected");
    expect(statuses).toEqual([false, true]);
    // JetStream may need a moment after the restart before it takes writes.
    await eventually(
      () =>
        writer.health.put(health("openai", "gpt-4o", 2)).then(
          () => true,
          () => false,
        ),
      10_000,
      "put after restart",
    );
    await until(watch, (h) => h.ttftEwmaMs === 2, 5000);

    const warned = logs.lines.find((l) => l.level === 40 && /disconnected/.test(l.msg));
    const recovered = logs.lines.find((l) => l.level === 30 && /reconnected/.test(l.msg));
    expect(warned?.raw).toContain(`127.0.0.1:${port}`);
    expect(recovered).toBeDefined();
    expect(logs.lines.some((l) => l.raw.includes("s3cret"))).toBe(false);
  });

  it("after a restart that lost the store, the bucket comes back and watches resume", async () => {
    const names = uniqueNames();
    const logger = pino({ level: "silent" });
    const writer = await connectNatsBus({ url: `127.0.0.1:${port}`, name: "w", logger, ...names });
    openBuses.push(writer);
    const reader = await connectNatsBus({ url: `127.0.0.1:${port}`, name: "r", logger, ...names });
    openBuses.push(reader);
    const watch = iterate(reader.health.watch(new AbortController().signal));
    await writer.health.put(health("openai", "gpt-4o", 10));
    await until(watch, (h) => h.ttftEwmaMs === 10, 2000);

    await stopServer();
    await rm(storeDir, { recursive: true, force: true });
    storeDir = await mkdtemp(join(tmpdir(), "switchyard-nats-"));
    await startServer();
    await eventually(() => writer.connected() && reader.connected(), 10_000, "reconnected");
    await eventually(
      () =>
        writer.health.put(health("openai", "gpt-4o", 11)).then(
          () => true,
          () => false,
        ),
      10_000,
      "put after restart",
    );
    // nats.js alone would notice the lost consumer only after a minute of missed heartbeats.
    await until(watch, (h) => h.ttftEwmaMs === 11, 5000);
  });

  it("a bus started while the server is down logs one error line and connects when it is up", async () => {
    await stopServer();
    const logs = captureLogs();
    const connecting = connectNatsBusWithRetry({
      url: `nats://127.0.0.1:${port}`,
      name: "late",
      logger: logs.logger,
      ...uniqueNames(),
    });
    await sleep(1600); // several retries (0.5s, 1s) happen in here
    const errors = logs.lines.filter((l) => l.level >= 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]?.msg).toMatch(
      new RegExp(`^NATS at nats://127\\.0\\.0\\.1:${port} unreachable: .+; retrying every 5s$`),
    );

    await startServer();
    const bus = await connecting;
    openBuses.push(bus);
    expect(bus.connected()).toBe(true);
    await bus.health.put(health("openai", "gpt-4o", 3));
    expect((await bus.health.all()).map((h) => h.ttftEwmaMs)).toEqual([3]);
  });

  it("logs in with the user and password given in the URL", async () => {
    const authPort = await freePort();
    const authDir = await mkdtemp(join(tmpdir(), "switchyard-nats-auth-"));
    const password = "p@ss/w%rd";
    // In a config file: on the command line the password would show in `ps`.
    const config = join(authDir, "server.conf");
    await writeFile(
      config,
      `authorization { user: "tester", password: ${JSON.stringify(password)} }\n`,
    );
    const authServer = spawn(
      NATS_SERVER,
      ["-a", "127.0.0.1", "-p", String(authPort), "-js", "-sd", authDir, "-c", config],
      { stdio: "ignore" },
    );
    try {
      await eventually(() => reachable("127.0.0.1", authPort), 10_000, "auth nats-server start");
      const logger = pino({ level: "silent" });
      await expect(
        connectNatsBus({ url: `nats://127.0.0.1:${authPort}`, name: "anon", logger }),
      ).rejects.toThrow();
      const bus = await connectNatsBus({
        url: `nats://tester:${encodeURIComponent(password)}@127.0.0.1:${authPort}`,
        name: "tester",
        logger,
      });
      openBuses.push(bus);
      await bus.health.put(health("openai", "gpt-4o", 4));
      expect((await bus.health.all()).map((h) => h.ttftEwmaMs)).toEqual([4]);
    } finally {
      await Promise.all(openBuses.splice(0).map((bus) => bus.close()));
      const exited = new Promise((resolve) => authServer.once("exit", resolve));
      authServer.kill("SIGTERM");
      await exited;
      await rm(authDir, { recursive: true, force: true });
    }
  });

  it("waiting for an unreachable server stops when the signal aborts", async () => {
    const controller = new AbortController();
    const connecting = connectNatsBusWithRetry({
      url: `nats://127.0.0.1:${await freePort()}`,
      name: "never",
      logger: pino({ level: "silent" }),
      signal: controller.signal,
    });
    await sleep(100);
    controller.abort(new Error("shutting down"));
    await expect(connecting).rejects.toThrow("shutting down");
  });
});
