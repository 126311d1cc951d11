// A shutdown whose drain time runs out answers the requests still in flight before it cuts their
// connections: 503 / UNAVAILABLE "the gateway is shutting down", with the attempts each made,
// through the official clients of every API (none of them sees a socket error), and an SSE
// stream already under way ends with its API's error event, never a clean end.
import { randomUUID } from "node:crypto";
import Anthropic from "@anthropic-ai/sdk";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import OpenAI from "openai";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { type Fabric, SERVICE_NAMES, startFabric } from "../services/fabric.js";
import { testConfig } from "./helpers/fabric.js";
import { type CapturedLogs, captureLogs } from "./helpers/logs.js";
import { requireNats } from "./helpers/processes.js";
import {
  type OpenAIUpstream,
  type RecordedRequest,
  startOpenAIUpstream,
} from "./upstreams/openai-upstream.js";

/** The drain time: every request below is in flight, and never ends by itself, when it runs out. */
const GRACE_MS = 200;

let upstream: OpenAIUpstream;
let fabric: Fabric | undefined;
let url: string;
let logs: CapturedLogs;

beforeEach(async () => {
  upstream = await startOpenAIUpstream({
    behavior: (r) => {
      const model = modelOf(r);
      // `stall`: a stream that sends its first chunks and then nothing. `retry`: a failure,
      // then an upstream that never answers (the second attempt hangs).
      if (model === "up-stall")
        return { kind: "answer", text: "one two three", chunks: 3, stallAfterChunks: 2 };
      if (
        model === "up-retry" &&
        upstream.requests.filter((q) => modelOf(q) === "up-retry").length === 1
      ) {
        return { kind: "error", status: 500 };
      }
      return { kind: "hang" };
    },
  });
  logs = captureLogs();
  fabric = await startFabric({
    config: testConfig(`
providers:
  up: { type: openai, base_url: "${upstream.url}", api_key: sk-up }
models:
  slow: { targets: [{ provider: up, model: up-slow }] }
  stall: { targets: [{ provider: up, model: up-stall }] }
  retry: { targets: [{ provider: up, model: up-retry }] }
routing: { retries: 2, backoff: { base_ms: 1, max_ms: 1 } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    services: new Set(SERVICE_NAMES),
    logger: logs.logger,
    listen: { ingress: { host: "127.0.0.1", port: 0 } },
  });
  url = `http://127.0.0.1:${fabric.ports.ingress}`;
});

afterEach(async () => {
  await fabric?.stop(0);
  fabric = undefined;
  await upstream.close();
});

function modelOf(r: RecordedRequest): string | undefined {
  return (r.body as { model?: string } | undefined)?.model;
}

/** The chat requests the upstream received (not the prober's model lists). */
function chats(): RecordedRequest[] {
  return upstream.requests.filter((r) => r.path.endsWith("/chat/completions"));
}

/** Resolves once the upstream has received `n` chat requests in all. */
async function upstreamHas(n: number): Promise<void> {
  for (let i = 0; i < 500 && chats().length < n; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  expect(chats().length).toBeGreaterThanOrEqual(n);
}

/** The ingress's one line for the request `id`. */
function lineOf(id: string): Record<string, unknown> | undefined {
  const mine = logs.lines().filter((l) => l.request_id === id && l.service === "ingress");
  expect(mine).toHaveLength(1);
  return mine[0];
}

async function stop(): Promise<number> {
  const started = performance.now();
  await fabric?.stop(GRACE_MS);
  fabric = undefined;
  return performance.now() - started;
}

const openai = () => new OpenAI({ baseURL: `${url}/v1`, apiKey: "x", maxRetries: 0 });
const anthropic = () => new Anthropic({ baseURL: url, apiKey: "x", maxRetries: 0 });
const messages = [{ role: "user" as const, content: "hello" }];

describe("a drain that runs out", () => {
  it("answers whole REST requests 503 in their API's envelope, with the attempts each made, and stops their upstream requests", async () => {
    const oa = openai()
      .chat.completions.create(
        { model: "retry", messages },
        { headers: { "x-request-id": "cut-openai" } },
      )
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    const an = anthropic()
      .messages.create(
        { model: "slow", max_tokens: 16, messages },
        { headers: { "x-request-id": "cut-anthropic" } },
      )
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    await upstreamHas(3); // retry's failure and its second attempt, and slow's one
    const took = await stop();
    expect(took).toBeLessThan(10_000);

    const oe = await oa;
    expect(oe).toBeInstanceOf(OpenAI.APIError);
    const oerr = oe as InstanceType<typeof OpenAI.APIError>;
    expect(oerr.status).toBe(503);
    expect(oerr.code).toBe("shutting_down");
    expect(oerr.message).toContain("the gateway is shutting down");
    expect(oerr.headers?.get("x-request-id")).toBe("cut-openai");
    expect(oerr.headers?.get("x-switchyard-attempts")).toBe("2");
    expect(oerr.headers?.get("connection")).toBe("close");

    const ae = await an;
    expect(ae).toBeInstanceOf(Anthropic.APIError);
    const aerr = ae as InstanceType<typeof Anthropic.APIError>;
    expect(aerr.status).toBe(503);
    expect(aerr.message).toContain("the gateway is shutting down");
    expect(aerr.headers?.get("x-request-id")).toBe("cut-anthropic");
    expect(aerr.headers?.get("x-switchyard-attempts")).toBe("1");

    // Every upstream request the cut found open was cancelled.
    await Promise.all(chats().map((r) => r.closed));
    // (The first, answered 500 at once, was over before.)
    expect(chats().filter((r) => r.aborted)).toHaveLength(2);

    expect(lineOf("cut-openai")).toMatchObject({ status: 503, outcome: "shutdown", attempts: 2 });
    expect(lineOf("cut-anthropic")).toMatchObject({
      status: 503,
      outcome: "shutdown",
      attempts: 1,
    });
  }, 30_000);

  it("ends an SSE stream under way with its API's error event, never a clean end", async () => {
    const oa = (async () => {
      const stream = await openai().chat.completions.create(
        { model: "stall", messages, stream: true },
        { headers: { "x-request-id": "cut-sse-openai" } },
      );
      const seen: string[] = [];
      try {
        for await (const c of stream) seen.push(c.choices[0]?.finish_reason ?? "chunk");
      } catch (e) {
        return { seen, error: e };
      }
      return { seen, error: undefined };
    })();
    const an = (async () => {
      const stream = anthropic().messages.stream(
        { model: "stall", max_tokens: 16, messages },
        { headers: { "x-request-id": "cut-sse-anthropic" } },
      );
      const seen: string[] = [];
      try {
        for await (const e of stream) seen.push(e.type);
      } catch (e) {
        return { seen, error: e };
      }
      return { seen, error: undefined };
    })();
    await upstreamHas(2);
    // Both streams have begun: the first chunks are through the gateway.
    await new Promise((r) => setTimeout(r, 100));
    await stop();

    const o = await oa;
    expect(o.seen.length).toBeGreaterThan(0);
    expect(o.seen).not.toContain("stop");
    expect(o.error).toBeInstanceOf(OpenAI.APIError);
    expect(String((o.error as Error).message)).toContain("the gateway is shutting down");

    const a = await an;
    expect(a.seen).toContain("message_start");
    expect(a.seen).not.toContain("message_stop");
    expect(a.error).toBeInstanceOf(Anthropic.APIError);
    expect(String((a.error as Error).message)).toContain("the gateway is shutting down");

    await Promise.all(chats().map((r) => r.closed));
    expect(chats().every((r) => r.aborted)).toBe(true);
    for (const id of ["cut-sse-openai", "cut-sse-anthropic"]) {
      expect(lineOf(id)).toMatchObject({
        status: 503,
        outcome: "shutdown",
        attempts: 1,
        truncated: false,
      });
    }
  }, 30_000);

  it("answers GatewayService calls of every protocol UNAVAILABLE", async () => {
    const params = {
      model: "slow",
      messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "hi" } }] }],
    };
    const transports = {
      "connect-h1": createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
      "connect-h2": createConnectTransport({ baseUrl: url, httpVersion: "2" }),
      grpc: createGrpcTransport({ baseUrl: url }),
      "grpc-web": createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1" }),
    };
    const calls: Array<Promise<[string, unknown]>> = [];
    for (const [name, transport] of Object.entries(transports)) {
      const client = createClient(GatewayService, transport);
      calls.push(
        client.chat({ params }, { headers: { "x-request-id": `cut-${name}-unary` } }).then(
          () => [`${name}-unary`, undefined],
          (e: unknown) => [`${name}-unary`, e],
        ),
      );
      calls.push(
        (async (): Promise<[string, unknown]> => {
          try {
            for await (const _ of client.chatStream(
              { params },
              { headers: { "x-request-id": `cut-${name}-stream` } },
            )) {
              // nothing comes before the cut
            }
            return [`${name}-stream`, undefined];
          } catch (e) {
            return [`${name}-stream`, e];
          }
        })(),
      );
    }
    await upstreamHas(calls.length);
    await stop();
    for (const [name, err] of await Promise.all(calls)) {
      expect(err, name).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code, name).toBe(Code.Unavailable);
      expect((err as ConnectError).rawMessage, name).toContain("the gateway is shutting down");
      expect(lineOf(`cut-${name}`), name).toMatchObject({
        status: 503,
        outcome: "shutdown",
        attempts: 1,
      });
    }
    await Promise.all(chats().map((r) => r.closed));
    expect(chats().every((r) => r.aborted)).toBe(true);
  }, 30_000);
});

