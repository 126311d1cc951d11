import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { hashKey } from "./keys.js";
import type { Config } from "./types.js";
import { validateConfig } from "./validate.js";

/** Problems of a YAML config as `path: reason` lines. */
function problemsOf(yaml: string): string[] {
  return validateConfig(parse(yaml)).problems.map((p) => `${p.path}: ${p.reason}`);
}

function configOf(yaml: string): Config {
  const { config, problems } = validateConfig(parse(yaml));
  expect(problems).toEqual([]);
  if (config === undefined) throw new Error("no config");
  return config;
}

const MINIMAL = `
providers:
  demo: { type: mock }
models:
  m:
    targets: [{ provider: demo, model: mock-1 }]
`;

const KEY_A = hashKey("key-a");
const KEY_B = hashKey("key-b");

describe("defaults", () => {
  it("fills every default from SPEC §3 into a minimal config", () => {
    expect(configOf(MINIMAL)).toEqual({
      server: {
        ingress: { host: "0.0.0.0", port: 8080 },
        router: { host: "127.0.0.1", port: 8081 },
        connector: { host: "127.0.0.1", port: 8082 },
        prober: { host: "127.0.0.1", port: 8083 },
        max_body_bytes: 4194304,
        drain_timeout_ms: 30000,
        cors_origins: [],
        http2_max_concurrent_streams: 1000,
      },
      peers: { router: "http://127.0.0.1:8081", connectors: ["http://127.0.0.1:8082"] },
      providers: {
        demo: {
          type: "mock",
          probe: "models",
          first_token_ms: 0,
          token_interval_ms: 0,
          tokens: 16,
        },
      },
      models: {
        m: {
          strategy: "priority",
          targets: [{ provider: "demo", model: "mock-1", weight: 1 }],
          fallbacks: [],
          context_window_fallbacks: [],
        },
      },
      routing: {
        retries: 2,
        backoff: { base_ms: 50, max_ms: 2000 },
        timeouts: { first_token_ms: 15000, idle_ms: 30000, total_ms: 600000 },
        circuit_breaker: { consecutive_failures: 5, cooldown_ms: 30000 },
        retry_budget: { ratio: 0.2, min_per_second: 10 },
      },
      health: { probe_interval_ms: 15000, stale_after_ms: 60000 },
    });
  });

  it("keeps given values and fills only the missing fields of a partly written section", () => {
    const config = configOf(`${MINIMAL}
server:
  ingress: { port: 9090 }
routing:
  backoff: { base_ms: 0, max_ms: 0 }
  timeouts: { idle_ms: 5000 }
`);
    expect(config.server.ingress).toEqual({ host: "0.0.0.0", port: 9090 });
    expect(config.routing.backoff).toEqual({ base_ms: 0, max_ms: 0 });
    expect(config.routing.timeouts).toEqual({
      first_token_ms: 15000,
      idle_ms: 5000,
      total_ms: 600000,
    });
  });

  it("gives each provider type its default base_url and strips trailing slashes from given ones", () => {
    const config = configOf(`
providers:
  openai: { type: openai, api_key: sk }
  anthropic: { type: anthropic, api_key: sk }
  gemini: { type: gemini, api_key: sk }
  local: { type: openai, base_url: "http://127.0.0.1:8000/v1/" }
  azure: { type: azure-openai, base_url: "https://x.openai.azure.com", api_key: k, api_version: "2024-10-21" }
models:
  m:
    targets: [{ provider: openai, model: gpt-4o }]
`);
    expect(config.providers.openai?.base_url).toBe("https://api.openai.com/v1");
    expect(config.providers.anthropic?.base_url).toBe("https://api.anthropic.com");
    expect(config.providers.gemini?.base_url).toBe("https://generativelanguage.googleapis.com");
    expect(config.providers.local).toEqual({
      type: "openai",
      base_url: "http://127.0.0.1:8000/v1",
      probe: "models",
    });
    expect(config.providers.azure).toEqual({
      type: "azure-openai",
      base_url: "https://x.openai.azure.com",
      api_key: "k",
      api_version: "2024-10-21",
      probe: "models",
    });
  });

  it("leaves tenants, nats and redis absent when not configured, and defaults tenant limits to {}", () => {
    const open = configOf(MINIMAL);
    expect(open.tenants).toBeUndefined();
    expect(open.nats).toBeUndefined();
    expect(open.redis).toBeUndefined();

    const closed = configOf(`${MINIMAL}
tenants:
  acme: { keys: ["${KEY_A}"] }
redis: { url: "redis://127.0.0.1:6379" }
nats: { url: "nats://127.0.0.1:4222" }
`);
    expect(closed.tenants).toEqual({ acme: { keys: [KEY_A], limits: {} } });
    expect(closed.redis).toEqual({ url: "redis://127.0.0.1:6379", on_error: "fail_open" });
    expect(closed.nats).toEqual({ url: "nats://127.0.0.1:4222" });
  });

  it("reads the full SPEC §3 example", () => {
    const config = configOf(`
server:
  ingress: { host: 0.0.0.0, port: 8080 }
  max_body_bytes: 4194304
peers:
  router: http://127.0.0.1:8081
  connectors: [http://127.0.0.1:8082]
nats:
  url: nats://127.0.0.1:4222
providers:
  openai:    { type: openai, api_key: "sk-1" }
  local:     { type: openai, base_url: "http://127.0.0.1:8000/v1" }
  azure:     { type: azure-openai, base_url: "https://X.openai.azure.com", api_key: "k", api_version: "2024-10-21" }
  anthropic: { type: anthropic, api_key: "k" }
  gemini:    { type: gemini, api_key: "k" }
  demo:      { type: mock }
models:
  gpt-4o:
    strategy: priority
    targets:
      - { provider: openai, model: gpt-4o, weight: 1, price: { input: 2.5, output: 10 } }
      - { provider: azure, model: gpt-4o-prod }
    fallbacks: [claude]
  claude:
    targets: [{ provider: anthropic, model: claude-sonnet-4-5 }]
routing:
  retries: 2
  backoff: { base_ms: 50, max_ms: 2000 }
  timeouts: { first_token_ms: 15000, idle_ms: 30000, total_ms: 600000 }
  circuit_breaker: { consecutive_failures: 5, cooldown_ms: 30000 }
health:
  probe_interval_ms: 15000
  stale_after_ms: 60000
tenants:
  acme:
    keys: ["${KEY_A.toUpperCase().replace("SHA256", "sha256")}"]
    models: [gpt-4o]
    limits: { rpm: 600, tpm: 200000, concurrency: 20, daily_tokens: 5000000, monthly_usd: 500 }
redis:
  url: redis://127.0.0.1:6379
  on_error: fail_closed
`);
    expect(config.models["gpt-4o"]).toEqual({
      strategy: "priority",
      targets: [
        { provider: "openai", model: "gpt-4o", weight: 1, price: { input: 2.5, output: 10 } },
        { provider: "azure", model: "gpt-4o-prod", weight: 1 },
      ],
      fallbacks: ["claude"],
      context_window_fallbacks: [],
    });
    // Hashes are stored lowercased so equal keys compare equal.
    expect(config.tenants?.acme?.keys).toEqual([KEY_A]);
    expect(config.tenants?.acme?.limits).toEqual({
      rpm: 600,
      tpm: 200000,
      concurrency: 20,
      daily_tokens: 5000000,
      monthly_usd: 500,
    });
    expect(config.redis?.on_error).toBe("fail_closed");
  });
});

