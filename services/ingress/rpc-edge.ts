import type http from "node:http";
import type http2 from "node:http2";
import { Code, ConnectError, type ConnectRouter, createConnectRouter } from "@connectrpc/connect";
import type { UniversalHandlerFn, UniversalHandlerOptions } from "@connectrpc/connect/protocol";
import {
  universalRequestFromNodeRequest,
  type universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { Logger } from "../lib/logger.js";
import { declaredLength } from "./body.js";
import {
  FRAME_PREFIX_BYTES,
  isGrpcWebText,
  maxTextBodyBytes,
  textModeCall,
} from "./grpc-web-text.js";
import { messageChecked } from "./message-gate.js";
import { sendAnswer } from "./trailers-only.js";

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

export interface RpcEdgeOptions extends Partial<UniversalHandlerOptions> {
  routes(router: ConnectRouter): void;
  /** The largest message a call may send (connect-node's readMaxBytes). */
  readMaxBytes: number;
  logger: Logger;
}

/**
 * RPC calls (GatewayService's and the health service's), served by connect-node's handlers
 * (built from the same routes and options) with what its adapter does not do: a binary request
 * message that is malformed, or whose strings are not UTF-8, is refused with INVALID_ARGUMENT
 * (message-gate.ts), where connect-node's parse says INTERNAL; gRPC-Web's text mode is translated (grpc-web-text.ts); a
 * gRPC error before the first message is answered Trailers-Only, so that clients' retry
 * policies may retry it (trailers-only.ts); and a call that announces a body larger than it may
 * send (rpcBodyTooLarge) is refused without reading a byte of it. connect-node would read on to
 * the first frame's header, and so wait for a body that a client which asked
 * `Expect: 100-continue`, and was not told to go on, does not send. The returned
 * function takes a call to a method it serves and returns true, or leaves any other request
 * (false) to connect-node's adapter.
 */
export function createRpcEdge(options: RpcEdgeOptions): (req: Req, res: Res) => boolean {
  const router = createConnectRouter(options);
  options.routes(router);
  const methods = new Map<string, { name: string; serve: UniversalHandlerFn }>();
  for (const handler of router.handlers) {
    methods.set(handler.requestPath, {
      name: `${handler.service.typeName}/${handler.method.name}`,
      serve: messageChecked(handler, options.readMaxBytes),
    });
  }
  return (req, res) => {
    const method = methods.get(pathOf(req.url));
    // An unknown method is connect-node's to answer (its fallback), as for any protocol.
    if (method === undefined) return false;
    const text = isGrpcWebText(req.headers["content-type"]);
    const tooLarge = rpcBodyTooLarge(req, options.readMaxBytes);
    const call = text ? textModeCall(method.serve, options.readMaxBytes) : method.serve;
    // connect-node types the response without `write`; it is the same Node response object.
    const nodeRes = res as Parameters<typeof universalResponseToNodeResponse>[1];
    const uReq = universalRequestFromNodeRequest(req, nodeRes, undefined, undefined);
    // Reading the body fails at once: connect-node answers that in the call's own protocol.
    if (tooLarge) uReq.body = failingBody(tooLargeError(options.readMaxBytes));
    call(uReq)
      .then((answer) => sendAnswer(answer, req, nodeRes))
      .catch((reason: unknown) => {
        // A client that left: nothing to answer, and its call was cancelled (as connect-node).
        if (ConnectError.from(reason).code === Code.Aborted) return;
        options.logger.error(
          { err: reason, method: method.name },
          "RPC call failed outside its handler",
        );
      });
    return true;
  };
}

/**
 * Whether an RPC request announces (Content-Length) a body larger than one message of
 * `maxMessageBytes` in its frame, base64-encoded in gRPC-Web's text mode. Connect's unary bodies
 * have no frame; connect-node holds them to the limit itself, from the same header.
 */
export function rpcBodyTooLarge(req: Req, maxMessageBytes: number): boolean {
  const declared = declaredLength(req);
  if (declared === undefined) return false;
  const limit = isGrpcWebText(req.headers["content-type"])
    ? maxTextBodyBytes(maxMessageBytes)
    : maxMessageBytes + FRAME_PREFIX_BYTES;
  return declared > limit;
}

function tooLargeError(maxMessageBytes: number): ConnectError {
  return new ConnectError(
    `the request body announced is larger than one message of the ${maxMessageBytes}-byte limit of this gateway`,
    Code.ResourceExhausted,
  );
}

/** A request body whose first read fails with `err`. */
function failingBody(err: ConnectError): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(err) }),
  };
}

function pathOf(url: string | undefined): string {
  return (url ?? "").split("?", 1)[0] ?? "";
}
