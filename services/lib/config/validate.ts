// Turns a parsed (and interpolated) YAML tree into a Config, or into the full list of problems.
//
// Every reader below records a problem against the current dotted path and still returns a value
// of the right type (the default, or a placeholder), so validation always runs to the end and
// reports everything at once; the assembled Config is handed out only when nothing was recorded.

import { MAX_TIMER_MS } from "../timers.js";
import { isKeyHash } from "./keys.js";
import type {
  AdminConfig,
  Config,
  HealthConfig,
  KeyOptions,
  ListenAddress,
  ModelConfig,
  NatsConfig,
  PeersConfig,
  Price,
  ProviderConfig,
  ProviderType,
  RedisConfig,
  RoutingConfig,
  ServerConfig,
  Strategy,
  TargetConfig,
  TenantConfig,
  TenantLimits,
} from "./types.js";

export interface ConfigProblem {
  /** Dotted location in the config, e.g. `models.gpt-4o.targets[1].provider`. */
  path: string;
  reason: string;
}

export interface ValidateOptions {
  /**
   * Paths whose string value came out of `${VAR}` interpolation. Numeric fields accept such
   * strings when they spell a number, so `port: ${PORT:-8080}` works.
   */
  fromEnvironment?: ReadonlySet<string>;
}

export const PROVIDER_TYPES: readonly ProviderType[] = [
  "openai",
  "azure-openai",
  "anthropic",
  "gemini",
  "mock",
];

export const STRATEGIES: readonly Strategy[] = [
  "priority",
  "weighted",
  "least-latency",
  "lowest-cost",
  "least-inflight",
];

/** Where a provider lives when its config names no `base_url`; Azure has no global endpoint. */
export const DEFAULT_BASE_URLS: Readonly<Record<ProviderType, string | undefined>> = {
  openai: "https://api.openai.com/v1",
  "azure-openai": undefined,
  anthropic: "https://api.anthropic.com",
  gemini: "https://generativelanguage.googleapis.com",
  mock: undefined,
};

export function childPath(parent: string, key: string): string {
  return parent === "" ? key : `${parent}.${key}`;
}

export function itemPath(parent: string, index: number): string {
  return `${parent}[${index}]`;
}

export function validateConfig(
  raw: unknown,
  options: ValidateOptions = {},
): { config?: Config; problems: ConfigProblem[] } {
  const context: Context = { problems: [], fromEnvironment: options.fromEnvironment ?? new Set() };
  // An empty file parses to null; treat it as an empty mapping so the report names what is missing.
  const root = new Node(context, "", raw ?? {});
  const config = readConfig(root);
  return context.problems.length === 0 ? { config, problems: [] } : { problems: context.problems };
}

// ---------------------------------------------------------------------------------------------
// Reading primitives

interface Context {
  problems: ConfigProblem[];
  fromEnvironment: ReadonlySet<string>;
}

/**
 * A value at a path in the tree; `value` is undefined when the key is absent. `orphan` marks a
 * child of a value that should have been a mapping or list and was not: that is already reported,
 * so its fields are not reported again as missing.
 */
class Node {
  constructor(
    private readonly context: Context,
    readonly path: string,
    readonly value: unknown,
    readonly orphan = false,
  ) {}

  get absent(): boolean {
    return this.value === undefined;
  }

  get fromEnvironment(): boolean {
    return this.context.fromEnvironment.has(this.path);
  }

  problem(reason: string): undefined {
    this.context.problems.push({ path: this.path === "" ? "(root)" : this.path, reason });
    return undefined;
  }

  child(key: string): Node {
    const path = childPath(this.path, key);
    if (!isRecord(this.value)) return new Node(this.context, path, undefined, !this.absent);
    return new Node(
      this.context,
      path,
      Object.hasOwn(this.value, key) ? this.value[key] : undefined,
    );
  }

  item(index: number): Node {
    const path = itemPath(this.path, index);
    if (!Array.isArray(this.value)) return new Node(this.context, path, undefined, !this.absent);
    return new Node(this.context, path, this.value[index]);
  }

