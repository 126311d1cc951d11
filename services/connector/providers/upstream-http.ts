// Shared plumbing for providers that speak HTTP: one keep-alive connection pool per provider,
// JSON requests that honour the caller's AbortSignal, and the mapping of upstream HTTP errors
// and connection errors to `Failure`.

import type { IncomingHttpHeaders } from "node:http";
import type { Readable } from "node:stream";
import { setFlagsFromString } from "node:v8";
import type { Dispatcher, Pool } from "undici";
import type { RequestContext } from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";

export type UpstreamBody = Dispatcher.ResponseData["body"];

export interface UpstreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The response body; read it to the end, or destroy it, so the connection is released. */
  body: UpstreamBody;
}

export interface UpstreamHttpOptions {
  /** The configured provider name, used in error messages. */
  provider: string;
  /** e.g. "https://api.openai.com/v1"; request paths are appended to its path. */
  baseUrl: string;
  /** Sent with every request (credentials and configured extra headers). */
  headers: Record<string, string>;
  /** Upper bound on open connections; default 128. */
  maxConnections?: number;
  /** Strings that must never reach an error message (the provider's API key). */
  secrets?: string[];
}

export interface RequestInfo {
  /** The upstream model, named in error messages. */
  model?: string;
  /** Extra headers for this request only. */
  headers?: Record<string, string>;
}

export interface UpstreamHttp {
  readonly provider: string;
  /**
   * POSTs `body` as JSON. Resolves with the response once headers arrive if the status is 2xx;
   * otherwise reads the error body and throws the mapped `Failure`. Connection errors and aborts
   * also throw a `Failure` (see `failureFromError`).
   */
  postJson(
    path: string,
    body: unknown,
    signal: AbortSignal,
    info?: RequestInfo,
  ): Promise<UpstreamResponse>;
  /** GET with the same contract as `postJson`. */
  get(path: string, signal: AbortSignal, info?: RequestInfo): Promise<UpstreamResponse>;
  /** Lets in-flight requests finish, then closes every connection. */
  close(): Promise<void>;
}

/**
 * The headers that tie an upstream request to the gateway request it serves: W3C `traceparent`
 * (the connector's span, see connector-service.ts) and `x-request-id`.
 */
export function traceHeaders(context: RequestContext): Record<string, string> {
  const headers: Record<string, string> = {};
  if (context.traceparent) headers.traceparent = context.traceparent;
  if (context.requestId) headers["x-request-id"] = context.requestId;
  return headers;
}

