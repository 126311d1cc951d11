// A connector process that gets SIGTERM while calls run through it (a rollout, a scale-down):
// calls that come during its drain go to another connector, and when its drain runs out the
// answers it still carries are cut by a shutdown, which the client is told, and which charges
// neither the target's breaker nor its passive health: the upstream did nothing wrong.
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import OpenAI from "openai";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { ConnectorService } from "../gen/switchyard/connector/v1/connector_pb.js";
import type { TargetOutcomeBatch } from "../gen/switchyard/health/v1/health_pb.js";
import { type Fabric, type FabricTransport, startFabric } from "../services/fabric.js";
import { type Bus, createBus } from "../services/lib/bus/index.js";
import { testConfig } from "./helpers/fabric.js";
import { captureLogs } from "./helpers/logs.js";
import { metricValue } from "./helpers/metrics.js";
import { freePorts, requireNats, runSwitchyard, type ServiceProcess } from "./helpers/processes.js";
import {
  type OpenAIUpstream,
  type RecordedRequest,
  startOpenAIUpstream,
} from "./upstreams/openai-upstream.js";

/** The draining connector's drain time: the calls sent during it take far less. */
const DRAIN_MS = 3000;

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

const modelOf = (r: RecordedRequest) => (r.body as { model?: string } | undefined)?.model;
const chats = (u: OpenAIUpstream) => u.requests.filter((r) => r.path.endsWith("/completions"));

