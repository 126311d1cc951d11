import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MAX_RETRY_AFTER_MS } from "../services/connector/providers/upstream-http.js";
import { hashKey } from "../services/lib/config/keys.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { metricValue } from "./helpers/metrics.js";
import { type AnthropicUpstream, startAnthropicUpstream } from "./upstreams/anthropic-upstream.js";
import {
  type OpenAIUpstream,
  startOpenAIUpstream,
  type UpstreamBehavior,
} from "./upstreams/openai-upstream.js";

// Per-request routing hints, Retry-After cooldowns, context-window fallbacks, the retry budget
// and client deadlines, through one gateway process and real upstreams.
let a: OpenAIUpstream;
let b: OpenAIUpstream;
let big: OpenAIUpstream;
let anthropic: AnthropicUpstream;
let gw: RunningFabric;
let budgetGw: RunningFabric;

const ok = (text: string) => ({ kind: "answer" as const, text });
/** OpenAI's refusal of a prompt longer than the model's context window. */
const WINDOW_EXCEEDED: UpstreamBehavior = {
  kind: "error",
  status: 400,
  body: {
    error: {
      message: "This model's maximum context length is 8192 tokens.",
      type: "invalid_request_error",
      param: "messages",
      code: "context_length_exceeded",
    },
  },
};
const posts = (u: { requests: Array<{ method: string }> }) =>
  u.requests.filter((r) => r.method === "POST").length;

/**
 * A gateway over this file's upstreams, then `yaml` (models, routing, tenants): providers pa, pb
 * and pbig (OpenAI-compatible, on a, b and big), paz (Azure OpenAI, on a) and an (Anthropic).
 */
const gatewayOver = (yaml: string) =>
  startOneProcess(
    testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
  pb: { type: openai, base_url: "${b.url}" }
  pbig: { type: openai, base_url: "${big.url}" }
  paz: { type: azure-openai, base_url: "${a.origin}", api_key: az-key, api_version: "2024-10-21" }
  an: { type: anthropic, base_url: "${anthropic.url}", api_key: an-key }
${yaml}
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );

/** Runs `use` on a gateway of its own, for a test whose pauses or breakers would outlast it. */
async function withOwnGateway(yaml: string, use: (url: string) => Promise<void>): Promise<void> {
  const own = await gatewayOver(yaml);
  try {
    await use(own.url);
  } finally {
    await own.stop();
  }
}

beforeAll(async () => {
  a = await startOpenAIUpstream({ behavior: ok("from a") });
  b = await startOpenAIUpstream({ behavior: ok("from b") });
  big = await startOpenAIUpstream({ behavior: ok("from big") });
  anthropic = await startAnthropicUpstream();
  gw = await gatewayOver(`
models:
  chat:
    targets: [{ provider: pa, model: ma }, { provider: pb, model: mb }]
    fallbacks: [backup]
  solo:
    targets: [{ provider: pa, model: ma }]
    fallbacks: [backup]
  backup:
    targets: [{ provider: pbig, model: m-backup }]
  small:
    targets: [{ provider: pa, model: m-small }]
    context_window_fallbacks: [large]
  large:
    targets: [{ provider: pbig, model: m-large }]
routing:
  retries: 2
  backoff: { base_ms: 1, max_ms: 5 }
  timeouts: { first_token_ms: 5000, idle_ms: 5000, total_ms: 20000 }
  # Out of the way: breakers would carry one test's failures into the next.
  circuit_breaker: { consecutive_failures: 1000, cooldown_ms: 1000 }
`);
  budgetGw = await gatewayOver(`
models:
  chat:
    targets: [{ provider: pa, model: ma }, { provider: pb, model: mb }]
routing:
  retries: 2
  backoff: { base_ms: 0, max_ms: 0 }
  circuit_breaker: { consecutive_failures: 1000, cooldown_ms: 1000 }
  retry_budget: { ratio: 0, min_per_second: 1 }
`);
});

afterAll(async () => {
  await gw?.stop();
  await budgetGw?.stop();
  await Promise.all([a?.close(), b?.close(), big?.close(), anthropic?.close()]);
});