export interface UpstreamPool {
  request(options: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData>;
  /** Lets in-flight requests finish, then closes every connection. */
  close(): Promise<void>;
}

/** undici's `Pool` class and its `request` API, all of undici a connector uses. */
interface UndiciParts {
  Pool: typeof Pool;
  request: (this: Dispatcher, opts: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>;
}

let undiciParts: Promise<UndiciParts> | undefined;

/**
 * undici parses HTTP/1.1 with llhttp compiled to WebAssembly, and V8 re-compiles its hot
 * functions with TurboFan on background threads. glibc keeps what those threads freed in an arena
 * of their own: half of the connectors started with it at ~85–87 MB of idle RSS instead of ~76
 * (6 of 12 starts; with this flag, set before undici compiles llhttp, 0 of 12). The parser then
 * stays on V8's baseline wasm compiler, Liftoff; it was ~0.5 % of a connector's CPU on TurboFan.
 */
const WASM_BASELINE_ONLY = "--liftoff-only";

/**
 * Loads undici's `Pool` and `request` from their own modules rather than from `undici` itself.
 * The package's entry loads every part of undici (fetch, WebSocket, caches, mocks, proxies) for
 * ~8 MB more RSS, which is a tenth of an idle connector. The version is pinned exactly in
 * package.json, and `upstream-http.test.ts` checks that these paths still give a working pool.
 */
export function loadUndiciParts(): Promise<UndiciParts> {
  if (undiciParts === undefined) setFlagsFromString(WASM_BASELINE_ONLY);
  undiciParts ??= Promise.all([
    import("undici/lib/dispatcher/pool.js"),
    import("undici/lib/api/api-request.js"),
  ]).then(([pool, request]) => ({ Pool: pool.default, request: request.default }));
  return undiciParts;
}

/**
 * A keep-alive connection pool to `origin` (HTTP/1.1, one request per connection at a time),
 * made on the first request. undici is imported then, not at start: the CLI is one bundle, and
 * a top-level import would load undici (~5 MB of heap, ~7 MB of RSS) into the router, prober
 * and ingress processes too, which never call an upstream.
 */
export function upstreamPool(origin: string, connections: number): UpstreamPool {
  let pool: Pool | undefined;
  let request: UndiciParts["request"] | undefined;
  let making: Promise<Pool> | undefined;
  let closed = false;
  const make = () => {
    if (closed) {
      // The error (and code) undici's own closed pool would give.
      const err = Object.assign(new Error("The client is destroyed"), { code: "UND_ERR_CLOSED" });
      return Promise.reject(err);
    }
    making ??= loadUndiciParts().then((parts) => {
      request = parts.request;
      pool = new parts.Pool(origin, {
        connections,
        pipelining: 1,
        // Deadlines belong to the caller (the router's first-token, idle and total timeouts
        // arrive as the AbortSignal); a second, hidden timer here would cut long generations short.
        headersTimeout: 0,
        bodyTimeout: 0,
      });
      return pool;
    });
    return making;
  };
  return {
    request: (opts) =>
      pool && request
        ? request.call(pool, opts)
        : make().then((p) => (request as UndiciParts["request"]).call(p, opts)),
    close: async () => {
      closed = true;
      await (await making)?.close();
    },
  };
}

/**
 * A request body that undici lets go of once it is written. undici keeps a body given as bytes
 * (or as a string, twice: as given and as the Buffer it sends) for the whole exchange, in the
 * request and in its writer's abort closure: for a stream held open, the prompt stays for
 * minutes. Given an iterable it keeps only the iterable, which drops the bytes as it hands them
 * over. The length goes in content-length, so the upstream gets the same request, unchunked.
 */
function sentOnce(bytes: Buffer): Readable {
  let left: Buffer | undefined = bytes;
  const next = async (): Promise<IteratorResult<Buffer>> => {
    const value = left;
    left = undefined;
    return value === undefined ? { done: true, value: undefined } : { done: false, value };
  };
  const iterable: AsyncIterable<Buffer> = { [Symbol.asyncIterator]: () => ({ next }) };
  // undici takes any iterable or async iterable as a body (lib/core/request.js); its types name
  // only the Readable.
  return iterable as unknown as Readable;
}

/** Error bodies beyond this size are cut: the message is all that is kept of them. */
const ERROR_BODY_LIMIT = 64 * 1024;
const TEXT_MESSAGE_LIMIT = 500;
const JSON_MESSAGE_LIMIT = 2000;

export function createUpstreamHttp(options: UpstreamHttpOptions): UpstreamHttp {
  const base = new URL(options.baseUrl);
  const basePath = base.pathname.replace(/\/+$/, "");
  const secrets = (options.secrets ?? []).filter((s) => s !== "");
  const provider = options.provider;
  const pool = upstreamPool(base.origin, options.maxConnections ?? 128);

  async function send(
    method: "GET" | "POST",
    path: string,
    body: string | undefined,
    signal: AbortSignal,
    info: RequestInfo | undefined,
  ): Promise<UpstreamResponse> {
    const headers: Record<string, string> = { ...options.headers, ...info?.headers };
    const bytes = body === undefined ? undefined : Buffer.from(body);
    if (bytes !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = String(bytes.length);
    }
    let data: Dispatcher.ResponseData;
    try {
      signal.throwIfAborted();
      data = await pool.request({
        origin: base.origin,
        path: `${basePath}${path}${base.search}`,
        method,
        headers,
        body: bytes === undefined ? null : sentOnce(bytes),
        signal,
      });
    } catch (err) {
      throw failureFromError(provider, err, signal);
    }
    if (data.statusCode >= 200 && data.statusCode < 300) {
      return { status: data.statusCode, headers: data.headers, body: data.body };
    }
    let text: string;
    try {
      text = await readLimited(data.body, ERROR_BODY_LIMIT);
    } catch (err) {
      if (signal.aborted) throw failureFromError(provider, err, signal);
      // The status alone still says what went wrong.
      text = "";
    }
    const failureInfo: { model?: string; secrets: string[] } = { secrets };
    if (info?.model !== undefined) failureInfo.model = info.model;
    throw failureFromResponse(provider, data.statusCode, data.headers, text, failureInfo);
  }

  return {
    provider,
    postJson: (path, body, signal, info) => send("POST", path, jsonBody(body), signal, info),
    get: (path, signal, info) => send("GET", path, undefined, signal, info),
    close: () => pool.close(),
  };
}

/**
 * An upstream request's JSON. JSON.stringify recurses, so a value nested some thousands of levels
 * deep (a tool schema over gRPC, where the ingress's own check is not on the way) overflows the
 * stack: the caller's request, refused as such rather than failing as the gateway's fault.
 */
function jsonBody(body: unknown): string {
  try {
    return JSON.stringify(body);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      message: "The request is nested too deeply",
    });
  }
}

