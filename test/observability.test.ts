import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { request } from "undici";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ChatParamsSchema, Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { startFabric } from "../services/fabric.js";
import { hashKey } from "../services/lib/config/keys.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { type CapturedLogs, captureLogs } from "./helpers/logs.js";
import { metricValue } from "./helpers/metrics.js";
import { freePorts, requireNats } from "./helpers/processes.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// What operators see of traffic through one gateway process: the series on /metrics, the log
// lines of every service, the trace context that reaches the upstream and the price of answers.

const UPSTREAM_KEY = "sk-upstream-canary-7f3a9c";
const ACME_KEY = "sk-tenant-canary-acme-91c2";
const LIMITED_KEY = "sk-tenant-canary-limited-4d8e";
const CHATTY_KEY = "sk-tenant-canary-chatty-b5a0";
const CANARIES = [UPSTREAM_KEY, ACME_KEY, LIMITED_KEY, CHATTY_KEY];

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN = "00f067aa0ba902b7";
const CLIENT_TRACEPARENT = `00-${TRACE_ID}-${CLIENT_SPAN}-01`;
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** 1000 prompt and 500 completion tokens: $0.007 at the primary's price, $0.003 at the spare's. */
const USAGE = { prompt_tokens: 1000, completion_tokens: 500 };
const answer = { kind: "answer" as const, text: "one two three four", chunks: 4, usage: USAGE };

let primary: OpenAIUpstream;
let spare: OpenAIUpstream;
let gw: RunningFabric;
let logs: CapturedLogs;

beforeAll(async () => {
  primary = await startOpenAIUpstream({ behavior: answer });
  spare = await startOpenAIUpstream({ behavior: answer });
});

afterAll(async () => {
  await Promise.all([primary?.close(), spare?.close()]);
});

// A fabric per test, so every counter starts at zero and values can be asserted exactly.
beforeEach(async () => {
  logs = captureLogs();
  gw = await startOneProcess(
    testConfig(`
providers:
  primary: { type: openai, base_url: "${primary.url}", api_key: ${UPSTREAM_KEY} }
  backup: { type: openai, base_url: "${spare.url}", api_key: ${UPSTREAM_KEY} }
models:
  chat:
    targets: [{ provider: primary, model: m-primary, price: { input: 2, output: 10 } }]
    fallbacks: [spare]
  spare:
    targets: [{ provider: backup, model: m-spare, price: { input: 1, output: 4 } }]
routing:
  retries: 2
  backoff: { base_ms: 1, max_ms: 5 }
  circuit_breaker: { consecutive_failures: 1000, cooldown_ms: 1000 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
tenants:
  acme: { keys: ["${hashKey(ACME_KEY)}"] }
  limited: { keys: ["${hashKey(LIMITED_KEY)}"], limits: { rpm: 1 } }
  chatty: { keys: ["${hashKey(CHATTY_KEY)}"], log_prompts: true }
`),
    { logger: logs.logger },
  );
});

afterEach(async () => {
  await gw?.stop();
  for (const u of [primary, spare]) {
    u.setBehavior(answer);
    u.requests.length = 0;
  }
});

interface ChatOptions {
  key?: string;
  headers?: Record<string, string>;
  stream?: boolean;
  content?: string;
  path?: string;
  body?: Record<string, unknown>;
}

async function chat(opts: ChatOptions = {}) {
  const body = opts.body ?? {
    model: "chat",
    messages: [{ role: "user", content: opts.content ?? "count to four" }],
    ...(opts.stream && { stream: true, stream_options: { include_usage: true } }),
  };
  const res = await request(`${gw.url}${opts.path ?? "/v1/chat/completions"}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${opts.key ?? ACME_KEY}`,
      ...opts.headers,
    },
    body: JSON.stringify(body),
  });
  const text = await res.body.text();
  const header = (name: string) => {
    const v = res.headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  return { status: res.statusCode, header, text };
}

async function scrape(): Promise<string> {
  return (await request(`${gw.url}/metrics`)).body.text();
}

/** The first chat request an upstream received (the prober's GETs left out). */
function firstPost(u: OpenAIUpstream) {
  const post = u.requests.find((r) => r.method === "POST");
  if (!post) throw new Error("the upstream received no POST");
  return post;
}

/** Data events of an SSE body, parsed ([DONE] left out). */
function events(text: string): Array<Record<string, unknown>> {
  return text
    .split("\n")
    .filter((l) => l.startsWith("data: ") && l !== "data: [DONE]")
    .map((l) => JSON.parse(l.slice(6)));
}