describe("unknown keys", () => {
  it("are errors at every level, with the nearest known key suggested", () => {
    expect(
      problemsOf(`
servr: {}
providers:
  demo: { type: mock, tokenz: 3 }
models:
  m:
    stratgy: weighted
    targets: [{ provider: demo, model: x, wieght: 2 }]
routing:
  timeout: {}
  backoff: { zzz: 1 }
`),
    ).toEqual([
      "servr: unknown key, did you mean 'server'?",
      "providers.demo.tokenz: unknown key, did you mean 'tokens'?",
      "models.m.stratgy: unknown key, did you mean 'strategy'?",
      "models.m.targets[0].wieght: unknown key, did you mean 'weight'?",
      "routing.timeout: unknown key, did you mean 'timeouts'?",
      "routing.backoff.zzz: unknown key",
    ]);
  });
});

describe("types and ranges", () => {
  it("rejects wrong types, out-of-range ports and non-positive durations", () => {
    expect(
      problemsOf(`${MINIMAL}
server:
  ingress: { host: "", port: "8080" }
  router: { port: 70000 }
  connector: { port: -1 }
  prober: { port: 1.5 }
  max_body_bytes: 0
  drain_timeout_ms: 0
routing:
  retries: -1
  timeouts: { first_token_ms: 0, idle_ms: 2.5, total_ms: "long" }
  circuit_breaker: { consecutive_failures: 0 }
health:
  probe_interval_ms: [1]
`),
    ).toEqual([
      "server.ingress.host: must not be empty",
      "server.ingress.port: must be an integer from 0 to 65535, got a string",
      "server.router.port: must be an integer from 0 to 65535, got 70000",
      "server.connector.port: must be an integer from 0 to 65535, got -1",
      "server.prober.port: must be an integer from 0 to 65535, got 1.5",
      "server.max_body_bytes: must be a positive integer, got 0",
      "server.drain_timeout_ms: must be a positive integer (milliseconds) up to 2147483647, about 24.8 days, got 0",
      "routing.retries: must be a non-negative integer, got -1",
      "routing.timeouts.first_token_ms: must be a positive integer (milliseconds) up to 2147483647, about 24.8 days, got 0",
      "routing.timeouts.idle_ms: must be a positive integer (milliseconds) up to 2147483647, about 24.8 days, got 2.5",
      "routing.timeouts.total_ms: must be a positive integer (milliseconds) up to 2147483647, about 24.8 days, got a string",
      "routing.circuit_breaker.consecutive_failures: must be a positive integer, got 0",
      "health.probe_interval_ms: must be a positive integer (milliseconds) up to 2147483647, about 24.8 days, got a list",
    ]);
  });

  it("refuses an integer past 2^53, which counters could not hold exactly", () => {
    expect(
      problemsOf(`${MINIMAL}
tenants:
  t: { keys: ["sha256:${"a".repeat(64)}"], limits: { tpm: 1e20, daily_tokens: 9007199254740991 } }
`),
    ).toEqual([
      "tenants.t.limits.tpm: must be a positive integer up to 9007199254740991, got 100000000000000000000",
    ]);
  });

  it("refuses a duration longer than a Node.js timer takes, which would fire after 1 ms", () => {
    expect(
      problemsOf(`${MINIMAL}
routing:
  backoff: { max_ms: 2147483648 }
  timeouts: { total_ms: 3000000000 }
health: { probe_interval_ms: 2147483646, stale_after_ms: 2147483647 }
server: { drain_timeout_ms: 100000000000000000000 }
`),
    ).toEqual([
      "server.drain_timeout_ms: must be a positive integer (milliseconds) up to 2147483647, about 24.8 days, got 100000000000000000000",
      "routing.backoff.max_ms: must be a non-negative integer (milliseconds) up to 2147483647, about 24.8 days, got 2147483648",
      "routing.timeouts.total_ms: must be a positive integer (milliseconds) up to 2147483647, about 24.8 days, got 3000000000",
    ]);
  });

  it("takes web origins or * for cors_origins, and names what is not one", () => {
    expect(
      configOf(`${MINIMAL}
server: { cors_origins: ["https://app.example.com", "http://localhost:5173", "*"] }
`).server.cors_origins,
    ).toEqual(["https://app.example.com", "http://localhost:5173", "*"]);
    expect(
      problemsOf(`${MINIMAL}
server: { cors_origins: ["https://app.example.com/", "app.example.com", "ftp://x.example", 3] }
`),
    ).toEqual([
      'server.cors_origins[0]: must be "*" or an origin such as "https://app.example.com", got "https://app.example.com/"',
      'server.cors_origins[1]: must be "*" or an origin such as "https://app.example.com", got "app.example.com"',
      'server.cors_origins[2]: must be "*" or an origin such as "https://app.example.com", got "ftp://x.example"',
      "server.cors_origins[3]: must be a string, got a number",
    ]);
  });

  it("takes an HTTP/2 stream bound from 100 to what the SETTINGS field holds", () => {
    for (const value of [100, 4294967295])
      expect(
        configOf(`${MINIMAL}\nserver: { http2_max_concurrent_streams: ${value} }`).server
          .http2_max_concurrent_streams,
      ).toBe(value);
    for (const value of ["0", "99", "4294967296", "100.5", '"many"'])
      expect(problemsOf(`${MINIMAL}\nserver: { http2_max_concurrent_streams: ${value} }`)).toEqual([
        `server.http2_max_concurrent_streams: must be an integer from 100 (what clients assume before the server's settings arrive) to 4294967295, got ${value === '"many"' ? "a string" : value}`,
      ]);
  });

  it("rejects sections of the wrong shape", () => {
    expect(
      problemsOf(`${MINIMAL}\nserver: 8080\npeers: { connectors: http://x }\nnats:\n`),
    ).toEqual([
      "server: must be a mapping, got a number",
      "peers.connectors: must be a list, got a string",
      "nats: must be a mapping, got null",
    ]);
    expect(
      problemsOf(
        "providers: { demo: [mock] }\nmodels: { m: { targets: [{ provider: demo, model: x }] } }",
      ),
    ).toEqual(["providers.demo: must be a mapping, got a list"]);
    expect(validateConfig([1, 2]).problems[0]).toEqual({
      path: "(root)",
      reason: "must be a mapping, got a list",
    });
  });

  it("accepts numeric strings only where they came from the environment", () => {
    const raw = parse(`${MINIMAL}\nserver: { ingress: { port: "9000" } }`);
    const fromEnvironment = new Set(["server.ingress.port"]);
    expect(validateConfig(raw, { fromEnvironment }).config?.server.ingress.port).toBe(9000);
    expect(validateConfig(raw).problems).toEqual([
      { path: "server.ingress.port", reason: "must be an integer from 0 to 65535, got a string" },
    ]);
  });

  it("checks cross-field ranges: backoff, timeouts and staleness", () => {
    expect(
      problemsOf(`${MINIMAL}
routing:
  backoff: { base_ms: 100, max_ms: 50 }
  timeouts: { first_token_ms: 20000, total_ms: 10000 }
health: { probe_interval_ms: 5000, stale_after_ms: 5000 }
`),
    ).toEqual([
      "routing.backoff.max_ms: must be at least routing.backoff.base_ms (100)",
      "routing.timeouts.first_token_ms: must not exceed routing.timeouts.total_ms (10000)",
      "health.stale_after_ms: must be greater than health.probe_interval_ms (5000)",
    ]);
  });
});

