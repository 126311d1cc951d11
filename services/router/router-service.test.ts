import { create } from "@bufbuild/protobuf";
import {
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  createClient,
  createRouterTransport,
  type Interceptor,
} from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type ChatChunk, FinishReason, Role } from "../../gen/switchyard/chat/v1/chat_pb.js";
import {
  HealthSource,
  PauseKind,
  TargetHealthSchema,
  TargetState,
} from "../../gen/switchyard/health/v1/health_pb.js";
import { RouterService } from "../../gen/switchyard/router/v1/router_pb.js";
import { testConfig } from "../../test/helpers/fabric.js";
import { captureLogs } from "../../test/helpers/logs.js";
import { freePorts } from "../../test/helpers/processes.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "../../test/upstreams/openai-upstream.js";
import { buildConnector } from "../connector/main.js";
import type { Config } from "../lib/config/types.js";
import { ConnectorPool } from "../lib/connector-pool.js";
import { Failure } from "../lib/errors.js";
import { CircuitBreakers } from "./circuit-breaker.js";
import { HealthView } from "./health-view.js";
import { createRouterService } from "./router-service.js";

const logger = pino({ level: "silent" });

type Upstream = "a" | "b" | "c";

/** Three fake OpenAI upstreams, one per configured provider a, b and c; filled in beforeAll. */
const upstreams = {} as Record<Upstream, OpenAIUpstream>;

beforeAll(async () => {
  for (const name of ["a", "b", "c"] as const satisfies Upstream[])
    upstreams[name] = await startOpenAIUpstream();
});
afterAll(async () => {
  await Promise.all(Object.values(upstreams).map((u) => u.close()));
});

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  for (const u of Object.values(upstreams)) {
    u.requests.length = 0;
    u.setBehavior({ kind: "answer" });
  }
});

interface Setup {
  /** The targets of model "chat", as "provider/model", in priority order. */
  targets: string[];
  retries?: number;
  firstTokenMs?: number;
  idleMs?: number;
  totalMs?: number;
}

function configFor(s: Setup): Config {
  const targets = s.targets.map((t) => {
    const [provider, model] = t.split("/");
    return `      - { provider: ${provider}, model: ${model} }`;
  });
  return testConfig(`
providers:
  a: { type: openai, base_url: "${upstreams.a.url}" }
  b: { type: openai, base_url: "${upstreams.b.url}" }
  c: { type: openai, base_url: "${upstreams.c.url}" }
models:
  chat:
    targets:
${targets.join("\n")}
routing:
  retries: ${s.retries ?? 2}
  backoff: { base_ms: 1, max_ms: 5 }
  timeouts:
    first_token_ms: ${s.firstTokenMs ?? 5000}
    idle_ms: ${s.idleMs ?? 5000}
    total_ms: ${s.totalMs ?? 10000}
`);
}

interface Rig {
  client: Client<typeof RouterService>;
  health: HealthView;
  breakers: CircuitBreakers;
  registry: Registry;
  /** Messages the connector sent the router, per call, in call order. */
  connectorMessages: number[];
}

/** Counts the messages of each streamed response that crosses a transport. */
function countMessages(into: number[]): Interceptor {
  return (next) => async (req) => {
    const res = await next(req);
    if (!res.stream) return res;
    const call = into.push(0) - 1;
    const source = res.message;
    async function* counted() {
      for await (const m of source) {
        into[call] = (into[call] ?? 0) + 1;
        yield m;
      }
    }
    return { ...res, message: counted() };
  };
}

/**
 * The router over a real Connect in-process transport (createRouterTransport), calling a real connector (also
 * in-process) that talks HTTP to the fake upstreams.
 */
function startRouter(s: Setup, breakers = new CircuitBreakers(100, 60_000)): Rig {
  const config = configFor(s);
  const connector = buildConnector({ config, logger, registry: new Registry() });
  cleanups.push(() => connector.close());
  const connectors = new ConnectorPool();
  const connectorMessages: number[] = [];
  connectors.add(
    "c1",
    createRouterTransport(connector.routes, {
      transport: { interceptors: [countMessages(connectorMessages)] },
    }),
  );
  const health = new HealthView(config.health.stale_after_ms);
  const registry = new Registry();
  const impl = createRouterService({ config, connectors, health, breakers, logger, registry });
  const transport = createRouterTransport((router) => router.service(RouterService, impl));
  const client = createClient(RouterService, transport);
  return { client, health, breakers, registry, connectorMessages };
}

