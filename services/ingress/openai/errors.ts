import type { Failure } from "../../lib/errors.js";
import type { OpenAIErrorBody } from "../../lib/wire/openai.js";

export interface OpenAIErrorResponse {
  status: number;
  body: OpenAIErrorBody;
  headers: Record<string, string>;
}

/**
 * The error envelope OpenAI itself answers with. Its `type` vocabulary is small and not what the
 * HTTP status suggests: a bad key (401), a model the key may not use (403) and an unknown model
 * (404) are all "invalid_request_error" told apart by `code` ("invalid_api_key",
 * "model_not_found"); rate limits carry the limited dimension ("requests" or "tokens") as `type`
 * and "rate_limit_exceeded" as `code` (a spent budget is "insufficient_quota"); upstream trouble is "server_error". The openai SDK picks
 * its error class from the status alone, so the status must be right above all.
 */
export function openAIError(f: Failure): OpenAIErrorResponse {
  // 499 means the client went away; if anything does get written, it is an internal cancellation.
  const status = f.status === 499 ? 503 : f.status;
  const body: OpenAIErrorBody = {
    error: {
      message: f.message,
      type: errorType(f, status),
      param: f.param === "" ? null : f.param,
      code: errorCode(f, status),
    },
  };
  const headers: Record<string, string> = { "content-type": "application/json" };
  // A 429 always says when to come back (an upstream's may not have): a second, by default.
  const retryAfterMs = f.retryAfterMs > 0 ? f.retryAfterMs : status === 429 ? 1000 : 0;
  if (retryAfterMs > 0) {
    headers["retry-after"] = String(Math.ceil(retryAfterMs / 1000));
    // The openai SDK prefers this finer header when it schedules its own retry.
    headers["retry-after-ms"] = String(Math.ceil(retryAfterMs));
  }
  return { status, body, headers };
}

function errorType(f: Failure, status: number): string {
  if (status === 429 || f.kind === "rate_limited") {
    return f.code === "insufficient_quota" ? "insufficient_quota" : "requests";
  }
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

/** OpenAI's own codes for a 429; another upstream's (Gemini's RESOURCE_EXHAUSTED, Azure's "429") are not. */
const RATE_LIMIT_CODES: ReadonlySet<string> = new Set([
  "rate_limit_exceeded",
  "insufficient_quota",
]);

function errorCode(f: Failure, status: number): string | null {
  // Clients branch on a 429's code: it is one of OpenAI's, whichever upstream limited.
  if (status === 429 && !RATE_LIMIT_CODES.has(f.code)) return "rate_limit_exceeded";
  return f.code !== "" ? f.code : defaultCode(f, status);
}

function defaultCode(f: Failure, status: number): string | null {
  if (status === 401) return "invalid_api_key";
  if (status === 429 || f.kind === "rate_limited") return "rate_limit_exceeded";
  if (f.kind === "timeout") return "timeout";
  return null;
}