  /** Records "required" for an absent value; false when the value is present. */
  missing(): boolean {
    if (!this.absent) return false;
    if (!this.orphan) this.problem("required");
    return true;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (isRecord(value)) return "a mapping";
  if (typeof value === "object") return "an object";
  return `a ${typeof value}`;
}

/** What was found, for a reason text; strings from the environment are never echoed (secrets). */
function shown(node: Node): string {
  if (typeof node.value === "number") return String(node.value);
  if (typeof node.value === "string" && !node.fromEnvironment) return `'${node.value}'`;
  return kindOf(node.value);
}

/**
 * A mapping with a fixed set of keys: unknown keys are reported (with the nearest known key as a
 * hint). Absent or mistyped sections read as empty so every field falls back to its default.
 */
function section(node: Node, known: readonly string[]): Node {
  if (node.absent) return node;
  if (!isRecord(node.value)) {
    node.problem(`must be a mapping, got ${kindOf(node.value)}`);
    return node;
  }
  for (const key of Object.keys(node.value)) {
    if (!known.includes(key)) node.child(key).problem(unknownKeyReason(key, known));
  }
  return node;
}

/** A mapping from user-chosen names (providers, models, tenants, headers) to settings. */
function entries(node: Node): Array<[name: string, value: Node]> | undefined {
  if (node.absent) return undefined;
  if (!isRecord(node.value)) return node.problem(`must be a mapping, got ${kindOf(node.value)}`);
  return Object.keys(node.value).map((name) => [name, node.child(name)]);
}

function list(node: Node): Node[] | undefined {
  if (node.absent) return undefined;
  if (!Array.isArray(node.value)) return node.problem(`must be a list, got ${kindOf(node.value)}`);
  return node.value.map((_, index) => node.item(index));
}

function optionalString(node: Node): string | undefined {
  if (node.absent) return undefined;
  if (typeof node.value !== "string") {
    return node.problem(`must be a string, got ${kindOf(node.value)}`);
  }
  return node.value;
}

function optionalBoolean(node: Node): boolean | undefined {
  if (node.absent) return undefined;
  let value = node.value;
  // `${VAR}` interpolation always yields a string.
  if (node.fromEnvironment && (value === "true" || value === "false")) value = value === "true";
  if (typeof value !== "boolean") return node.problem(`must be true or false, got ${shown(node)}`);
  return value;
}

/** A string that must be present and non-empty; "" stands in when it is not. */
function requiredString(node: Node): string {
  if (node.missing()) return "";
  const value = optionalString(node);
  if (value === "") node.problem("must not be empty");
  return value ?? "";
}

function oneOf<T extends string>(node: Node, allowed: readonly T[]): T | undefined {
  const value = optionalString(node);
  if (value === undefined) return undefined;
  const match = allowed.find((candidate) => candidate === value);
  if (match === undefined) node.problem(`must be one of ${allowed.join(", ")}, got ${shown(node)}`);
  return match;
}

interface NumberRule {
  integer: boolean;
  min: number;
  max?: number;
  /** When set, `min` itself is out of range. */
  exclusive?: boolean;
  says: string;
}

const PORT: NumberRule = { integer: true, min: 0, max: 65535, says: "an integer from 0 to 65535" };
// Durations become timers: past MAX_TIMER_MS a total_ms would end every request after 1 ms.
const DURATION_MS: NumberRule = {
  integer: true,
  min: 1,
  max: MAX_TIMER_MS,
  says: `a positive integer (milliseconds) up to ${MAX_TIMER_MS}, about 24.8 days`,
};
const DELAY_MS: NumberRule = {
  integer: true,
  min: 0,
  max: MAX_TIMER_MS,
  says: `a non-negative integer (milliseconds) up to ${MAX_TIMER_MS}, about 24.8 days`,
};
const COUNT: NumberRule = { integer: true, min: 0, says: "a non-negative integer" };
const POSITIVE_INTEGER: NumberRule = { integer: true, min: 1, says: "a positive integer" };
// HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS, a 32-bit field. Clients assume 100 until the
// server's settings arrive (Node's, Go's, grpc-go's), and send that many at once on a new
// connection: below it, a burst of calls would have some refused.
const STREAM_COUNT: NumberRule = {
  integer: true,
  min: 100,
  max: 4_294_967_295,
  says: "an integer from 100 (what clients assume before the server's settings arrive) to 4294967295",
};
const NON_NEGATIVE: NumberRule = { integer: false, min: 0, says: "a non-negative number" };
const POSITIVE: NumberRule = { integer: false, min: 0, exclusive: true, says: "a positive number" };

function optionalNumber(node: Node, rule: NumberRule): number | undefined {
  if (node.absent) return undefined;
  let value = node.value;
  if (typeof value === "string" && node.fromEnvironment && /^\s*-?\d+(\.\d+)?\s*$/.test(value)) {
    value = Number(value);
  }
  if (typeof value !== "number" || !Number.isFinite(value)) {
    return node.problem(`must be ${rule.says}, got ${kindOf(node.value)}`);
  }
  const inRange =
    (rule.exclusive === true ? value > rule.min : value >= rule.min) &&
    (rule.max === undefined || value <= rule.max) &&
    (!rule.integer || Number.isInteger(value));
  if (!inRange) return node.problem(`must be ${rule.says}, got ${value}`);
  // Past 2^53 integers are not exact in JavaScript (nor in Redis's Lua): counters against such a
  // limit would be rounded.
  if (rule.integer && !Number.isSafeInteger(value)) {
    return node.problem(`must be ${rule.says} up to ${Number.MAX_SAFE_INTEGER}, got ${value}`);
  }
  return value;
}

function numberOr(node: Node, rule: NumberRule, fallback: number): number {
  return optionalNumber(node, rule) ?? fallback;
}

function requiredNumber(node: Node, rule: NumberRule): number {
  if (node.missing()) return 0;
  return optionalNumber(node, rule) ?? 0;
}

interface UrlRule {
  protocols: readonly string[];
  says: string;
}

const HTTP_URL: UrlRule = { protocols: ["http:", "https:"], says: "an http:// or https:// URL" };
const NATS_URL: UrlRule = { protocols: ["nats:", "tls:"], says: "a nats:// or tls:// URL" };
const REDIS_URL: UrlRule = {
  protocols: ["redis:", "rediss:"],
  says: "a redis:// or rediss:// URL",
};

function optionalUrl(node: Node, rule: UrlRule): string | undefined {
  const value = optionalString(node);
  if (value === undefined) return undefined;
  const parsed = URL.canParse(value) ? new URL(value) : undefined;
  if (parsed === undefined || !rule.protocols.includes(parsed.protocol) || parsed.hostname === "") {
    return node.problem(`must be ${rule.says}, got ${shown(node)}`);
  }
  // Callers append paths ("/chat/completions"), so a trailing slash would double up.
  return value.replace(/\/+$/, "");
}

function requiredUrl(node: Node, rule: UrlRule): string {
  if (node.missing()) return "";
  return optionalUrl(node, rule) ?? "";
}

function stringList(node: Node): string[] | undefined {
  const items = list(node);
  if (items === undefined) return undefined;
  const values: string[] = [];
  for (const item of items) {
    const value = requiredString(item);
    if (value !== "") values.push(value);
  }
  return values;
}

/** "unknown key", plus the closest known key when the typo is small. */
function unknownKeyReason(key: string, known: readonly string[]): string {
  const near = closest(key, known);
  return near === undefined ? "unknown key" : `unknown key, did you mean '${near}'?`;
}

function unknownNameReason(what: string, name: string, known: Iterable<string>): string {
  const near = closest(name, [...known]);
  const hint = near === undefined ? "" : `, did you mean '${near}'?`;
  return `unknown ${what} '${name}'${hint}`;
}

function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    // Small typos only: two edits at most, and never most of the word.
    if (distance <= 2 && distance * 2 < candidate.length && distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

// ---------------------------------------------------------------------------------------------
// Sections

const ROOT_KEYS = [
  "server",
  "peers",
  "nats",
  "providers",
  "models",
  "routing",
  "health",
  "tenants",
  "redis",
  "admin",
];

function readConfig(root: Node): Config {
  section(root, ROOT_KEYS);
  // Sections are read in the order SPEC §3 lists them, so problems come out in reading order.
  const server = readServer(root.child("server"));
  const peers = readPeers(root.child("peers"));
  const nats = readNats(root.child("nats"));
  const providers = readProviders(root.child("providers"));
  const models = readModels(root.child("models"), new Set(Object.keys(providers)));
  checkCredentials(root.child("providers"), providers, models);
  const routing = readRouting(root.child("routing"));
  const health = readHealth(root.child("health"));
  const tenants = readTenants(root.child("tenants"), new Set(Object.keys(models)));
  const redis = readRedis(root.child("redis"));
  const admin = readAdmin(root.child("admin"), tenants);

  const config: Config = { server, peers, providers, models, routing, health };
  if (nats !== undefined) config.nats = nats;
  if (tenants !== undefined) config.tenants = tenants;
  if (redis !== undefined) config.redis = redis;
  if (admin !== undefined) config.admin = admin;
  return config;
}

function readServer(node: Node): ServerConfig {
  section(node, [
    "ingress",
    "router",
    "connector",
    "prober",
    "max_body_bytes",
    "drain_timeout_ms",
    "cors_origins",
    "http2_max_concurrent_streams",
  ]);
  return {
    ingress: readListen(node.child("ingress"), "0.0.0.0", 8080),
    router: readListen(node.child("router"), "127.0.0.1", 8081),
    connector: readListen(node.child("connector"), "127.0.0.1", 8082),
    prober: readListen(node.child("prober"), "127.0.0.1", 8083),
    max_body_bytes: numberOr(node.child("max_body_bytes"), POSITIVE_INTEGER, 4_194_304),
    drain_timeout_ms: numberOr(node.child("drain_timeout_ms"), DURATION_MS, 30_000),
    cors_origins: readOrigins(node.child("cors_origins")),
    http2_max_concurrent_streams: numberOr(
      node.child("http2_max_concurrent_streams"),
      STREAM_COUNT,
      1_000,
    ),
  };
}

/** Web origins as a browser sends them (scheme://host[:port], no path), or "*". */
function readOrigins(node: Node): string[] {
  const origins: string[] = [];
  for (const item of list(node) ?? []) {
    const origin = requiredString(item);
    if (origin === "") continue; // already reported
    const parsed = URL.canParse(origin) ? new URL(origin) : undefined;
    const valid =
      origin === "*" ||
      (parsed !== undefined &&
        ["http:", "https:"].includes(parsed.protocol) &&
        parsed.origin === origin);
    if (valid) origins.push(origin);
    else
      item.problem(`must be "*" or an origin such as "https://app.example.com", got "${origin}"`);
  }
  return origins;
}

function readListen(node: Node, host: string, port: number): ListenAddress {
  section(node, ["host", "port"]);
  const hostNode = node.child("host");
  return {
    host: hostNode.absent ? host : requiredString(hostNode),
    port: numberOr(node.child("port"), PORT, port),
  };
}

function readPeers(node: Node): PeersConfig {
  section(node, ["router", "connectors"]);
  const connectors = list(node.child("connectors"));
  return {
    router: optionalUrl(node.child("router"), HTTP_URL) ?? "http://127.0.0.1:8081",
    connectors:
      connectors === undefined
        ? ["http://127.0.0.1:8082"]
        : connectors.map((item) => requiredUrl(item, HTTP_URL)),
  };
}

function readNats(node: Node): NatsConfig | undefined {
  if (node.absent) return undefined;
  section(node, ["url", "namespace"]);
  const nats: NatsConfig = { url: requiredUrl(node.child("url"), NATS_URL) };
  const nsNode = node.child("namespace");
  const namespace = optionalString(nsNode);
  if (namespace !== undefined) {
    if (/^[A-Za-z0-9_-]{1,32}$/.test(namespace)) nats.namespace = namespace;
    else nsNode.problem("must be 1 to 32 letters, digits, '_' or '-'");
  }
  return nats;
}

const PROVIDER_KEYS = [
  "type",
  "base_url",
  "api_key",
  "api_version",
  "headers",
  "max_connections",
  "probe",
  "first_token_ms",
  "token_interval_ms",
  "tokens",
];

const MOCK_ONLY_KEYS = ["first_token_ms", "token_interval_ms", "tokens"] as const;

function readProviders(node: Node): Record<string, ProviderConfig> {
  const providers: Record<string, ProviderConfig> = {};
  if (node.missing()) return providers;
  const named = entries(node);
  if (named === undefined) return providers;
  if (named.length === 0) node.problem("must define at least one provider");
  for (const [name, entry] of named) providers[name] = readProvider(entry);
  return providers;
}

function readProvider(node: Node): ProviderConfig {
  section(node, PROVIDER_KEYS);
  const typeNode = node.child("type");
  if (typeNode.absent && !typeNode.orphan) {
    typeNode.problem(`required (one of ${PROVIDER_TYPES.join(", ")})`);
  }
  const type = oneOf(typeNode, PROVIDER_TYPES);
  // With an unusable type the type-specific rules cannot apply; the type problem is enough.
  const provider: ProviderConfig = { type: type ?? "mock" };

  const baseUrlNode = node.child("base_url");
  // A broken base_url is reported once; whether a key is needed then cannot be told.
  let baseUrlUsable = true;
  if (type === "mock") {
    if (!baseUrlNode.absent) baseUrlNode.problem("not used by type mock");
  } else {
    const baseUrl = optionalUrl(baseUrlNode, HTTP_URL);
    const fallback = type === undefined ? undefined : DEFAULT_BASE_URLS[type];
    baseUrlUsable = baseUrlNode.absent || baseUrl !== undefined;
    const resolved = baseUrl ?? fallback;
    if (resolved !== undefined) provider.base_url = resolved;
    if (type === "azure-openai" && baseUrlNode.absent) {
      baseUrlNode.problem("required for type azure-openai");
    }
  }

  const apiKeyNode = node.child("api_key");
  const apiKey = optionalString(apiKeyNode);
  if (apiKey !== undefined) provider.api_key = apiKey;
  if (
    type !== undefined &&
    baseUrlUsable &&
    apiKeyNode.absent &&
    needsApiKey(type, provider.base_url)
  ) {
    apiKeyNode.problem(`required for type ${type}`);
  }

  const apiVersionNode = node.child("api_version");
  if (type === "azure-openai") {
    // Azure's v1 API (`…/openai/v1`) is not versioned by date; its deployments path is.
    const v1 = provider.base_url !== undefined && /\/openai\/v1$/.test(provider.base_url);
    if (!v1 || !apiVersionNode.absent) provider.api_version = requiredString(apiVersionNode);
  } else if (!apiVersionNode.absent) apiVersionNode.problem("only valid for type azure-openai");

  const headers = readHeaders(node.child("headers"));
  if (headers !== undefined) provider.headers = headers;
  const maxConnections = optionalNumber(node.child("max_connections"), POSITIVE_INTEGER);
  if (maxConnections !== undefined) provider.max_connections = maxConnections;
  provider.probe = oneOf(node.child("probe"), ["models", "completion", "none"]) ?? "models";

  if (type === "mock") {
    provider.first_token_ms = numberOr(node.child("first_token_ms"), DELAY_MS, 0);
    provider.token_interval_ms = numberOr(node.child("token_interval_ms"), DELAY_MS, 0);
    provider.tokens = numberOr(node.child("tokens"), POSITIVE_INTEGER, 16);
  } else if (type !== undefined) {
    for (const key of MOCK_ONLY_KEYS) {
      const field = node.child(key);
      if (!field.absent) field.problem("only valid for type mock");
    }
  }
  return provider;
}

/** Hosted APIs always need a key; an OpenAI-compatible server at a custom base_url may not. */
function needsApiKey(type: ProviderType, baseUrl: string | undefined): boolean {
  if (type === "mock") return false;
  if (type !== "openai") return true;
  return baseUrl === undefined || new URL(baseUrl).hostname === "api.openai.com";
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function readHeaders(node: Node): Record<string, string> | undefined {
  const named = entries(node);
  if (named === undefined) return undefined;
  const headers: Record<string, string> = {};
  for (const [name, entry] of named) {
    if (!HEADER_NAME.test(name)) entry.problem("not a valid HTTP header name");
    const value = optionalString(entry);
    if (value === undefined) continue;
    if (/[\r\n\0]/.test(value)) {
      entry.problem("must not contain line breaks or NUL");
    } else {
      headers[name] = value;
    }
  }
  return headers;
}

/**
 * Credentials rule: a provider type that needs a key must declare `api_key` (checked per provider,
 * always). Its value may come out empty — typically an unset `${VAR}` — only on a provider that
 * no model targets, so one config file can list accounts that a given environment lacks.
 */
function checkCredentials(
  node: Node,
  providers: Record<string, ProviderConfig>,
  models: Record<string, ModelConfig>,
): void {
  const used = new Set(
    Object.values(models).flatMap((model) => model.targets.map((target) => target.provider)),
  );
  for (const name of used) {
    const provider = providers[name];
    if (provider?.api_key === "" && needsApiKey(provider.type, provider.base_url)) {
      node.child(name).child("api_key").problem("must not be empty");
    }
  }
}

function readModels(node: Node, providerNames: ReadonlySet<string>): Record<string, ModelConfig> {
  const models: Record<string, ModelConfig> = {};
  if (node.missing()) return models;
  const named = entries(node);
  if (named === undefined) return models;
  if (named.length === 0) node.problem("must define at least one model");
  const modelNames = new Set(named.map(([name]) => name));
  for (const [name, entry] of named) {
    models[name] = readModel(entry, name, providerNames, modelNames);
  }
  return models;
}

function readModel(
  node: Node,
  name: string,
  providerNames: ReadonlySet<string>,
  modelNames: ReadonlySet<string>,
): ModelConfig {
  section(node, ["strategy", "targets", "fallbacks", "context_window_fallbacks"]);
  const strategy = oneOf(node.child("strategy"), STRATEGIES) ?? "priority";

  const targetsNode = node.child("targets");
  const targetNodes = list(targetsNode);
  if (!targetsNode.missing() && targetNodes?.length === 0)
    targetsNode.problem("must have at least one target");
  const targets = (targetNodes ?? []).map((item) => readTarget(item, providerNames));
  if (strategy === "weighted" && targets.length > 0 && targets.every((t) => t.weight === 0)) {
    targetsNode.problem("strategy weighted needs at least one target with a weight above 0");
  }

  const readFallbacks = (key: string) => {
    const fallbacksNode = node.child(key);
    const names = stringList(fallbacksNode) ?? [];
    for (const [index, fallback] of names.entries()) {
      const item = fallbacksNode.item(index);
      if (fallback === name) {
        item.problem("a model cannot fall back to itself");
      } else if (!modelNames.has(fallback)) {
        item.problem(unknownNameReason("model", fallback, modelNames));
      }
    }
    return names;
  };
  return {
    strategy,
    targets,
    fallbacks: readFallbacks("fallbacks"),
    context_window_fallbacks: readFallbacks("context_window_fallbacks"),
  };
}

function readTarget(node: Node, providerNames: ReadonlySet<string>): TargetConfig {
  section(node, ["provider", "model", "weight", "price"]);
  const providerNode = node.child("provider");
  const provider = requiredString(providerNode);
  if (provider !== "" && !providerNames.has(provider)) {
    providerNode.problem(unknownNameReason("provider", provider, providerNames));
  }
  const target: TargetConfig = {
    provider,
    model: requiredString(node.child("model")),
    weight: numberOr(node.child("weight"), NON_NEGATIVE, 1),
  };
  const priceNode = node.child("price");
  if (!priceNode.absent) target.price = readPrice(priceNode);
  return target;
}

function readPrice(node: Node): Price {
  section(node, ["input", "output", "cached_input", "cache_write", "cache_write_1h"]);
  const price: Price = {
    input: requiredNumber(node.child("input"), NON_NEGATIVE),
    output: requiredNumber(node.child("output"), NON_NEGATIVE),
  };
  const cachedInput = optionalNumber(node.child("cached_input"), NON_NEGATIVE);
  if (cachedInput !== undefined) price.cached_input = cachedInput;
  const cacheWrite = optionalNumber(node.child("cache_write"), NON_NEGATIVE);
  if (cacheWrite !== undefined) price.cache_write = cacheWrite;
  const cacheWrite1h = optionalNumber(node.child("cache_write_1h"), NON_NEGATIVE);
  if (cacheWrite1h !== undefined) price.cache_write_1h = cacheWrite1h;
  return price;
}

function readRouting(node: Node): RoutingConfig {
  section(node, ["retries", "backoff", "timeouts", "circuit_breaker", "retry_budget"]);
  const budget = section(node.child("retry_budget"), ["ratio", "min_per_second"]);
  const backoff = section(node.child("backoff"), ["base_ms", "max_ms"]);
  const timeouts = section(node.child("timeouts"), ["first_token_ms", "idle_ms", "total_ms"]);
  const breaker = section(node.child("circuit_breaker"), ["consecutive_failures", "cooldown_ms"]);
  const routing: RoutingConfig = {
    retries: numberOr(node.child("retries"), COUNT, 2),
    // Zero backoff is allowed: retrying immediately is a legitimate (and test-friendly) choice.
    backoff: {
      base_ms: numberOr(backoff.child("base_ms"), DELAY_MS, 50),
      max_ms: numberOr(backoff.child("max_ms"), DELAY_MS, 2000),
    },
    timeouts: {
      first_token_ms: numberOr(timeouts.child("first_token_ms"), DURATION_MS, 15_000),
      idle_ms: numberOr(timeouts.child("idle_ms"), DURATION_MS, 30_000),
      total_ms: numberOr(timeouts.child("total_ms"), DURATION_MS, 600_000),
    },
    circuit_breaker: {
      consecutive_failures: numberOr(breaker.child("consecutive_failures"), POSITIVE_INTEGER, 5),
      cooldown_ms: numberOr(breaker.child("cooldown_ms"), DURATION_MS, 30_000),
    },
    retry_budget: {
      ratio: numberOr(budget.child("ratio"), NON_NEGATIVE, 0.2),
      min_per_second: numberOr(budget.child("min_per_second"), NON_NEGATIVE, 10),
    },
  };
  if (routing.backoff.max_ms < routing.backoff.base_ms) {
    backoff
      .child("max_ms")
      .problem(`must be at least routing.backoff.base_ms (${routing.backoff.base_ms})`);
  }
  if (routing.timeouts.first_token_ms > routing.timeouts.total_ms) {
    timeouts
      .child("first_token_ms")
      .problem(`must not exceed routing.timeouts.total_ms (${routing.timeouts.total_ms})`);
  }
  return routing;
}

function readHealth(node: Node): HealthConfig {
  section(node, ["probe_interval_ms", "stale_after_ms"]);
  const health: HealthConfig = {
    probe_interval_ms: numberOr(node.child("probe_interval_ms"), DURATION_MS, 15_000),
    stale_after_ms: numberOr(node.child("stale_after_ms"), DURATION_MS, 60_000),
  };
  // Health older than one probe interval would be stale before the next probe could refresh it.
  if (health.stale_after_ms <= health.probe_interval_ms) {
    node
      .child("stale_after_ms")
      .problem(`must be greater than health.probe_interval_ms (${health.probe_interval_ms})`);
  }
  return health;
}

function readTenants(
  node: Node,
  modelNames: ReadonlySet<string>,
): Record<string, TenantConfig> | undefined {
  const named = entries(node);
  if (named === undefined) return undefined;
  if (named.length === 0) {
    node.problem("must define at least one tenant (omit tenants entirely for an open gateway)");
  }
  const keyOwners = new Map<string, { tenant: string; path: string }>();
  const tenants: Record<string, TenantConfig> = {};
  for (const [name, entry] of named) {
    tenants[name] = readTenant(entry, name, modelNames, keyOwners);
  }
  return tenants;
}

function readTenant(
  node: Node,
  name: string,
  modelNames: ReadonlySet<string>,
  keyOwners: Map<string, { tenant: string; path: string }>,
): TenantConfig {
  section(node, ["keys", "models", "limits", "log_prompts"]);
  const keysNode = node.child("keys");
  const keyNodes = list(keysNode);
  if (!keysNode.missing() && keyNodes?.length === 0) keysNode.problem("must list at least one key");
  const keys: string[] = [];
  const keyOptions: Record<string, KeyOptions> = {};
  for (const item of keyNodes ?? []) {
    const entry = readTenantKey(item);
    if (entry === undefined) continue;
    const { hash: key, options } = entry;
    const owner = keyOwners.get(key);
    if (owner === undefined) {
      keyOwners.set(key, { tenant: name, path: item.path });
      keys.push(key);
      if (options !== undefined) keyOptions[key] = options;
    } else if (owner.tenant === name) {
      item.problem(`duplicate key (same as ${owner.path})`);
    } else {
      item.problem(`key already belongs to tenant '${owner.tenant}'`);
    }
  }

  const tenant: TenantConfig = { keys, limits: readLimits(node.child("limits")) };
  if (Object.keys(keyOptions).length > 0) tenant.key_options = keyOptions;
  if (optionalBoolean(node.child("log_prompts")) === true) tenant.log_prompts = true;
  const modelsNode = node.child("models");
  const models = stringList(modelsNode);
  if (models !== undefined) {
    tenant.models = models;
    for (const [index, model] of models.entries()) {
      if (!modelNames.has(model)) {
        modelsNode.item(index).problem(unknownNameReason("model", model, modelNames));
      }
    }
  }
  return tenant;
}

function readKeyHash(node: Node): string | undefined {
  const value = optionalString(node);
  if (value === undefined) return undefined;
  // Never echo the value: a plaintext key pasted here by mistake is a secret.
  if (!isKeyHash(value)) {
    return node.problem(
      "must be 'sha256:' followed by 64 hex digits (make one with `switchyard hash-key`)",
    );
  }
  return value.toLowerCase();
}

/**
 * A tenant key: a bare hash, or `{ hash, expires, limits }` for a key that stops working at a
 * given time or has limits of its own on top of the tenant's.
 */
function readTenantKey(node: Node): { hash: string; options?: KeyOptions } | undefined {
  if (!isRecord(node.value)) {
    const hash = readKeyHash(node);
    return hash === undefined ? undefined : { hash };
  }
  section(node, ["hash", "expires", "limits"]);
  const hashNode = node.child("hash");
  const hash = hashNode.missing() ? undefined : readKeyHash(hashNode);
  const options: KeyOptions = {};
  const expires = readDateTime(node.child("expires"));
  if (expires !== undefined) options.expires = expires;
  const limitsNode = node.child("limits");
  if (!limitsNode.absent) options.limits = readLimits(limitsNode);
  if (hash === undefined) return undefined;
  return Object.keys(options).length > 0 ? { hash, options } : { hash };
}

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i;

/** An ISO 8601 date-time with a time zone (a bare date would leave "which midnight?" open). */
function readDateTime(node: Node): string | undefined {
  const value = optionalString(node);
  if (value === undefined) return undefined;
  if (!DATE_TIME.test(value) || Number.isNaN(Date.parse(value))) {
    return node.problem(
      `must be an ISO 8601 date-time with a time zone, e.g. 2026-12-31T00:00:00Z, got ${shown(node)}`,
    );
  }
  return value;
}

function readLimits(node: Node): TenantLimits {
  section(node, ["rpm", "tpm", "concurrency", "daily_tokens", "monthly_usd"]);
  const limits: TenantLimits = {};
  const rpm = optionalNumber(node.child("rpm"), POSITIVE_INTEGER);
  if (rpm !== undefined) limits.rpm = rpm;
  const tpm = optionalNumber(node.child("tpm"), POSITIVE_INTEGER);
  if (tpm !== undefined) limits.tpm = tpm;
  const concurrency = optionalNumber(node.child("concurrency"), POSITIVE_INTEGER);
  if (concurrency !== undefined) limits.concurrency = concurrency;
  const dailyTokens = optionalNumber(node.child("daily_tokens"), POSITIVE_INTEGER);
  if (dailyTokens !== undefined) limits.daily_tokens = dailyTokens;
  const monthlyUsd = optionalNumber(node.child("monthly_usd"), POSITIVE);
  if (monthlyUsd !== undefined) limits.monthly_usd = monthlyUsd;
  return limits;
}

function readRedis(node: Node): RedisConfig | undefined {
  if (node.absent) return undefined;
  section(node, ["url", "on_error", "prefix"]);
  const redis: RedisConfig = {
    url: requiredUrl(node.child("url"), REDIS_URL),
    on_error: oneOf(node.child("on_error"), ["fail_open", "fail_closed"]) ?? "fail_open",
  };
  const prefixNode = node.child("prefix");
  const prefix = optionalString(prefixNode);
  if (prefix !== undefined) {
    if (/^[A-Za-z0-9_.:-]{1,64}$/.test(prefix)) redis.prefix = prefix;
    else prefixNode.problem("must be 1 to 64 letters, digits, '_', '.', ':' or '-'");
  }
  return redis;
}

/** Keys for the ingress's `/admin/*` routes; never the same as a tenant's key. */
function readAdmin(
  node: Node,
  tenants: Record<string, TenantConfig> | undefined,
): AdminConfig | undefined {
  if (node.absent) return undefined;
  section(node, ["keys"]);
  const keysNode = node.child("keys");
  const keyNodes = list(keysNode);
  if (!keysNode.missing() && keyNodes?.length === 0) keysNode.problem("must list at least one key");
  const keys: string[] = [];
  for (const item of keyNodes ?? []) {
    const key = readKeyHash(item);
    if (key === undefined) continue;
    const tenant = Object.entries(tenants ?? {}).find(([, t]) => t.keys.includes(key))?.[0];
    if (keys.includes(key)) item.problem("duplicate key");
    else if (tenant !== undefined) item.problem(`key already belongs to tenant '${tenant}'`);
    else keys.push(key);
  }
  return { keys };
}
