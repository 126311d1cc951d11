import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fabric, startFabric } from "../services/fabric.js";
import { testConfig } from "./helpers/fabric.js";
import { metricValue } from "./helpers/metrics.js";
import { freePorts, requireNats, runSwitchyard, type ServiceProcess } from "./helpers/processes.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// A connector process that dies under a stream: its target did nothing wrong. The ingress and
// router run in this process; the connector is a process of its own that the test kills.
let upstream: OpenAIUpstream;
let dir: string;
let configText: string;
let connector: ServiceProcess | undefined;
let edge: Fabric | undefined;
const run = randomUUID().slice(0, 8);

beforeAll(async () => {
  await requireNats();
  // Long enough that the kill always lands mid-stream: 40 chunks, 50 ms apart.
  upstream = await startOpenAIUpstream({
    behavior: { kind: "answer", text: "tok ".repeat(40), chunks: 40, chunkDelayMs: 50 },
  });
  const [connectorPort] = await freePorts(1);
  configText = `
server:
  connector: { host: 127.0.0.1, port: ${connectorPort} }
peers: { connectors: ["http://127.0.0.1:${connectorPort}"] }
nats: { url: nats://127.0.0.1:4222, namespace: connector_loss_${run} }
providers:
  p: { type: openai, base_url: "${upstream.url}" }
models:
  m: { targets: [{ provider: p, model: fake-model }] }
routing:
  # One failure opens the breaker, so a single wrongly charged stream shows.
  circuit_breaker: { consecutive_failures: 1, cooldown_ms: 60000 }
`;
  dir = mkdtempSync(join(tmpdir(), "switchyard-connector-loss-"));
  writeFileSync(join(dir, "switchyard.yaml"), configText);
  connector = runSwitchyard("connector", [
    "start",
    "--config",
    join(dir, "switchyard.yaml"),
    "--service",
    "connector",
  ]);
  await connector.waitFor((l) => l.includes('"msg":"listening"'));
  edge = await startFabric({
    config: testConfig(configText),
    services: new Set(["ingress", "router"] as const),
    logger: pino({ level: "silent" }),
    listen: { ingress: { host: "127.0.0.1", port: 0 } },
  });
});

afterAll(async () => {
  await edge?.stop(0);
  await connector?.stop();
  await upstream?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("a connector process killed mid-stream", () => {
  it("ends the client's stream with an error, and does not charge the target's breaker", async () => {
    const ingress = `http://127.0.0.1:${edge?.ports.ingress}`;
    const client = new OpenAI({ baseURL: `${ingress}/v1`, apiKey: "unused", maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: "m",
      stream: true,
      messages: [{ role: "user", content: "hi" }],
    });
    let text = "";
    const read = (async () => {
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? "";
        if (text && connector?.child.exitCode === null) connector.child.kill("SIGKILL");
      }
    })();
    await expect(read).rejects.toThrow(/provider connector/);
    expect(text.length).toBeGreaterThan(0);

    const metrics = await (await fetch(`${ingress}/metrics`)).text();
    const labels = { provider: "p", target: "fake-model" };
    expect(metricValue(metrics, "switchyard_router_circuit_state", labels)).toBe(0);
    expect(
      metricValue(metrics, "switchyard_truncated_streams_total", { model: "m", provider: "p" }),
    ).toBe(1);
  });
});