/** Log lines about one request, from any service. */
const linesOf = (requestId: string) =>
  logs.lines().filter((l) => l.request_id === requestId) as Array<Record<string, unknown>>;

/** The ingress's one line per request (the others are the router's and connectors'). */
function requestLine(requestId: string): Record<string, unknown> {
  const lines = linesOf(requestId).filter((l) => l.msg === "request" || l.msg === "request failed");
  expect(lines).toHaveLength(1);
  return lines[0] as Record<string, unknown>;
}

describe("a successful answer", () => {
  it("is priced from the target's price, counted exactly, logged once and traced to the upstream", async () => {
    const res = await chat({
      headers: { traceparent: CLIENT_TRACEPARENT, "x-request-id": "req-ok-1" },
    });
    expect(res.status).toBe(200);

    // Cost: (1000 × $2 + 500 × $10) / 1M, in the header and in the usage the client sees.
    expect(res.header("x-switchyard-cost-usd")).toBe("0.007");
    const body = JSON.parse(res.text) as { usage: Record<string, unknown> };
    expect(body.usage).toMatchObject({ prompt_tokens: 1000, completion_tokens: 500 });
    expect(body.usage.cost_usd).toBe(0.007);

    // Trace: the caller's trace id on every hop, a new span at each.
    const answered = TRACEPARENT.exec(res.header("traceparent") ?? "");
    expect(answered?.[1]).toBe(TRACE_ID);
    expect(answered?.[2]).not.toBe(CLIENT_SPAN);
    const sent = firstPost(primary).headers ?? {};
    const upstream = TRACEPARENT.exec(String(sent.traceparent));
    expect(upstream?.[1]).toBe(TRACE_ID);
    expect(upstream?.[3]).toBe("01");
    expect(new Set([CLIENT_SPAN, answered?.[2], upstream?.[2]]).size).toBe(3);
    expect(sent["x-request-id"]).toBe("req-ok-1");

    const m = await scrape();
    const ingress = { service: "ingress" };
    expect(
      metricValue(m, "switchyard_requests_total", {
        ...ingress,
        api: "openai",
        model: "chat",
        provider: "primary",
        tenant: "acme",
        status_class: "2xx",
        outcome: "ok",
      }),
    ).toBe(1);
    const tokens = (direction: string) =>
      metricValue(m, "switchyard_tokens_total", {
        model: "chat",
        provider: "primary",
        tenant: "acme",
        direction,
      });
    expect([tokens("input"), tokens("output"), tokens("cached_input")]).toEqual([
      1000,
      500,
      undefined,
    ]);
    expect(metricValue(m, "switchyard_cost_usd_total", { tenant: "acme", model: "chat" })).toBe(
      0.007,
    );
    expect(metricValue(m, "switchyard_request_attempts_sum", { model: "chat" })).toBe(1);
    expect(metricValue(m, "switchyard_gateway_overhead_seconds_count", { api: "openai" })).toBe(1);
    expect(metricValue(m, "switchyard_inflight_requests", { api: "openai" })).toBe(0);
    // A whole answer has no first token of its own: TTFT is for streams.
    expect(m).not.toContain("switchyard_time_to_first_token_seconds_count");
    expect(
      metricValue(m, "switchyard_router_attempts_total", {
        service: "router",
        model: "chat",
        provider: "primary",
        target: "m-primary",
        outcome: "ok",
      }),
    ).toBe(1);
    expect(m).not.toContain("switchyard_router_fallbacks_total{");
    expect(
      metricValue(m, "switchyard_connector_upstream_requests_total", {
        service: "connector",
        provider: "primary",
        target: "m-primary",
        outcome: "ok",
      }),
    ).toBe(1);
    expect(
      metricValue(m, "switchyard_connector_upstream_first_chunk_seconds_count", {
        provider: "primary",
      }),
    ).toBe(1);
    expect(
      metricValue(m, "switchyard_connector_upstream_duration_seconds_count", {
        provider: "primary",
      }),
    ).toBe(1);
    expect(
      metricValue(m, "switchyard_router_circuit_state", {
        provider: "primary",
        target: "m-primary",
      }),
    ).toBe(0);
    expect(metricValue(m, "switchyard_connectors_known", { service: "router" })).toBe(1);
    expect(metricValue(m, "switchyard_connectors_known", { service: "prober" })).toBe(1);

    const line = requestLine("req-ok-1");
    expect(line).toMatchObject({
      level: 30,
      service: "ingress",
      request_id: "req-ok-1",
      trace_id: TRACE_ID,
      span_id: answered?.[2],
      tenant: "acme",
      api: "openai",
      model: "chat",
      provider: "primary",
      upstream_model: "m-primary",
      attempts: 1,
      stream: false,
      status: 200,
      outcome: "ok",
      tokens_in: 1000,
      tokens_out: 500,
      cost_usd: 0.007,
      truncated: false,
    });
    for (const field of ["first_token_ms", "upstream_ms", "overhead_ms", "latency_ms"]) {
      expect(line[field], field).toBeTypeOf("number");
    }
    expect(line.overhead_ms as number).toBeLessThanOrEqual(line.first_token_ms as number);
    expect(line).not.toHaveProperty("prompt");
  });

  it("streams: TTFT, inter-token gaps and open streams counted, cost in the final usage event", async () => {
    primary.setBehavior({ ...answer, chunkDelayMs: 15 });
    const res = await chat({ stream: true, headers: { "x-request-id": "req-stream-1" } });
    expect(res.status).toBe(200);
    expect(res.header("x-switchyard-cost-usd")).toBeUndefined(); // not known when headers go
    const data = events(res.text);
    const last = data.at(-1) as { choices: unknown[]; usage: Record<string, unknown> };
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ prompt_tokens: 1000, completion_tokens: 500 });
    expect(last.usage.cost_usd).toBe(0.007);
    // Every earlier event carries `"usage": null`, as OpenAI sends it.
    expect(data.slice(0, -1).every((e) => e.usage === null)).toBe(true);

    const tokenEvents = data.filter((e) => (e.choices as unknown[]).length > 0).length;
    const m = await scrape();
    const labels = { model: "chat", provider: "primary" };
    expect(metricValue(m, "switchyard_inter_token_seconds_count", labels)).toBe(tokenEvents - 1);
    expect(metricValue(m, "switchyard_inter_token_seconds_sum", labels)).toBeGreaterThan(0.01);
    expect(
      metricValue(m, "switchyard_time_to_first_token_seconds_count", { api: "openai", ...labels }),
    ).toBe(1);
    expect(metricValue(m, "switchyard_open_streams", { api: "openai" })).toBe(0);
    expect(metricValue(m, "switchyard_cost_usd_total", { tenant: "acme", model: "chat" })).toBe(
      0.007,
    );
    expect(requestLine("req-stream-1")).toMatchObject({
      stream: true,
      status: 200,
      cost_usd: 0.007,
      truncated: false,
    });
  });

  it("counts an upstream's wait between its opening and its first token as the upstream's time", async () => {
    // The role chunk at once, the first token 400 ms later (a model that thinks first).
    primary.setBehavior({ ...answer, thinkMs: 400 });
    const res = await chat({ stream: true, headers: { "x-request-id": "req-think-1" } });
    expect(res.status).toBe(200);
    const line = requestLine("req-think-1") as Record<string, number>;
    expect(line.first_token_ms).toBeGreaterThanOrEqual(400);
    expect(line.upstream_ms).toBeGreaterThanOrEqual(400);
    // The gateway's own share is a few ms; 400 would be the upstream's wait counted as overhead.
    expect(line.overhead_ms).toBeLessThan(200);
    const m = await scrape();
    expect(
      metricValue(m, "switchyard_gateway_overhead_seconds_sum", { api: "openai" }),
    ).toBeLessThan(0.2);
    const firstChunk = { provider: "primary", target: "m-primary" };
    expect(
      metricValue(m, "switchyard_connector_upstream_first_chunk_seconds_sum", firstChunk),
    ).toBeGreaterThanOrEqual(0.4);
  });

  it("streams to Anthropic clients with the cost in message_delta's usage", async () => {
    const res = await chat({
      path: "/v1/messages",
      body: {
        model: "chat",
        max_tokens: 64,
        stream: true,
        messages: [{ role: "user", content: "count" }],
      },
    });
    expect(res.status).toBe(200);
    const data = events(res.text);
    const start = data.find((e) => e.type === "message_start") as {
      message: { usage: Record<string, unknown> };
    };
    const delta = data.find((e) => e.type === "message_delta") as {
      usage: Record<string, unknown>;
    };
    expect(start.message.usage).not.toHaveProperty("cost_usd");
    expect(delta.usage).toMatchObject({ output_tokens: 500, cost_usd: 0.007 });
  });

  it("gives gRPC clients the cost in Usage.cost_usd and the x-switchyard-cost-usd header", async () => {
    const client = createClient(
      GatewayService,
      createConnectTransport({ baseUrl: gw.url, httpVersion: "2" }),
    );
    const params = create(ChatParamsSchema, {
      model: "chat",
      messages: [
        {
          role: Role.USER,
          content: [{ part: { case: "text", value: "count" } }],
          contentIsText: true,
        },
      ],
    });
    let headers: Headers | undefined;
    const res = await client.chat(
      { params },
      {
        headers: { authorization: `Bearer ${ACME_KEY}`, traceparent: CLIENT_TRACEPARENT },
        onHeader: (h) => {
          headers = h;
        },
      },
    );
    expect(res.completion?.usage?.costUsd).toBe(0.007);
    expect(headers?.get("x-switchyard-cost-usd")).toBe("0.007");
    expect(TRACEPARENT.exec(headers?.get("traceparent") ?? "")?.[1]).toBe(TRACE_ID);
    let streamed: number | undefined;
    for await (const r of client.chatStream(
      { params },
      { headers: { authorization: `Bearer ${ACME_KEY}` } },
    )) {
      streamed = r.chunk?.usage?.costUsd ?? streamed;
    }
    expect(streamed).toBe(0.007);
  });
});

