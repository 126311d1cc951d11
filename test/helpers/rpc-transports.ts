import type { Transport } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

/**
 * The three protocols the ingress port serves RPCs over, as connect-node transports to `url()`
 * (read when a transport is made: a test's gateway starts in its beforeAll), each sending every
 * message gzipped, however short, when `gzip` is true.
 */
export function rpcProtocols(url: () => string): Array<[string, (gzip: boolean) => Transport]> {
  const sending = (gzip: boolean) =>
    gzip ? { sendCompression: compressionGzip, compressMinBytes: 0 } : {};
  return [
    [
      "Connect",
      (gzip) => createConnectTransport({ baseUrl: url(), httpVersion: "2", ...sending(gzip) }),
    ],
    ["gRPC", (gzip) => createGrpcTransport({ baseUrl: url(), ...sending(gzip) })],
    [
      "gRPC-Web",
      (gzip) => createGrpcWebTransport({ baseUrl: url(), httpVersion: "1.1", ...sending(gzip) }),
    ],
  ];
}
