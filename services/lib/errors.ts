import { Code, ConnectError } from "@connectrpc/connect";
import { type UpstreamError, UpstreamErrorSchema } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { makeMessage } from "./hop/codec.js";

/** Classes of failure; the ingress maps them to each client API's error type. */
export type FailureKind =
  | "invalid_request"
  | "auth"
  | "not_found"
  | "rate_limited"
  | "upstream_unavailable"
  | "upstream_error"
  | "timeout"
  | "cancelled"
  | "unsupported";

/** The failures whose Retry-After pauses a target: a 429, and a 503 (Anthropic's 529) from a busy upstream. */
export type PauseKind = Extract<FailureKind, "rate_limited" | "upstream_unavailable">;

/**
 * How long a failure of this kind asks its target to be left alone: its Retry-After on a 429 or
 * a 503, else 0. (HTTP defines Retry-After for those; on other errors it is not a promise.)
 */
export function pauseAskedFor(kind: string, retryAfterMs: number): number {
  return isPauseKind(kind) && retryAfterMs > 0 ? retryAfterMs : 0;
}

export function isPauseKind(kind: string): kind is PauseKind {
  return kind === "rate_limited" || kind === "upstream_unavailable";
}

export interface FailureInit {
  status: number;
  kind: FailureKind;
  message: string;
  retryable?: boolean;
  retryAfterMs?: number;
  upstreamStatus?: number;
  provider?: string;
  param?: string;
  code?: string;
  /** Upstream attempts made before the request failed (set by the router's attempt loop). */
  attempts?: number;
}

/**
 * A failed call as every service sees it. Crosses hops as a ConnectError whose detail is an
 * UpstreamError message, so the ingress can answer with the right status and envelope.
 * The message must never contain credentials.
 */
export class Failure extends Error {
  readonly status: number;
  readonly kind: FailureKind;
  readonly retryable: boolean;
  readonly retryAfterMs: number;
  readonly upstreamStatus: number;
  readonly provider: string;
  readonly param: string;
  readonly code: string;
  readonly attempts: number;

  constructor(init: FailureInit, options?: { cause?: unknown }) {
    super(init.message, options);
    this.name = "Failure";
    this.status = init.status;
    this.kind = init.kind;
    this.retryable = init.retryable ?? false;
    this.retryAfterMs = init.retryAfterMs ?? 0;
    this.upstreamStatus = init.upstreamStatus ?? 0;
    this.provider = init.provider ?? "";
    this.param = init.param ?? "";
    this.code = init.code ?? "";
    this.attempts = init.attempts ?? 0;
  }

  toProto(): UpstreamError {
    return makeMessage(UpstreamErrorSchema, {
      status: this.status,
      kind: this.kind,
      message: this.message,
      retryable: this.retryable,
      retryAfterMs: this.retryAfterMs,
      upstreamStatus: this.upstreamStatus,
      provider: this.provider,
      param: this.param,
      code: this.code,
      attempts: this.attempts,
    });
  }

  toConnectError(): ConnectError {
    return new ConnectError(this.message, codeForStatus(this.status), undefined, [
      { desc: UpstreamErrorSchema, value: this.toProto() },
    ]);
  }

  static fromProto(e: UpstreamError): Failure {
    return new Failure({
      status: e.status,
      kind: e.kind as FailureKind,
      message: e.message,
      retryable: e.retryable,
      retryAfterMs: e.retryAfterMs,
      upstreamStatus: e.upstreamStatus,
      provider: e.provider,
      param: e.param,
      code: e.code,
      attempts: e.attempts,
    });
  }

  /** Recovers a Failure from whatever a call threw (a ConnectError from another hop, or not). */
  static from(err: unknown): Failure {
    if (err instanceof Failure) return err;
    const ce = ConnectError.from(err);
    const detail = ce.findDetails(UpstreamErrorSchema)[0];
    if (detail) return Failure.fromProto(detail);
    return failureForCode(ce);
  }
}

/** Maps the gRPC code of an error without an UpstreamError detail (transport trouble). */
function failureForCode(ce: ConnectError): Failure {
  const message = ce.rawMessage;
  switch (ce.code) {
    case Code.Canceled:
      return new Failure({ status: 499, kind: "cancelled", message }, { cause: ce });
    case Code.DeadlineExceeded:
      return new Failure({ status: 504, kind: "timeout", message, retryable: true }, { cause: ce });
    case Code.InvalidArgument:
      return new Failure({ status: 400, kind: "invalid_request", message }, { cause: ce });
    case Code.NotFound:
      return new Failure({ status: 404, kind: "not_found", message }, { cause: ce });
    case Code.Unauthenticated:
      return new Failure({ status: 401, kind: "auth", message }, { cause: ce });
    case Code.PermissionDenied:
      return new Failure({ status: 403, kind: "auth", message }, { cause: ce });
    case Code.ResourceExhausted:
      return new Failure(
        { status: 429, kind: "rate_limited", message, retryable: true },
        { cause: ce },
      );
    case Code.Unimplemented:
      return new Failure({ status: 400, kind: "unsupported", message }, { cause: ce });
    case Code.Unavailable:
      return new Failure(
        { status: 503, kind: "upstream_unavailable", message, retryable: true },
        { cause: ce },
      );
    default:
      return new Failure(
        { status: 502, kind: "upstream_error", message, retryable: true },
        { cause: ce },
      );
  }
}

/** The `code` of the failure a request cut by a shutdown ends with (shuttingDown). */
export const SHUTTING_DOWN = "shutting_down";
/** The code of a refusal because Redis could not check the tenant's limits (`fail_closed`). */
export const LIMITS_UNAVAILABLE = "limits_unavailable";

/**
 * What a request still in flight when a drain runs out (server.drain_timeout_ms) is answered:
 * 503 / UNAVAILABLE, retryable, with the attempts it made. Its connection is then closed.
 */
export function shuttingDown(attempts: number): Failure {
  return new Failure({
    status: 503,
    kind: "upstream_unavailable",
    code: SHUTTING_DOWN,
    retryable: true,
    attempts,
    message: "the gateway is shutting down; send the request again",
  });
}

/** 404 for a model name no `models:` entry has (the same words at the ingress and the router). */
export function modelNotFound(model: string, param = "model"): Failure {
  return new Failure({
    status: 404,
    kind: "not_found",
    code: "model_not_found",
    param,
    message: `The model '${model}' does not exist or is not served by this gateway`,
  });
}

export function codeForStatus(status: number): Code {
  if (status === 400 || status === 422) return Code.InvalidArgument;
  if (status === 401) return Code.Unauthenticated;
  if (status === 403) return Code.PermissionDenied;
  if (status === 404) return Code.NotFound;
  if (status === 408 || status === 504) return Code.DeadlineExceeded;
  if (status === 413) return Code.InvalidArgument;
  if (status === 429) return Code.ResourceExhausted;
  if (status === 499) return Code.Canceled;
  if (status === 503) return Code.Unavailable;
  if (status === 501) return Code.Unimplemented;
  return Code.Internal;
}

/** The HTTP status a gRPC code means, for errors that carry no UpstreamError detail. */
export function statusForCode(code: Code): number {
  return failureForCode(new ConnectError("", code)).status;
}