describe("an embeddings request", () => {
  it("is priced, counted and logged like a chat request", async () => {
    const res = await chat({
      path: "/v1/embeddings",
      body: { model: "chat", input: ["a b", "c"] },
      headers: { traceparent: CLIENT_TRACEPARENT, "x-request-id": "req-embed-1" },
    });
    expect(res.status).toBe(200);
    // 1000 prompt tokens (the fake's usage) × $2 / 1M.
    expect(res.header("x-switchyard-cost-usd")).toBe("0.002");
    expect(String(firstPost(primary).headers.traceparent)).toMatch(
      new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`),
    );
    const m = await scrape();
    expect(metricValue(m, "switchyard_cost_usd_total", { tenant: "acme", model: "chat" })).toBe(
      0.002,
    );
    expect(metricValue(m, "switchyard_tokens_total", { tenant: "acme", direction: "input" })).toBe(
      1000,
    );
    expect(requestLine("req-embed-1")).toMatchObject({
      endpoint: "embeddings",
      trace_id: TRACE_ID,
      status: 200,
      outcome: "ok",
      tokens_in: 1000,
      cost_usd: 0.002,
    });
  });
});

describe("a failover to a fallback model", () => {
  it("counts the attempts and the fallback, and every service logs with the request's ids", async () => {
    primary.setBehavior({ kind: "error", status: 500 });
    const res = await chat({
      headers: { traceparent: CLIENT_TRACEPARENT, "x-request-id": "req-failover-1" },
    });
    expect(res.status).toBe(200);
    expect(res.header("x-switchyard-provider")).toBe("backup");
    expect(res.header("x-switchyard-attempts")).toBe("2");
    // Priced at the target that answered: (1000 × $1 + 500 × $4) / 1M.
    expect(res.header("x-switchyard-cost-usd")).toBe("0.003");

    const m = await scrape();
    const attempts = (labels: Record<string, string>) =>
      metricValue(m, "switchyard_router_attempts_total", labels);
    expect(
      attempts({
        model: "chat",
        provider: "primary",
        target: "m-primary",
        outcome: "upstream_error",
      }),
    ).toBe(1);
    expect(attempts({ model: "spare", provider: "backup", target: "m-spare", outcome: "ok" })).toBe(
      1,
    );
    expect(
      metricValue(m, "switchyard_router_fallbacks_total", { model: "chat", fallback: "spare" }),
    ).toBe(1);
    expect(
      metricValue(m, "switchyard_connector_upstream_requests_total", {
        provider: "primary",
        outcome: "upstream_error",
      }),
    ).toBe(1);
    expect(
      metricValue(m, "switchyard_requests_total", {
        model: "chat",
        provider: "backup",
        tenant: "acme",
        status_class: "2xx",
        outcome: "ok",
      }),
    ).toBe(1);
    expect(metricValue(m, "switchyard_request_attempts_sum", { model: "chat" })).toBe(2);
    // Cost is summed under the model the tenant asked for.
    expect(metricValue(m, "switchyard_cost_usd_total", { tenant: "acme", model: "chat" })).toBe(
      0.003,
    );
    // A failover's time is the upstreams', not the gateway's overhead.
    expect(m).not.toContain("switchyard_gateway_overhead_seconds_count");

    // Both upstreams saw the caller's trace, each from its own span.
    const spans = [primary, spare].map((u) =>
      TRACEPARENT.exec(String(firstPost(u).headers.traceparent)),
    );
    expect(spans.map((s) => s?.[1])).toEqual([TRACE_ID, TRACE_ID]);
    expect(spans[0]?.[2]).not.toBe(spans[1]?.[2]);

    const lines = linesOf("req-failover-1");
    const by = (service: string, msg: string) =>
      lines.filter((l) => l.service === service && l.msg === msg);
    expect(by("router", "attempt failed; trying the next target")).toHaveLength(1);
    expect(by("connector", "upstream call failed")[0]).toMatchObject({
      level: 40,
      provider: "primary",
      target: "m-primary",
      kind: "upstream_error",
      upstream_status: 500,
    });
    expect(requestLine("req-failover-1")).toMatchObject({
      provider: "backup",
      upstream_model: "m-spare",
      attempts: 2,
      cost_usd: 0.003,
    });
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const l of lines) expect(l.trace_id, JSON.stringify(l)).toBe(TRACE_ID);
  });
});

describe("a target that fails twice in a row", () => {
  // A 503, or no answer within first_token_ms (the router cuts the call: a timeout of the
  // target's, not a cancellation, in the connector's counts and in passive health).
  it.each([
    {
      name: "with 503",
      behavior: { kind: "error", status: 503 } as const,
      status: 503,
      outcome: "upstream_unavailable",
    },
    {
      name: "by hanging",
      behavior: { ...answer, headersDelayMs: 10_000 },
      status: 504,
      outcome: "timeout",
    },
  ])(
    "$name: shows as an open circuit at once, and as down in shared health soon after",
    async ({ behavior, status, outcome }) => {
      const strict = await startOneProcess(
        testConfig(`
providers:
  primary: { type: openai, base_url: "${primary.url}" }
models:
  chat: { targets: [{ provider: primary, model: m-primary }] }
routing:
  retries: 0
  timeouts: { first_token_ms: 300, idle_ms: 30000, total_ms: 60000 }
  circuit_breaker: { consecutive_failures: 2, cooldown_ms: 600000 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
      );
      try {
        primary.setBehavior(behavior);
        const ask = () =>
          request(`${strict.url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ model: "chat", messages: [{ role: "user", content: "hi" }] }),
          }).then(async (r) => {
            await r.body.dump();
            return r.statusCode;
          });
        expect(await ask()).toBe(status);
        expect(await ask()).toBe(status);
        const target = { provider: "primary", target: "m-primary" };
        const scrapeStrict = async () => (await request(`${strict.url}/metrics`)).body.text();
        const m = await scrapeStrict();
        expect(metricValue(m, "switchyard_router_circuit_state", target)).toBe(1);
        const calls = (o: string) =>
          metricValue(m, "switchyard_connector_upstream_requests_total", { ...target, outcome: o });
        expect(calls(outcome)).toBe(2);
        expect(calls("cancelled")).toBeUndefined();
        // Passive outcomes reach the prober in batches (250 ms), then the router's health view.
        let health: number | undefined;
        for (let i = 0; i < 40 && health !== 3; i++) {
          await new Promise((r) => setTimeout(r, 100));
          health = metricValue(await scrapeStrict(), "switchyard_router_target_health", target);
        }
        expect(health).toBe(3);
        expect(metricValue(await scrapeStrict(), "switchyard_target_health", target)).toBe(3);
      } finally {
        await strict.stop();
      }
    },
  );
});

describe("a request whose every attempt fails", () => {
  it("logs and answers how many attempts the router made", async () => {
    primary.setBehavior({ kind: "error", status: 503 });
    spare.setBehavior({ kind: "error", status: 503 });
    const res = await chat({ headers: { "x-request-id": "req-all-failed" } });
    expect(res.status).toBe(503);
    // retries: 2, so three attempts: primary, then the fallback's target, then primary again.
    expect(res.header("x-switchyard-attempts")).toBe("3");
    const posts = (u: OpenAIUpstream) => u.requests.filter((r) => r.method === "POST").length;
    expect(posts(primary) + posts(spare)).toBe(3);
    expect(requestLine("req-all-failed")).toMatchObject({
      status: 503,
      attempts: 3,
      error: { kind: "upstream_unavailable" },
    });
  });
});

describe("a rate-limited request", () => {
  it("is refused with 429, counted by tenant and limit, and logged with its ids", async () => {
    expect((await chat({ key: LIMITED_KEY })).status).toBe(200);
    const res = await chat({
      key: LIMITED_KEY,
      headers: { traceparent: CLIENT_TRACEPARENT, "x-request-id": "req-limited-2" },
    });
    expect(res.status).toBe(429);
    expect(TRACEPARENT.exec(res.header("traceparent") ?? "")?.[1]).toBe(TRACE_ID);

    const m = await scrape();
    expect(
      metricValue(m, "switchyard_limit_rejections_total", {
        tenant: "limited",
        limit: "rpm",
        scope: "tenant",
      }),
    ).toBe(1);
    const requests = (status_class: string, outcome: string) =>
      metricValue(m, "switchyard_requests_total", { tenant: "limited", status_class, outcome });
    expect(requests("2xx", "ok")).toBe(1);
    expect(requests("4xx", "rate_limited")).toBe(1);
    expect(primary.requests.filter((r) => r.method === "POST")).toHaveLength(1);
    expect(requestLine("req-limited-2")).toMatchObject({
      level: 30,
      trace_id: TRACE_ID,
      tenant: "limited",
      status: 429,
      outcome: "rate_limited",
      attempts: 0,
      tokens_in: 0,
      tokens_out: 0,
      truncated: false,
      error: { kind: "rate_limited" },
    });
  });
});

describe("a truncated stream", () => {
  it("ends in an error event, is counted and logged as truncated, and is charged what was sent", async () => {
    // The role chunk and two content chunks, then the body ends without [DONE].
    primary.setBehavior({ ...answer, cutAfterChunks: 3 });
    const res = await chat({ stream: true, headers: { "x-request-id": "req-cut-1" } });
    expect(res.status).toBe(200);
    expect(events(res.text).at(-1)).toHaveProperty("error");
    expect(res.text).not.toContain("[DONE]");

    const m = await scrape();
    expect(
      metricValue(m, "switchyard_truncated_streams_total", { model: "chat", provider: "primary" }),
    ).toBe(1);
    expect(
      metricValue(m, "switchyard_requests_total", {
        provider: "primary",
        status_class: "5xx",
        outcome: "truncated",
      }),
    ).toBe(1);
    expect(metricValue(m, "switchyard_open_streams", { api: "openai" })).toBe(0);
    expect(metricValue(m, "switchyard_inflight_requests", { api: "openai" })).toBe(0);
    // One attempt, counted once: it answered (ok), and its break is the truncation above.
    const attempts = m
      .split("\n")
      .filter((l) => l.startsWith("switchyard_router_attempts_total{"))
      .map((l) => Number(l.split(" ").at(-1)));
    expect(attempts.reduce((a, b) => a + b, 0)).toBe(1);

    const line = requestLine("req-cut-1");
    // No usage came: the prompt is estimated (13 characters ≈ 4 tokens), the answer is what was
    // handed out ("one two t", 9 characters ≈ 3 tokens); priced at $2 and $10 per 1M.
    expect(line).toMatchObject({
      level: 40,
      msg: "request failed",
      status: 502,
      outcome: "truncated",
      truncated: true,
      tokens_in: 4,
      tokens_out: 3,
      cost_usd: 0.000038,
    });
    expect(metricValue(m, "switchyard_cost_usd_total", { tenant: "acme", model: "chat" })).toBe(
      0.000038,
    );
  });

  it("is charged its estimated prompt on an open gateway too (no tenants)", async () => {
    const open = await startOneProcess(
      testConfig(`
providers:
  primary: { type: openai, base_url: "${primary.url}" }
models:
  chat: { targets: [{ provider: primary, model: m-primary, price: { input: 2, output: 10 } }] }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
      { logger: logs.logger },
    );
    try {
      primary.setBehavior({ ...answer, cutAfterChunks: 3 });
      const res = await request(`${open.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": "req-cut-open" },
        body: JSON.stringify({
          model: "chat",
          stream: true,
          messages: [{ role: "user", content: "count to four" }],
        }),
      });
      expect(await res.body.text()).not.toContain("[DONE]");
      // The same estimate as above: the prompt ≈ 4 tokens, the answer handed out ≈ 3.
      expect(requestLine("req-cut-open")).toMatchObject({
        outcome: "truncated",
        tokens_in: 4,
        tokens_out: 3,
      });
    } finally {
      await open.stop();
    }
  });
});

describe("an upstream that reports no usage", () => {
  it("has a whole answer counted by estimate on an open gateway (no tenants), not as 0 tokens", async () => {
    // Azure API versions before 2024-09-01 have no stream_options: a stream carries no usage.
    const open = await startOneProcess(
      testConfig(`
providers:
  az: { type: azure-openai, base_url: "${primary.origin}", api_key: az-key, api_version: "2024-06-01" }
models:
  chat: { targets: [{ provider: az, model: dep, price: { input: 2, output: 10 } }] }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
      { logger: logs.logger },
    );
    try {
      const res = await request(`${open.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": "req-no-usage" },
        body: JSON.stringify({
          model: "chat",
          messages: [{ role: "user", content: "count to four" }],
        }),
      });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
      expect(firstPost(primary).body).not.toHaveProperty("stream_options");
      // The prompt ≈ 4 tokens by the estimate, the answer ≈ 3.
      expect(requestLine("req-no-usage")).toMatchObject({ outcome: "ok", tokens_in: 4 });
      expect(requestLine("req-no-usage").tokens_out).toBeGreaterThan(0);
    } finally {
      await open.stop();
    }
  });
});

describe("trace context at the ingress", () => {
  it.each([
    ["absent", undefined],
    ["malformed", "not-a-traceparent"],
    ["all-zero trace id", `00-${"0".repeat(32)}-${CLIENT_SPAN}-01`],
    ["uppercase", `00-${TRACE_ID.toUpperCase()}-${CLIENT_SPAN}-01`],
  ])("starts a new sampled trace when the traceparent is %s", async (_, header) => {
    const res = await chat({
      headers: { "x-request-id": "req-new-trace", ...(header && { traceparent: header }) },
    });
    expect(res.status).toBe(200);
    const answered = TRACEPARENT.exec(res.header("traceparent") ?? "");
    expect(answered).not.toBeNull();
    expect(answered?.[1]).not.toBe(TRACE_ID);
    expect(answered?.[3]).toBe("01");
    const upstream = TRACEPARENT.exec(String(firstPost(primary).headers.traceparent));
    expect(upstream?.[1]).toBe(answered?.[1]);
    expect(requestLine("req-new-trace").trace_id).toBe(answered?.[1]);
  });

  it("keeps the caller's trace flags and answers errors with a traceparent too", async () => {
    const unsampled = `00-${TRACE_ID}-${CLIENT_SPAN}-00`;
    await chat({ headers: { traceparent: unsampled } });
    expect(String(firstPost(primary).headers.traceparent)).toMatch(
      new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-00$`),
    );
    const unknown = await chat({
      body: { model: "nope", messages: [{ role: "user", content: "hi" }] },
      headers: { traceparent: CLIENT_TRACEPARENT },
    });
    expect(unknown.status).toBe(404);
    expect(TRACEPARENT.exec(unknown.header("traceparent") ?? "")?.[1]).toBe(TRACE_ID);
  });
});

describe("logs", () => {
  it("hold prompts only for a tenant configured with log_prompts, under `prompt`", async () => {
    await chat({ content: "acme's confidential words", headers: { "x-request-id": "req-acme" } });
    await chat({
      key: CHATTY_KEY,
      content: "chatty's words",
      headers: { "x-request-id": "req-chatty" },
    });
    expect(logs.text()).not.toContain("confidential");
    expect(requestLine("req-acme")).not.toHaveProperty("prompt");
    expect(requestLine("req-chatty")).toMatchObject({
      level: 30,
      prompt: [{ role: "user", content: "chatty's words" }],
    });
  });

  it("have a line for a gRPC call refused before routing, as REST has", async () => {
    const client = createClient(
      GatewayService,
      createConnectTransport({ baseUrl: gw.url, httpVersion: "2" }),
    );
    const params = create(ChatParamsSchema, {
      model: "chat",
      temperature: 5,
      messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "count" } }] }],
    });
    const refused = (headers: Record<string, string>) =>
      client.chat({ params }, { headers }).catch(() => undefined);
    await refused({ "x-request-id": "req-grpc-nokey" });
    await refused({ "x-request-id": "req-grpc-bad", authorization: `Bearer ${ACME_KEY}` });
    expect(linesOf("req-grpc-nokey")).toEqual([
      expect.objectContaining({
        msg: "request rejected",
        status: 401,
        path: "/switchyard.gateway.v1.GatewayService/Chat",
      }),
    ]);
    expect(linesOf("req-grpc-bad")).toEqual([
      expect.objectContaining({
        msg: "request rejected",
        status: 400,
        error: expect.stringContaining("temperature"),
      }),
    ]);
  });

  it("and requests refused before routing are counted, on every API", async () => {
    // No key on REST, a malformed body on the Anthropic API, no key on gRPC.
    const noKey = await request(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "req-rest-nokey" },
      body: JSON.stringify({ model: "chat", messages: [{ role: "user", content: "hi" }] }),
    });
    await noKey.body.dump();
    expect(noKey.statusCode).toBe(401);
    const malformed = await request(`${gw.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": ACME_KEY },
      body: "{not json",
    });
    await malformed.body.dump();
    expect(malformed.statusCode).toBe(400);
    const client = createClient(
      GatewayService,
      createConnectTransport({ baseUrl: gw.url, httpVersion: "2" }),
    );
    await client.listModels({}).catch(() => undefined);
    const m = await scrape();
    const rejected = (api: string, status_class: string, outcome: string) =>
      metricValue(m, "switchyard_requests_total", {
        api,
        model: "(unknown)",
        status_class,
        outcome,
      });
    expect(rejected("openai", "4xx", "auth")).toBe(1);
    expect(rejected("anthropic", "4xx", "invalid_request")).toBe(1);
    expect(rejected("grpc", "4xx", "auth")).toBe(1);
    expect(linesOf("req-rest-nokey")).toEqual([
      expect.objectContaining({
        msg: "request rejected",
        api: "openai",
        status: 401,
        outcome: "auth",
        latency_ms: expect.any(Number),
      }),
    ]);
  });

  it("and metrics never hold a key, whatever happened to the requests", async () => {
    await chat({ headers: { "x-request-id": "req-c1" } });
    await chat({ key: CHATTY_KEY, stream: true });
    await chat({ key: LIMITED_KEY });
    await chat({ key: LIMITED_KEY }); // 429
    await chat({ key: "sk-tenant-canary-unknown-0000" }); // 401
    primary.setBehavior({ kind: "error", status: 401 }); // the upstream refuses our key
    spare.setBehavior({ kind: "error", status: 500 });
    expect((await chat()).status).toBe(502);
    primary.setBehavior({ ...answer, cutAfterChunks: 2 });
    await chat({ stream: true });

    const everything = `${logs.text()}\n${await scrape()}`;
    expect(logs.lines().length).toBeGreaterThan(8);
    for (const secret of [...CANARIES, "sk-tenant-canary-unknown-0000"]) {
      expect(everything).not.toContain(secret);
    }
  });
});

describe("an ingress whose router is away", () => {
  it("tells clients so without the internal address, and logs what the transport said", async () => {
    const [routerPort] = await freePorts(1);
    const own = captureLogs();
    const fabric = await startFabric({
      config: testConfig(`
peers: { router: "http://127.0.0.1:${routerPort}" }
providers: { demo: { type: mock } }
models: { demo: { targets: [{ provider: demo, model: m }] } }
`),
      services: new Set(["ingress"] as const),
      logger: own.logger,
      listen: { ingress: { host: "127.0.0.1", port: 0 } },
    });
    try {
      const res = await request(`http://127.0.0.1:${fabric.ports.ingress}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": "req-no-router" },
        body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }] }),
      });
      const text = await res.body.text();
      expect(res.statusCode).toBe(503);
      expect(JSON.parse(text).error.message).toBe("the gateway could not reach its router");
      expect(text).not.toContain(String(routerPort));
      await new Promise((r) => setTimeout(r, 300)); // lines are written in batches
      const line = own.lines().find((l) => l.request_id === "req-no-router");
      expect(line?.error).toMatchObject({ kind: "upstream_unavailable" });
      expect(String((line?.error as { detail?: string } | undefined)?.detail)).toContain(
        "ECONNREFUSED",
      );
    } finally {
      await fabric.stop(0);
    }
  });
});

