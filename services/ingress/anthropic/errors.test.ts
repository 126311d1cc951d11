import { describe, expect, it } from "vitest";
import { Failure, type FailureKind } from "../../lib/errors.js";
import { anthropicError } from "./errors.js";

describe("anthropicError", () => {
  it.each<[string, number, FailureKind, number, string]>([
    ["a bad request", 400, "invalid_request", 400, "invalid_request_error"],
    ["an unsupported feature", 400, "unsupported", 400, "invalid_request_error"],
    ["an unknown key", 401, "auth", 401, "authentication_error"],
    ["a model the key may not use", 403, "auth", 403, "permission_error"],
    ["an unknown model", 404, "not_found", 404, "not_found_error"],
    ["a wrong method", 405, "invalid_request", 405, "invalid_request_error"],
    ["a body too large", 413, "invalid_request", 413, "request_too_large"],
    ["a rate limit", 429, "rate_limited", 429, "rate_limit_error"],
    ["an internal error", 500, "upstream_error", 500, "api_error"],
    ["an upstream failure", 502, "upstream_error", 502, "api_error"],
    ["no healthy upstream", 503, "upstream_unavailable", 503, "overloaded_error"],
    ["an overloaded upstream", 529, "upstream_unavailable", 529, "overloaded_error"],
    ["a timeout", 504, "timeout", 504, "timeout_error"],
    ["an internal cancellation", 499, "cancelled", 503, "api_error"],
    ["a status that is no error", 200, "upstream_error", 500, "api_error"],
  ])("maps %s", (_name, status, kind, wantStatus, type) => {
    const out = anthropicError(new Failure({ status, kind, message: "m" }));
    expect(out.status).toBe(wantStatus);
    expect(out.body).toEqual({ type: "error", error: { type, message: "m" } });
    expect(out.headers["content-type"]).toBe("application/json");
    // A 429 says when to come back even when no one said how long: a second.
    expect(out.headers["retry-after"]).toBe(status === 429 ? "1" : undefined);
  });

  it("adds Retry-After in whole seconds, rounded up, when known", () => {
    const limited = anthropicError(
      new Failure({ status: 429, kind: "rate_limited", message: "slow down", retryAfterMs: 1200 }),
    );
    expect(limited.headers["retry-after"]).toBe("2");
    expect(limited.headers["retry-after-ms"]).toBe("1200");
  });

  it("echoes the request id in the body and the request-id header", () => {
    const out = anthropicError(new Failure({ status: 404, kind: "not_found", message: "m" }), "r1");
    expect(JSON.stringify(out.body)).toBe(
      '{"type":"error","error":{"type":"not_found_error","message":"m"},"request_id":"r1"}',
    );
    expect(out.headers["request-id"]).toBe("r1");
  });
});
