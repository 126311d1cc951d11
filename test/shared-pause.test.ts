// A target that asked one router for a pause (429 or 503 with Retry-After) is paused for every
// router: two routers share health over a real NATS, each with an ingress of its own, and only
// router A ever calls the target that asks. Router B learns the pause from shared health and
// honours it as A does: it skips the target while another can take the call, and when none can,
// answers as the target did, with what is left of the pause, without calling it.
import { randomUUID } from "node:crypto";
import OpenAI from "openai";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fabric, type ServiceName, startFabric } from "../services/fabric.js";
import { testConfig } from "./helpers/fabric.js";
import { metricValue } from "./helpers/metrics.js";
import { requireNats } from "./helpers/processes.js";
import {
  type OpenAIUpstream,
  type RecordedRequest,
  startOpenAIUpstream,
} from "./upstreams/openai-upstream.js";

/** The pause the targets ask for: far longer than the test takes to use it. */
const RETRY_AFTER_S = 30;

const fabrics: Fabric[] = [];
const upstreams: OpenAIUpstream[] = [];
let limited: OpenAIUpstream;
let busy: OpenAIUpstream;
let spare: OpenAIUpstream;
let routerA: Edge;
let routerB: Edge;

interface Edge {
  url: string;
  client: OpenAI;
  metrics(): Promise<string>;
}

const chats = (u: OpenAIUpstream) => u.requests.filter((r) => r.method === "POST");
/** Answers probes (GET /models), and `status` with Retry-After to every call. */
const refusing = (status: number) => (r: RecordedRequest) =>
  r.method === "POST"
    ? { kind: "error" as const, status, headers: { "retry-after": String(RETRY_AFTER_S) } }
    : { kind: "answer" as const };

async function until(what: string, ok: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  await requireNats();
  limited = await startOpenAIUpstream({ behavior: refusing(429) });
  busy = await startOpenAIUpstream({ behavior: refusing(503) });
  spare = await startOpenAIUpstream({ behavior: { kind: "answer", text: "from spare" } });
  upstreams.push(limited, busy, spare);
  const config = testConfig(`
peers: { connectors: [] }
nats: { url: nats://127.0.0.1:4222, namespace: shared_pause_${randomUUID().slice(0, 8)} }
providers:
  limited: { type: openai, base_url: "${limited.url}" }
  busy: { type: openai, base_url: "${busy.url}" }
  spare: { type: openai, base_url: "${spare.url}" }
models:
  limited: { targets: [{ provider: limited, model: m }, { provider: spare, model: m }] }
  limited-only: { targets: [{ provider: limited, model: m }] }
  busy: { targets: [{ provider: busy, model: m }, { provider: spare, model: m }] }
  busy-only: { targets: [{ provider: busy, model: m }] }
routing:
  retries: 2
  backoff: { base_ms: 1, max_ms: 5 }
  # Failures of the spare target must not trip it for the cases that follow.
  circuit_breaker: { consecutive_failures: 100, cooldown_ms: 60000 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`);
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
  const start = async (services: ServiceName[]) => {
    const f = await startFabric({
      config,
      services: new Set(services),
      logger,
      listen: Object.fromEntries(services.map((s) => [s, { host: "127.0.0.1", port: 0 }])),
    });
    fabrics.push(f);
    return f;
  };
  // The connector and the prober that folds its reports into shared health; then two routers,
  // each behind its own ingress, that find the connector by its announcement.
  const back = await start(["connector", "prober"]);
  const edges = await Promise.all([start(["ingress", "router"]), start(["ingress", "router"])]);
  const [a, b] = edges.map((f): Edge => {
    const url = `http://127.0.0.1:${f.ports.ingress}`;
    return {
      url,
      client: new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 }),
      metrics: async () => (await fetch(`${url}/metrics`)).text(),
    };
  }) as [Edge, Edge];
  routerA = a;
  routerB = b;
  for (const edge of [routerA, routerB]) {
    await until(
      "the router to know the connector",
      async () => (metricValue(await edge.metrics(), "switchyard_connectors_known") ?? 0) > 0,
    );
  }
  // Until it holds its lease the prober folds no outcome into shared health: one that came
  // sooner (a slow start on a loaded machine) would never reach router B.
  const proberMetrics = `http://127.0.0.1:${back.ports.prober}/metrics`;
  await until(
    "the prober to hold its lease",
    async () =>
      metricValue(await (await fetch(proberMetrics)).text(), "switchyard_prober_active") === 1,
  );
}, 60_000);

afterAll(async () => {
  for (const f of fabrics.reverse()) await f.stop(0);
  await Promise.all(upstreams.map((u) => u.close()));
});

const messages = [{ role: "user" as const, content: "hi" }];

describe.each([
  { provider: "limited", status: 429 },
  { provider: "busy", status: 503 },
])("a target that answers router A $status with Retry-After", ({ provider, status }) => {
  it("is skipped by router B, which answers its own calls to it with the pause's status and what is left of it", async () => {
    const target = provider === "limited" ? limited : busy;
    // Router A calls the target, is refused, and the spare target answers.
    const { data, response } = await routerA.client.chat.completions
      .create({ model: provider, messages })
      .withResponse();
    expect(data.choices[0]?.message.content).toBe("from spare");
    expect(response.headers.get("x-switchyard-attempts")).toBe("2");
    expect(chats(target)).toHaveLength(1);

    // Router B has not called it. It learns of the pause from shared health: down, or still
    // healthy when the prober's probe of it answered after the call was refused.
    await until(
      "router B to see the target paused in shared health",
      async () =>
        (metricValue(await routerB.metrics(), "switchyard_router_target_paused_seconds", {
          provider,
          target: "m",
        }) ?? 0) >
        RETRY_AFTER_S / 2,
    );

    // Even with the spare target failing, B skips the paused one rather than trying it last:
    // every attempt goes to the spare.
    spare.setBehavior({ kind: "error", status: 500 });
    const sparesBefore = chats(spare).length;
    try {
      const failed = await routerB.client.chat.completions
        .create({ model: provider, messages })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(failed).toBeInstanceOf(OpenAI.InternalServerError);
      expect(chats(spare).length - sparesBefore).toBe(3);
    } finally {
      spare.setBehavior({ kind: "answer", text: "from spare" });
    }

    // With no other target, B answers as the target did, after no attempt.
    const refused = await routerB.client.chat.completions
      .create({ model: `${provider}-only`, messages })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(refused).toBeInstanceOf(OpenAI.APIError);
    const e = refused as InstanceType<typeof OpenAI.APIError>;
    expect(e.status).toBe(status);
    const retryAfter = Number(e.headers?.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(RETRY_AFTER_S / 2);
    expect(retryAfter).toBeLessThanOrEqual(RETRY_AFTER_S);
    expect(Number(e.headers?.get("retry-after-ms"))).toBeLessThanOrEqual(RETRY_AFTER_S * 1000);
    // Not one call from router B reached the paused target.
    expect(chats(target)).toHaveLength(1);
  }, 30_000);
});
