import type http from "node:http";
import type http2 from "node:http2";
import { cors as connectCors } from "@connectrpc/connect";
import { requestIdOf } from "../lib/ids.js";

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
 * connect-web or gRPC-Web. The returned function, called before routing, answers a preflight
 * itself and gives an allowed origin's other requests the headers that let its page read the
 * answer; it returns true when it answered. No credentials (cookies) are allowed: callers send
 * their key.
 *
 * A request from a page of any other origin is refused (403) before it does anything. CORS only
 * keeps a page from reading an answer: a "simple" request (a POST of text/plain, which needs no
 * preflight) would still be served, and on a gateway open to its network any web page a user
 * visits could spend its upstreams. Requests without `Origin` (SDKs, curl, servers) and a page
 * of the gateway's own address (`Origin` naming the request's own host) are not affected.
 */
export function createCors(origins: readonly string[]): (req: Req, res: Res) => boolean {
  const any = origins.includes("*");
  const allowed = new Set(origins);
  return (req, res) => {
    const origin = req.headers.origin;
    if (origin === undefined) return false;
    if (!any && !allowed.has(origin)) {
      if (sameHost(origin, req)) return false;
      refuse(res, origin, requestIdOf(sentId(req)));
      return true;
    }
    res.setHeader("access-control-allow-origin", any ? "*" : origin);
    if (!any) res.setHeader("vary", "Origin");
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
      res.setHeader("access-control-allow-methods", "GET, POST, OPTIONS");
      const asked = req.headers["access-control-request-headers"];
      if (asked !== undefined) res.setHeader("access-control-allow-headers", asked);
      res.setHeader("access-control-max-age", String(PREFLIGHT_MAX_AGE_S));
      res.writeHead(204, { "x-request-id": requestIdOf(sentId(req)) });
      res.end();
      return true;
    }
    res.setHeader("access-control-expose-headers", EXPOSED_HEADERS);
    return false;
  };
}

/** Whether `origin` names the host the request was sent to (a page of the gateway's own). */
function sameHost(origin: string, req: Req): boolean {
  const host = req.headers[":authority"] ?? req.headers.host;
  if (typeof host !== "string" || host === "") return false;
  try {
    return new URL(origin).host === host.toLowerCase();
  } catch {
    return false;
  }
}

/** The request id a client sent, if one (the answers here echo it, as every other does). */
function sentId(req: Req): string | undefined {
  const sent = req.headers["x-request-id"];
  return typeof sent === "string" ? sent : undefined;
}

function refuse(res: Res, origin: string, requestId: string): void {
  const body = JSON.stringify({
    error: {
      message: `Requests from web pages of ${origin} are not allowed here (server.cors_origins).`,
      type: "invalid_request_error",
      param: null,
      code: "origin_not_allowed",
    },
  });
  res.writeHead(403, {
    "x-request-id": requestId,
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
  });
  res.end(body);
}
