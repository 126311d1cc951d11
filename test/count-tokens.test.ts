import Anthropic from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashKey } from "../services/lib/config/keys.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { type CapturedLogs, captureLogs } from "./helpers/logs.js";
import { metricValue } from "./helpers/metrics.js";
import { type AnthropicUpstream, startAnthropicUpstream } from "./upstreams/anthropic-upstream.js";
import { type GeminiUpstream, startGeminiUpstream } from "./upstreams/gemini-upstream.js";

// Anthropic's POST /v1/messages/count_tokens end to end: the official SDK against one process,
// with fake upstreams that speak Anthropic's and Gemini's wire formats on real ports.

const KEY = "sk-count-tokens";
const RPM_KEY = "sk-count-rpm";
const UPSTREAM_KEYS = { a: "sk-up-a", b: "sk-up-b", broken: "sk-up-broken", gemini: "g-key" };

let claudeA: AnthropicUpstream;
let claudeB: AnthropicUpstream;
let broken: AnthropicUpstream;
let gemini: GeminiUpstream;
let gw: RunningFabric;
let logs: CapturedLogs;
let client: Anthropic;

const prompt = {
  system: "You count.",
  messages: [{ role: "user" as const, content: "How many tokens is this?" }],
};

beforeAll(async () => {
  claudeA = await startAnthropicUpstream({ behavior: { kind: "answer", inputTokens: 4242 } });
  claudeB = await startAnthropicUpstream({ behavior: { kind: "answer", inputTokens: 1717 } });
  broken = await startAnthropicUpstream({ behavior: { kind: "error", status: 500 } });
  gemini = await startGeminiUpstream({
    apiKey: UPSTREAM_KEYS.gemini,
    behavior: { kind: "answer", totalTokens: 777 },
  });
  const config = testConfig(`
providers:
  claude-a: { type: anthropic, base_url: "${claudeA.url}", api_key: ${UPSTREAM_KEYS.a} }
  claude-b: { type: anthropic, base_url: "${claudeB.url}", api_key: ${UPSTREAM_KEYS.b} }
  broken: { type: anthropic, base_url: "${broken.url}", api_key: ${UPSTREAM_KEYS.broken} }
  google: { type: gemini, base_url: "${gemini.url}", api_key: ${UPSTREAM_KEYS.gemini} }
  oai: { type: openai, base_url: "http://127.0.0.1:9/v1" }
  mock: { type: mock, first_token_ms: 0, token_interval_ms: 0, tokens: 3 }
models:
  claude: { targets: [{ provider: claude-a, model: claude-up }] }
  claude-failover:
    targets: [{ provider: broken, model: claude-up }, { provider: claude-b, model: claude-up-b }]
  gemini: { targets: [{ provider: google, model: gemini-2.5-flash }] }
  demo: { targets: [{ provider: mock, model: mock-1 }] }
  gpt: { targets: [{ provider: oai, model: gpt-4o }] }
  gpt-then-claude: { targets: [{ provider: oai, model: gpt-4o }, { provider: claude-b, model: claude-up-b }] }
  secret: { targets: [{ provider: mock, model: mock-1 }] }
tenants:
  counters:
    keys: ["${hashKey(KEY)}"]
    models: [claude, claude-failover, gemini, demo, gpt, gpt-then-claude]
  limited: { keys: ["${hashKey(RPM_KEY)}"], limits: { rpm: 1 } }
routing:
  retries: 2
  backoff: { base_ms: 1, max_ms: 5 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`);
  logs = captureLogs();
  gw = await startOneProcess(config, { logger: logs.logger });
  client = new Anthropic({ baseURL: gw.url, apiKey: KEY, maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([claudeA?.close(), claudeB?.close(), broken?.close(), gemini?.close()]);
});

function lastRequest<T extends { path: string }>(requests: T[]): T {
  const found = requests.at(-1);
  if (!found) throw new Error("the upstream got no request");
  return found;
}

/** The error the SDK throws for a call that must fail. */
async function apiError(call: Promise<unknown>): Promise<InstanceType<typeof Anthropic.APIError>> {
  try {
    await call;
  } catch (err) {
    expect(err).toBeInstanceOf(Anthropic.APIError);
    return err as InstanceType<typeof Anthropic.APIError>;
  }
  throw new Error("the call succeeded");
}

describe("POST /v1/messages/count_tokens", () => {
  it("answers the count an Anthropic upstream gave, asked with its key, version and no max_tokens", async () => {
    const { data, response } = await client.messages
      .countTokens({
        model: "claude",
        ...prompt,
        tools: [{ name: "lookup", input_schema: { type: "object" } }],
      })
      .withResponse();
    expect(data).toEqual({ input_tokens: 4242 });
    expect(response.headers.get("x-request-id")).toBeTruthy();
    expect(response.headers.get("request-id")).toBe(response.headers.get("x-request-id"));
    expect(response.headers.get("x-switchyard-provider")).toBe("claude-a");

    const seen = lastRequest(claudeA.requests);
    expect(seen.method).toBe("POST");
    expect(seen.path).toBe("/v1/messages/count_tokens");
    expect(seen.headers["x-api-key"]).toBe(UPSTREAM_KEYS.a);
    expect(seen.headers["anthropic-version"]).toBe("2023-06-01");
    expect(seen.body).toEqual({
      model: "claude-up",
      system: "You count.",
      messages: [{ role: "user", content: "How many tokens is this?" }],
      tools: [{ name: "lookup", input_schema: { type: "object" } }],
    });
  });

  it("serves the beta client's ?beta=true and hands its betas on", async () => {
    const counted = await client.beta.messages.countTokens({
      model: "claude",
      ...prompt,
      betas: ["token-efficient-tools-2025-02-19"],
    });
    expect(counted.input_tokens).toBe(4242);
    const seen = lastRequest(claudeA.requests);
    expect(seen.path).toBe("/v1/messages/count_tokens");
    // The SDK adds its own token-counting beta to the client's; both reach the upstream.
    expect(String(seen.headers["anthropic-beta"]).split(",")).toContain(
      "token-efficient-tools-2025-02-19",
    );
  });

  it("asks a Gemini target's countTokens, system instruction included", async () => {
    const counted = await client.messages.countTokens({ model: "gemini", ...prompt });
    expect(counted.input_tokens).toBe(777);
    const seen = lastRequest(gemini.requests);
    expect(seen.path).toBe("/v1beta/models/gemini-2.5-flash:countTokens");
    expect(seen.headers["x-goog-api-key"]).toBe(UPSTREAM_KEYS.gemini);
    expect(seen.body).toMatchObject({
      generateContentRequest: {
        model: "models/gemini-2.5-flash",
        systemInstruction: { parts: [{ text: "You count." }] },
        contents: [{ role: "user", parts: [{ text: "How many tokens is this?" }] }],
      },
    });
  });

  it("counts on a mock target as its answer's usage does", async () => {
    const counted = await client.messages.countTokens({ model: "demo", ...prompt });
    const answer = await client.messages.create({ model: "demo", max_tokens: 10, ...prompt });
    expect(counted.input_tokens).toBe(answer.usage.input_tokens);
    expect(counted.input_tokens).toBeGreaterThan(0);
  });

  it("refuses a model whose only target is OpenAI-style with a 400 in Anthropic's envelope, not a made-up count", async () => {
    const err = await apiError(client.messages.countTokens({ model: "gpt", ...prompt }));
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    expect(err.status).toBe(400);
    expect(err.error).toMatchObject({
      type: "error",
      error: { type: "invalid_request_error", message: expect.stringMatching(/cannot count/) },
    });
  });

  it("passes over a target that cannot count for one that can", async () => {
    const before = claudeB.requests.length;
    const { data, response } = await client.messages
      .countTokens({ model: "gpt-then-claude", ...prompt })
      .withResponse();
    expect(data.input_tokens).toBe(1717);
    expect(response.headers.get("x-switchyard-provider")).toBe("claude-b");
    expect(response.headers.get("x-switchyard-attempts")).toBe("1");
    expect(claudeB.requests.length).toBe(before + 1);
  });

  it("fails over from a failing Anthropic target to the next", async () => {
    const brokenBefore = broken.requests.length;
    const { data, response } = await client.messages
      .countTokens({ model: "claude-failover", ...prompt })
      .withResponse();
    expect(data.input_tokens).toBe(1717);
    expect(response.headers.get("x-switchyard-provider")).toBe("claude-b");
    expect(response.headers.get("x-switchyard-attempts")).toBe("2");
    expect(lastRequest(broken.requests).path).toBe("/v1/messages/count_tokens");
    expect(broken.requests.length).toBe(brokenBefore + 1);
  });

  it("answers 404 for an unknown model, 403 outside the key's models, 401 without a key", async () => {
    const unknown = await apiError(client.messages.countTokens({ model: "nope", ...prompt }));
    expect(unknown).toBeInstanceOf(Anthropic.NotFoundError);
    expect(unknown.error).toMatchObject({ type: "error", error: { type: "not_found_error" } });

    const forbidden = await apiError(client.messages.countTokens({ model: "secret", ...prompt }));
    expect(forbidden).toBeInstanceOf(Anthropic.PermissionDeniedError);
    expect(forbidden.error).toMatchObject({ type: "error", error: { type: "permission_error" } });

    const res = await fetch(`${gw.url}/v1/messages/count_tokens`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "claude", ...prompt }),
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({
      type: "error",
      error: { type: "authentication_error" },
    });
    // Refused before routing, and still counted under its own api.
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    expect(
      metricValue(text, "switchyard_requests_total", {
        api: "count_tokens",
        model: "(unknown)",
        outcome: "auth",
      }),
    ).toBeGreaterThanOrEqual(1);
  });

  it.each([
    ["malformed JSON", '{"model": "claude", "messages": ['],
    ["no messages", JSON.stringify({ model: "claude" })],
    ["an unknown field", JSON.stringify({ model: "claude", ...prompt, nonsense: 1 })],
  ])("answers 400 in Anthropic's envelope for %s", async (_what, body) => {
    const res = await fetch(`${gw.url}/v1/messages/count_tokens?beta=true`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": KEY },
      body,
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      type: "error",
      error: { type: "invalid_request_error" },
    });
  });

  it("is not counted against a tenant's rpm", async () => {
    const limited = new Anthropic({ baseURL: gw.url, apiKey: RPM_KEY, maxRetries: 0 });
    for (let i = 0; i < 5; i++) {
      const counted = await limited.messages.countTokens({ model: "demo", ...prompt });
      expect(counted.input_tokens).toBeGreaterThan(0);
    }
    // The one request the minute allows is still there, and then the limit holds.
    await limited.messages.create({ model: "demo", max_tokens: 5, ...prompt });
    const refused = await apiError(
      limited.messages.create({ model: "demo", max_tokens: 5, ...prompt }),
    );
    expect(refused.status).toBe(429);
  });

  it("writes one log line per count and counts it under api=count_tokens", async () => {
    const { response } = await client.messages
      .countTokens({ model: "claude", ...prompt })
      .withResponse();
    const id = response.headers.get("x-request-id");
    await new Promise((r) => setTimeout(r, 300)); // the log is written in batches
    const lines = logs.lines().filter((l) => l.request_id === id);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      endpoint: "count_tokens",
      model: "claude",
      provider: "claude-a",
      status: 200,
      input_tokens: 4242,
    });
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    const ok = metricValue(text, "switchyard_requests_total", {
      api: "count_tokens",
      model: "claude",
      outcome: "ok",
    });
    expect(ok).toBeGreaterThanOrEqual(1);
    // Nothing is charged for a count.
    expect(
      metricValue(text, "switchyard_tokens_total", { model: "claude", direction: "input" }),
    ).toBeUndefined();
  });
});
