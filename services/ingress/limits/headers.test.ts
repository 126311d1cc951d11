import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Failure } from "../../lib/errors.js";
import { anthropicError } from "../anthropic/errors.js";
import { openAIError } from "../openai/errors.js";
import {
  connectErrorFor,
  decorateLimitError,
  openAIDuration,
  rateLimitHeaders,
} from "./headers.js";
import { LimitExceeded } from "./limiter.js";

const NOW = Date.UTC(2026, 2, 10, 12, 0, 0);
const SNAPSHOT = {
  requests: { limit: 60, remaining: 0, resetMs: 59_500 },
  tokens: { limit: 1000, remaining: 250, resetMs: 1500 },
};

describe("rateLimitHeaders", () => {
  it("gives OpenAI's x-ratelimit-* headers with durations", () => {
    expect(rateLimitHeaders(SNAPSHOT, "openai", NOW)).toEqual({
      "x-ratelimit-limit-requests": "60",
      "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-requests": "59.5s",
      "x-ratelimit-limit-tokens": "1000",
      "x-ratelimit-remaining-tokens": "250",
      "x-ratelimit-reset-tokens": "1.5s",
    });
  });

  it("adds Anthropic's anthropic-ratelimit-* headers, reset as an RFC 3339 time", () => {
    const h = rateLimitHeaders(SNAPSHOT, "anthropic", NOW);
    expect(h["x-ratelimit-remaining-requests"]).toBe("0");
    expect(h).toMatchObject({
      "anthropic-ratelimit-requests-limit": "60",
      "anthropic-ratelimit-requests-remaining": "0",
      "anthropic-ratelimit-requests-reset": "2026-03-10T12:01:00Z",
      "anthropic-ratelimit-tokens-limit": "1000",
      "anthropic-ratelimit-tokens-remaining": "250",
      "anthropic-ratelimit-tokens-reset": "2026-03-10T12:00:02Z",
    });
  });

  it("says nothing about a dimension without a limit", () => {
    expect(rateLimitHeaders({}, "openai", NOW)).toEqual({});
  });
});

describe("openAIDuration", () => {
  it("formats like OpenAI's reset headers", () => {
    expect([0, 350, 1000, 12_500, 60_000, 361_000, 3_723_000].map(openAIDuration)).toEqual([
      "0ms",
      "350ms",
      "1s",
      "12.5s",
      "1m0s",
      "6m1s",
      "1h2m3s",
    ]);
  });
});

describe("429 envelopes", () => {
  const tpm = new LimitExceeded("tpm", "tenant", 1000, 1500, SNAPSHOT);

  it("say which limit was hit, in OpenAI's envelope with its retry headers", () => {
    const e = openAIError(tpm);
    decorateLimitError(e, tpm, "openai", NOW);
    expect(e.status).toBe(429);
    expect(e.body.error).toMatchObject({
      type: "tokens",
      code: "rate_limit_exceeded",
      limit: "tpm",
    });
    expect(e.headers).toMatchObject({
      "retry-after": "2",
      "x-switchyard-limit": "tpm",
      "x-ratelimit-remaining-tokens": "250",
    });
  });

  it("say which limit was hit in Anthropic's envelope, a spent budget as insufficient_quota", () => {
    const budget = new LimitExceeded("monthly_usd", "key", 50, 3_600_000, {});
    const e = anthropicError(budget, "req-1");
    decorateLimitError(e, budget, "anthropic", NOW);
    expect(e.body.error).toMatchObject({ type: "rate_limit_error", limit: "monthly_usd" });
    expect(budget.code).toBe("insufficient_quota");
    expect(e.body.error.message).toContain("this API key");
    expect(e.headers["retry-after"]).toBe("3600");
    // An hour is past what the SDKs wait out: they are told not to retry into it at once.
    expect(e.headers["x-should-retry"]).toBe("false");
  });

  it("leave a wait the SDKs honour to them", () => {
    const e = openAIError(tpm);
    decorateLimitError(e, tpm, "openai", NOW);
    expect(e.headers["x-should-retry"]).toBeUndefined();
  });

  it("become RESOURCE_EXHAUSTED with the same values as gRPC metadata", () => {
    const ce = connectErrorFor(tpm, NOW);
    expect(ce.code).toBe(Code.ResourceExhausted);
    expect(ce.metadata.get("retry-after")).toBe("2");
    expect(ce.metadata.get("x-ratelimit-remaining-tokens")).toBe("250");
    expect(ce.metadata.get("x-switchyard-limit")).toBe("tpm");
    expect(Failure.from(ce).status).toBe(429);
  });

  it("give gRPC's grpc-retry-pushback-ms with retry-after-ms, -1 past the SDKs' minute", () => {
    const pushback = (f: Failure) => {
      const md = connectErrorFor(f, NOW).metadata;
      return [md.get("retry-after-ms"), md.get("grpc-retry-pushback-ms")];
    };
    const busy = (retryAfterMs: number) =>
      new Failure({ status: 503, kind: "upstream_unavailable", message: "busy", retryAfterMs });
    expect(pushback(tpm)).toEqual(["1500", "1500"]);
    expect(pushback(busy(399.2))).toEqual(["400", "400"]);
    expect(pushback(busy(60_000))).toEqual(["60000", "60000"]);
    expect(pushback(busy(60_001))).toEqual(["60001", "-1"]);
    const daily = new LimitExceeded("daily_tokens", "tenant", 1000, 3_600_000, SNAPSHOT);
    expect(pushback(daily)).toEqual(["3600000", "-1"]);
    // A 429 no one said when to retry: the second REST's envelopes give.
    expect(pushback(new Failure({ status: 429, kind: "rate_limited", message: "slow" }))).toEqual([
      "1000",
      "1000",
    ]);
    // A failure that says nothing of coming back leaves the client's own backoff to decide.
    expect(pushback(busy(0))).toEqual([null, null]);
  });
});