function chatRequest(model = "chat", stream = true) {
  return {
    context: { requestId: "req-test" },
    params: {
      model,
      stream,
      messages: [
        {
          role: Role.USER,
          contentIsText: true,
          content: [{ part: { case: "text" as const, value: "Say hello" } }],
        },
      ],
    },
  };
}

interface Outcome {
  chunks: ChatChunk[];
  text: string;
  error: ConnectError | undefined;
  ms: number;
}

/** Runs a chat call to its end, keeping what arrived before any error. */
async function chat(
  rig: Rig,
  options: CallOptions = {},
  model = "chat",
  stream = true,
): Promise<Outcome> {
  const started = performance.now();
  const chunks: ChatChunk[] = [];
  let error: ConnectError | undefined;
  try {
    for await (const res of rig.client.chat(chatRequest(model, stream), options)) {
      if (res.chunk) chunks.push(res.chunk);
    }
  } catch (err) {
    error = ConnectError.from(err);
  }
  const text = chunks.map((c) => c.choices.map((d) => d.content ?? "").join("")).join("");
  return { chunks, text, error, ms: performance.now() - started };
}

/** The answer's start chunk, failing the test if the call did not succeed. */
function started(o: Outcome) {
  expect(o.error).toBeUndefined();
  const start = o.chunks[0]?.start;
  if (!start) throw new Error("the answer has no start chunk");
  return start;
}

