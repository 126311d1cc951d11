import type http from "node:http";
import type http2 from "node:http2";
import { cors as connectCors } from "@connectrpc/connect";

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

/** What a page may read of an answer: Connect's and gRPC-Web's own headers, and ours. */
const EXPOSED_HEADERS = [
  ...connectCors.exposedHeaders,
  "X-Request-Id",
  "Request-Id",
  "Traceparent",
  "X-Switchyard-Provider",
  "X-Switchyard-Model",
  "X-Switchyard-Attempts",
  "X-Switchyard-Cost-Usd",
  "X-Switchyard-Limit",
  "Retry-After",
  "Retry-After-Ms",
  ...["requests", "tokens"].flatMap((d) => [
    `X-Ratelimit-Limit-${d}`,
    `X-Ratelimit-Remaining-${d}`,
    `X-Ratelimit-Reset-${d}`,
    `Anthropic-Ratelimit-${d}-Limit`,
    `Anthropic-Ratelimit-${d}-Remaining`,
    `Anthropic-Ratelimit-${d}-Reset`,
  ]),
].join(", ");

/** How long a browser may reuse a preflight's answer. */
const PREFLIGHT_MAX_AGE_S = 7200;

/**
 * Cross-origin calls from browsers (`server.cors_origins`): a page on an allowed origin may call
 * every route of the ingress — REST with an SDK that runs in browsers, GatewayService with
 * connect-web or gRPC-Web. Returns undefined when no origin is allowed, so the ingress adds
 * nothing to any answer. Otherwise the returned function, called before routing, answers a
 * preflight itself (returns true) and gives an allowed origin's other requests the headers that
 * let its page read the answer. No credentials (cookies) are allowed: callers send their key.
 */
export function createCors(
  origins: readonly string[],
): ((req: Req, res: Res) => boolean) | undefined {
  if (origins.length === 0) return undefined;
  const any = origins.includes("*");
  const allowed = new Set(origins);
  return (req, res) => {
    const origin = req.headers.origin;
    if (origin === undefined || !(any || allowed.has(origin))) return false;
    res.setHeader("access-control-allow-origin", any ? "*" : origin);
    if (!any) res.setHeader("vary", "Origin");
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
      res.setHeader("access-control-allow-methods", "GET, POST, OPTIONS");
      const asked = req.headers["access-control-request-headers"];
      if (asked !== undefined) res.setHeader("access-control-allow-headers", asked);
      res.setHeader("access-control-max-age", String(PREFLIGHT_MAX_AGE_S));
      res.writeHead(204);
      res.end();
      return true;
    }
    res.setHeader("access-control-expose-headers", EXPOSED_HEADERS);
    return false;
  };
}
