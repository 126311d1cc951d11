import net from "node:net";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { type CapturedLogs, captureLogs } from "./helpers/logs.js";
import { metricValue } from "./helpers/metrics.js";

// Clients that go away in ways the HTTP layer hides (a pipelined request still queued behind
// another), or that stop reading: the gateway must let go of their requests all the same.

let gw: RunningFabric;
let logs: CapturedLogs;

beforeAll(async () => {
  logs = captureLogs();
  gw = await startOneProcess(
    testConfig(`
providers:
  slow: { type: mock, tokens: 1000, token_interval_ms: 50 }
  # Tokens as fast as they can be sent: far more than the socket buffers between the gateway
  # and a client that does not read can take.
  flood: { type: mock, tokens: 1000000, token_interval_ms: 0 }
models:
  slow: { targets: [{ provider: slow, model: m }] }
  flood: { targets: [{ provider: flood, model: f }] }
routing:
  retries: 0
  timeouts: { first_token_ms: 1000, idle_ms: 30000, total_ms: 2000 }
`),
    { logger: logs.logger },
  );
});

afterAll(async () => {
  await gw?.stop();
});

const body = (model: string, stream: boolean) =>
  JSON.stringify({ model, stream, messages: [{ role: "user", content: "go" }] });

function post(model: string, stream: boolean, id: string): string {
  const b = body(model, stream);
  return (
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `X-Request-Id: ${id}\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`
  );
}

async function gauges() {
  const m = await (await request(`${gw.url}/metrics`)).body.text();
  return {
    inflight: metricValue(m, "switchyard_inflight_requests", { api: "openai" }),
    streams: metricValue(m, "switchyard_open_streams", { api: "openai" }),
    connector: metricValue(m, "switchyard_connector_inflight_requests", { provider: "slow" }),
  };
}

async function settled(ms: number) {
  const deadline = Date.now() + ms;
  let g = await gauges();
  while (
    (g.inflight !== 0 || g.streams !== 0 || (g.connector ?? 0) !== 0) &&
    Date.now() < deadline
  ) {
    await new Promise((r) => setTimeout(r, 50));
    g = await gauges();
  }
  return g;
}

describe("a client that pipelines requests and leaves", () => {
  it("cancels the requests still queued behind the first, not only the first", async () => {
    const socket = net.connect(Number(new URL(gw.url).port), "127.0.0.1");
    socket.on("error", () => {});
    await new Promise((r) => socket.once("connect", r));
    // A long stream, and behind it on the same connection another and a whole answer.
    socket.write(
      post("slow", true, "pipe-1") + post("slow", true, "pipe-2") + post("slow", false, "pipe-3"),
    );
    await new Promise((r) => setTimeout(r, 300));
    socket.destroy();
    // total_ms is 2 s: a queued request left running would hold the gauges until then at least.
    const g = await settled(1_500);
    expect(g).toEqual({ inflight: 0, streams: 0, connector: 0 });
  });
});

describe("a client that stops reading its stream", () => {
  it("loses its connection at the request's deadline, and the request ends", async () => {
    const socket = net.connect(Number(new URL(gw.url).port), "127.0.0.1");
    socket.on("error", () => {});
    await new Promise((r) => socket.once("connect", r));
    socket.pause(); // never reads
    socket.write(post("flood", true, "never-reads"));
    const started = performance.now();
    // total_ms is 2 s; ten times that is the bound (before, it held on until the client read).
    let line: Record<string, unknown> | undefined;
    while (line === undefined && performance.now() - started < 20_000) {
      await new Promise((r) => setTimeout(r, 100));
      line = logs.lines().find((l) => l.request_id === "never-reads");
    }
    expect(line).toMatchObject({ status: 504, truncated: true, error: { kind: "timeout" } });
    expect(await settled(2_000)).toMatchObject({ inflight: 0, streams: 0 });
    socket.destroy();
  });
});