afterEach(() => {
  for (const [u, text] of [
    [a, "from a"],
    [b, "from b"],
    [big, "from big"],
  ] as const) {
    u.setBehavior(ok(text));
    u.requests.length = 0;
  }
  anthropic.setBehavior({ kind: "answer" });
  anthropic.requests.length = 0;
});

async function chat(
  base: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
) {
  const res = await request(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], ...body }),
  });
  const json = (await res.body.json()) as {
    choices?: Array<{ message: { content: string } }>;
    error?: { message: string };
  };
  return {
    status: res.statusCode,
    text: json.choices?.[0]?.message.content,
    error: json.error?.message,
    attempts: res.headers["x-switchyard-attempts"],
    provider: res.headers["x-switchyard-provider"],
    retryAfter: res.headers["retry-after"],
  };
}

/** The openai SDK's error for a chat request the gateway refuses (no retries of the SDK's own). */
async function sdkError(base: string, model: string, headers: Record<string, string> = {}) {
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused", maxRetries: 0 });
  const err = await client.chat.completions
    .create({ model, messages: [{ role: "user", content: "hi" }] }, { headers })
    .catch((e: unknown) => e);
  if (!(err instanceof OpenAI.APIError)) throw new Error(`not an API error: ${String(err)}`);
  return err;
}

/** A paused target's answer, given by the gateway: what is left of the target's 30 s pause. */
function expectPauseLeft(err: InstanceType<typeof OpenAI.APIError>) {
  const retryAfter = Number(err.headers?.get("retry-after"));
  expect(retryAfter).toBeGreaterThan(20);
  expect(retryAfter).toBeLessThanOrEqual(30);
}

describe("per-request hints", () => {
  it("pins a provider with x-switchyard-provider", async () => {
    const r = await chat(gw.url, { model: "chat" }, { "x-switchyard-provider": "pb" });
    expect(r).toMatchObject({ status: 200, text: "from b", provider: "pb" });
    expect(posts(a)).toBe(0);
  });

  it("overrides fallbacks from the body, and does not pass that field upstream", async () => {
    a.setBehavior({ kind: "error", status: 500 });
    const r = await chat(gw.url, { model: "solo", fallbacks: ["chat"] });
    // solo's own target fails; the request's fallback `chat` is tried instead of `backup`.
    expect(r.status).toBe(200);
    expect(r.provider).toBe("pb");
    expect(posts(big)).toBe(0);
    expect(b.requests.at(-1)?.body).not.toHaveProperty("fallbacks");
  });

  it("turns configured fallbacks off with an empty x-switchyard-fallbacks", async () => {
    a.setBehavior({ kind: "error", status: 500 });
    const r = await chat(gw.url, { model: "solo" }, { "x-switchyard-fallbacks": "" });
    expect(r.status).toBe(502);
    expect(posts(big)).toBe(0);
  });

  it("honours the client's deadline from x-switchyard-timeout-ms", async () => {
    a.setBehavior({ kind: "hang" });
    const started = Date.now();
    const r = await chat(
      gw.url,
      { model: "solo" },
      { "x-switchyard-timeout-ms": "300", "x-switchyard-fallbacks": "" },
    );
    expect(r.status).toBe(504);
    expect(Date.now() - started).toBeLessThan(3_000);
    // The limit named is the client's (what was left of it when the router got the call),
    // not total_ms.
    expect(r.error).toMatch(/not finished within (2\d\d|300) ms/);
  });

  it("refuses a malformed deadline header with a 400 naming it", async () => {
    const r = await chat(gw.url, { model: "solo" }, { "x-switchyard-timeout-ms": "soon" });
    expect(r.status).toBe(400);
    expect(r.error).toMatch(/x-switchyard-timeout-ms/);
  });
});

