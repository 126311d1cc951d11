import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Anthropic from "@anthropic-ai/sdk";
import { create } from "@bufbuild/protobuf";
import OpenAI from "openai";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatParamsSchema, Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { grpcJsGatewayClient } from "./clients/grpc-js-gateway.js";
import { freePorts, requireNats, runSwitchyard, type ServiceProcess } from "./helpers/processes.js";
import { type AnthropicUpstream, startAnthropicUpstream } from "./upstreams/anthropic-upstream.js";
import {
  fakeEmbedding,
  type OpenAIUpstream,
  startOpenAIUpstream,
} from "./upstreams/openai-upstream.js";

// The four services as four processes, talking Connect over h2c and sharing health over the
// machine's NATS, driven by the official openai client and a @grpc/grpc-js client.
let first: OpenAIUpstream;
let second: OpenAIUpstream;
let claude: AnthropicUpstream;
let dir: string;
let ingressUrl: string;
let ingressPort: number;
const procs: ServiceProcess[] = [];
// Unique provider names keep this run's health keys apart from other runs on the shared NATS.
const run = randomUUID().slice(0, 8);
const p1 = `first-${run}`;
const p2 = `second-${run}`;
const p3 = `claude-${run}`;

beforeAll(async () => {
  await requireNats();
  first = await startOpenAIUpstream({ behavior: { kind: "answer", text: "from the first" } });
  second = await startOpenAIUpstream({ behavior: { kind: "answer", text: "from the second" } });
  claude = await startAnthropicUpstream({ behavior: { kind: "answer", inputTokens: 321 } });
  const [ingress, router, connector, prober] = await freePorts(4);
  ingressPort = ingress as number;
  ingressUrl = `http://127.0.0.1:${ingress}`;
  dir = mkdtempSync(join(tmpdir(), "switchyard-e2e-"));
  const configPath = join(dir, "switchyard.yaml");
  writeFileSync(
    configPath,
    `
server:
  ingress: { host: 127.0.0.1, port: ${ingress} }
  router: { host: 127.0.0.1, port: ${router} }
  connector: { host: 127.0.0.1, port: ${connector} }
  prober: { host: 127.0.0.1, port: ${prober} }
  drain_timeout_ms: 2000
peers:
  router: http://127.0.0.1:${router}
  connectors: [http://127.0.0.1:${connector}]
# A namespace of its own: another run on the same NATS (a second checkout, a benchmark) would
# otherwise share its health state, connectors and prober lease.
nats: { url: nats://127.0.0.1:4222, namespace: e2e_${run} }
providers:
  ${p1}: { type: openai, base_url: "${first.url}", api_key: "\${FIRST_KEY}" }
  ${p2}: { type: openai, base_url: "${second.url}", api_key: sk-second }
  ${p3}: { type: anthropic, base_url: "${claude.url}", api_key: sk-claude }
models:
  claude: { targets: [{ provider: ${p3}, model: claude-up }] }
  chat:
    targets:
      - { provider: ${p1}, model: m1 }
      - { provider: ${p2}, model: m2 }
routing:
  backoff: { base_ms: 1, max_ms: 10 }
health: { probe_interval_ms: 300, stale_after_ms: 5000 }
`,
  );
  const env = { FIRST_KEY: "sk-first-canary-7d1e" };
  for (const name of ["connector", "router", "prober", "ingress"]) {
    procs.push(runSwitchyard(name, ["start", "--config", configPath, "--service", name], env));
  }
  await Promise.all(procs.map((p) => p.waitFor((l) => l.includes('"listening"'))));
  // Ready = the ingress reaches the router.
  for (let i = 0; i < 100; i++) {
    const res = await request(`${ingressUrl}/readyz`).catch(() => undefined);
    const code = res?.statusCode;
    await res?.body.dump();
    if (code === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }
}, 60_000);

afterAll(async () => {
  // Nothing is in flight now: each stops at once, whatever connections its clients keep open.
  const stops = await Promise.all(
    procs.map(async (p) => {
      const started = performance.now();
      const code = await p.stop();
      return { name: p.name, code, fast: performance.now() - started < 1_000 };
    }),
  );
  const codes = stops.map((s) => s.code);
  await first?.close();
  await second?.close();
  await claude?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  // SIGTERM drains and exits 0 (SPEC §2).
  expect(codes).toEqual([0, 0, 0, 0]);
  expect(stops.filter((s) => !s.fast).map((s) => s.name)).toEqual([]);
  // Upstream keys never appear in any service's output.
  for (const p of procs) expect(p.lines.join("\n")).not.toContain("sk-first-canary-7d1e");
});

describe("separate processes", () => {
  it("answers the openai client, streaming and not, through ingress → router → connector", async () => {
    const client = new OpenAI({ baseURL: `${ingressUrl}/v1`, apiKey: "x", maxRetries: 0 });
    const { data, response } = await client.chat.completions
      .create({ model: "chat", messages: [{ role: "user", content: "hi" }] })
      .withResponse();
    expect(data.choices[0]?.message.content).toBe("from the first");
    expect(response.headers.get("x-switchyard-provider")).toBe(p1);
    const stream = await client.chat.completions.create({
      model: "chat",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage = 0;
    for await (const c of stream) {
      text += c.choices[0]?.delta.content ?? "";
      usage = c.usage?.total_tokens ?? usage;
    }
    expect(text).toBe("from the first");
    expect(usage).toBeGreaterThan(0);
    expect(first.requests.at(-1)?.headers.authorization).toBe("Bearer sk-first-canary-7d1e");
  });

  it("carries token-array embedding inputs across the hops to the upstream as sent", async () => {
    const client = new OpenAI({ baseURL: `${ingressUrl}/v1`, apiKey: "x", maxRetries: 0 });
    const res = await client.embeddings.create({
      model: "chat",
      input: [
        [1, 2, 3],
        [4, 5],
      ],
    });
    const sent = first.requests.filter((r) => r.path.endsWith("/embeddings")).at(-1);
    expect(sent?.body).toMatchObject({
      model: "m1",
      input: [
        [1, 2, 3],
        [4, 5],
      ],
    });
    expect(res.data.map((d) => d.embedding)).toEqual([
      fakeEmbedding("[1,2,3]"),
      fakeEmbedding("[4,5]"),
    ]);
    expect(res.usage.prompt_tokens).toBe(5);
  });

  it("answers the Anthropic SDK's countTokens with the count the upstream made, across the hops", async () => {
    const client = new Anthropic({ baseURL: ingressUrl, apiKey: "x", maxRetries: 0 });
    const counted = await client.messages.countTokens({
      model: "claude",
      messages: [{ role: "user", content: "hi" }],
    });
    expect(counted.input_tokens).toBe(321);
    const seen = claude.requests.filter((r) => r.path === "/v1/messages/count_tokens");
    expect(seen).toHaveLength(1);
    expect(seen[0]?.headers["x-api-key"]).toBe("sk-claude");
  });

  it("serves GatewayService to a @grpc/grpc-js client on the ingress port", async () => {
    const client = grpcJsGatewayClient(`127.0.0.1:${ingressPort}`);
    try {
      const chunks = await client.chatStream({
        params: create(ChatParamsSchema, {
          model: "chat",
          messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }],
        }),
      });
      expect(
        chunks
          .flatMap((r) => r.chunk?.choices ?? [])
          .map((c) => c.content ?? "")
          .join(""),
      ).toBe("from the first");
    } finally {
      client.close();
    }
  });

  it("skips a target the prober marked down, without trying it first", async () => {
    // The first upstream now fails everything, probes included.
    first.setBehavior({ kind: "error", status: 503 });
    const client = new OpenAI({ baseURL: `${ingressUrl}/v1`, apiKey: "x", maxRetries: 0 });
    let attempts = "";
    for (let i = 0; i < 100 && attempts !== "1"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const { response } = await client.chat.completions
        .create({ model: "chat", messages: [{ role: "user", content: "hi" }] })
        .withResponse();
      expect(response.headers.get("x-switchyard-provider")).toBe(p2);
      attempts = response.headers.get("x-switchyard-attempts") ?? "";
    }
    // Health travelled prober → NATS KV → router: the router no longer tries the first target.
    expect(attempts).toBe("1");
    // Told apart by its prompt: the prober's own calls (POSTs too) go on meanwhile.
    const prompt = `again ${randomUUID()}`;
    await client.chat.completions.create({
      model: "chat",
      messages: [{ role: "user", content: prompt }],
    });
    const sent = (r: { body?: unknown }) => JSON.stringify(r.body ?? null).includes(prompt);
    expect(second.requests.filter(sent)).toHaveLength(1);
    expect(first.requests.filter(sent)).toEqual([]);
    first.setBehavior({ kind: "answer", text: "from the first" });
  });

  it("cancels the upstream request across both internal hops when the client goes away", async () => {
    const slow = { kind: "answer" as const, text: "a b c d e f g h", chunks: 8, chunkDelayMs: 300 };
    first.setBehavior(slow);
    second.setBehavior(slow);
    // This request's own upstream call, told apart from any other by its prompt.
    const prompt = `leave early ${randomUUID()}`;
    const ours = () =>
      [...first.requests, ...second.requests].find((r) =>
        JSON.stringify(r.body ?? null).includes(prompt),
      );
    const client = new OpenAI({ baseURL: `${ingressUrl}/v1`, apiKey: "x", maxRetries: 0 });
    const ac = new AbortController();
    const stream = await client.chat.completions.create(
      { model: "chat", messages: [{ role: "user", content: prompt }], stream: true },
      { signal: ac.signal },
    );
    for await (const _ of stream) break; // the first chunk arrived: now leave
    const abortedAt = performance.now();
    ac.abort();
    const upstreamRequest = ours();
    expect(upstreamRequest).toBeDefined();
    // ingress → router → connector → upstream: the close must cross both internal hops.
    await Promise.race([
      upstreamRequest?.closed,
      new Promise((_, reject) => setTimeout(() => reject(new Error("upstream not closed")), 1_000)),
    ]);
    expect(upstreamRequest?.aborted).toBe(true);
    expect(performance.now() - abortedAt).toBeLessThan(1_000);
    first.setBehavior({ kind: "answer", text: "from the first" });
    second.setBehavior({ kind: "answer", text: "from the second" });
  });

  it("exposes /metrics and /healthz on every service's own port", async () => {
    const metrics = await (await request(`${ingressUrl}/metrics`)).body.text();
    expect(metrics).toContain("switchyard_requests_total");
    // Each service's own series, under its own name, beside the process metrics.
    const expected: Record<string, RegExp[]> = {
      ingress: [/^switchyard_requests_total\{.*service="ingress".*\} [1-9]/m],
      router: [
        /^switchyard_router_attempts_total\{.*outcome="ok".*\} [1-9]/m,
        /^switchyard_connectors_known\{service="router"\} 1$/m,
        /^switchyard_nats_connected\{service="router"\} 1$/m,
      ],
      connector: [
        /^switchyard_connector_upstream_requests_total\{.*service="connector".*\} [1-9]/m,
        /^switchyard_nats_connected\{service="connector"\} 1$/m,
      ],
      prober: [
        /^switchyard_prober_active\{service="prober"\} 1$/m,
        /^switchyard_connectors_known\{service="prober"\} 1$/m,
      ],
    };
    for (const p of procs) {
      const line = p.lines.find((l) => l.includes('"listening"')) ?? "";
      const port = (JSON.parse(line) as { port: number }).port;
      const res = await request(`http://127.0.0.1:${port}/healthz`);
      expect(res.statusCode).toBe(200);
      await res.body.dump();
      const m = await (await request(`http://127.0.0.1:${port}/metrics`)).body.text();
      expect(m).toContain("switchyard_process_");
      for (const series of expected[p.name] ?? []) expect(m, p.name).toMatch(series);
    }
  });

  it("carries the caller's trace across the processes to the upstream", async () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const res = await request(`${ingressUrl}/v1/chat/completions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        traceparent: `00-${traceId}-b7ad6b7169203331-01`,
        "x-request-id": `trace-${run}`,
      },
      body: JSON.stringify({ model: "chat", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
    expect(String(res.headers.traceparent)).toMatch(new RegExp(`^00-${traceId}-`));
    const sent = [...first.requests, ...second.requests].find(
      (r) => r.headers["x-request-id"] === `trace-${run}`,
    );
    expect(String(sent?.headers.traceparent)).toMatch(
      new RegExp(`^00-${traceId}-(?!b7ad6b7169203331)[0-9a-f]{16}-01$`),
    );
  });
});
