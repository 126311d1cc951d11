import { Code, ConnectError } from "@connectrpc/connect";
import type {
  UniversalHandlerFn,
  UniversalServerRequest,
  UniversalServerResponse,
} from "@connectrpc/connect/protocol";

// gRPC-Web's text mode, which Google's grpc-web library uses by default (`mode=grpcwebtext`):
// the body of a binary gRPC-Web call, base64-encoded both ways. connect-node serves binary
// gRPC-Web and answers text mode with 415, so a text call is translated into a binary one in
// front of the same handler, as Envoy's grpc_web filter does; nothing of the call is served twice.

const TEXT_CONTENT_TYPE = /^application\/grpc-web-text(?:\+proto)?$/i;
const BINARY_CONTENT_TYPE = "application/grpc-web+proto";
/** What the answer to a text call is, whichever of the two forms asked (Envoy answers so too). */
const TEXT_RESPONSE_CONTENT_TYPE = "application/grpc-web-text+proto";
/** The 5 bytes that open a message's frame (flags and length), in gRPC, gRPC-Web and Connect's streams. */
export const FRAME_PREFIX_BYTES = 5;

/** Whether a request's content type is gRPC-Web's text mode (protobuf; text+json is not served). */
export function isGrpcWebText(contentType: string | undefined): boolean {
  return contentType !== undefined && TEXT_CONTENT_TYPE.test(contentType.trim());
}

/** How many base64 characters encode `bytes` bytes, padding included. */
export function base64Length(bytes: number): number {
  return Math.ceil(bytes / 3) * 4;
}

/**
 * The largest text body a call may send: one message of `maxMessageBytes` (connect-node's
 * readMaxBytes, which holds the decoded message to the limit) in its frame, encoded. Counting
 * the encoded bytes too keeps a client from streaming more than that, whatever it decodes to.
 */
export function maxTextBodyBytes(maxMessageBytes: number): number {
  return base64Length(maxMessageBytes + FRAME_PREFIX_BYTES);
}

/**
 * Serves a text-mode call with `binary`, the handler of the same method for binary gRPC-Web:
 * the request's body is decoded on its way in, each piece of the answer encoded on its way out.
 */
export function textModeCall(
  binary: UniversalHandlerFn,
  maxMessageBytes: number,
): UniversalHandlerFn {
  return async (req) => {
    const header = new Headers(req.header);
    header.set("content-type", BINARY_CONTENT_TYPE);
    // The decoded body is shorter; connect-node reads frames, not the declared length.
    header.delete("content-length");
    const res = await binary({
      ...req,
      header,
      body: decodeBase64Body(bodyOf(req), maxTextBodyBytes(maxMessageBytes)),
    });
    return encodedAnswer(res);
  };
}

function bodyOf(req: UniversalServerRequest): AsyncIterable<Uint8Array> {
  const body = req.body;
  if (typeof body === "object" && body !== null && Symbol.asyncIterator in body) {
    return body as AsyncIterable<Uint8Array>;
  }
  // connect-node hands every request over as a byte stream; a parsed body never comes here.
  throw new ConnectError("a gRPC-Web text request needs its raw body", Code.Internal);
}

/** The binary answer as text mode's: its content type, and every piece of its body in base64. */
function encodedAnswer(res: UniversalServerResponse): UniversalServerResponse {
  const header = res.header === undefined ? undefined : new Headers(res.header);
  // Only a gRPC-Web answer changes; a 405 or 415 from connect-node stays what it is.
  if (header?.get("content-type")?.startsWith("application/grpc-web")) {
    header.set("content-type", TEXT_RESPONSE_CONTENT_TYPE);
  }
  const answer: UniversalServerResponse = { ...res };
  if (header !== undefined) answer.header = header;
  if (res.body !== undefined) answer.body = encodeBase64Body(res.body);
  return answer;
}

/**
 * Each piece of an answer (connect-node writes a message's frame, and the trailer frame, as one
 * piece each) as padded base64 of its own, sent as it comes, so a stream still streams. A client
 * decodes whole 4-character groups as they arrive, and padding ends only its own group.
 */
export async function* encodeBase64Body(
  body: AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  for await (const piece of body) {
    yield Buffer.from(bufferOf(piece).toString("base64"), "latin1");
  }
}

/** Anything but the base64 alphabet and its padding: whitespace too, as Envoy refuses it. */
const NOT_BASE64 = /[^A-Za-z0-9+/=]/;

/**
 * A text body's bytes, decoded as they arrive. A piece of the body may end inside a 4-character
 * group (a client or a proxy cuts where it likes): the rest of that group waits for the next
 * piece. Padding may close any group, so a body encoded in several padded pieces is taken as
 * grpc-web's own decoder takes one; a body that ends inside a group, or holds anything else,
 * is refused with INVALID_ARGUMENT, as one over `maxEncodedBytes` is with RESOURCE_EXHAUSTED.
 */
export async function* decodeBase64Body(
  body: AsyncIterable<Uint8Array>,
  maxEncodedBytes: number,
): AsyncGenerator<Uint8Array> {
  /** Characters of a group that the next piece completes (at most 3). */
  let carry = "";
  /** Characters decoded before `carry`: where the next group starts in the body. */
  let offset = 0;
  for await (const piece of body) {
    if (offset + carry.length + piece.byteLength > maxEncodedBytes) {
      throw new ConnectError(
        `the request body is longer than ${maxEncodedBytes} base64 characters, the most that one message within the limit of this gateway takes`,
        Code.ResourceExhausted,
      );
    }
    const text = carry + bufferOf(piece).toString("latin1");
    const whole = text.length - (text.length % 4);
    carry = text.slice(whole);
    if (whole === 0) continue;
    const decoded = decodeGroups(whole === text.length ? text : text.slice(0, whole), offset);
    offset += whole;
    if (decoded.length > 0) yield decoded;
  }
  if (carry !== "") {
    throw invalidBase64(`it ends inside a 4-character group, at character ${offset}`);
  }
}

/**
 * Decodes whole 4-character groups, strictly: Buffer's own base64 decoder skips characters
 * outside the alphabet and stops at padding, which would let a broken body through as some
 * other message. `offset`: where `text` starts in the body, for the error's message.
 */
function decodeGroups(text: string, offset: number): Buffer {
  const bad = NOT_BASE64.exec(text);
  if (bad) throw invalidBase64(`character ${offset + bad.index} is not base64`);
  let pad = text.indexOf("=");
  if (pad === -1) return Buffer.from(text, "base64");
  // Padding only fills a group's last place ("xyz=") or its last two ("xy=="); the decoder
  // is given each run of groups up to one that is padded on its own.
  const runs: Buffer[] = [];
  let start = 0;
  while (pad !== -1) {
    const place = pad % 4;
    if (place < 2 || (place === 2 && text[pad + 1] !== "=")) {
      throw invalidBase64(`the padding at character ${offset + pad} is misplaced`);
    }
    const end = pad - place + 4;
    runs.push(Buffer.from(text.slice(start, end), "base64"));
    start = end;
    pad = text.indexOf("=", start);
  }
  if (start < text.length) runs.push(Buffer.from(text.slice(start), "base64"));
  return Buffer.concat(runs);
}

function invalidBase64(why: string): ConnectError {
  return new ConnectError(
    `the gRPC-Web text request body is not valid base64: ${why}`,
    Code.InvalidArgument,
  );
}

function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