async function until(what: string, ok: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe.each<FabricTransport>(["hop", "connect"])("a connector draining (%s)", (transport) => {
  it("sends new calls elsewhere, retries one still waiting for its first token elsewhere, and ends a stream under way with shutting_down, charging nothing to the target", async () => {
    await requireNats();
    const run = randomUUID().slice(0, 8);
    // X's upstream: a 10 s stream, and one that never answers; Y's answers at once.
    const upX = await startOpenAIUpstream({
      behavior: (r) =>
        modelOf(r) === "up-long"
          ? { kind: "answer", text: "tok ".repeat(200), chunks: 200, chunkDelayMs: 50 }
          : modelOf(r) === "up-hang"
            ? { kind: "hang" }
            : { kind: "answer", text: "from x" },
    });
    cleanups.push(() => upX.close());
    const upY = await startOpenAIUpstream({ behavior: { kind: "answer", text: "from y" } });
    cleanups.push(() => upY.close());
    const [portX, portY] = (await freePorts(2)) as [number, number];
    const urlX = `http://127.0.0.1:${portX}`;
    const common = (upstream: string) => `
nats: { url: nats://127.0.0.1:4222, namespace: connector_drain_${run} }
providers: { p: { type: openai, base_url: "${upstream}" } }
models:
  long: { targets: [{ provider: p, model: up-long }] }
  hang: { targets: [{ provider: p, model: up-hang }] }
  chat: { targets: [{ provider: p, model: up-chat }] }
routing:
  # One failure would open the breaker (and mark the target down): a wrong charge shows.
  circuit_breaker: { consecutive_failures: 1, cooldown_ms: 60000 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`;
    const dir = mkdtempSync(join(tmpdir(), "switchyard-connector-drain-"));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const start = (name: string, port: number, upstream: OpenAIUpstream) => {
      const file = join(dir, `${name}.yaml`);
      writeFileSync(
        file,
        `server: { connector: { host: 127.0.0.1, port: ${port} }, drain_timeout_ms: ${DRAIN_MS} }
${common(upstream.url)}`,
      );
      const p = runSwitchyard(name, ["start", "--config", file, "--service", "connector"], {
        SWITCHYARD_FABRIC_TRANSPORT: transport,
      });
      cleanups.push(() => p.stop());
      return p;
    };
    const x: ServiceProcess = start("x", portX, upX);
    await x.waitFor((l) => l.includes('"msg":"listening"'));

    // The ingress and router in this process; X is in their static list, Y joins on the bus.
    const edge: Fabric = await startFabric({
      config: testConfig(`peers: { connectors: ["${urlX}"] }\n${common(upX.url)}`),
      services: new Set(["ingress", "router"] as const),
      logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
      listen: { ingress: { host: "127.0.0.1", port: 0 } },
      transport,
    });
    cleanups.push(() => edge.stop(0));
    const ingress = `http://127.0.0.1:${edge.ports.ingress}`;
    const metrics = async () => (await fetch(`${ingress}/metrics`)).text();
    const client = new OpenAI({ baseURL: `${ingress}/v1`, apiKey: "unused", maxRetries: 0 });
    const messages = [{ role: "user" as const, content: "hi" }];

    // Every outcome the connectors report for passive health.
    const bus: Bus = await createBus({
      natsUrl: "nats://127.0.0.1:4222",
      namespace: `connector_drain_${run}`,
      name: "connector-drain-test",
      logger: pino({ level: "silent" }),
    });
    cleanups.push(() => bus.close());
    const outcomes: TargetOutcomeBatch[] = [];
    const watching = new AbortController();
    cleanups.push(async () => watching.abort());
    void (async () => {
      for await (const b of bus.outcomes(watching.signal)) outcomes.push(b);
    })();

    // Through X, the only connector yet: a stream under way, and a call with no first token.
    const long = await client.chat.completions.create({ model: "long", messages, stream: true });
    const longRead = (async () => {
      let text = "";
      try {
        for await (const c of long) text += c.choices[0]?.delta.content ?? "";
      } catch (error) {
        return { text, error };
      }
      return { text, error: undefined };
    })();
    await until("the stream's first tokens", async () => chats(upX).length === 1);
    const hang = client.chat.completions
      .create({ model: "hang", messages }, { maxRetries: 0 })
      .withResponse();
    await until("the call that hangs to reach X", () => chats(upX).length === 2);

    const y = start("y", portY, upY);
    await until(
      "the router to know Y",
      async () => metricValue(await metrics(), "switchyard_connectors_known") === 2,
    );

    x.child.kill("SIGTERM");
    await x.waitFor((l) => l.includes('"draining"'));
    // X is draining: what comes now goes to Y, at its first attempt, whichever X is in the
    // router's static list.
    const during = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        client.chat.completions
          .create({ model: "chat", messages, stream: i % 2 === 0 })
          .withResponse()
          .then(async ({ data, response }) => {
            let text = "";
            if ("choices" in data) text = data.choices[0]?.message.content ?? "";
            else for await (const c of data) text += c.choices[0]?.delta.content ?? "";
            return { text, attempts: response.headers.get("x-switchyard-attempts") };
          }),
      ),
    );
    expect(x.child.exitCode).toBeNull(); // they were all answered during X's drain
    expect(during).toEqual(Array(6).fill({ text: "from y", attempts: "1" }));
    expect(chats(upX)).toHaveLength(2);

    // X's drain runs out. The call that had no first token is made again through Y.
    const { data: answered, response } = await hang;
    expect(answered.choices[0]?.message.content).toBe("from y");
    expect(response.headers.get("x-switchyard-attempts")).toBe("1");
    // The stream under way ends with an error that says a shutdown cut it: not a clean end, and
    // not a lost connection that reads as an upstream failure.
    const { text, error } = await longRead;
    expect(text.length).toBeGreaterThan(0);
    expect(text.length).toBeLessThan("tok ".repeat(200).length);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe("shutting_down");
    expect((error as Error).message).toContain("the gateway is shutting down");
    const [code] = x.child.exitCode === null ? await once(x.child, "exit") : [x.child.exitCode];
    expect(code).toBe(0);
    // X stopped its upstream requests.
    await Promise.all(chats(upX).map((r) => r.closed));
    expect(chats(upX).every((r) => r.aborted)).toBe(true);

    const text2 = await metrics();
    for (const target of ["up-long", "up-hang"]) {
      expect(metricValue(text2, "switchyard_router_circuit_state", { provider: "p", target })).toBe(
        0,
      );
    }
    // Passive health: X published its outcomes before it stopped, so the success Y reports for
    // a call made after that comes after them (Y's eighth: the six, the retried one, this one).
    // None is a failure.
    const after = await client.chat.completions.create({ model: "chat", messages });
    expect(after.choices[0]?.message.content).toBe("from y");
    const yId = `-${y.child.pid}-`;
    await until(
      "Y's outcome for the last call",
      () =>
        outcomes.filter((b) => b.connectorId.includes(yId)).flatMap((b) => b.outcomes).length >= 8,
    );
    const failures = outcomes.flatMap((b) => b.outcomes).filter((o) => !o.success);
    expect(failures).toEqual([]);
  }, 60_000);
});

