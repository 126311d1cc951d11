// How limits show up on the wire: the rate-limit headers SDKs read (OpenAI's `x-ratelimit-*`,
// Anthropic's `anthropic-ratelimit-*`), on answers and on 429s, and as gRPC metadata.

import type { ConnectError } from "@connectrpc/connect";
import type { Failure } from "../../lib/errors.js";
import type { ClientApi } from "../exchange.js";
import { LimitExceeded, type LimitSnapshot, type Quota } from "./limiter.js";

/** Headers telling the caller what is left of its request and token rates. */
export function rateLimitHeaders(
  snapshot: LimitSnapshot,
  api: ClientApi,
  now: number,
): Record<string, string> {
  const headers: Record<string, string> = {};
  const put = (dimension: "requests" | "tokens", q: Quota | undefined) => {
    if (!q) return;
    headers[`x-ratelimit-limit-${dimension}`] = String(q.limit);
    headers[`x-ratelimit-remaining-${dimension}`] = String(q.remaining);
    headers[`x-ratelimit-reset-${dimension}`] = openAIDuration(q.resetMs);
    if (api === "anthropic") {
      headers[`anthropic-ratelimit-${dimension}-limit`] = String(q.limit);
      headers[`anthropic-ratelimit-${dimension}-remaining`] = String(q.remaining);
      headers[`anthropic-ratelimit-${dimension}-reset`] = rfc3339(now + q.resetMs);
    }
  };
  put("requests", snapshot.requests);
  put("tokens", snapshot.tokens);
  return headers;
}

/** The longest Retry-After the openai and Anthropic SDKs wait out before they retry. */
const SDK_MAX_RETRY_AFTER_MS = 60_000;

/**
 * Completes a 429 envelope made by a client API's error function (which already set
 * `retry-after`): the rate-limit headers, which limit was hit (`x-switchyard-limit`, and `limit`
 * in the error object), for OpenAI the `type` its SDK users check ("tokens" for tpm), and
 * `x-should-retry: false` when the wait is longer than the SDKs would wait.
 */
export function decorateLimitError(
  envelope: { body: unknown; headers: Record<string, string> },
  f: LimitExceeded,
  api: ClientApi,
  now: number,
): void {
  Object.assign(envelope.headers, rateLimitHeaders(f.snapshot, api, now), {
    "x-switchyard-limit": f.limit,
  });
  // The official SDKs wait out a Retry-After only below a minute; past that they retry twice on
  // their own short backoff, into the same refusal (a spent daily or monthly budget).
  if (f.retryAfterMs > SDK_MAX_RETRY_AFTER_MS) envelope.headers["x-should-retry"] = "false";
  const error = (envelope.body as { error?: unknown } | null)?.error;
  if (typeof error === "object" && error !== null) {
    const e = error as Record<string, unknown>;
    e.limit = f.limit;
    if ((api === "openai" || api === "responses") && f.limit === "tpm") e.type = "tokens";
  }
}

/**
 * The ConnectError for a Failure. A refused admission also carries the rate-limit metadata; any
 * 429 (an upstream's too), and any other failure that says when to come back (a busy target's
 * 503: UNAVAILABLE), carries `retry-after` and `retry-after-ms`, as REST's answers do, and
 * `grpc-retry-pushback-ms` (gRPC's own, gRFC A6: a client with a retry policy waits exactly that
 * long before its next attempt, and makes none when it is negative).
 */
export function connectErrorFor(f: Failure, now: number): ConnectError {
  const ce = f.toConnectError();
  if (f instanceof LimitExceeded) {
    const headers = rateLimitHeaders(f.snapshot, "grpc", now);
    headers["x-switchyard-limit"] = f.limit;
    for (const [k, v] of Object.entries(headers)) ce.metadata.set(k, v);
  }
  // A second for a 429 when no one said, as the REST envelopes do (openai/errors.ts).
  const retryAfterMs = f.retryAfterMs > 0 ? f.retryAfterMs : f.status === 429 ? 1000 : 0;
  if (retryAfterMs > 0) {
    ce.metadata.set("retry-after", String(Math.ceil(retryAfterMs / 1000)));
    ce.metadata.set("retry-after-ms", String(Math.ceil(retryAfterMs)));
    // Past the SDKs' minute (a spent daily or monthly budget, an upstream away for an hour), -1:
    // a retry policy would hold the call that long, silent (hours, for a daily budget). The
    // client hears at once instead, as a REST client is told `x-should-retry: false`.
    ce.metadata.set(
      "grpc-retry-pushback-ms",
      retryAfterMs > SDK_MAX_RETRY_AFTER_MS ? "-1" : String(Math.ceil(retryAfterMs)),
    );
  }
  // As REST's error answers say it (rest.ts, sendError).
  if (f.attempts > 0) ce.metadata.set("x-switchyard-attempts", String(f.attempts));
  return ce;
}

/** OpenAI's duration style: `350ms`, `12.5s`, `6m0s`, `1h2m3s`. */
export function openAIDuration(ms: number): string {
  const total = Math.max(0, Math.ceil(ms));
  if (total < 1000) return `${total}ms`;
  if (total < 60_000) return `${Number((total / 1000).toFixed(3))}s`;
  const s = Math.ceil(total / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${h > 0 ? `${h}h` : ""}${m}m${s % 60}s`;
}

/** An RFC 3339 time to the second (rounded up, so a client waiting until it is never early). */
function rfc3339(at: number): string {
  return new Date(Math.ceil(at / 1000) * 1000).toISOString().replace(".000Z", "Z");
}
