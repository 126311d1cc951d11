import type { Failure } from "../../lib/errors.js";
import type { AnthropicErrorBody, AnthropicErrorType } from "./wire.js";

export interface AnthropicErrorResponse {
  status: number;
  body: AnthropicErrorBody;
  headers: Record<string, string>;
}

/**
 * The error envelope Anthropic itself answers with. Its `type` follows the HTTP status
 * (https://docs.anthropic.com/en/api/errors), and the @anthropic-ai/sdk picks its error class
 * from the status, so the status must be right above all. `requestId`, when given, is echoed
 * as Anthropic does: `request_id` in the body and a `request-id` header (the SDK's
 * `err.requestID`).
 */
export function anthropicError(f: Failure, requestId?: string): AnthropicErrorResponse {
  // 499 means the client went away; if anything does get written, it is an internal cancellation.
  let status = f.status === 499 ? 503 : f.status;
  if (!Number.isInteger(status) || status < 400 || status > 599) status = 500;
  const body: AnthropicErrorBody = {
    type: "error",
    error: { type: f.kind === "cancelled" ? "api_error" : errorType(status), message: f.message },
  };
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (requestId !== undefined && requestId !== "") {
    body.request_id = requestId;
    headers["request-id"] = requestId;
  }
  // A 429 always says when to come back (an upstream's may not have): a second, by default.
  const retryAfterMs = f.retryAfterMs > 0 ? f.retryAfterMs : status === 429 ? 1000 : 0;
  if (retryAfterMs > 0) {
    headers["retry-after"] = String(Math.ceil(retryAfterMs / 1000));
    // The SDK prefers this finer header when it schedules its own retry.
    headers["retry-after-ms"] = String(Math.ceil(retryAfterMs));
  }
  return { status, body, headers };
}

function errorType(status: number): AnthropicErrorType {
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
    case 529:
      return "overloaded_error";
    case 504:
      return "timeout_error";
    default:
      // Anthropic uses invalid_request_error for every other 4xx.
      return status < 500 ? "invalid_request_error" : "api_error";
  }
}