describe("enums", () => {
  it("rejects unknown strategy, provider type, probe and redis.on_error", () => {
    expect(
      problemsOf(`
providers:
  demo: { type: mock, probe: ping }
  other: { type: openrouter }
models:
  m:
    strategy: fastest
    targets: [{ provider: demo, model: x }]
redis: { url: "redis://r:6379", on_error: ignore }
`),
    ).toEqual([
      "providers.demo.probe: must be one of models, completion, none, got 'ping'",
      "providers.other.type: must be one of openai, azure-openai, anthropic, gemini, mock, got 'openrouter'",
      "models.m.strategy: must be one of priority, weighted, least-latency, lowest-cost, least-inflight, got 'fastest'",
      "redis.on_error: must be one of fail_open, fail_closed, got 'ignore'",
    ]);
  });

  it("requires a provider type", () => {
    expect(problemsOf(MINIMAL.replace("{ type: mock }", "{ tokens: 3 }"))).toEqual([
      "providers.demo.type: required (one of openai, azure-openai, anthropic, gemini, mock)",
    ]);
  });
});

describe("URLs", () => {
  it("rejects malformed URLs and wrong schemes for base_url, peers, nats and redis", () => {
    expect(
      problemsOf(`
peers:
  router: "127.0.0.1:8081"
  connectors: ["http://127.0.0.1:8082", "grpc://c:1"]
nats: { url: "http://127.0.0.1:4222" }
providers:
  local: { type: openai, base_url: "ftp://models" }
models:
  m:
    targets: [{ provider: local, model: x }]
redis: { url: "127.0.0.1:6379" }
`),
    ).toEqual([
      "peers.router: must be an http:// or https:// URL, got '127.0.0.1:8081'",
      "peers.connectors[1]: must be an http:// or https:// URL, got 'grpc://c:1'",
      "nats.url: must be a nats:// or tls:// URL, got 'http://127.0.0.1:4222'",
      "providers.local.base_url: must be an http:// or https:// URL, got 'ftp://models'",
      "redis.url: must be a redis:// or rediss:// URL, got '127.0.0.1:6379'",
    ]);
  });

  it("requires a url in nats and redis when the section is present", () => {
    expect(problemsOf(`${MINIMAL}\nnats: {}\nredis: { on_error: fail_open }`)).toEqual([
      "nats.url: required",
      "redis.url: required",
    ]);
  });
});

