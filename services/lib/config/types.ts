// The resolved configuration every service reads: switchyard.yaml after environment
// interpolation, validation and defaults (see SPEC §3 and README "Configuration").

export interface ListenAddress {
  host: string;
  port: number;
}

export interface ServerConfig {
  ingress: ListenAddress;
  router: ListenAddress;
  connector: ListenAddress;
  prober: ListenAddress;
  max_body_bytes: number;
  drain_timeout_ms: number;
  /**
   * Web origins whose pages may call the ingress from a browser (CORS): exact origins
   * ("https://app.example.com") or "*" for any. Empty: none (the default).
   */
  cors_origins: string[];
  /** HTTP/2 streams one client connection to the ingress may have open at once. */
  http2_max_concurrent_streams: number;
}

export interface PeersConfig {
  router: string;
  connectors: string[];
}

export interface NatsConfig {
  url: string;
  /** Keeps deployments that share one NATS server apart (bucket and subject names). */
  namespace?: string;
}

export type ProviderType = "openai" | "azure-openai" | "anthropic" | "gemini" | "mock";

export interface ProviderConfig {
  type: ProviderType;
  /** Upstream base URL; defaults per type (OpenAI: https://api.openai.com/v1). */
  base_url?: string;
  api_key?: string;
  /** Azure OpenAI only. */
  api_version?: string;
  /** Extra HTTP headers sent upstream with every request. */
  headers?: Record<string, string>;
  /** Upper bound on open connections to this upstream. */
  max_connections?: number;
  /** How the prober checks this provider: `models` lists models (free), `completion` asks for one token. */
  probe?: "models" | "completion" | "none";
  /** Mock only: delay before the first token. */
  first_token_ms?: number;
  /** Mock only: delay between tokens. */
  token_interval_ms?: number;
  /** Mock only: how many tokens an answer has. */
  tokens?: number;
}

export interface Price {
  /** USD per 1M input tokens. */
  input: number;
  /** USD per 1M output tokens. */
  output: number;
  /** USD per 1M cached input tokens (read from the provider's prompt cache). */
  cached_input?: number;
  /** USD per 1M input tokens written to the provider's prompt cache (Anthropic charges more). */
  cache_write?: number;
  /** USD per 1M prompt tokens written to a one-hour cache (default `cache_write`). */
  cache_write_1h?: number;
}

export interface TargetConfig {
  provider: string;
  /** The model name the upstream knows. */
  model: string;
  weight: number;
  price?: Price;
}

export type Strategy = "priority" | "weighted" | "least-latency" | "lowest-cost" | "least-inflight";

export interface ModelConfig {
  strategy: Strategy;
  targets: TargetConfig[];
  fallbacks: string[];
  /** Models with a bigger context window, tried when this one's window is exceeded. */
  context_window_fallbacks: string[];
}

export interface RoutingConfig {
  retries: number;
  backoff: { base_ms: number; max_ms: number };
  timeouts: { first_token_ms: number; idle_ms: number; total_ms: number };
  circuit_breaker: { consecutive_failures: number; cooldown_ms: number };
  /**
   * Retries allowed on top of normal traffic: `ratio` of recent requests plus `min_per_second`,
   * so an outage cannot multiply the load on upstreams.
   */
  retry_budget: { ratio: number; min_per_second: number };
}

export interface HealthConfig {
  probe_interval_ms: number;
  stale_after_ms: number;
}

export interface TenantLimits {
  rpm?: number;
  tpm?: number;
  concurrency?: number;
  daily_tokens?: number;
  monthly_usd?: number;
}

/** What a key given in the object form `{ hash, expires, limits }` adds to its bare hash. */
export interface KeyOptions {
  /** When the key stops working: an ISO 8601 date-time, as configured. */
  expires?: string;
  /** Limits on this key alone, enforced on top of its tenant's. */
  limits?: TenantLimits;
}

export interface TenantConfig {
  /** `sha256:<hex>` hashes of the tenant's API keys (lowercase), in either config form. */
  keys: string[];
  /** Expiry and limits of the keys that were given in the object form, by hash. */
  key_options?: Record<string, KeyOptions>;
  /** Allowed public model names; absent = all. */
  models?: string[];
  limits: TenantLimits;
  /** Log this tenant's prompts (under `prompt` in its request log lines); off by default. */
  log_prompts?: boolean;
}

export interface RedisConfig {
  url: string;
  /** What admission does while Redis cannot be reached: allow (and log), or refuse with 503. */
  on_error: "fail_open" | "fail_closed";
  /** Prepended to every key, so deployments can share one Redis; default `switchyard`. */
  prefix?: string;
}

export interface AdminConfig {
  /** `sha256:<hex>` hashes of the keys that may call the ingress's `/admin/*` routes. */
  keys: string[];
}

export interface Config {
  server: ServerConfig;
  peers: PeersConfig;
  nats?: NatsConfig;
  providers: Record<string, ProviderConfig>;
  models: Record<string, ModelConfig>;
  routing: RoutingConfig;
  health: HealthConfig;
  /** Absent = open gateway. */
  tenants?: Record<string, TenantConfig>;
  redis?: RedisConfig;
  /** Absent = no admin routes. */
  admin?: AdminConfig;
}
