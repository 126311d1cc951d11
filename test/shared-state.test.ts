import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PrivateNats, startPrivateNats } from "./helpers/nats-server.js";
import { freePorts, runSwitchyard, type ServiceProcess } from "./helpers/processes.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// Shared state over NATS with separate processes: two router+ingress processes, two probers,
// connectors that come and go, and a NATS server of this test's own that it stops and restarts.
const PROBE_INTERVAL_MS = 500;
let nats: PrivateNats;
let up1: OpenAIUpstream;
let up2: OpenAIUpstream;
let dir: string;
const procs = new Map<string, ServiceProcess>();
const ingress: string[] = [];
const proberPorts: number[] = [];

/** Answers probes (GET /models) but fails every completion: only live traffic can tell. */
const failCompletions = (up: OpenAIUpstream) =>
  up.setBehavior((req) =>
    req.method === "POST" ? { kind: "error", status: 500 } : { kind: "answer", text: "ok" },
  );

type Ports = Partial<Record<"ingress" | "router" | "connector" | "prober", number | undefined>>;

function configFor(ports: Ports, namespace?: string) {
  const file = join(dir, `config-${Object.values(ports).join("-")}.yaml`);
  writeFileSync(
    file,
    `
server:
  ingress: { host: 127.0.0.1, port: ${ports.ingress ?? 0} }
  router: { host: 127.0.0.1, port: ${ports.router ?? 0} }
  connector: { host: 127.0.0.1, port: ${ports.connector ?? 0} }
  prober: { host: 127.0.0.1, port: ${ports.prober ?? 0} }
  drain_timeout_ms: 2000
peers:
  connectors: []
nats: { url: "${nats.url}"${namespace ? `, namespace: ${namespace}` : ""} }
providers:
  p1: { type: openai, base_url: "${up1.url}" }
  p2: { type: openai, base_url: "${up2.url}" }
models:
  chat:
    targets:
      - { provider: p1, model: m1 }
      - { provider: p2, model: m2 }
routing:
  retries: 2
  backoff: { base_ms: 1, max_ms: 5 }
  circuit_breaker: { consecutive_failures: 3, cooldown_ms: 5000 }
health: { probe_interval_ms: ${PROBE_INTERVAL_MS}, stale_after_ms: 20000 }
`,
  );
  return file;
}

async function start(name: string, services: string[], ports: Ports, namespace?: string) {
  const args = [
    "start",
    "--config",
    configFor(ports, namespace),
    ...services.flatMap((s) => ["--service", s]),
  ];
  const p = runSwitchyard(name, args);
  procs.set(name, p);
  await p.waitFor((l) => l.includes('"listening"'));
  return p;
}

async function chat(
  url: string,
): Promise<{ status: number; provider?: string | undefined; attempts?: string | undefined }> {
  const res = await request(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "chat", messages: [{ role: "user", content: "hi" }] }),
  });
  await res.body.dump();
  return {
    status: res.statusCode,
    provider: res.headers["x-switchyard-provider"] as string | undefined,
    attempts: res.headers["x-switchyard-attempts"] as string | undefined,
  };
}

/** Requests in a closed loop over both ingresses until stopped; counts what failed. */
function steadyLoad(concurrency: number) {
  let running = true;
  const failures: string[] = [];
  let ok = 0;
  const workers = Array.from({ length: concurrency }, async (_, w) => {
    for (let i = 0; running; i++) {
      const url = ingress[(w + i) % ingress.length] as string;
      const r = await chat(url).catch((e: Error) => ({ status: 0, error: e.message }));
      if (r.status === 200) ok++;
      else failures.push(JSON.stringify(r));
    }
  });
  return {
    ok: () => ok,
    async stop() {
      running = false;
      await Promise.all(workers);
      return { ok, failures };
    },
  };
}

async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The sum of a metric's series on a service's /metrics, optionally only those with `label`. */
async function metric(port: number, name: string, label = ""): Promise<number> {
  const text = await (await request(`http://127.0.0.1:${port}/metrics`)).body.text();
  let sum = 0;
  for (const line of text.split("\n"))
    if (line.startsWith(name) && line.includes(label)) sum += Number(line.split(" ").at(-1));
  return sum;
}

/**
 * Makes p1 fail live traffic through the first ingress only, then expects the second router —
 * which never saw those failures — to stop trying p1: the proof that state is shared.
 */
async function expectSharedDownAfterFailures() {
  failCompletions(up1);
  for (let i = 0; i < 3; i++) {
    const r = await chat(ingress[0] as string);
    expect(r.status).toBe(200);
  }
  await eventually("the second router to skip p1", async () => {
    const r = await chat(ingress[1] as string);
    return r.provider === "p2" && r.attempts === "1" ? r : undefined;
  });
  up1.setBehavior({ kind: "answer", text: "ok" });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "switchyard-shared-"));
  nats = await startPrivateNats();
  up1 = await startOpenAIUpstream({ behavior: { kind: "answer", text: "one" } });
  up2 = await startOpenAIUpstream({ behavior: { kind: "answer", text: "two" } });
  const [i1, r1, i2, r2, c1, pr1, pr2] = (await freePorts(7)) as number[];
  proberPorts.push(pr1 as number, pr2 as number);
  await Promise.all([
    start("connector-1", ["connector"], { connector: c1 }),
    start("router-ingress-1", ["router", "ingress"], { ingress: i1, router: r1 }),
    start("router-ingress-2", ["router", "ingress"], { ingress: i2, router: r2 }),
    start("prober-1", ["prober"], { prober: pr1 as number }),
    start("prober-2", ["prober"], { prober: pr2 }),
  ]);
  ingress.push(`http://127.0.0.1:${i1}`, `http://127.0.0.1:${i2}`);
  // Routers find the connector from its announcement.
  for (const url of ingress)
    await eventually(`${url} to answer`, async () =>
      (await chat(url)).status === 200 ? true : undefined,
    );
}, 60_000);