describe("a draining connector that peers.connectors lists", () => {
  it("is one info line to the router, which sends calls elsewhere until it announces itself again, without a warning per call", async () => {
    await requireNats();
    const namespace = `connector_drain_quiet_${randomUUID().slice(0, 8)}`;
    const up = await startOpenAIUpstream({
      behavior: (r) =>
        modelOf(r) === "up-hang" ? { kind: "hang" } : { kind: "answer", text: "ok" },
    });
    cleanups.push(() => up.close());
    const common = `
nats: { url: nats://127.0.0.1:4222, namespace: ${namespace} }
providers: { p: { type: openai, base_url: "${up.url}" } }
models:
  chat: { targets: [{ provider: p, model: up-chat }] }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`;
    const silent = pino({ level: "silent" });
    const connectorAt = async (port: number) => {
      const f = await startFabric({
        config: testConfig(common),
        services: new Set(["connector"] as const),
        logger: silent,
        listen: { connector: { host: "127.0.0.1", port } },
      });
      cleanups.push(() => f.stop(0));
      return f;
    };
    // X is listed in the router's peers.connectors; Y joins on the bus.
    const x = await connectorAt(0);
    const portX = x.ports.connector as number;
    const urlX = `http://127.0.0.1:${portX}`;
    const logs = captureLogs("debug");
    const edge = await startFabric({
      config: testConfig(`peers: { connectors: ["${urlX}"] }\n${common}`),
      services: new Set(["ingress", "router"] as const),
      logger: logs.logger,
      listen: { ingress: { host: "127.0.0.1", port: 0 }, router: { host: "127.0.0.1", port: 0 } },
    });
    cleanups.push(() => edge.stop(0));
    const ingress = `http://127.0.0.1:${edge.ports.ingress}`;
    const metrics = async () => (await fetch(`${ingress}/metrics`)).text();
    const y = await connectorAt(0);
    await until(
      "the router to know Y",
      async () => metricValue(await metrics(), "switchyard_connectors_known") === 2,
    );
    const served = async (port: number) =>
      metricValue(
        await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(),
        "switchyard_connector_upstream_requests_total",
        { provider: "p", outcome: "ok" },
      ) ?? 0;

    // A call through X of another router's (the test's own client) keeps X draining.
    const toX = createClient(
      ConnectorService,
      createConnectTransport({ baseUrl: urlX, httpVersion: "2", useBinaryFormat: true }),
    );
    const holding = new AbortController();
    const held = (async () => {
      const call = toX.chat(
        {
          context: { requestId: "holds-x-open" },
          target: { provider: "p", model: "up-hang" },
          params: {
            model: "hang",
            stream: true,
            messages: [
              {
                role: Role.USER,
                contentIsText: true,
                content: [{ part: { case: "text", value: "hi" } }],
              },
            ],
          },
        },
        { signal: holding.signal },
      );
      for await (const _ of call) {
        // nothing arrives
      }
    })().catch(() => {});
    await until("the held call to reach the upstream", () => chats(up).length === 1);

    const stopping = x.stop(10_000);
    const about = (l: Record<string, unknown>) => l.connector === urlX;
    await until("the router to hear that X is leaving", () => logs.lines().some(about));

    // Calls made while X drains all go to Y.
    const client = new OpenAI({ baseURL: `${ingress}/v1`, apiKey: "unused", maxRetries: 0 });
    const servedByY = await served(y.ports.connector as number);
    for (let i = 0; i < 12; i++) {
      const { data, response } = await client.chat.completions
        .create({ model: "chat", messages: [{ role: "user", content: "hi" }] })
        .withResponse();
      expect(data.choices[0]?.message.content).toBe("ok");
      expect(response.headers.get("x-switchyard-attempts")).toBe("1");
      // Spread over more than the 2 s a connector that failed to answer is avoided for.
      await new Promise((r) => setTimeout(r, 200));
    }
    expect((await served(y.ports.connector as number)) - servedByY).toBe(12);
    // Not one was sent to X to be refused, and nothing is a warning.
    expect(logs.lines().filter((l) => l.msg === "connector did not answer")).toEqual([]);
    expect(logs.lines().filter((l) => Number(l.level) >= 40)).toEqual([]);
    expect(
      logs
        .lines()
        .filter(about)
        .map((l) => l.msg),
    ).toEqual(["connector leaving"]);

    // X's drain ends; a connector started again at its address announces itself and is used.
    holding.abort();
    await held;
    await stopping;
    const x2 = await connectorAt(portX);
    await until("the router to send X's successor a call", async () => {
      await client.chat.completions.create({
        model: "chat",
        messages: [{ role: "user", content: "hi" }],
      });
      return (await served(portX)) > 0;
    });
    expect(x2.ports.connector).toBe(portX);
    expect(
      logs
        .lines()
        .filter(about)
        .map((l) => l.msg),
    ).toEqual(["connector leaving", "connector back"]);
    expect(logs.lines().filter((l) => Number(l.level) >= 40)).toEqual([]);
  }, 60_000);
});

