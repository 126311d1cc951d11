import type http from "node:http";
import type http2 from "node:http2";
import type { JsonReadOptions } from "@bufbuild/protobuf";
import {
  type Client,
  Code,
  ConnectError,
  type ConnectRouter,
  type Transport,
} from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, connectNodeAdapter } from "@connectrpc/connect-node";
import type { Registry } from "prom-client";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { GatewayService } from "../../gen/switchyard/gateway/v1/gateway_pb.js";
import { RouterService } from "../../gen/switchyard/router/v1/router_pb.js";
import type { Config } from "../lib/config/types.js";
import type { DualHandler } from "../lib/http/dual-server.js";
import { requestIdOf } from "../lib/ids.js";
import { type Logger, requestLineLogger } from "../lib/logger.js";
import { MAX_TIMER_MS } from "../lib/timers.js";
import { asClient } from "../lib/transport-client.js";
import { invalidUtf8Offset } from "../lib/utf8.js";
import { authenticate, keyIndexOf, presentedKey } from "./auth.js";
import { declaredLength } from "./body.js";
import { createCors } from "./cors.js";
import { createIngressMetrics } from "./exchange.js";
import { createGatewayService } from "./gateway-service.js";
import { createHealthService } from "./health-service.js";
import type { Clock, Limiter } from "./limits/index.js";
import { answerAfterBody, endAfterBody, keepBodyOnReturn } from "./refused-body.js";
import { createRestHandler, headerValue } from "./rest.js";
import { createRpcEdge, rpcBodyTooLarge } from "./rpc-edge.js";

export interface IngressBuild {
  /** Serves REST and GatewayService (gRPC, Connect, gRPC-Web) from one handler. */
  handler: DualHandler;
  router: Client<typeof RouterService>;
  /**
   * Called as the drain time runs out, before the connections still open are cut: answers every
   * request still open (503 / UNAVAILABLE: the gateway is shutting down) and resolves once they
   * have been answered, or after a few seconds at most. `routerCut`: the router in this process
   * was just cut (RouterBuild.cutting), and answers the calls it holds first, with the attempts
   * each made, which only it knows.
   */
  cutting(routerCut: boolean): Promise<void>;
  /**
   * After the server closed (its drain time over, the connections still open cut): resolves
   * once every request cut has ended and logged its line, or after `ms`.
   */
  settled(ms: number): Promise<void>;
}

/** The ingress: public APIs, auth, validation, SSE framing. Never holds upstream keys. */
export function buildIngress(deps: {
  config: Config;
  logger: Logger;
  registry: Registry;
  /** The router: a Transport to a router elsewhere, or a ready client (in process). */
  router: Transport | Client<typeof RouterService>;
  /** Tenant limits (see limits/index.ts createLimiter); the caller closes it. */
  limiter: Limiter;
  clock?: Clock;
  renderMetrics(): Promise<{ contentType: string; body: string }>;
  ready(): Promise<boolean>;
}): IngressBuild {
  const router = asClient(RouterService, deps.router);
  const metrics = createIngressMetrics(deps.registry);
  // Every key's hash is indexed once, now, rather than on the first request.
  keyIndexOf(deps.config);
  const base = {
    config: deps.config,
    router,
    logger: deps.logger,
    requestLog: requestLineLogger(deps.logger),
    registry: deps.registry,
    metrics,
    limiter: deps.limiter,
    clock: deps.clock ?? Date.now,
  };
  const rest = createRestHandler({ ...base, renderMetrics: deps.renderMetrics, ready: deps.ready });
  const gateway = createGatewayService(base);
  const health = createHealthService(deps.ready);
  const rpcOptions = {
    routes: (r: ConnectRouter) => r.service(GatewayService, gateway).service(Health, health),
    // The body limit REST has, on every protocol: connect-node checks each message (and its
    // size once decompressed) against it, and answers RESOURCE_EXHAUSTED above it.
    readMaxBytes: deps.config.server.max_body_bytes,
    acceptCompression: [compressionGzip, compressionBrotli],
    jsonOptions: STRICT_UTF8_JSON,
  };
  const rpc = connectNodeAdapter({
    ...rpcOptions,
    // connect-node types the response without `write`; it is the same Node response object.
    fallback: (req, res) => void rest(req, res as Parameters<typeof rest>[1]),
  });
  // Calls connect-node cannot take as they come (gRPC-Web's text mode), by the same handlers.
  const rpcEdge = createRpcEdge({ ...rpcOptions, logger: deps.logger });
  // Only the RPC services' paths need connect-node, which parses every request's URL to route
  // it; the REST routes go straight to their handler. The health service's calls go the same
  // way as GatewayService's (rpc-edge.ts), so that what a client gets wrong in one (a string
  // that is not UTF-8, a body too large) is refused as its mistake there too.
  const rpcPrefixes = [`/${GatewayService.typeName}/`, `/${Health.typeName}/`];
  const isRpc = (url: string | undefined) =>
    url !== undefined && rpcPrefixes.some((prefix) => url.startsWith(prefix));
  const cors = createCors(deps.config.server.cors_origins);
  const maxBody = deps.config.server.max_body_bytes;
  const handler: DualHandler = (req, res) => {
    if (req.httpVersionMajor === 2) {
      endAfterBody(req as http2.Http2ServerRequest, res as http2.Http2ServerResponse);
    }
    if (cors(req, res)) return; // a preflight answered, or a page refused
    if (isRpc(req.url)) {
      // The id goes on the answer here, so that the errors connect-node gives before the
      // service sees the call (a message over the limit, an undecodable body, a bad deadline,
      // a content type it does not serve) carry it too; the service reads the same id from the
      // request. The health service's answers carry it too, as every answer does.
      const sent = req.headers["x-request-id"];
      const requestId = requestIdOf(typeof sent === "string" ? sent : undefined);
      req.headers["x-request-id"] = requestId;
      res.setHeader("x-request-id", requestId);
      capDeadline(req.headers);
      // A request refused before its body was read (over readMaxBytes, undecodable) leaves the
      // rest unread, and Node then stops reading the connection: on HTTP/1.1 the next request
      // on it would never be answered. Such an answer closes the connection instead, once the
      // rest of the body has come (answerAfterBody).
      if (req.httpVersionMajor === 1) {
        keepBodyOnReturn(req as http.IncomingMessage);
        closeIfLeftUnread(req as http.IncomingMessage, res as http.ServerResponse);
      }
      if (!rpcEdge(req, res)) rpc(req, res);
    } else void rest(req, res);
  };
  // A body announced too large is refused from its headers (REST's readBody, rpcEdge): a client
  // that asks `Expect: 100-continue` is not told to send it, so it never uploads it. So is a REST
  // request's with a key the gateway refuses: every REST route checks the key before it reads
  // the body (GatewayService reads its key from the call, once connect-node has the body).
  handler.continues = (req) => {
    if (isRpc(req.url)) return !rpcBodyTooLarge(req, maxBody);
    const declared = declaredLength(req);
    return (declared === undefined || declared <= maxBody) && keyAccepted(req);
  };
  const keyAccepted = (req: http.IncomingMessage | http2.Http2ServerRequest): boolean => {
    try {
      const key = presentedKey(headerValue(req, "authorization"), headerValue(req, "x-api-key"));
      authenticate(deps.config, key, base.clock());
      return true;
    } catch {
      return false;
    }
  };
  return {
    handler,
    router,
    async cutting(routerCut) {
      const active = metrics.active;
      active.cutting();
      if (routerCut) await active.settled(CUT_ANSWER_WAIT_MS);
      active.cancelAll();
      await active.settled(CUT_ANSWER_WAIT_MS);
    },
    settled: (ms) => metrics.active.settled(ms),
  };
}