describe("providers", () => {
  it("requires base_url and api_version for azure-openai, and api_key for hosted APIs", () => {
    expect(
      problemsOf(`
providers:
  azure: { type: azure-openai }
  anthropic: { type: anthropic }
  gemini: { type: gemini }
  openai: { type: openai }
  openai-explicit: { type: openai, base_url: "https://api.openai.com/v1" }
  local: { type: openai, base_url: "http://127.0.0.1:8000/v1" }
models:
  m:
    targets: [{ provider: local, model: x }]
`),
    ).toEqual([
      "providers.azure.base_url: required for type azure-openai",
      "providers.azure.api_key: required for type azure-openai",
      "providers.azure.api_version: required",
      "providers.anthropic.api_key: required for type anthropic",
      "providers.gemini.api_key: required for type gemini",
      "providers.openai.api_key: required for type openai",
      "providers.openai-explicit.api_key: required for type openai",
    ]);
  });

  it("does not ask an Azure v1 base_url (…/openai/v1) for an api_version", () => {
    const config = configOf(`
providers:
  azv1: { type: azure-openai, base_url: "https://x.openai.azure.com/openai/v1", api_key: k }
models:
  m: { targets: [{ provider: azv1, model: gpt-4o }] }
`);
    expect(config.providers.azv1?.api_version).toBeUndefined();
  });

  it("rejects fields that do not apply to the provider's type", () => {
    expect(
      problemsOf(`
providers:
  openai: { type: openai, api_key: k, api_version: "2024", first_token_ms: 5, tokens: 3 }
  demo: { type: mock, base_url: "http://x" }
models:
  m:
    targets: [{ provider: demo, model: x }]
`),
    ).toEqual([
      "providers.openai.api_version: only valid for type azure-openai",
      "providers.openai.first_token_ms: only valid for type mock",
      "providers.openai.tokens: only valid for type mock",
      "providers.demo.base_url: not used by type mock",
    ]);
  });

  it("checks mock settings, headers and max_connections", () => {
    expect(
      problemsOf(`
providers:
  demo:
    type: mock
    first_token_ms: -1
    tokens: 0
    max_connections: 0
    headers: { "bad header": x, x-num: 1, x-ok: fine }
models:
  m:
    targets: [{ provider: demo, model: x }]
`),
    ).toEqual([
      "providers.demo.headers.bad header: not a valid HTTP header name",
      "providers.demo.headers.x-num: must be a string, got a number",
      "providers.demo.max_connections: must be a positive integer, got 0",
      "providers.demo.first_token_ms: must be a non-negative integer (milliseconds) up to 2147483647, about 24.8 days, got -1",
      "providers.demo.tokens: must be a positive integer, got 0",
    ]);
  });

  it("rejects an empty api_key on a provider a model uses, but not on an unused one", () => {
    expect(
      problemsOf(`
providers:
  openai: { type: openai, api_key: "" }
  anthropic: { type: anthropic, api_key: "" }
models:
  m:
    targets: [{ provider: openai, model: gpt-4o }]
`),
    ).toEqual(["providers.openai.api_key: must not be empty"]);
  });

  it("requires at least one provider", () => {
    expect(problemsOf("providers: {}\nmodels: { m: { targets: [] } }")).toEqual([
      "providers: must define at least one provider",
      "models.m.targets: must have at least one target",
    ]);
  });
});

