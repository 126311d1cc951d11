import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MAX_RETRY_AFTER_MS } from "../services/connector/providers/upstream-http.js";
import { hashKey } from "../services/lib/config/keys.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { startAnthropicUpstream } from "./upstreams/anthropic-upstream.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// Per-request routing hints, Retry-After cooldowns, context-window fallbacks, the retry budget
// and client deadlines, through one gateway process and real upstreams.
let a: OpenAIUpstream;
let b: OpenAIUpstream;
let big: OpenAIUpstream;
let gw: RunningFabric;
let budgetGw: RunningFabric;

const ok = (text: string) => ({ kind: "answer" as const, text });
const posts = (u: OpenAIUpstream) => u.requests.filter((r) => r.method === "POST").length;

beforeAll(async () => {
  a = await startOpenAIUpstream({ behavior: ok("from a") });
  b = await startOpenAIUpstream({ behavior: ok("from b") });
  big = await startOpenAIUpstream({ behavior: ok("from big") });
  const providers = `
providers:
  pa: { type: openai, base_url: "${a.url}" }
  pb: { type: openai, base_url: "${b.url}" }
  pbig: { type: openai, base_url: "${big.url}" }`;
  gw = await startOneProcess(
    testConfig(`${providers}
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
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
  budgetGw = await startOneProcess(
    testConfig(`${providers}
models:
  chat:
    targets: [{ provider: pa, model: ma }, { provider: pb, model: mb }]
routing:
  retries: 2
  backoff: { base_ms: 0, max_ms: 0 }
  circuit_breaker: { consecutive_failures: 1000, cooldown_ms: 1000 }
  retry_budget: { ratio: 0, min_per_second: 1 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
});

afterAll(async () => {
  await gw?.stop();
  await budgetGw?.stop();
  await Promise.all([a?.close(), b?.close(), big?.close()]);
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

  it("does not trip the breaker on 429s in a row whose Retry-After pauses were waited out", async () => {
    const own = await startOneProcess(
      testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
  pb: { type: openai, base_url: "${b.url}" }
models:
  solo: { targets: [{ provider: pa, model: ma }, { provider: pb, model: mb }] }
routing: { retries: 0, circuit_breaker: { consecutive_failures: 2, cooldown_ms: 600000 } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    try {
      a.setBehavior({ kind: "error", status: 429, headers: { "retry-after-ms": "20" } });
      for (let i = 0; i < 4; i++) {
        expect((await chat(own.url, { model: "solo" })).status).toBe(429);
        // Ten times the pause the target asked for.
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      a.setBehavior(ok("from a"));
      // Tripped, the target would be put last for ten minutes; throttled, it answers first now.
      expect(await chat(own.url, { model: "solo" })).toMatchObject({ status: 200, provider: "pa" });
    } finally {
      await own.stop();
    }
  });

  it("does not call a target again before its Retry-After, even when it is the only one", async () => {
    // A gateway of its own: the pause asked for here would outlast this test.
    const own = await startOneProcess(
      testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
  pbig: { type: openai, base_url: "${big.url}" }
models:
  solo: { targets: [{ provider: pa, model: ma }], fallbacks: [backup] }
  backup: { targets: [{ provider: pbig, model: m-backup }] }
routing: { retries: 2, backoff: { base_ms: 1, max_ms: 5 } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    try {
      a.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "30" } });
      const first = await chat(own.url, { model: "solo" }, { "x-switchyard-fallbacks": "" });
      expect(first).toMatchObject({ status: 429, attempts: "1" });
      a.setBehavior(ok("from a"));
      const client = new OpenAI({ baseURL: `${own.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const err = await client.chat.completions
        .create(
          { model: "solo", messages: [{ role: "user", content: "hi" }] },
          { headers: { "x-switchyard-fallbacks": "" } },
        )
        .catch((e: unknown) => e);
      // The pause is answered here, as the target would answer, with what is left of it.
      expect(err).toBeInstanceOf(OpenAI.RateLimitError);
      const e = err as InstanceType<typeof OpenAI.RateLimitError>;
      expect(e.code).toBe("rate_limit_exceeded");
      const retryAfter = Number(e.headers?.get("retry-after"));
      expect(retryAfter).toBeGreaterThan(20);
      expect(retryAfter).toBeLessThanOrEqual(30);
      expect(posts(a)).toBe(1);
      // A fallback that is not paused still answers.
      expect(await chat(own.url, { model: "solo" })).toMatchObject({
        status: 200,
        text: "from big",
        attempts: "1",
      });
      expect(posts(a)).toBe(1);
    } finally {
      await own.stop();
    }
  });

  it("answers the soonest Retry-After when every target is rate limiting, or busy", async () => {
    // A gateway of its own: the pauses these answers ask for would outlast this test.
    const own = await startOneProcess(
      testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
  pb: { type: openai, base_url: "${b.url}" }
models:
  pair: { targets: [{ provider: pa, model: ma }, { provider: pb, model: mb }] }
  busy: { targets: [{ provider: pa, model: ma2 }, { provider: pb, model: mb2 }] }
routing: { retries: 1, backoff: { base_ms: 1, max_ms: 5 } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    try {
      a.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "3" } });
      b.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "50" } });
      const res = await request(`${own.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "pair", messages: [{ role: "user", content: "hi" }] }),
      });
      await res.body.dump();
      expect(res.statusCode).toBe(429);
      expect(res.headers["retry-after"]).toBe("3");
      expect(res.headers["x-switchyard-attempts"]).toBe("2");
      // Busy upstreams too (other targets: these two are paused now).
      a.setBehavior({ kind: "error", status: 503, headers: { "retry-after": "4" } });
      b.setBehavior({ kind: "error", status: 503, headers: { "retry-after": "50" } });
      const busy = await chat(own.url, { model: "busy" });
      expect(busy).toMatchObject({ status: 503, attempts: "2" });
      expect(busy.retryAfter).toBe("4");
    } finally {
      await own.stop();
    }
  });

  it("passes over a target that answered 503 with Retry-After for that long, and answers 503 while every target is paused", async () => {
    // A gateway of its own: the pauses asked for here would outlast this test.
    const own = await startOneProcess(
      testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
  pb: { type: openai, base_url: "${b.url}" }
  paz: { type: azure-openai, base_url: "${a.origin}", api_key: az-key, api_version: "2024-10-21" }
models:
  pair: { targets: [{ provider: pa, model: ma }, { provider: pb, model: mb }] }
  busy: { targets: [{ provider: paz, model: busy-deployment }] }
routing: { retries: 2, backoff: { base_ms: 1, max_ms: 5 } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    try {
      // OpenAI's "server is overloaded" 503, and Azure OpenAI's "server busy" one.
      a.setBehavior({ kind: "error", status: 503, headers: { "retry-after": "30" } });
      expect(await chat(own.url, { model: "pair" })).toMatchObject({
        status: 200,
        provider: "pb",
        attempts: "2",
      });
      expect(await chat(own.url, { model: "pair" })).toMatchObject({
        status: 200,
        provider: "pb",
        attempts: "1",
      });
      expect(posts(a)).toBe(1);

      const first = await chat(own.url, { model: "busy" });
      expect(first).toMatchObject({ status: 503, attempts: "1" });
      expect(posts(a)).toBe(2);
      a.setBehavior(ok("from a"));
      const client = new OpenAI({ baseURL: `${own.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const err = await client.chat.completions
        .create({ model: "busy", messages: [{ role: "user", content: "hi" }] })
        .catch((e: unknown) => e);
      // The gateway answers for the paused target as it would: busy, not a rate limit.
      expect(err).toBeInstanceOf(OpenAI.InternalServerError);
      const e = err as InstanceType<typeof OpenAI.InternalServerError>;
      expect(e.status).toBe(503);
      const retryAfter = Number(e.headers?.get("retry-after"));
      expect(retryAfter).toBeGreaterThan(20);
      expect(retryAfter).toBeLessThanOrEqual(30);
      expect(posts(a)).toBe(2);
    } finally {
      await own.stop();
    }
  });

  it("passes over an Anthropic target overloaded (529) with Retry-After, and not one without it", async () => {
    const anthropic = await startAnthropicUpstream();
    const own = await startOneProcess(
      testConfig(`
providers:
  an: { type: anthropic, base_url: "${anthropic.url}", api_key: an-key }
models:
  paused: { targets: [{ provider: an, model: claude-paused }] }
  counted: { targets: [{ provider: an, model: claude-counted }] }
routing: { retries: 0 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    try {
      const claude = new Anthropic({ baseURL: own.url, apiKey: "unused", maxRetries: 0 });
      const ask = (model: string) =>
        claude.messages
          .create({ model, max_tokens: 16, messages: [{ role: "user", content: "hi" }] })
          .catch((e: unknown) => e);
      const calls = () => anthropic.requests.filter((r) => r.method === "POST").length;
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
      expect(calls()).toBe(1);
      anthropic.setBehavior({ kind: "error", status: 529 });
      for (let i = 0; i < 2; i++) expect(await ask("counted")).toMatchObject({ status: 503 });
      // Without Retry-After it is a failure like any 5xx, and the next request tries it again.
      expect(calls()).toBe(3);
    } finally {
      await own.stop();
      await anthropic.close();
    }
  });

  it("counts 503s with Retry-After towards the breaker, unlike 429s: the upstream is failing", async () => {
    const own = await startOneProcess(
      testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
  pb: { type: openai, base_url: "${b.url}" }
models:
  solo: { targets: [{ provider: pa, model: ma }, { provider: pb, model: mb }] }
routing: { retries: 0, circuit_breaker: { consecutive_failures: 2, cooldown_ms: 600000 } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    try {
      a.setBehavior({ kind: "error", status: 503, headers: { "retry-after-ms": "20" } });
      for (let i = 0; i < 2; i++) {
        expect((await chat(own.url, { model: "solo" })).status).toBe(503);
        // Ten times the pause the target asked for.
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      a.setBehavior(ok("from a"));
      // Two failures in a row opened a's breaker: it is passed over for ten minutes.
      expect(await chat(own.url, { model: "solo" })).toMatchObject({ status: 200, provider: "pb" });
      expect(posts(a)).toBe(2);
    } finally {
      await own.stop();
    }
  });

  it("takes a Retry-After of a day as MAX_RETRY_AFTER_MS, for the pause and for the client", async () => {
    const own = await startOneProcess(
      testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
models:
  solo: { targets: [{ provider: pa, model: ma }] }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    try {
      a.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "86400" } });
      const cap = String(MAX_RETRY_AFTER_MS / 1000);
      const first = await request(`${own.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "solo", messages: [{ role: "user", content: "hi" }] }),
      });
      await first.body.dump();
      expect([first.statusCode, first.headers["retry-after"]]).toEqual([429, cap]);
      const paused = await request(`${own.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "solo", messages: [{ role: "user", content: "hi" }] }),
      });
      await paused.body.dump();
      expect(paused.statusCode).toBe(429);
      expect(Number(paused.headers["retry-after"])).toBeLessThanOrEqual(Number(cap));
      expect(Number(paused.headers["retry-after"])).toBeGreaterThan(Number(cap) - 10);
      expect(posts(a)).toBe(1);
    } finally {
      await own.stop();
    }
  });

  it("falls back to a model with a bigger window when the context window is exceeded", async () => {
    a.setBehavior({
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
    });
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
    const own = await startOneProcess(
      testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
  pbig: { type: openai, base_url: "${big.url}" }
models:
  small: { targets: [{ provider: pa, model: m-small }], context_window_fallbacks: [large] }
  large: { targets: [{ provider: pbig, model: m-large }] }
routing:
  retries: 0
  timeouts: { first_token_ms: 1000, idle_ms: 1000, total_ms: 1000 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    try {
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
      const r = await chat(own.url, { model: "small" });
      expect(r).toMatchObject({ status: 504, attempts: "2" });
      // The client is told of the limit it has (1000 ms, less the time to reach the router),
      // not of what was left when the fallback began.
      const limit = Number(/within (\d+) ms/.exec(r.error ?? "")?.[1]);
      expect(limit).toBeGreaterThan(900);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await own.stop();
    }
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
    tenantGw = await startOneProcess(
      testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
  pb: { type: openai, base_url: "${b.url}" }
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
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
tenants:
  t: { keys: ["${hashKey(KEY)}"], models: [cheap, cheap-backup] }
`),
    );
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
    tenantGw = await startOneProcess(
      testConfig(`
providers:
  pa: { type: openai, base_url: "${a.url}" }
  pb: { type: openai, base_url: "${b.url}" }
  pbig: { type: openai, base_url: "${big.url}" }
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
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
tenants:
  limited: { keys: ["${hashKey(LIMITED)}"], models: [cheap, cheap-backup] }
  unlimited: { keys: ["${hashKey(OPEN)}"] }
`),
    );
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
    a.setBehavior({
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
    });
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
