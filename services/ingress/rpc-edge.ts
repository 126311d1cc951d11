import type http from "node:http";
import type http2 from "node:http2";
import { Code, ConnectError, type ConnectRouter, createConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalHandlerOptions } from "@connectrpc/connect/protocol";
import {
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { Logger } from "../lib/logger.js";
import { isGrpcWebText, textModeCall } from "./grpc-web-text.js";

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

export interface RpcEdgeOptions extends Partial<UniversalHandlerOptions> {
  routes(router: ConnectRouter): void;
  /** The largest message a call may send (connect-node's readMaxBytes). */
  readMaxBytes: number;
  logger: Logger;
}

/**
 * GatewayService calls that connect-node's adapter cannot serve as they come, served by the same
 * handlers (built from the same routes and options) through a translation: gRPC-Web's text mode
 * (grpc-web-text.ts). The returned function takes such a request and returns true, or leaves
 * every other one (false) to connect-node's adapter.
 */
export function createRpcEdge(options: RpcEdgeOptions): (req: Req, res: Res) => boolean {
  const router = createConnectRouter(options);
  options.routes(router);
  const methods = new Map<string, UniversalHandler>();
  for (const handler of router.handlers) methods.set(handler.requestPath, handler);
  return (req, res) => {
    if (!isGrpcWebText(req.headers["content-type"])) return false;
    const handler = methods.get(pathOf(req.url));
    // An unknown method is connect-node's to answer (its fallback), as for any protocol.
    if (handler === undefined) return false;
    const call = textModeCall(handler, options.readMaxBytes);
    // connect-node types the response without `write`; it is the same Node response object.
    const nodeRes = res as Parameters<typeof universalResponseToNodeResponse>[1];
    call(universalRequestFromNodeRequest(req, nodeRes, undefined, undefined))
      .then((answer) => universalResponseToNodeResponse(answer, nodeRes))
      .catch((reason: unknown) => {
        // A client that left: nothing to answer, and its call was cancelled (as connect-node).
        if (ConnectError.from(reason).code === Code.Aborted) return;
        options.logger.error(
          { err: reason, method: handler.method.name },
          "GatewayService call failed outside its handler",
        );
      });
    return true;
  };
}

function pathOf(url: string | undefined): string {
  return (url ?? "").split("?", 1)[0] ?? "";
}