describe("a router in its own process whose drain runs out", () => {
  it("answers the calls it holds UNAVAILABLE with their attempts, which the ingress passes on", async () => {
    await requireNats();
    const run = randomUUID().slice(0, 8);
    const yaml = (routerPort: number) => `
peers: { router: "http://127.0.0.1:${routerPort}", connectors: [] }
nats: { url: nats://127.0.0.1:4222, namespace: drain_${run} }
providers:
  up: { type: openai, base_url: "${upstream.url}", api_key: sk-up }
models:
  retry: { targets: [{ provider: up, model: up-retry }] }
routing: { retries: 2, backoff: { base_ms: 1, max_ms: 1 } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`;
    const local = { host: "127.0.0.1", port: 0 };
    const backend = await startFabric({
      config: testConfig(yaml(0)),
      services: new Set(["router", "connector", "prober"] as const),
      logger: logs.logger,
      listen: { router: local, connector: local, prober: local },
    });
    const front = await startFabric({
      config: testConfig(yaml(backend.ports.router as number)),
      services: new Set(["ingress"] as const),
      logger: logs.logger,
      listen: { ingress: local },
    });
    try {
      const client = new OpenAI({
        baseURL: `http://127.0.0.1:${front.ports.ingress}/v1`,
        apiKey: "x",
        maxRetries: 0,
      });
      const answer = client.chat.completions
        .create({ model: "retry", messages }, { headers: { "x-request-id": "cut-by-router" } })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      await upstreamHas(2); // the failure, and the second attempt, which hangs
      await backend.stop(GRACE_MS);
      const err = (await answer) as InstanceType<typeof OpenAI.APIError>;
      expect(err).toBeInstanceOf(OpenAI.APIError);
      expect([err.status, err.code]).toEqual([503, "shutting_down"]);
      expect(err.headers?.get("x-switchyard-attempts")).toBe("2");
      expect(lineOf("cut-by-router")).toMatchObject({
        status: 503,
        outcome: "shutdown",
        attempts: 2,
      });
      await Promise.all(chats().map((r) => r.closed));
      expect(chats().filter((r) => r.aborted)).toHaveLength(1);
    } finally {
      await front.stop(0);
      await backend.stop(0);
    }
  }, 30_000);
});
