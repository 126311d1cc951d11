import http2 from "node:http2";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";
import { universalResponseToNodeResponse } from "@connectrpc/connect-node";

// gRPC's retry design (gRFC A6) lets a client retry a call only while the server has sent it
// nothing but the call's end: an error as a Trailers-Only answer, one HEADERS frame that ends the
// stream and carries the status. Response headers sent apart from the status commit the call,
// and a retry policy (grpc-js, grpc-go, grpc-java, grpc-dotnet) then never retries it, whatever
// its status or `grpc-retry-pushback-ms` say. connect-node always sends them apart: Node's
// HTTP/2 compatibility response waits for trailers once it has sent its headers. So a gRPC call
// that ends before its first message is answered here, on the HTTP/2 stream itself, as grpc-go
// answers it.

type NodeResponse = Parameters<typeof universalResponseToNodeResponse>[1];

/**
 * Writes connect-node's answer to the Node response, as universalResponseToNodeResponse does,
 * except that a gRPC answer on HTTP/2 that ends without a message goes as Trailers-Only. One
 * refused before its request body was read to the end goes the usual way, whose end waits for
 * the rest of the body (refused-body.ts, endAfterBody).
 */
export async function sendAnswer(
  answer: UniversalServerResponse,
  req: { readonly complete: boolean },
  res: NodeResponse,
): Promise<void> {
  const it = answer.body?.[Symbol.asyncIterator]();
  if (
    it === undefined ||
    answer.trailer === undefined ||
    !(res instanceof http2.Http2ServerResponse) ||
    !isGrpc(answer.header?.get("content-type"))
  ) {
    return universalResponseToNodeResponse(answer, res);
  }
  const trailer = answer.trailer;
  // The first read runs the handler until its first message or its end, as connect-node's does.
  const firstRead = it.next();
  const first = await firstRead.catch(() => undefined);
  const stream = res.stream;
  if (first?.done !== true || !req.complete || stream.headersSent || stream.destroyed) {
    // connect-node reads the trailer once the body has ended, when the status is in it.
    return universalResponseToNodeResponse(
      {
        ...answer,
        body: replayed(firstRead, it),
        get trailer() {
          respellMessage(trailer);
          return trailer;
        },
      },
      res,
    );
  }
  respellMessage(trailer);
  const headers: http2.OutgoingHttpHeaders = { ...res.getHeaders() };
  answer.header?.forEach((value, key) => {
    headers[key] = value;
  });
  trailer.forEach((value, key) => {
    headers[key] = value;
  });
  headers[http2.constants.HTTP2_HEADER_STATUS] = answer.status;
  stream.respond(headers, { endStream: true });
}

/**
 * `grpc-message` as gRPC spells it: percent-encoded are only the bytes outside printable ASCII,
 * and "%". connect-node spells it with encodeURIComponent, which also encodes ":", ";", ",",
 * "/", "?" and the like; grpc-js decodes with decodeURI, which leaves those encoded, so its
 * users read "unavailable (503)%3A …". Decoding connect-node's spelling and encoding again is the
 * same message for every decoder (and the same spelling, done twice).
 */
function respellMessage(trailer: Headers): void {
  const message = trailer.get("grpc-message");
  if (message === null) return;
  let text: string;
  try {
    text = decodeURIComponent(message);
  } catch {
    return; // not connect-node's spelling: left as it is
  }
  let spelled = "";
  for (const byte of Buffer.from(text, "utf8")) {
    spelled +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  trailer.set("grpc-message", spelled);
}

/** gRPC's content types (application/grpc, application/grpc+proto), not gRPC-Web's. */
function isGrpc(contentType: string | null | undefined): boolean {
  return (
    contentType === "application/grpc" || contentType?.startsWith("application/grpc+") === true
  );
}

/**
 * `it` again from its start, its first read (`firstRead`) already taken. Its throw and return
 * are passed on: connect-node ends the handler's body with them when a write fails.
 */
function replayed(
  firstRead: Promise<IteratorResult<Uint8Array>>,
  it: AsyncIterator<Uint8Array>,
): AsyncIterable<Uint8Array> {
  let pending: Promise<IteratorResult<Uint8Array>> | undefined = firstRead;
  const again: AsyncIterator<Uint8Array> = {
    next() {
      const read = pending ?? it.next();
      pending = undefined;
      return read;
    },
  };
  if (it.throw) again.throw = it.throw.bind(it);
  if (it.return) again.return = it.return.bind(it);
  return { [Symbol.asyncIterator]: () => again };
}