async function until(check: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms}ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Resolves when the request closes, failing the test if it stays open for `ms`. */
async function closedWithin(p: Promise<void> | undefined, ms = 3000): Promise<void> {
  if (!p) throw new Error("no such request");
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`request still open after ${ms}ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Shared health as the prober writes it after a 429 or 503 with Retry-After of `ms`. */
function sharedPause(provider: string, model: string, ms: number, kind: PauseKind) {
  const now = Date.now();
  return create(TargetHealthSchema, {
    target: { provider, model },
    state: TargetState.DOWN,
    source: HealthSource.PASSIVE,
    updatedMs: BigInt(now),
    cooldownUntilMs: BigInt(now + ms),
    pauseUntilMs: BigInt(now + ms),
    pauseKind: kind,
  });
}

describe("RouterService.Chat", () => {
  it("streams the first target's answer unchanged, with attempts 1", async () => {
    upstreams.a.setBehavior({ kind: "answer", text: "Hello there, friend", chunks: 3 });
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"] });
    const o = await chat(rig);
    const start = started(o);
    expect(start.attempts).toBe(1);
    expect(start.provider).toBe("a");
    expect(o.text).toBe("Hello there, friend");
    expect(upstreams.a.requests).toHaveLength(1);
    expect(upstreams.b.requests).toHaveLength(0);
  });

  it("moves past a 500 and a 429 to the next target, counting every attempt", async () => {
    upstreams.a.setBehavior({ kind: "error", status: 500 });
    upstreams.b.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "1" } });
    const rig = startRouter({ targets: ["a/model-a", "b/model-b", "c/model-c"], retries: 2 });
    const o = await chat(rig);
    const start = started(o);
    expect(start.attempts).toBe(3);
    expect(start.provider).toBe("c");
    expect(upstreams.a.requests).toHaveLength(1);
    expect(upstreams.b.requests).toHaveLength(1);
    expect(upstreams.c.requests).toHaveLength(1);
    const attempts = await rig.registry.getSingleMetric("switchyard_router_attempts_total")?.get();
    const outcomes = attempts?.values.map((v) => `${v.labels.provider}:${v.labels.outcome}`);
    expect(outcomes?.sort()).toEqual(["a:upstream_error", "b:rate_limited", "c:ok"]);
  });

  it("makes at most routing.retries extra attempts, then returns the last failure", async () => {
    upstreams.a.setBehavior({ kind: "error", status: 500 });
    const targets = ["a/m1", "a/m2", "a/m3", "a/m4", "a/m5"];
    const rig = startRouter({ targets, retries: 2 });
    const o = await chat(rig);
    expect(o.chunks).toHaveLength(0);
    expect(o.error?.code).toBe(Code.Internal);
    const f = Failure.from(o.error);
    expect(f.kind).toBe("upstream_error");
    expect(f.upstreamStatus).toBe(500);
    expect(f.status).toBe(502);
    expect(upstreams.a.requests.map((r) => (r.body as { model: string }).model)).toEqual([
      "m1",
      "m2",
      "m3",
    ]);
  });

  it("makes one attempt only when routing.retries is 0", async () => {
    upstreams.a.setBehavior({ kind: "error", status: 503 });
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"], retries: 0 });
    const o = await chat(rig);
    expect(o.error?.code).toBe(Code.Unavailable);
    expect(upstreams.a.requests).toHaveLength(1);
    expect(upstreams.b.requests).toHaveLength(0);
  });

  it("returns a 400 at once without trying another target or charging the breaker", async () => {
    upstreams.a.setBehavior({ kind: "error", status: 400 });
    const rig = startRouter(
      { targets: ["a/model-a", "b/model-b"] },
      new CircuitBreakers(1, 60_000),
    );
    const o = await chat(rig);
    expect(o.error?.code).toBe(Code.InvalidArgument);
    const f = Failure.from(o.error);
    expect(f.status).toBe(400);
    expect(f.kind).toBe("invalid_request");
    expect(upstreams.b.requests).toHaveLength(0);
    expect(rig.breakers.isOpen("a", "model-a")).toBe(false);
  });

  it("answers NotFound for a model the config does not name, before any attempt", async () => {
    const rig = startRouter({ targets: ["a/model-a"] });
    const o = await chat(rig, {}, "no-such-model");
    expect(o.error?.code).toBe(Code.NotFound);
    expect(Failure.from(o.error).code).toBe("model_not_found");
    expect(upstreams.a.requests).toHaveLength(0);
  });

  it("gives up on a target with no first token within first_token_ms and tries the next", async () => {
    upstreams.a.setBehavior({ kind: "hang" });
    // Wide enough that b, answering at once, never misses it even on a loaded machine.
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"], firstTokenMs: 400 });
    const o = await chat(rig);
    const start = started(o);
    expect(start.attempts).toBe(2);
    expect(start.provider).toBe("b");
    // The abandoned attempt's upstream request is closed, not left hanging.
    await closedWithin(upstreams.a.requests[0]?.closed);
    expect(upstreams.a.requests[0]?.aborted).toBe(true);
  });

  it("ends a stream that goes idle after its first chunk with DeadlineExceeded, no retry", async () => {
    // The role chunk and the first token come at once; then nothing, for longer than idle_ms.
    upstreams.a.setBehavior({ kind: "answer", chunks: 5, stallAfterChunks: 2 });
    const rig = startRouter({
      targets: ["a/model-a", "b/model-b"],
      firstTokenMs: 5000,
      idleMs: 30,
    });
    const o = await chat(rig);
    expect(o.chunks.length).toBeGreaterThanOrEqual(1);
    expect(o.chunks[0]?.start?.provider).toBe("a");
    expect(o.error?.code).toBe(Code.DeadlineExceeded);
    const f = Failure.from(o.error);
    expect(f.kind).toBe("timeout");
    expect(f.message).toContain("no token within 30 ms");
    expect(upstreams.b.requests).toHaveLength(0);
    await closedWithin(upstreams.a.requests[0]?.closed);
    expect(upstreams.a.requests[0]?.aborted).toBe(true);
  });

  it("ends a stream cut after its first chunk with an error, never a retry or a clean end", async () => {
    upstreams.a.setBehavior({ kind: "answer", chunks: 5, cutAfterChunks: 2 });
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"] });
    const o = await chat(rig);
    expect(o.chunks.length).toBeGreaterThanOrEqual(1);
    expect(o.error).toBeDefined();
    expect(Failure.from(o.error).kind).toBe("upstream_error");
    expect(upstreams.b.requests).toHaveLength(0);
  });

  it("bounds the whole request by total_ms, even while tokens keep coming", async () => {
    // A token every 100 ms (well inside idle_ms), 29 of them: about 3 s if left alone.
    upstreams.a.setBehavior({ kind: "answer", chunks: 29, chunkDelayMs: 100 });
    const rig = startRouter({
      targets: ["a/model-a", "b/model-b"],
      firstTokenMs: 400,
      idleMs: 5000,
      totalMs: 400,
    });
    const o = await chat(rig);
    expect(o.chunks.length).toBeGreaterThanOrEqual(1);
    expect(o.chunks[0]?.start?.provider).toBe("a");
    expect(o.error?.code).toBe(Code.DeadlineExceeded);
    const f = Failure.from(o.error);
    expect(f.status).toBe(504);
    expect(f.kind).toBe("timeout");
    expect(o.ms).toBeLessThan(2500);
    expect(upstreams.b.requests).toHaveLength(0);
    await closedWithin(upstreams.a.requests[0]?.closed);
    expect(upstreams.a.requests[0]?.aborted).toBe(true);
  });

  it("bounds all attempts together by total_ms, not each one", async () => {
    // Nine targets that never answer, 40 ms each: 360 ms of attempts if total_ms did not stop
    // them at 200 ms.
    upstreams.a.setBehavior({ kind: "hang" });
    const targets = Array.from({ length: 9 }, (_, i) => `a/m${i + 1}`);
    const rig = startRouter({ targets, retries: 20, firstTokenMs: 40, totalMs: 200 });
    const o = await chat(rig);
    expect(o.chunks).toHaveLength(0);
    expect(o.error?.code).toBe(Code.DeadlineExceeded);
    expect(Failure.from(o.error).message).toContain("request not finished within 200 ms");
    expect(upstreams.a.requests.length).toBeGreaterThanOrEqual(2);
    expect(upstreams.a.requests.length).toBeLessThan(9);
    await Promise.all(upstreams.a.requests.map((r) => closedWithin(r.closed)));
  });

  it("tries a target that shared health marks DOWN only after the others", async () => {
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"] });
    rig.health.apply(
      create(TargetHealthSchema, {
        target: { provider: "a", model: "model-a" },
        state: TargetState.DOWN,
        source: HealthSource.PROBE,
        updatedMs: BigInt(Date.now()),
      }),
    );
    const first = started(await chat(rig));
    expect(first.provider).toBe("b");
    expect(first.attempts).toBe(1);
    expect(upstreams.a.requests).toHaveLength(0);

    // When the healthy ones fail, the DOWN target is still the last resort.
    upstreams.b.setBehavior({ kind: "error", status: 500 });
    const second = started(await chat(rig));
    expect(second.provider).toBe("a");
    expect(second.attempts).toBe(2);
  });

  it("skips a target paused in shared health while another can take the call, even when it fails", async () => {
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"], retries: 2 });
    // Another router was answered 429 with Retry-After by a: the prober wrote it paused.
    rig.health.apply(sharedPause("a", "model-a", 30_000, PauseKind.RATE_LIMITED));
    upstreams.b.setBehavior({ kind: "error", status: 500 });
    const o = await chat(rig);
    expect(Failure.from(o.error).upstreamStatus).toBe(500);
    // Every attempt went to b, around again: a is not tried last (as a DOWN mark is) but skipped.
    expect(upstreams.b.requests).toHaveLength(3);
    expect(upstreams.a.requests).toHaveLength(0);
  });

  it("answers like the soonest pause, its own or shared health's, when every target is paused, calling none", async () => {
    const breakers = new CircuitBreakers(100, 60_000);
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"] }, breakers);
    // a asked another router to wait 20 s (busy); b asked this one for 40 s (rate limited).
    rig.health.apply(sharedPause("a", "model-a", 20_000, PauseKind.UNAVAILABLE));
    breakers.pauseFor("b", "model-b", 40_000, "rate_limited");
    const busy = Failure.from((await chat(rig)).error);
    expect(busy).toMatchObject({ status: 503, kind: "upstream_unavailable", provider: "a" });
    expect(busy.retryAfterMs).toBeGreaterThan(15_000);
    expect(busy.retryAfterMs).toBeLessThanOrEqual(20_000);
    // A target paused both ways is paused until the later end, with that one's kind.
    breakers.pauseFor("a", "model-a", 50_000, "rate_limited");
    const limited = Failure.from((await chat(rig)).error);
    expect(limited).toMatchObject({ status: 429, kind: "rate_limited", provider: "b" });
    expect(limited.retryAfterMs).toBeGreaterThan(35_000);
    expect(limited.retryAfterMs).toBeLessThanOrEqual(40_000);
    expect(upstreams.a.requests).toHaveLength(0);
    expect(upstreams.b.requests).toHaveLength(0);
  });

  it("skips a target whose breaker opened, then lets one trial through after the cooldown", async () => {
    const clock = { now: 1_000_000 };
    const breakers = new CircuitBreakers(2, 1000, () => clock.now);
    upstreams.a.setBehavior({ kind: "error", status: 500 });
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"] }, breakers);

    // Two failures in a row open a's breaker; b answers each time.
    for (let i = 0; i < 2; i++) expect(started(await chat(rig)).attempts).toBe(2);
    expect(breakers.isOpen("a", "model-a")).toBe(true);
    const skipped = started(await chat(rig));
    expect(skipped.provider).toBe("b");
    expect(skipped.attempts).toBe(1);
    expect(upstreams.a.requests).toHaveLength(2);

    // After the cooldown a recovers. The trial is slow, and while it runs nobody else gets in.
    clock.now += 1000;
    upstreams.a.setBehavior({ kind: "answer", headersDelayMs: 300 });
    const trial = chat(rig);
    await until(() => upstreams.a.requests.length === 3);
    // Even when b fails too, a call made during the trial does not reach a.
    upstreams.b.setBehavior({ kind: "error", status: 500 });
    const meanwhile = await chat(rig);
    expect(Failure.from(meanwhile.error).upstreamStatus).toBe(500);
    expect(upstreams.a.requests).toHaveLength(3);
    upstreams.b.setBehavior({ kind: "answer" });
    const trialStart = started(await trial);
    expect(trialStart.provider).toBe("a");
    expect(trialStart.attempts).toBe(1);

    // The trial's success closed the breaker: a is first choice again.
    expect(breakers.isOpen("a", "model-a")).toBe(false);
    expect(started(await chat(rig)).provider).toBe("a");
  });

  it("never tries a target whose breaker is open while another can take the call, even when it fails", async () => {
    const breakers = new CircuitBreakers(3, 60_000);
    for (let i = 0; i < 3; i++) breakers.onFailure("a", "model-a");
    upstreams.b.setBehavior({ kind: "error", status: 500 });
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"], retries: 2 }, breakers);
    const o = await chat(rig);
    expect(Failure.from(o.error).upstreamStatus).toBe(500);
    // Every attempt went to b, around again: a is not tried last but skipped.
    expect(upstreams.b.requests).toHaveLength(3);
    expect(upstreams.a.requests).toHaveLength(0);
  });

  it("tries the first target once a request when every breaker refuses, as with a single target", async () => {
    const breakers = new CircuitBreakers(1, 60_000);
    const rig = startRouter({ targets: ["a/model-a"], retries: 2 }, breakers);
    breakers.onFailure("a", "model-a");
    const start = started(await chat(rig));
    expect(start.provider).toBe("a");
    expect(start.attempts).toBe(1);
    // A failure of the last resort gets no retry, whatever routing.retries allows.
    breakers.onFailure("a", "model-a");
    upstreams.a.setBehavior({ kind: "error", status: 500 });
    expect(Failure.from((await chat(rig)).error).upstreamStatus).toBe(500);
    expect(upstreams.a.requests).toHaveLength(2);
  });

  it("closes the upstream request when the client goes away mid-stream", async () => {
    upstreams.a.setBehavior({ kind: "answer", chunks: 50, chunkDelayMs: 40 });
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"] });
    const abort = new AbortController();
    const chunks: ChatChunk[] = [];
    let error: unknown;
    try {
      for await (const res of rig.client.chat(chatRequest(), { signal: abort.signal })) {
        if (res.chunk) chunks.push(res.chunk);
        if (chunks.length === 2) abort.abort();
      }
    } catch (err) {
      error = err;
    }
    expect(ConnectError.from(error).code).toBe(Code.Canceled);
    await closedWithin(upstreams.a.requests[0]?.closed);
    expect(upstreams.a.requests[0]?.aborted).toBe(true);
    expect(upstreams.b.requests).toHaveLength(0);
  });

  it("closes the upstream request, tries nothing else and charges no breaker when the client leaves before the first token", async () => {
    upstreams.a.setBehavior({ kind: "hang" });
    const rig = startRouter(
      { targets: ["a/model-a", "b/model-b"] },
      new CircuitBreakers(1, 60_000),
    );
    const abort = new AbortController();
    const call = chat(rig, { signal: abort.signal });
    await until(() => upstreams.a.requests.length === 1);
    abort.abort();
    const o = await call;
    expect(o.error?.code).toBe(Code.Canceled);
    await closedWithin(upstreams.a.requests[0]?.closed);
    expect(upstreams.a.requests[0]?.aborted).toBe(true);
    expect(upstreams.b.requests).toHaveLength(0);
    expect(rig.breakers.isOpen("a", "model-a")).toBe(false);
  });
});

describe("RouterService.Chat for a client that is not streaming", () => {
  const text = Array.from({ length: 24 }, (_, i) => `w${i} `).join("");

  it("passes every chunk of a streamed answer as it comes (the reference)", async () => {
    upstreams.a.setBehavior({ kind: "answer", text, chunks: 24 });
    const rig = startRouter({ targets: ["a/model-a"] });
    const o = await chat(rig);
    expect(o.text).toBe(text);
    // Role chunk, 24 content chunks, the finish chunk, the usage chunk.
    expect(o.chunks).toHaveLength(27);
    expect(rig.connectorMessages).toEqual([27]);
  });

  it("answers with one message, and the connector merges what follows its first chunk", async () => {
    upstreams.a.setBehavior({ kind: "answer", text, chunks: 24 });
    const rig = startRouter({ targets: ["a/model-a"] });
    const o = await chat(rig, {}, "chat", false);
    expect(o.error).toBeUndefined();
    expect(o.chunks).toHaveLength(1);
    const whole = o.chunks[0];
    expect(whole?.start?.provider).toBe("a");
    expect(whole?.start?.attempts).toBe(1);
    expect(whole?.choices.map((c) => [c.content, c.finishReason])).toEqual([
      [text, FinishReason.STOP],
    ]);
    expect(whole?.usage?.completionTokens).toBeGreaterThan(0);
    // Sent at once, the upstream's 27 chunks cross the connector hop as the first alone plus
    // the rest merged (two messages; a third if the rest straddled hold_ms on a slow machine).
    expect(rig.connectorMessages).toHaveLength(1);
    expect(rig.connectorMessages[0]).toBeGreaterThanOrEqual(2);
    expect(rig.connectorMessages[0]).toBeLessThanOrEqual(4);
  });

  it("gets a fast, long answer merged in messages of at most 256 Ki characters", async () => {
    // 1 Mi characters sent at once in 64 chunks of 16 Ki: within hold_ms, so only the size
    // bound splits them (the first chunk alone, then four of 256 Ki or a little over).
    const long = "y".repeat(1024 * 1024);
    upstreams.a.setBehavior({ kind: "answer", text: long, chunks: 64 });
    const rig = startRouter({ targets: ["a/model-a"] });
    const o = await chat(rig, {}, "chat", false);
    expect(o.error).toBeUndefined();
    expect(o.text).toBe(long);
    expect(rig.connectorMessages[0]).toBeGreaterThanOrEqual(5);
  });

  it("still hears from a slow answer while it is generated, every hold_ms at least", async () => {
    // idle_ms 800 → hold_ms 200; fifteen events 50 ms apart take ~750 ms: the first chunk, merged
    // progress during the answer (not only at its end), and far fewer messages than chunks.
    upstreams.a.setBehavior({ kind: "answer", text, chunks: 12, chunkDelayMs: 50 });
    const rig = startRouter({ targets: ["a/model-a"], idleMs: 800 });
    const o = await chat(rig, {}, "chat", false);
    expect(o.error).toBeUndefined();
    expect(o.text).toBe(text);
    const messages = rig.connectorMessages[0] ?? 0;
    expect(messages).toBeGreaterThanOrEqual(3);
    expect(messages).toBeLessThan(12);
  });

  it("retries an answer that stops mid-way on the next target: nothing was shown yet", async () => {
    upstreams.a.setBehavior({ kind: "answer", text, chunks: 24, cutAfterChunks: 10 });
    upstreams.b.setBehavior({ kind: "answer", text: "from b", chunks: 2 });
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"] });
    const o = await chat(rig, {}, "chat", false);
    expect(o.error).toBeUndefined();
    expect(o.chunks).toHaveLength(1);
    expect(o.text).toBe("from b");
    expect(o.chunks[0]?.start?.attempts).toBe(2);
  });

  it("answers a token count that no target can make with the connector's unsupported 400, after no attempt", async () => {
    // A half-open breaker's trial, claimed for a target that was passed over, is given back.
    const breakers = new CircuitBreakers(1, 0);
    breakers.onFailure("a", "model-a");
    const rig = startRouter({ targets: ["a/model-a", "b/model-b"] }, breakers);
    let error: unknown;
    try {
      await rig.client.countTokens(chatRequest("chat", false));
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConnectError);
    const f = Failure.from(error);
    expect(f.status).toBe(400);
    expect(f.kind).toBe("unsupported");
    expect(f.attempts).toBe(0);
    expect(f.message).toMatch(/cannot count tokens/);
    expect(upstreams.a.requests).toHaveLength(0);
    expect(upstreams.b.requests).toHaveLength(0);
    // Not a failure of the target: its breaker lets the next call through as a trial again.
    expect(rig.breakers.tryAcquire("a", "model-a")).toBe(true);
  });
});

describe("a connector that refuses calls", () => {
  it("is a warning per refused call, unless it said it is leaving: then its refusals are expected", async () => {
    // A real refusal: nothing listens on this port.
    const [port] = await freePorts(1);
    const address = `http://127.0.0.1:${port}`;
    const connectors = new ConnectorPool();
    connectors.add(address, createConnectTransport({ baseUrl: address, httpVersion: "2" }));
    const config = configFor({ targets: ["a/model-a"], retries: 0 });
    const logs = captureLogs("debug");
    const health = new HealthView(config.health.stale_after_ms);
    const breakers = new CircuitBreakers(100, 60_000);
    const impl = createRouterService({
      config,
      connectors,
      health,
      breakers,
      logger: logs.logger,
      registry: new Registry(),
    });
    const client = createClient(
      RouterService,
      createRouterTransport((router) => router.service(RouterService, impl)),
    );
    const rig: Rig = { client, health, breakers, registry: new Registry(), connectorMessages: [] };
    const refusals = () =>
      logs
        .lines()
        .filter((l) => l.msg === "connector did not answer")
        .map((l) => l.level);

    const unexpected = Failure.from((await chat(rig)).error);
    expect(unexpected.message).toMatch(/could not reach a provider connector/);
    const warned = refusals();
    expect(warned.length).toBeGreaterThan(0);
    expect(new Set(warned)).toEqual(new Set([40]));

    connectors.setLeaving(address, true);
    const expected = Failure.from((await chat(rig)).error);
    expect(expected.message).toMatch(/could not reach a provider connector/);
    const quiet = refusals().slice(warned.length);
    expect(quiet).toHaveLength(warned.length);
    expect(new Set(quiet)).toEqual(new Set([20]));
    expect(upstreams.a.requests).toHaveLength(0);
  });
});