describe("a router whose connectors are away", () => {
  it("tells clients so without the connector's address, and logs what the transport said", async () => {
    await requireNats();
    const [connectorPort] = await freePorts(1);
    const own = captureLogs();
    const fabric = await startFabric({
      config: testConfig(`
peers: { connectors: ["http://127.0.0.1:${connectorPort}"] }
nats: { url: "nats://127.0.0.1:4222", namespace: "connectors-away-${process.pid}" }
providers: { demo: { type: mock } }
models: { demo: { targets: [{ provider: demo, model: m }] } }
routing: { backoff: { base_ms: 1, max_ms: 5 } }
`),
      services: new Set(["ingress", "router"] as const),
      logger: own.logger,
      listen: { ingress: { host: "127.0.0.1", port: 0 } },
    });
    try {
      const res = await request(`http://127.0.0.1:${fabric.ports.ingress}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": "req-no-connector" },
        body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }] }),
      });
      const text = await res.body.text();
      expect(res.statusCode).toBe(503);
      expect(JSON.parse(text).error.message).toBe(
        "the gateway could not reach a provider connector",
      );
      expect(text).not.toContain(String(connectorPort));
      await new Promise((r) => setTimeout(r, 300)); // lines are written in batches
      const said = own
        .lines()
        .filter((l) => l.request_id === "req-no-connector" && l.msg === "connector did not answer");
      expect(said.length).toBeGreaterThan(0);
      expect(String(said[0]?.error)).toContain("ECONNREFUSED");
    } finally {
      await fabric.stop(0);
    }
  });
});
