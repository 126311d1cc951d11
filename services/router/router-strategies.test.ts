import { type Client, createClient, createRouterTransport } from "@connectrpc/connect";
import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { RouterService } from "../../gen/switchyard/router/v1/router_pb.js";
import { testConfig } from "../../test/helpers/fabric.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "../../test/upstreams/openai-upstream.js";
import { buildConnector } from "../connector/main.js";
import type { Strategy } from "../lib/config/types.js";
import { ConnectorPool } from "../lib/connector-pool.js";
import { CircuitBreakers } from "./circuit-breaker.js";
import { HealthView } from "./health-view.js";
import { createRouterService } from "./router-service.js";
import { createStrategies, type Strategies } from "./strategies.js";

const logger = pino({ level: "silent" });

/** Two fake OpenAI upstreams, behind providers a and b. */
let a: OpenAIUpstream;
let b: OpenAIUpstream;

beforeAll(async () => {
  a = await startOpenAIUpstream();
  b = await startOpenAIUpstream();
});
afterAll(async () => {
  await Promise.all([a.close(), b.close()]);
});

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  for (const u of [a, b]) {
    u.requests.length = 0;
    u.setBehavior({ kind: "answer" });
  }
});

interface Rig {
  client: Client<typeof RouterService>;
  strategies: Strategies;
}

interface Setup {
  strategy: Strategy;
  strategies: Strategies;
  /** Of a and b; default 1 each. */
  weights?: [number, number];
  firstTokenMs?: number;
}

/**
 * The router over an in-process Connect transport with model "chat" = a/model-a then b/model-b
 * under `strategy`, calling a real in-process connector that talks HTTP to the fake upstreams.
 */
function startRouter({ strategy, strategies, weights = [1, 1], firstTokenMs = 5000 }: Setup): Rig {
  const config = testConfig(`
providers:
  a: { type: openai, base_url: "${a.url}" }
  b: { type: openai, base_url: "${b.url}" }
models:
  chat:
    strategy: ${strategy}
    targets:
      - { provider: a, model: model-a, weight: ${weights[0]} }
      - { provider: b, model: model-b, weight: ${weights[1]} }
routing:
  backoff: { base_ms: 1, max_ms: 5 }
  timeouts: { first_token_ms: ${firstTokenMs}, idle_ms: 5000, total_ms: 10000 }
`);
  const connector = buildConnector({ config, logger, registry: new Registry() });
  cleanups.push(() => connector.close());
  const connectors = new ConnectorPool();
  connectors.add("c1", createRouterTransport(connector.routes));
  const impl = createRouterService({
    config,
    connectors,
    health: new HealthView(config.health.stale_after_ms),
    breakers: new CircuitBreakers(100, 60_000),
    logger,
    registry: new Registry(),
    strategies,
  });
  const transport = createRouterTransport((router) => router.service(RouterService, impl));
  return { client: createClient(RouterService, transport), strategies };
}

/** One streamed chat call to its end; the provider that answered. */
async function chat(rig: Rig): Promise<string | undefined> {
  let provider: string | undefined;
  const request = {
    context: { requestId: "req-strategy" },
    params: {
      model: "chat",
      stream: true,
      messages: [
        {
          role: Role.USER,
          contentIsText: true,
          content: [{ part: { case: "text" as const, value: "Say hello" } }],
        },
      ],
    },
  };
  for await (const res of rig.client.chat(request)) provider ??= res.chunk?.start?.provider;
  return provider;
}

const noExploring = () => 0.99;

describe("router strategies", () => {
  it("weighted 3:1 sends exactly 30 of 40 requests to the first target", async () => {
    const rig = startRouter({
      strategy: "weighted",
      weights: [3, 1],
      strategies: createStrategies(),
    });
    for (let batch = 0; batch < 4; batch++) {
      await Promise.all(Array.from({ length: 10 }, () => chat(rig)));
    }
    expect(a.requests).toHaveLength(30);
    expect(b.requests).toHaveLength(10);
  });

  it("least-latency moves traffic to the faster upstream once it has measured both", async () => {
    a.setBehavior({ kind: "answer", headersDelayMs: 150 });
    const rig = startRouter({
      strategy: "least-latency",
      strategies: createStrategies({ random: noExploring }),
    });
    const answered: Array<string | undefined> = [];
    for (let i = 0; i < 12; i++) answered.push(await chat(rig));
    // Each target is tried once while it has no data (configured order), then b only.
    expect(answered).toEqual(["a", "b", ...Array<string>(10).fill("b")]);
    expect(rig.strategies.latency.estimate("a", "model-a")).toBeGreaterThanOrEqual(150);
    expect(rig.strategies.latency.estimate("b", "model-b")).toBeLessThan(150);
  });

  it("least-latency ranks by the first token, not by an opening that comes at once", async () => {
    // a sends its role chunk at once and thinks 150 ms before its first token; b answers in full
    // after 60 ms. Timed at the opening, a would look the faster.
    a.setBehavior({ kind: "answer", thinkMs: 150 });
    b.setBehavior({ kind: "answer", headersDelayMs: 60 });
    const rig = startRouter({
      strategy: "least-latency",
      strategies: createStrategies({ random: noExploring }),
    });
    const answered: Array<string | undefined> = [];
    for (let i = 0; i < 8; i++) answered.push(await chat(rig));
    expect(answered).toEqual(["a", "b", ...Array<string>(6).fill("b")]);
    expect(rig.strategies.latency.estimate("a", "model-a")).toBeGreaterThanOrEqual(150);
  });

  it("least-inflight sends a call to the target with fewer attempts running", async () => {
    a.setBehavior({ kind: "answer", headersDelayMs: 300 });
    // Both targets are drawn; the tie on an idle router goes to the first drawn, a.
    const rig = startRouter({
      strategy: "least-inflight",
      strategies: createStrategies({ random: () => 0 }),
    });
    const slow = chat(rig);
    await until(() => a.requests.length === 1);
    expect(rig.strategies.inflight.get("a", "model-a")).toBe(1);
    expect(await chat(rig)).toBe("b");
    expect(await slow).toBe("a");
    // Every attempt that ended gave its count back.
    expect(rig.strategies.inflight.get("a", "model-a")).toBe(0);
    expect(rig.strategies.inflight.get("b", "model-b")).toBe(0);
  });

  it("counts a first-token timeout as first_token_ms of latency, and moves on", async () => {
    a.setBehavior({ kind: "hang" });
    const rig = startRouter({
      strategy: "least-latency",
      strategies: createStrategies({ random: noExploring }),
      firstTokenMs: 200,
    });
    expect(await chat(rig)).toBe("b");
    expect(rig.strategies.latency.estimate("a", "model-a")).toBe(200);
    expect(rig.strategies.inflight.get("a", "model-a")).toBe(0);
  });

  it("measures an embedding's answer time and counts it in flight while it runs", async () => {
    a.setBehavior({ kind: "answer", headersDelayMs: 100 });
    const rig = startRouter({
      strategy: "least-latency",
      strategies: createStrategies({ random: noExploring }),
    });
    const call = rig.client.embed({
      context: { requestId: "req-embed" },
      params: { model: "chat", inputs: ["hello"] },
    });
    await until(() => a.requests.length === 1);
    expect(rig.strategies.inflight.get("a", "model-a")).toBe(1);
    expect((await call).result?.provider).toBe("a");
    expect(rig.strategies.inflight.get("a", "model-a")).toBe(0);
    expect(rig.strategies.latency.estimate("a", "model-a")).toBeGreaterThanOrEqual(100);
  });
});

async function until(check: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms}ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