describe("the longest timeouts", () => {
  it("serves requests with every timeout at the longest timer Node takes (about 24.8 days)", async () => {
    // Node fires a longer timer after 1 ms, with a TimeoutOverflowWarning. A held answer's idle
    // window is idle_ms plus the connector's hold, so at the maximum it must be capped; the answer
    // here takes ~90 ms, far past 1 ms.
    const overflows: string[] = [];
    const onWarning = (w: Error) => {
      if (w.name === "TimeoutOverflowWarning") overflows.push(w.message);
    };
    process.on("warning", onWarning);
    a.setBehavior({ kind: "answer", text: "slow and whole", chunks: 3, chunkDelayMs: 30 });
    const slow = await startOneProcess(
      testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
models:
  solo: { targets: [{ provider: pa, model: ma }] }
routing:
  backoff: { base_ms: 1, max_ms: 2147483647 }
  timeouts: { first_token_ms: 2147483647, idle_ms: 2147483647, total_ms: 2147483647 }
health: { probe_interval_ms: 2147483646, stale_after_ms: 2147483647 }
`),
    );
    try {
      const client = new OpenAI({ baseURL: `${slow.url}/v1`, apiKey: "none" });
      const messages = [{ role: "user" as const, content: "hi" }];
      const whole = await client.chat.completions.create({ model: "solo", messages });
      expect(whole.choices[0]?.message.content).toBe("slow and whole");
      const stream = await client.chat.completions.create({
        model: "solo",
        messages,
        stream: true,
      });
      let text = "";
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
      expect(text).toBe("slow and whole");
      // A client deadline longer still is bounded by total_ms, not overflowed.
      const r = await chat(
        slow.url,
        { model: "solo" },
        { "x-switchyard-timeout-ms": "9999999999" },
      );
      expect([r.status, r.text]).toEqual([200, "slow and whole"]);
      expect(overflows).toEqual([]);
    } finally {
      process.off("warning", onWarning);
      await slow.stop();
    }
  });
});

/** switchyard_router_circuit_state's values. */
const CLOSED = 0;
const OPEN = 1;

describe("failure handling", () => {
  it("puts a target that answered 429 with Retry-After in cooldown for that long", async () => {
    a.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "30" } });
    const first = await chat(gw.url, { model: "chat" });
    expect(first).toMatchObject({ status: 200, provider: "pb", attempts: "2" });
    const second = await chat(gw.url, { model: "chat" });
    // The cooling-down target is passed over: one attempt, and it never saw the second request.
    expect(second).toMatchObject({ status: 200, provider: "pb", attempts: "1" });
    expect(posts(a)).toBe(1);
  });

  it.each([
    [
      "does not trip the breaker on 429s in a row whose Retry-After pauses were waited out",
      // Throttled: tripped, the target would be put last for ten minutes; it answers first.
      { status: 429, times: 4, breaker: CLOSED, answers: "pa" },
    ],
    [
      "counts 503s with Retry-After towards the breaker, unlike 429s: the upstream is failing",
      // Two failures in a row opened a's breaker: it is passed over for ten minutes.
      { status: 503, times: 2, breaker: OPEN, answers: "pb" },
    ],
  ])("%s", async (_, { status, times, breaker, answers }) => {
    const yaml = `
models:
  solo: { targets: [{ provider: pa, model: ma }, { provider: pb, model: mb }] }
routing: { retries: 0, circuit_breaker: { consecutive_failures: 2, cooldown_ms: 600000 } }
`;
    await withOwnGateway(yaml, async (url) => {
      a.setBehavior({ kind: "error", status, headers: { "retry-after-ms": "20" } });
      for (let i = 0; i < times; i++) {
        expect((await chat(url, { model: "solo" })).status).toBe(status);
        // Ten times the pause the target asked for.
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      // The breaker itself: shared health puts a target answering 503s last too, so who answers
      // next does not tell.
      const metrics = await (await request(`${url}/metrics`)).body.text();
      expect(
        metricValue(metrics, "switchyard_router_circuit_state", { provider: "pa", target: "ma" }),
      ).toBe(breaker);
      a.setBehavior(ok("from a"));
      expect(await chat(url, { model: "solo" })).toMatchObject({ status: 200, provider: answers });
      expect(posts(a)).toBe(answers === "pa" ? times + 1 : times);
    });
  });

  it("does not call a target again before its Retry-After, even when it is the only one", async () => {
    const yaml = `
models:
  solo: { targets: [{ provider: pa, model: ma }], fallbacks: [backup] }
  backup: { targets: [{ provider: pbig, model: m-backup }] }
routing: { retries: 2, backoff: { base_ms: 1, max_ms: 5 } }
`;
    await withOwnGateway(yaml, async (url) => {
      a.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "30" } });
      const first = await chat(url, { model: "solo" }, { "x-switchyard-fallbacks": "" });
      expect(first).toMatchObject({ status: 429, attempts: "1" });
      a.setBehavior(ok("from a"));
      const err = await sdkError(url, "solo", { "x-switchyard-fallbacks": "" });
      // The pause is answered here, as the target would answer, with what is left of it.
      expect(err).toBeInstanceOf(OpenAI.RateLimitError);
      expect(err.code).toBe("rate_limit_exceeded");
      expectPauseLeft(err);
      expect(posts(a)).toBe(1);
      // A fallback that is not paused still answers.
      expect(await chat(url, { model: "solo" })).toMatchObject({
        status: 200,
        text: "from big",
        attempts: "1",
      });
      expect(posts(a)).toBe(1);
    });
  });

  it.each([
    ["rate limiting", 429, "3"],
    ["busy", 503, "4"],
  ])("answers the soonest Retry-After when every target is %s", async (_, status, soonest) => {
    const yaml = `
models:
  pair: { targets: [{ provider: pa, model: ma }, { provider: pb, model: mb }] }
routing: { retries: 1, backoff: { base_ms: 1, max_ms: 5 } }
`;
    await withOwnGateway(yaml, async (url) => {
      a.setBehavior({ kind: "error", status, headers: { "retry-after": soonest } });
      b.setBehavior({ kind: "error", status, headers: { "retry-after": "50" } });
      expect(await chat(url, { model: "pair" })).toMatchObject({
        status,
        attempts: "2",
        retryAfter: soonest,
      });
    });
  });

  it("passes over a target that answered 503 with Retry-After for that long, and answers 503 while every target is paused", async () => {
    const yaml = `
models:
  pair: { targets: [{ provider: pa, model: ma }, { provider: pb, model: mb }] }
  busy: { targets: [{ provider: paz, model: busy-deployment }] }
routing: { retries: 2, backoff: { base_ms: 1, max_ms: 5 } }
`;
    await withOwnGateway(yaml, async (url) => {
      // OpenAI's "server is overloaded" 503, and Azure OpenAI's "server busy" one.
      a.setBehavior({ kind: "error", status: 503, headers: { "retry-after": "30" } });
      expect(await chat(url, { model: "pair" })).toMatchObject({
        status: 200,
        provider: "pb",
        attempts: "2",
      });
      expect(await chat(url, { model: "pair" })).toMatchObject({
        status: 200,
        provider: "pb",
        attempts: "1",
      });
      expect(posts(a)).toBe(1);

      const first = await chat(url, { model: "busy" });
      expect(first).toMatchObject({ status: 503, attempts: "1" });
      expect(posts(a)).toBe(2);
      a.setBehavior(ok("from a"));
      const err = await sdkError(url, "busy");
      // The gateway answers for the paused target as it would: busy, not a rate limit.
      expect(err).toBeInstanceOf(OpenAI.InternalServerError);
      expect(err.status).toBe(503);
      expectPauseLeft(err);
      expect(posts(a)).toBe(2);
    });
  });

  it("passes over an Anthropic target overloaded (529) with Retry-After, and not one without it", async () => {
    const yaml = `
models:
  paused: { targets: [{ provider: an, model: claude-paused }] }
  counted: { targets: [{ provider: an, model: claude-counted }] }
routing: { retries: 0 }
`;
    await withOwnGateway(yaml, async (url) => {
      const claude = new Anthropic({ baseURL: url, apiKey: "unused", maxRetries: 0 });
      const ask = (model: string) =>
        claude.messages
          .create({ model, max_tokens: 16, messages: [{ role: "user", content: "hi" }] })
          .catch((e: unknown) => e);
      anthropic.setBehavior({ kind: "error", status: 529, headers: { "retry-after": "30" } });
      for (let i = 0; i < 2; i++) {
        const err = await ask("paused");
        // Overloaded, as Anthropic says it: a 503 overloaded_error, never a rate limit.
        expect(err).toBeInstanceOf(Anthropic.InternalServerError);
        const e = err as InstanceType<typeof Anthropic.InternalServerError>;
        expect(e.status).toBe(503);
        expect((e.error as { error?: { type?: string } }).error?.type).toBe("overloaded_error");
        expect(Number(e.headers?.get("retry-after"))).toBeGreaterThan(20);
      }
      // The second was answered by the gateway: the target asked to be left alone for 30 s.
      expect(posts(anthropic)).toBe(1);
      anthropic.setBehavior({ kind: "error", status: 529 });
      for (let i = 0; i < 2; i++) expect(await ask("counted")).toMatchObject({ status: 503 });
      // Without Retry-After it is a failure like any 5xx, and the next request tries it again.
      expect(posts(anthropic)).toBe(3);
    });
  });

  it("takes a Retry-After of a day as MAX_RETRY_AFTER_MS, for the pause and for the client", async () => {
    await withOwnGateway(
      "models: { solo: { targets: [{ provider: pa, model: ma }] } }",
      async (url) => {
        a.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "86400" } });
        const cap = Number(MAX_RETRY_AFTER_MS / 1000);
        const first = await chat(url, { model: "solo" });
        expect([first.status, first.retryAfter]).toEqual([429, String(cap)]);
        const paused = await chat(url, { model: "solo" });
        expect(paused.status).toBe(429);
        expect(Number(paused.retryAfter)).toBeLessThanOrEqual(cap);
        expect(Number(paused.retryAfter)).toBeGreaterThan(cap - 10);
        expect(posts(a)).toBe(1);
      },
    );
  });

  it("falls back to a model with a bigger window when the context window is exceeded", async () => {
    a.setBehavior(WINDOW_EXCEEDED);
    const r = await chat(gw.url, { model: "small" });
    // Two upstream calls: the one the window refused, and the bigger model's.
    expect(r).toMatchObject({ status: 200, text: "from big", attempts: "2" });
    expect((big.requests.at(-1)?.body as { model?: string } | undefined)?.model).toBe("m-large");
  });

  it("counts the refused call and the bigger model's failed ones when the fallback fails too", async () => {
    a.setBehavior({
      kind: "error",
      status: 400,
      body: { error: { message: "too long", code: "context_length_exceeded", param: "messages" } },
    });
    big.setBehavior({ kind: "error", status: 500 });
    const r = await chat(gw.url, { model: "small" });
    // One call refused by the window, then the bigger model's first try and its two retries.
    expect(r).toMatchObject({ status: 502, attempts: "4" });
    expect(posts(a) + posts(big)).toBe(4);
  });

  it("holds a context-window fallback to the request's total_ms, not a fresh one", async () => {
    const yaml = `
models:
  small: { targets: [{ provider: pa, model: m-small }], context_window_fallbacks: [large] }
  large: { targets: [{ provider: pbig, model: m-large }] }
routing:
  retries: 0
  timeouts: { first_token_ms: 1000, idle_ms: 1000, total_ms: 1000 }
`;
    await withOwnGateway(yaml, async (url) => {
      // The window's refusal takes half the request's time; the bigger model never answers.
      a.setBehavior({
        kind: "raw",
        status: 400,
        headers: { "content-type": "application/json" },
        chunkDelayMs: 500,
        chunks: [
          JSON.stringify({ error: { message: "too long", code: "context_length_exceeded" } }),
        ],
      });
      big.setBehavior({ kind: "hang" });
      const started = Date.now();
      const r = await chat(url, { model: "small" });
      expect(r).toMatchObject({ status: 504, attempts: "2" });
      // The client is told of the limit it has (1000 ms, less the time to reach the router),
      // not of what was left when the fallback began.
      const limit = Number(/within (\d+) ms/.exec(r.error ?? "")?.[1]);
      expect(limit).toBeGreaterThan(900);
      expect(Date.now() - started).toBeLessThan(10_000);
    });
  });

  it("refuses a whole answer larger than a held answer may be, rather than run out of memory", async () => {
    // 9 Mi characters in 64 chunks: past the 8 Mi a non-streamed answer may hold.
    b.setBehavior({ kind: "answer", text: "x".repeat(9 * 1024 * 1024), chunks: 64 });
    const r = await chat(gw.url, { model: "chat" }, { "x-switchyard-provider": "pb" });
    expect(r.status).toBe(502);
    expect(r.error).toContain("more than 8388608 characters");
    expect(posts(b)).toBe(1); // not retried: the upstream did answer
    expect(posts(big)).toBe(0);
  });

  it("keeps retries within the retry budget during an outage", async () => {
    a.setBehavior({ kind: "error", status: 500 });
    const results = await Promise.all(
      Array.from({ length: 6 }, () => chat(budgetGw.url, { model: "chat" })),
    );
    // min_per_second 1 and ratio 0: one retry in that second, the other requests fail fast.
    expect(posts(b)).toBe(1);
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    expect(results.filter((r) => r.status === 502)).toHaveLength(5);
  });
});

describe("the openai client", () => {
  it("sends the fallbacks field through extra_body and gets the fallback's answer", async () => {
    a.setBehavior({ kind: "error", status: 503 });
    const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "x", maxRetries: 0 });
    const res = await client.chat.completions.create(
      { model: "solo", messages: [{ role: "user", content: "hi" }] },
      { body: { model: "solo", messages: [{ role: "user", content: "hi" }], fallbacks: ["chat"] } },
    );
    expect(res.choices[0]?.message.content).toBe("from b");
  });
});

describe("fallbacks a client names", () => {
  const KEY = "sk-routing-cheap";
  let tenantGw: RunningFabric;

  beforeAll(async () => {
    tenantGw = await gatewayOver(`
models:
  cheap:
    targets: [{ provider: pa, model: ma, price: { input: 1, output: 1 } }]
  cheap-backup:
    targets: [{ provider: pb, model: mb, price: { input: 1000, output: 2000 } }]
  premium:
    targets: [{ provider: pb, model: mb }]
routing:
  retries: 2
  backoff: { base_ms: 1, max_ms: 5 }
  circuit_breaker: { consecutive_failures: 1000, cooldown_ms: 1000 }
tenants:
  t: { keys: ["${hashKey(KEY)}"], models: [cheap, cheap-backup] }
`);
  });
  afterAll(() => tenantGw?.stop());

  const auth = { authorization: `Bearer ${KEY}` };

  it("are listed and retrieved only as the key may use them", async () => {
    const client = new OpenAI({ baseURL: `${tenantGw.url}/v1`, apiKey: KEY, maxRetries: 0 });
    expect((await client.models.list()).data.map((m) => m.id).sort()).toEqual([
      "cheap",
      "cheap-backup",
    ]);
    expect((await client.models.retrieve("cheap")).id).toBe("cheap");
    await expect(client.models.retrieve("premium")).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    const anonymous = new OpenAI({
      baseURL: `${tenantGw.url}/v1`,
      apiKey: "sk-wrong",
      maxRetries: 0,
    });
    await expect(anonymous.models.retrieve("cheap")).rejects.toBeInstanceOf(
      OpenAI.AuthenticationError,
    );
  });

  it("must be models the key may use, in the body or the header", async () => {
    a.setBehavior({ kind: "error", status: 503 });
    for (const [body, headers] of [
      [{ model: "cheap", fallbacks: ["premium"] }, auth],
      [{ model: "cheap" }, { ...auth, "x-switchyard-fallbacks": "cheap-backup, premium" }],
    ] as const) {
      const res = await request(`${tenantGw.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], ...body }),
      });
      const json = (await res.body.json()) as { error: { code: string; param: string } };
      expect(res.statusCode).toBe(403);
      expect(json.error).toMatchObject({ code: "model_not_allowed", param: "fallbacks" });
    }
    expect(posts(a) + posts(b)).toBe(0);
  });

  it("must be models the gateway serves", async () => {
    const r = await chat(tenantGw.url, { model: "cheap", fallbacks: ["nope"] }, auth);
    expect(r.status).toBe(404);
    expect(r.error).toContain("'nope'");
    expect(posts(a)).toBe(0);
  });

  it("are priced when they answer", async () => {
    a.setBehavior({ kind: "error", status: 503 });
    const res = await request(`${tenantGw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({
        model: "cheap",
        fallbacks: ["cheap-backup"],
        messages: [{ role: "user", content: "hi" }],
      }),
    });
    const json = (await res.body.json()) as {
      usage: { prompt_tokens: number; completion_tokens: number };
    };
    expect(res.statusCode).toBe(200);
    expect(res.headers["x-switchyard-provider"]).toBe("pb");
    // cheap-backup's price, not none: (prompt × 1000 + completion × 2000) per million tokens.
    const { prompt_tokens: p, completion_tokens: c } = json.usage;
    expect(Number(res.headers["x-switchyard-cost-usd"])).toBeCloseTo((p * 1000 + c * 2000) / 1e6);
  });
});

describe("a tenant's model allow-list", () => {
  const LIMITED = "sk-routing-limited";
  const OPEN = "sk-routing-unlimited";
  let tenantGw: RunningFabric;

  beforeAll(async () => {
    tenantGw = await gatewayOver(`
models:
  cheap:
    targets: [{ provider: pa, model: ma }]
    fallbacks: [premium, cheap-backup]
    context_window_fallbacks: [premium]
  cheap-backup:
    targets: [{ provider: pb, model: mb }]
  premium:
    targets: [{ provider: pbig, model: m-premium, price: { input: 1000, output: 1000 } }]
routing:
  retries: 2
  backoff: { base_ms: 1, max_ms: 5 }
  circuit_breaker: { consecutive_failures: 1000, cooldown_ms: 1000 }
tenants:
  limited: { keys: ["${hashKey(LIMITED)}"], models: [cheap, cheap-backup] }
  unlimited: { keys: ["${hashKey(OPEN)}"] }
`);
  });
  afterAll(() => tenantGw?.stop());

  const client = (key: string) =>
    new OpenAI({ baseURL: `${tenantGw.url}/v1`, apiKey: key, maxRetries: 0 });
  const ask = (key: string) =>
    client(key)
      .chat.completions.create({ model: "cheap", messages: [{ role: "user", content: "hi" }] })
      .withResponse();

  it("holds for the model's configured fallbacks: one outside it never answers", async () => {
    a.setBehavior({ kind: "error", status: 503 });
    const { data, response } = await ask(LIMITED);
    // premium comes first in the model's fallbacks, but not for this tenant.
    expect(data.choices[0]?.message.content).toBe("from b");
    expect(response.headers.get("x-switchyard-provider")).toBe("pb");
    expect(posts(big)).toBe(0);

    b.setBehavior({ kind: "error", status: 503 });
    await expect(ask(LIMITED)).rejects.toBeInstanceOf(OpenAI.InternalServerError);
    expect(posts(big)).toBe(0);
    // A tenant without an allow-list does get the fallback.
    expect((await ask(OPEN)).data.choices[0]?.message.content).toBe("from big");
  });

  it("holds for a context-window fallback: the window's refusal is the answer", async () => {
    // cheap-backup, down, cannot answer in the window's place either.
    b.setBehavior({ kind: "error", status: 503 });
    a.setBehavior(WINDOW_EXCEEDED);
    const refused = await ask(LIMITED).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
    expect((refused as InstanceType<typeof OpenAI.BadRequestError>).code).toBe(
      "context_length_exceeded",
    );
    expect(posts(big)).toBe(0);
    expect((await ask(OPEN)).data.choices[0]?.message.content).toBe("from big");
  });

  it("holds for embeddings", async () => {
    a.setBehavior({ kind: "error", status: 503 });
    b.setBehavior({ kind: "error", status: 503 });
    await expect(
      client(LIMITED).embeddings.create({ model: "cheap", input: "hi" }),
    ).rejects.toBeInstanceOf(OpenAI.InternalServerError);
    expect(posts(big)).toBe(0);
    const open = await client(OPEN).embeddings.create({ model: "cheap", input: "hi" });
    expect(open.data).toHaveLength(1);
    expect(posts(big)).toBe(1);
  });
});