describe("models", () => {
  it("rejects targets naming unknown providers and fallbacks naming unknown models", () => {
    expect(
      problemsOf(`
providers:
  openai: { type: openai, api_key: k }
models:
  gpt-4o:
    targets:
      - { provider: openai, model: gpt-4o }
      - { provider: opnai, model: gpt-4o }
      - { provider: azure, model: gpt-4o }
    fallbacks: [claude, gpt-4o, gpt-4]
`),
    ).toEqual([
      "models.gpt-4o.targets[1].provider: unknown provider 'opnai', did you mean 'openai'?",
      "models.gpt-4o.targets[2].provider: unknown provider 'azure'",
      "models.gpt-4o.fallbacks[0]: unknown model 'claude'",
      "models.gpt-4o.fallbacks[1]: a model cannot fall back to itself",
      "models.gpt-4o.fallbacks[2]: unknown model 'gpt-4', did you mean 'gpt-4o'?",
    ]);
  });

  it("requires targets, each with a provider and model, and at least one model", () => {
    expect(
      problemsOf(`
providers:
  demo: { type: mock }
models:
  a: { strategy: priority }
  b: { targets: [] }
  c: { targets: [{ weight: -1 }, "demo"] }
`),
    ).toEqual([
      "models.a.targets: required",
      "models.b.targets: must have at least one target",
      "models.c.targets[0].provider: required",
      "models.c.targets[0].model: required",
      "models.c.targets[0].weight: must be a non-negative number, got -1",
      "models.c.targets[1]: must be a mapping, got a string",
    ]);
    expect(problemsOf("providers: { demo: { type: mock } }\nmodels: {}")).toEqual([
      "models: must define at least one model",
    ]);
    expect(problemsOf("")).toEqual(["providers: required", "models: required"]);
  });

  it("checks prices and weights", () => {
    expect(
      problemsOf(`
providers:
  demo: { type: mock }
models:
  m:
    strategy: weighted
    targets:
      - { provider: demo, model: x, weight: 0, price: { input: 1 } }
      - { provider: demo, model: y, weight: 0, price: { input: -1, output: 2, cached_input: "a" } }
`),
    ).toEqual([
      "models.m.targets[0].price.output: required",
      "models.m.targets[1].price.input: must be a non-negative number, got -1",
      "models.m.targets[1].price.cached_input: must be a non-negative number, got a string",
      "models.m.targets: strategy weighted needs at least one target with a weight above 0",
    ]);
  });
});