describe("a listed connector that left and came back without announcing itself", () => {
  it("is passed over no longer than a drain lasts: past it, the connector at its address gets calls again", async () => {
    await requireNats();
    const namespace = `connector_drain_mute_${randomUUID().slice(0, 8)}`;
    const up = await startOpenAIUpstream({ behavior: { kind: "answer", text: "ok" } });
    cleanups.push(() => up.close());
    const upstream = `
providers: { p: { type: openai, base_url: "${up.url}" } }
models:
  chat: { targets: [{ provider: p, model: up-chat }] }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`;
    const nats = `nats: { url: nats://127.0.0.1:4222, namespace: ${namespace} }\n`;
    const silent = pino({ level: "silent" });
    // With NATS it announces itself (and says it leaves); without, it never does.
    const connectorAt = async (port: number, yaml: string) => {
      const f = await startFabric({
        config: testConfig(yaml),
        services: new Set(["connector"] as const),
        logger: silent,
        listen: { connector: { host: "127.0.0.1", port } },
      });
      cleanups.push(() => f.stop(0));
      return f;
    };
    const x = await connectorAt(0, nats + upstream);
    const portX = x.ports.connector as number;
    const urlX = `http://127.0.0.1:${portX}`;
    const logs = captureLogs("debug");
    // A 1 s drain: X is passed over for that and one heartbeat (2 s) of slack, 3 s in all.
    const edge = await startFabric({
      config: testConfig(
        `server: { drain_timeout_ms: 1000 }\npeers: { connectors: ["${urlX}"] }\n${nats}${upstream}`,
      ),
      services: new Set(["ingress", "router"] as const),
      logger: logs.logger,
      listen: { ingress: { host: "127.0.0.1", port: 0 }, router: { host: "127.0.0.1", port: 0 } },
    });
    cleanups.push(() => edge.stop(0));
    const ingress = `http://127.0.0.1:${edge.ports.ingress}`;
    const y = await connectorAt(0, nats + upstream);
    await until(
      "the router to know Y",
      async () =>
        metricValue(
          await (await fetch(`${ingress}/metrics`)).text(),
          "switchyard_connectors_known",
        ) === 2,
    );
    const served = async (f: Fabric) =>
      metricValue(
        await (await fetch(`http://127.0.0.1:${f.ports.connector}/metrics`)).text(),
        "switchyard_connector_upstream_requests_total",
        { provider: "p", outcome: "ok" },
      ) ?? 0;

    // X stops (nothing in flight: at once) and a successor without NATS takes its address.
    await x.stop(10_000);
    const about = (l: Record<string, unknown>) => l.connector === urlX;
    await until("the router to hear that X is leaving", () => logs.lines().some(about));
    const markedAt = Date.now();
    const x2 = await connectorAt(portX, upstream);
    const client = new OpenAI({ baseURL: `${ingress}/v1`, apiKey: "unused", maxRetries: 0 });
    const ask = () =>
      client.chat.completions.create({
        model: "chat",
        messages: [{ role: "user", content: "hi" }],
      });

    // Within a tenth of the mark, calls go to Y alone...
    while (Date.now() - markedAt < 300) await ask();
    expect(await served(x2)).toBe(0);
    expect(await served(y)).toBeGreaterThan(0);
    // ...and once it runs out, the successor gets its share though it never said it is back.
    await until("the router to send X's successor a call", async () => {
      await ask();
      return (await served(x2)) > 0;
    });
    expect(Date.now() - markedAt).toBeGreaterThanOrEqual(3000);
    // The router's membership sweep (every 0.5 s) says so once.
    await until("the router to say X's drain is over", () =>
      logs.lines().some((l) => about(l) && l.msg === "connector drain over; calling it again"),
    );
    expect(
      logs
        .lines()
        .filter(about)
        .map((l) => l.msg),
    ).toEqual(["connector leaving", "connector drain over; calling it again"]);
    expect(logs.lines().filter((l) => Number(l.level) >= 40)).toEqual([]);
  }, 60_000);
});