afterAll(async () => {
  await Promise.all([...procs.values()].map((p) => p.stop()));
  await up1?.close();
  await up2?.close();
  await nats?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("shared state over NATS", () => {
  it("probes each target once per interval, whatever the number of routers and probers", async () => {
    const upstreamProbes = () => up1.requests.filter((r) => r.method === "GET").length;
    const proberCounts = () =>
      Promise.all(
        proberPorts.map((port) => metric(port, "switchyard_prober_probes_total{", 'provider="p1"')),
      );
    await eventually("a prober to be probing", async () =>
      (await proberCounts()).some((n) => n > 2) ? true : undefined,
    );
    const [before, upBefore] = [await proberCounts(), upstreamProbes()];
    await new Promise((r) => setTimeout(r, 2_000));
    const [after, upAfter] = [await proberCounts(), upstreamProbes()];
    const active = after.map((n, i) => n - (before[i] ?? 0));
    // One prober holds the lease and probes; the other stands by and sends nothing.
    expect(active.filter((n) => n > 0)).toHaveLength(1);
    // Every probe the upstream saw came from that one prober (±1 for a probe in flight).
    const sent = active.reduce((x, y) => x + y, 0);
    expect(Math.abs(upAfter - upBefore - sent)).toBeLessThanOrEqual(1);
  });

  it("marks a target that fails live traffic down for every router before the next probe", async () => {
    await expectSharedDownAfterFailures();
  });

  it("spreads load over connectors as they join and loses nothing when one is killed", async () => {
    const load = steadyLoad(4);
    const [c2, c3] = (await freePorts(2)) as number[];
    await Promise.all([
      start("connector-2", ["connector"], { connector: c2 }),
      start("connector-3", ["connector"], { connector: c3 }),
    ]);
    const served = (port: number) => metric(port, "switchyard_connector_upstream_requests_total");
    await eventually("new connectors to take load", async () =>
      (await served(c2 as number)) > 0 && (await served(c3 as number)) > 0 ? true : undefined,
    );
    // A crash, not a drain: calls in flight on it must be retried elsewhere.
    procs.get("connector-3")?.child.kill("SIGKILL");
    const after = load.ok();
    await eventually("load to go on after the kill", async () =>
      load.ok() > after + 50 ? true : undefined,
    );
    const { ok, failures } = await load.stop();
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(50);
  });

  it("keeps a router that knows no connector out of service, and its requests wait for one", async () => {
    // A namespace of its own: no connector is there until this test starts one.
    const [i, r, c] = (await freePorts(3)) as number[];
    await start("lonely-router", ["router", "ingress"], { ingress: i, router: r }, "lonely");
    const url = `http://127.0.0.1:${i}`;
    const ready = async () => {
      const res = await request(`${url}/readyz`);
      await res.body.dump();
      return res.statusCode;
    };
    expect(await ready()).toBe(503);
    // Just started: a request waits a while for a connector to announce itself before failing.
    const started = performance.now();
    expect((await chat(url)).status).toBe(503);
    expect(performance.now() - started).toBeGreaterThanOrEqual(2_500);
    await start("lonely-connector", ["connector"], { connector: c }, "lonely");
    await eventually("the router to be ready", async () =>
      (await ready()) === 200 ? true : undefined,
    );
    expect((await chat(url)).status).toBe(200);
    await Promise.all(["lonely-router", "lonely-connector"].map((n) => procs.get(n)?.stop()));
  });

  it("serves without failures while NATS is down, and shares state again once it is back", async () => {
    const load = steadyLoad(2);
    await new Promise((r) => setTimeout(r, 500));
    await nats.stop();
    const during = load.ok();
    await eventually("requests to keep succeeding without NATS", async () =>
      load.ok() > during + 30 ? true : undefined,
    );
    await nats.start();
    await new Promise((r) => setTimeout(r, 1_000));
    const { failures } = await load.stop();
    expect(failures).toEqual([]);
    // Wait out the earlier cooldown, then prove health flows between the routers again.
    await eventually(
      "p1 to be tried first again",
      async () => {
        const r = await chat(ingress[1] as string);
        return r.provider === "p1" ? r : undefined;
      },
      15_000,
    );
    await expectSharedDownAfterFailures();
  });

  it("takes the prober lease again after NATS restarts without its store", async () => {
    const probes = () =>
      Promise.all(
        proberPorts.map((port) => metric(port, "switchyard_prober_probes_total{", 'provider="p1"')),
      ).then((counts) => counts.reduce((x, y) => x + y, 0));
    await nats.stop();
    nats.wipe();
    await nats.start();
    // The lease bucket went with the store: until a prober creates it again, none probes.
    const after = await probes();
    await eventually(
      "a prober to probe again",
      async () => ((await probes()) > after + 2 ? true : undefined),
      20_000,
    );
  });
});
