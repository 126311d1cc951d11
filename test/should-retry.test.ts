import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashKey } from "../services/lib/config/keys.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// The official SDKs retry a 5xx twice by default. After the gateway's own attempts failed, its
// answer tells them not to (`x-should-retry: false`, which both SDKs honour), so one request
// costs the upstream the gateway's attempts, not three times as many.
let up: OpenAIUpstream;
let gw: RunningFabric;
const KEY = "k";
// A spent budget comes back at the next UTC day or month: the SDKs wait out a Retry-After only
// below a minute, and past it would retry twice at once into the same refusal.
const BUDGET_KEY = "sk-budget";
const RPM_KEY = "sk-rpm";

beforeAll(async () => {
  // Model boom's upstream model fails with a 500; every other is answered in full.
  up = await startOpenAIUpstream({
    behavior: (req) =>
      (req.body as { model?: string } | undefined)?.model === "failing"
        ? { kind: "error", status: 500 }
        : { kind: "answer", text: "fine" },
  });
  gw = await startOneProcess(
    testConfig(`
providers:
  local: { type: openai, base_url: "${up.url}" }
models:
  boom: { targets: [{ provider: local, model: failing }] }
  m: { targets: [{ provider: local, model: m }] }
routing: { retries: 1, backoff: { base_ms: 1, max_ms: 5 } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
tenants:
  any: { keys: ["${hashKey(KEY)}"] }
  budget: { keys: ["${hashKey(BUDGET_KEY)}"], limits: { daily_tokens: 1 } }
  rate: { keys: ["${hashKey(RPM_KEY)}"], limits: { rpm: 1 } }
`),
    // Limits count on a clock that stays at noon (UTC): on the real one, a run at midnight
    // would see the daily budget renewed between its two requests, or a wait under a minute.
    { clock: () => Date.UTC(2026, 0, 15, 12) },
  );
});

afterAll(async () => {
  await gw?.stop();
  await up?.close();
});

const chatPosts = () => up.requests.filter((r) => r.path.endsWith("/chat/completions")).length;

describe("x-should-retry after the gateway's own attempts", () => {
  it("stops the openai SDK's retries: two upstream calls (retries: 1), not six", async () => {
    const before = chatPosts();
    // The SDK's default: two retries, with backoff (0.5–8 s) it skips when told not to retry.
    const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEY });
    const err = await client.chat.completions
      .create({ model: "boom", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    const headers = (err as InstanceType<typeof OpenAI.APIError>).headers;
    expect(headers?.get("x-should-retry")).toBe("false");
    expect(headers?.get("x-switchyard-attempts")).toBe("2");
    expect(chatPosts() - before).toBe(2);
  });

  it("stops the Anthropic SDK's retries the same way", async () => {
    const before = chatPosts();
    const client = new Anthropic({ baseURL: gw.url, apiKey: KEY });
    const err = await client.messages
      .create({ model: "boom", max_tokens: 10, messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect((err as InstanceType<typeof Anthropic.APIError>).status).toBeGreaterThanOrEqual(500);
    expect(chatPosts() - before).toBe(2);
  });

  it("leaves a 4xx to the client's own judgement", async () => {
    const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEY, maxRetries: 0 });
    const err = await client.chat.completions
      .create({ model: "nope", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(404);
    expect((err as InstanceType<typeof OpenAI.APIError>).headers?.get("x-should-retry")).toBeNull();
  });
});

describe("x-should-retry on a limit's 429", () => {
  let calls = 0;
  /** The SDKs' fetch, counting the requests they send to the gateway. */
  const counting: typeof fetch = (input, init) => {
    calls++;
    return fetch(input, init);
  };

  it("stops the SDKs' retries into a spent daily budget: one request each, not three", async () => {
    const openai = new OpenAI({
      baseURL: `${gw.url}/v1`,
      apiKey: BUDGET_KEY,
      fetch: counting,
    });
    // The first request is admitted (nothing spent yet) and spends the budget.
    await openai.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "hi" }],
    });
    calls = 0;
    const err = await openai.chat.completions
      .create({ model: "m", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const headers = (err as InstanceType<typeof OpenAI.APIError>).headers;
    expect(headers?.get("x-switchyard-limit")).toBe("daily_tokens");
    expect(Number(headers?.get("retry-after"))).toBeGreaterThan(60);
    expect(headers?.get("x-should-retry")).toBe("false");
    expect(calls).toBe(1);

    const anthropic = new Anthropic({ baseURL: gw.url, apiKey: BUDGET_KEY, fetch: counting });
    calls = 0;
    const aerr = await anthropic.messages
      .create({ model: "m", max_tokens: 10, messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect((aerr as InstanceType<typeof Anthropic.APIError>).status).toBe(429);
    expect(calls).toBe(1);
  });

  it("leaves a short wait (rpm) to the SDK, which waits it out", async () => {
    const openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: RPM_KEY, maxRetries: 0 });
    await openai.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "hi" }],
    });
    const err = await openai.chat.completions
      .create({ model: "m", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    const headers = (err as InstanceType<typeof OpenAI.APIError>).headers;
    expect(headers?.get("x-switchyard-limit")).toBe("rpm");
    expect(Number(headers?.get("retry-after"))).toBeLessThanOrEqual(60);
    expect(headers?.get("x-should-retry")).toBeNull();
  });
});