describe("tenants", () => {
  it("rejects keys that are not sha256 hashes, without echoing them", () => {
    expect(problemsOf(`${MINIMAL}\ntenants:\n  acme: { keys: ["sk-secret-123", 42] }`)).toEqual([
      "tenants.acme.keys[0]: must be 'sha256:' followed by 64 hex digits (make one with `switchyard hash-key`)",
      "tenants.acme.keys[1]: must be a string, got a number",
    ]);
  });

  it("rejects a key used twice, within a tenant or across tenants", () => {
    expect(
      problemsOf(`${MINIMAL}
tenants:
  acme: { keys: ["${KEY_A}", "${KEY_B}", "${KEY_A}"] }
  beta: { keys: ["${KEY_B.toUpperCase().replace("SHA256", "sha256")}"] }
`),
    ).toEqual([
      "tenants.acme.keys[2]: duplicate key (same as tenants.acme.keys[0])",
      "tenants.beta.keys[0]: key already belongs to tenant 'acme'",
    ]);
  });

  it("rejects allow-lists naming unknown models, bad limits and empty tenant sets", () => {
    expect(
      problemsOf(`${MINIMAL}
tenants:
  acme:
    keys: []
    models: [m, n]
    limits: { rpm: 0, monthly_usd: 0, daily: 5 }
`),
    ).toEqual([
      "tenants.acme.keys: must list at least one key",
      "tenants.acme.limits.daily: unknown key",
      "tenants.acme.limits.rpm: must be a positive integer, got 0",
      "tenants.acme.limits.monthly_usd: must be a positive number, got 0",
      "tenants.acme.models[1]: unknown model 'n'",
    ]);
    expect(problemsOf(`${MINIMAL}\ntenants: {}`)).toEqual([
      "tenants: must define at least one tenant (omit tenants entirely for an open gateway)",
    ]);
    expect(problemsOf(`${MINIMAL}\ntenants: { acme: {} }`)).toEqual([
      "tenants.acme.keys: required",
    ]);
  });
});

describe("reporting", () => {
  it("collects every problem in one pass and returns no config", () => {
    const result = validateConfig(
      parse(`
server: { ingress: { port: 99999 } }
providers:
  openai: { type: openai }
models:
  m:
    strategy: random
    targets: [{ provider: nope, model: x }]
tenants:
  acme: { keys: ["plain"], models: [zzz] }
redis: { url: "redis://r", on_error: maybe }
`),
    );
    expect(result.config).toBeUndefined();
    expect(result.problems.map((p) => p.path)).toEqual([
      "server.ingress.port",
      "providers.openai.api_key",
      "models.m.strategy",
      "models.m.targets[0].provider",
      "tenants.acme.keys[0]",
      "tenants.acme.models[0]",
      "redis.on_error",
    ]);
  });
});