/** Reads at most `limit` bytes of a body as UTF-8 and releases the rest. */
export async function readLimited(body: UpstreamBody, limit: number): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = chunk as Buffer;
    parts.push(buf);
    size += buf.length;
    if (size >= limit) break;
  }
  return Buffer.concat(parts).subarray(0, limit).toString("utf8");
}

/**
 * After an answer's last event, reads what is left of its body (the end may trail it by a
 * packet) so the connection goes back to the pool instead of being closed; a body that does not
 * end within `withinMs`, or is longer than `limitBytes`, is destroyed. A plain timer, not an
 * AbortSignal.timeout: this runs once per answer, and a signal costs several times as much.
 */
export function drainBody(body: UpstreamBody, limitBytes: number, withinMs: number): void {
  if (body.closed) return;
  const timer = setTimeout(() => body.destroy(), withinMs);
  body
    .dump({ limit: limitBytes })
    .catch(() => {})
    .finally(() => clearTimeout(timer));
}

/** Removes every secret from a text that may be shown to clients or logged. */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret !== "") out = out.replaceAll(secret, "[redacted]");
  }
  return out;
}

/**
 * The longest wait an upstream's Retry-After is taken at. A 429 or 503 that names a longer one
 * (an hour, a day, a date years away: a quota that resets daily, or a broken header) would take
 * the target out of every router's rotation for that long on the word of one answer; past this
 * the gateway asks again, and tells its clients the same.
 */
export const MAX_RETRY_AFTER_MS = 300_000;

/**
 * How long the upstream asks us to wait, from `retry-after-ms` (milliseconds) or `retry-after`
 * (seconds or an HTTP date), at most MAX_RETRY_AFTER_MS. Undefined when it did not say.
 */
export function retryAfterMs(headers: IncomingHttpHeaders, now = Date.now()): number | undefined {
  const ms = headerValue(headers["retry-after-ms"]);
  if (ms !== undefined) {
    const n = Number(ms);
    if (ms.trim() !== "" && Number.isFinite(n) && n >= 0) return clampMs(n);
  }
  const ra = headerValue(headers["retry-after"]);
  if (ra === undefined || ra.trim() === "") return undefined;
  const seconds = Number(ra);
  if (Number.isFinite(seconds)) return seconds >= 0 ? clampMs(seconds * 1000) : undefined;
  const date = Date.parse(ra);
  if (Number.isNaN(date)) return undefined;
  return clampMs(Math.max(0, date - now));
}

/** The upstream's own words about an error: OpenAI, Anthropic and Gemini all nest `error.message`. */
export interface UpstreamErrorDetail {
  message: string;
  code?: string;
  param?: string;
  type?: string;
}

