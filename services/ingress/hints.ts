import { type RoutingHints, RoutingHintsSchema } from "../../gen/switchyard/router/v1/router_pb.js";
import { Failure } from "../lib/errors.js";
import { makeMessage } from "../lib/hop/codec.js";

/**
 * Per-request routing overrides, from headers (every client API, and gRPC metadata):
 * - `x-switchyard-provider: NAME` — only targets of that configured provider;
 * - `x-switchyard-fallbacks: a,b` — these models instead of the configured fallbacks ("" = none);
 * - `x-switchyard-timeout-ms: N` — the client's own deadline for the whole request.
 * An OpenAI body field `fallbacks: [..]` (LiteLLM's spelling) overrides fallbacks too; the ingress
 * takes it out of the fields passed upstream.
 */
export function routingHints(
  header: (name: string) => string | undefined,
  bodyFallbacks?: unknown,
): { hints: RoutingHints | undefined; deadlineMs: number | undefined } {
  const provider = header("x-switchyard-provider")?.trim();
  const fallbackHeader = header("x-switchyard-fallbacks");
  let fallbacks: string[] | undefined;
  if (fallbackHeader !== undefined) {
    fallbacks = fallbackHeader
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
  } else if (bodyFallbacks !== undefined) {
    if (!Array.isArray(bodyFallbacks) || !bodyFallbacks.every((f) => typeof f === "string")) {
      throw new Failure({
        status: 400,
        kind: "invalid_request",
        param: "fallbacks",
        message: "'fallbacks' must be an array of model names",
      });
    }
    fallbacks = bodyFallbacks;
  }
  let deadlineMs: number | undefined;
  const timeout = header("x-switchyard-timeout-ms");
  if (timeout !== undefined) {
    deadlineMs = Number(timeout);
    if (!Number.isInteger(deadlineMs) || deadlineMs <= 0) {
      throw new Failure({
        status: 400,
        kind: "invalid_request",
        param: "x-switchyard-timeout-ms",
        message: "header x-switchyard-timeout-ms must be a positive integer (milliseconds)",
      });
    }
  }
  const hints =
    provider || fallbacks !== undefined
      ? makeMessage(RoutingHintsSchema, {
          ...(provider ? { provider } : {}),
          fallbacks: fallbacks ?? [],
          hasFallbacks: fallbacks !== undefined,
        })
      : undefined;
  return { hints, deadlineMs };
}

/** Takes `fallbacks` out of an OpenAI request's pass-through fields (it is ours, not the upstream's). */
export function takeBodyFallbacks(params: { extraJson: string }): unknown {
  if (!params.extraJson.includes('"fallbacks"')) return undefined;
  const extra = JSON.parse(params.extraJson) as Record<string, unknown>;
  const value = extra.fallbacks;
  delete extra.fallbacks;
  params.extraJson = Object.keys(extra).length > 0 ? JSON.stringify(extra) : "";
  return value;
}
