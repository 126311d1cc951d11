import { describe, expect, it } from "vitest";
import { Failure } from "../../lib/errors.js";
import { openAIError } from "./errors.js";

describe("openAIError", () => {
  it.each<[string, Failure, number, string, string | null]>([
    [
      "a bad request",
      new Failure({ status: 400, kind: "invalid_request", message: "m", param: "messages" }),
      400,
      "invalid_request_error",
      null,
    ],
    [
      "a context overflow",
      new Failure({
        status: 400,
        kind: "invalid_request",
        message: "m",
        code: "context_length_exceeded",
      }),
      400,
      "invalid_request_error",
      "context_length_exceeded",
    ],
    [
      "an unknown key",
      new Failure({ status: 401, kind: "auth", message: "m" }),
      401,
      "invalid_request_error",
      "invalid_api_key",
    ],
    [
      "a model the key may not use",
      new Failure({ status: 403, kind: "auth", message: "m", code: "model_not_found" }),
      403,
      "invalid_request_error",
      "model_not_found",
    ],
    [
      "an unknown model",
      new Failure({ status: 404, kind: "not_found", message: "m", code: "model_not_found" }),
      404,
      "invalid_request_error",
      "model_not_found",
    ],
    [
      "a body too large",
      new Failure({ status: 413, kind: "invalid_request", message: "m" }),
      413,
      "invalid_request_error",
      null,
    ],
    [
      "a rate limit",
      new Failure({ status: 429, kind: "rate_limited", message: "m" }),
      429,
      "requests",
      "rate_limit_exceeded",
    ],
    [
      "an upstream's 429 in its own dialect (Gemini)",
      new Failure({ status: 429, kind: "rate_limited", message: "m", code: "RESOURCE_EXHAUSTED" }),
      429,
      "requests",
      "rate_limit_exceeded",
    ],
    [
      "an upstream's 429 whose code is its status (Azure)",
      new Failure({ status: 429, kind: "rate_limited", message: "m", code: "429" }),
      429,
      "requests",
      "rate_limit_exceeded",
    ],
    [
      "a spent budget",
      new Failure({ status: 429, kind: "rate_limited", message: "m", code: "insufficient_quota" }),
      429,
      "insufficient_quota",
      "insufficient_quota",
    ],
    [
      "an upstream failure",
      new Failure({ status: 502, kind: "upstream_error", message: "m" }),
      502,
      "server_error",
      null,
    ],
    [
      "no healthy upstream",
      new Failure({ status: 503, kind: "upstream_unavailable", message: "m" }),
      503,
      "server_error",
      null,
    ],
    [
      "a timeout",
      new Failure({ status: 504, kind: "timeout", message: "m" }),
      504,
      "server_error",
      "timeout",
    ],
    [
      "an internal cancellation",
      new Failure({ status: 499, kind: "cancelled", message: "m" }),
      503,
      "server_error",
      null,
    ],
  ])("maps %s", (_name, f, status, type, code) => {
    const out = openAIError(f);
    expect(out.status).toBe(status);
    expect(out.body.error.type).toBe(type);
    expect(out.body.error.code).toBe(code);
    expect(out.body.error.message).toBe("m");
    expect(out.body.error.param).toBe(f.param === "" ? null : f.param);
  });

  it("adds Retry-After in whole seconds, rounded up; a second on a 429 when no one said", () => {
    const limited = openAIError(
      new Failure({ status: 429, kind: "rate_limited", message: "slow down", retryAfterMs: 1200 }),
    );
    expect(limited.headers["retry-after"]).toBe("2");
    expect(limited.headers["retry-after-ms"]).toBe("1200");
    const plain = openAIError(new Failure({ status: 429, kind: "rate_limited", message: "x" }));
    expect(plain.headers).toEqual({
      "content-type": "application/json",
      "retry-after": "1",
      "retry-after-ms": "1000",
    });
    const other = openAIError(
      new Failure({ status: 503, kind: "upstream_unavailable", message: "x" }),
    );
    expect(other.headers).toEqual({ "content-type": "application/json" });
  });
});