/**
 * How long a shutdown's cut waits for the router's answers to the requests it cut, then for its
 * own: each arrives within milliseconds, unless its client does not read (a stream waiting on a
 * full socket), which only the connection's cut then ends.
 */
const CUT_ANSWER_WAIT_MS = 1_000;

/**
 * Marks the answer `Connection: close` if, when its head is written, the request's body has not
 * been read to its end (connect-node reads a whole request before answering it, unless it
 * refuses it), and holds it until the rest of the body has come (answerAfterBody). The client
 * then knows not to send another request on the connection.
 */
function closeIfLeftUnread(req: http.IncomingMessage, res: http.ServerResponse): void {
  const writeHead = res.writeHead;
  res.writeHead = function (this: http.ServerResponse, ...args: unknown[]) {
    if (!req.readableEnded) answerAfterBody(req, this);
    return (writeHead as (...a: unknown[]) => http.ServerResponse).apply(this, args);
  } as typeof res.writeHead;
}

/**
 * Connect's JSON bodies held to UTF-8 as REST's are (body.ts): connect-node decodes them with a
 * default TextDecoder, which turns ill-formed bytes into U+FFFD and so changes what the client
 * sent. connect-node reads `textDecoder` from its JSON options (its JsonSerializationOptions),
 * and answers what this throws as INVALID_ARGUMENT.
 */
const STRICT_UTF8_JSON: Partial<JsonReadOptions> & {
  textDecoder: { decode(b?: Uint8Array): string };
} = {
  textDecoder: {
    decode(bytes = new Uint8Array(0)) {
      const at = invalidUtf8Offset(bytes);
      if (at !== -1) {
        throw new ConnectError(
          `the request body is not valid UTF-8 (an invalid byte sequence starts at byte offset ${at})`,
          Code.InvalidArgument,
        );
      }
      return UTF8.decode(bytes);
    },
  },
};
const UTF8 = new TextDecoder();

const GRPC_TIMEOUT = /^(\d{1,8})([HMS])$/;
const GRPC_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000 };

/**
 * connect-node arms a timer for the deadline a client sends (`connect-timeout-ms`, up to ten
 * digits; `grpc-timeout`, up to eight digits of hours, minutes or seconds), and Node fires a
 * timer longer than MAX_TIMER_MS (about 24.8 days) after 1 ms: a client that allowed a month
 * would be timed out at once. Such a deadline is longer than any routing.timeouts.total_ms
 * (which bounds every call anyway), so it is cut to the longest timer before connect-node reads
 * it. Anything malformed is left for connect-node to refuse.
 */
function capDeadline(headers: Record<string, string | string[] | undefined>): void {
  const connect = headers["connect-timeout-ms"];
  if (typeof connect === "string" && /^\d{10}$/.test(connect) && Number(connect) > MAX_TIMER_MS) {
    headers["connect-timeout-ms"] = String(MAX_TIMER_MS);
  }
  const grpc = headers["grpc-timeout"];
  const m = typeof grpc === "string" ? GRPC_TIMEOUT.exec(grpc) : null;
  if (m && Number(m[1]) * (GRPC_UNIT_MS[m[2] as string] as number) > MAX_TIMER_MS) {
    headers["grpc-timeout"] = `${Math.floor(MAX_TIMER_MS / 1000)}S`;
  }
}