export function parseErrorBody(bodyText: string): UpstreamErrorDetail {
  const trimmed = bodyText.trim();
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    try {
      const parsed: unknown = JSON.parse(trimmed);
      // Gemini's streaming route can answer its error as a one-element array.
      const detail = errorDetailFromJson(Array.isArray(parsed) ? parsed[0] : parsed);
      if (detail) return detail;
    } catch {
      // Not JSON after all: fall through to the text.
    }
  }
  return { message: truncate(trimmed.replace(/\s+/g, " "), TEXT_MESSAGE_LIMIT) };
}

/** Reads `{"error": {...}}`, `{"error": "..."}` or `{"message": "..."}`; undefined otherwise. */
export function errorDetailFromJson(value: unknown): UpstreamErrorDetail | undefined {
  if (!isRecord(value)) return undefined;
  const error = value.error;
  if (typeof error === "string") return { message: truncate(error, JSON_MESSAGE_LIMIT) };
  const source = isRecord(error) ? error : value;
  const message = source.message;
  if (typeof message !== "string") return undefined;
  const detail: UpstreamErrorDetail = { message: truncate(message, JSON_MESSAGE_LIMIT) };
  const code = source.code ?? source.status;
  if (typeof code === "string") detail.code = code;
  else if (typeof code === "number") detail.code = String(code);
  if (typeof source.param === "string") detail.param = source.param;
  if (typeof source.type === "string") detail.type = source.type;
  return detail;
}

/**
 * Maps an upstream HTTP error to what the client should see. The client's own key is never at
 * fault here: upstream auth errors mean the gateway's credentials are wrong.
 */
export function failureFromResponse(
  provider: string,
  status: number,
  headers: IncomingHttpHeaders,
  bodyText: string,
  options: { model?: string; secrets?: readonly string[] } = {},
): Failure {
  const detail = parseErrorBody(bodyText);
  const said = scrubSecrets(detail.message, options.secrets ?? []);
  const suffix = said === "" ? "" : `: ${said}`;
  const common = {
    upstreamStatus: status,
    provider,
    ...(detail.code !== undefined && { code: detail.code }),
  };
  const wait = retryAfterMs(headers);
  const retryAfter = wait === undefined ? {} : { retryAfterMs: wait };

  if (status === 401 || status === 403) {
    // The upstream's text may echo part of the key; it says nothing the client can act on.
    return new Failure({
      ...common,
      status: 502,
      kind: "auth",
      message: `provider ${provider} rejected the gateway's credentials (${status})`,
      retryable: true,
    });
  }
  if (status === 404) {
    // The configured upstream model (or base_url) is wrong; another target may still serve.
    const what = options.model === undefined ? "the request" : `model "${options.model}"`;
    return new Failure({
      ...common,
      status: 502,
      kind: "upstream_error",
      message: `provider ${provider} does not know ${what} (404)${suffix}`,
      retryable: true,
    });
  }
  if (status === 400 || status === 413 || status === 422) {
    // 413 stays 413: the client learns its body is too large for this upstream, not malformed.
    return new Failure({
      ...common,
      ...(detail.param !== undefined && { param: detail.param }),
      status: status === 413 ? 413 : 400,
      kind: "invalid_request",
      message: `provider ${provider} rejected the request (${status})${suffix}`,
    });
  }
  if (status === 408) {
    return new Failure({
      ...common,
      status: 504,
      kind: "timeout",
      message: `provider ${provider} timed out (408)${suffix}`,
      retryable: true,
    });
  }
  if (status === 429) {
    return new Failure({
      ...common,
      ...retryAfter,
      status: 429,
      kind: "rate_limited",
      message: `provider ${provider} is rate limiting the gateway (429)${suffix}`,
      retryable: true,
    });
  }
  if (status === 503) {
    return new Failure({
      ...common,
      ...retryAfter,
      status: 503,
      kind: "upstream_unavailable",
      message: `provider ${provider} is unavailable (503)${suffix}`,
      retryable: true,
    });
  }
  if (status === 504) {
    return new Failure({
      ...common,
      status: 504,
      kind: "timeout",
      message: `provider ${provider} timed out (504)${suffix}`,
      retryable: true,
    });
  }
  // Other 4xx (402 billing, 409, 415, …) concern the gateway's account or this upstream's
  // dialect, and 5xx the upstream itself: another target may well succeed.
  return new Failure({
    ...common,
    ...retryAfter,
    status: 502,
    kind: "upstream_error",
    message: `provider ${provider} failed (${status})${suffix}`,
    retryable: true,
  });
}

const TIMEOUT_CODES = new Set([
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CONNECT_TIMEOUT",
  "ETIMEDOUT",
]);

/**
 * Maps an error thrown before or while talking to the upstream (no HTTP answer, or a body cut
 * off) to a `Failure`. If `signal` was aborted the call was cancelled by our side.
 */
export function failureFromError(provider: string, err: unknown, signal?: AbortSignal): Failure {
  if (err instanceof Failure) return err;
  if (signal?.aborted) {
    return new Failure(
      {
        status: 499,
        kind: "cancelled",
        message: `request to provider ${provider} was cancelled`,
        provider,
      },
      { cause: err },
    );
  }
  const code = errorCode(err);
  if (TIMEOUT_CODES.has(code)) {
    return new Failure(
      {
        status: 504,
        kind: "timeout",
        message: `provider ${provider} timed out: ${code}`,
        retryable: true,
        provider,
      },
      { cause: err },
    );
  }
  return new Failure(
    {
      status: 502,
      kind: "upstream_unavailable",
      message: `provider ${provider} unreachable: ${code}`,
      retryable: true,
      provider,
    },
    { cause: err },
  );
}

/** The most specific error code in an error, its cause or (happy-eyeballs) aggregate. */
export function errorCode(err: unknown): string {
  let current: unknown = err;
  for (let depth = 0; depth < 4 && isRecord(current); depth++) {
    if (typeof current.code === "string" && current.code !== "") return current.code;
    const errors = current.errors;
    current = Array.isArray(errors) && errors.length > 0 ? errors[0] : current.cause;
  }
  if (err instanceof Error && err.name !== "Error") return err.name;
  return "unknown error";
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function clampMs(ms: number): number {
  return Math.min(Math.round(ms), MAX_RETRY_AFTER_MS);
}

function truncate(text: string, limit: number): string {
  return text.length <= limit ? text : `${text.slice(0, limit)}…`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/**
 * An upstream answer that was cut off or malformed: the upstream's fault, and retryable (the
 * router only retries while nothing has reached the client).
 */
export function malformedAnswer(
  provider: string,
  secrets: readonly string[],
  message: string,
  cause?: unknown,
  code?: string,
): Failure {
  return new Failure(
    {
      status: 502,
      kind: "upstream_error",
      message: scrubSecrets(message, secrets),
      retryable: true,
      provider,
      ...(code !== undefined && { code }),
    },
    { cause },
  );
}

/** One stream event's JSON object; an event that is not one is a malformedAnswer. */
export function parseStreamEvent(
  provider: string,
  secrets: readonly string[],
  data: string,
): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch (err) {
    throw malformedAnswer(
      provider,
      secrets,
      `stream from provider ${provider} was malformed: invalid JSON`,
      err,
    );
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw malformedAnswer(
      provider,
      secrets,
      `stream from provider ${provider} was malformed: not an object`,
    );
  }
  return parsed as Record<string, unknown>;
}

/**
 * Reads a whole JSON answer. A body that is cut off or not JSON is a malformedAnswer; `what`
 * names the answer in messages ("answer", "embeddings").
 */
export async function readJsonAnswer(
  provider: string,
  secrets: readonly string[],
  body: UpstreamBody,
  signal: AbortSignal,
  what = "answer",
): Promise<unknown> {
  let text: string;
  try {
    text = await body.text();
  } catch (err) {
    if (signal.aborted) throw failureFromError(provider, err, signal);
    throw malformedAnswer(
      provider,
      secrets,
      `${what} from provider ${provider} ended early: ${errorCode(err)}`,
      err,
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw malformedAnswer(
      provider,
      secrets,
      `${what} from provider ${provider} was malformed: not JSON`,
      err,
    );
  }
}
