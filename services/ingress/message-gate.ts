import { isUtf8 } from "node:buffer";
import { promisify } from "node:util";
import { brotliDecompress, gunzip } from "node:zlib";
import { type DescMessage, fromBinary, ScalarType } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { UniversalHandler, UniversalHandlerFn } from "@connectrpc/connect/protocol";
import { invalidUtf8Offset } from "../lib/utf8.js";
import { FRAME_PREFIX_BYTES } from "./grpc-web-text.js";

// connect-node answers every failed parse of a binary message with INTERNAL ("parse binary: …";
// a 500 on Connect), so a client's malformed message, or one whose proto3 string fields are not
// UTF-8 (which protobuf-es refuses), reads as the gateway's fault. The gate reads a call's request
// message before connect-node does and refuses such a message with INVALID_ARGUMENT (as
// connect-go does), naming the field whose string is not UTF-8, as a Connect JSON body that is
// not UTF-8 is refused (main.ts). Reading the body fails, and connect-node answers that in the
// call's own protocol, as for a body announced too large (rpc-edge.ts). Every method served
// there (GatewayService's, the health service's) takes one request message, which connect-node
// reads whole before the handler starts, so holding it back here delays nothing. JSON bodies are
// not the gate's: connect-node reads them through main.ts's strict decoder.

/** Binary content types whose body is enveloped messages, and the header naming their compression. */
const ENVELOPED: ReadonlyMap<string, string> = new Map([
  ["application/grpc", "grpc-encoding"],
  ["application/grpc+proto", "grpc-encoding"],
  ["application/grpc-web", "grpc-encoding"],
  ["application/grpc-web+proto", "grpc-encoding"],
  ["application/connect+proto", "connect-content-encoding"],
]);
/** Connect's unary binary content type: the body is the message, compressed per content-encoding. */
const UNARY = "application/proto";

const decompressors: Record<
  string,
  (data: Uint8Array, o: { maxOutputLength: number }) => Promise<Buffer>
> = {
  gzip: promisify(gunzip),
  br: promisify(brotliDecompress),
};

/**
 * `handler`, its binary request message checked first. `maxMessageBytes` is connect-node's
 * readMaxBytes: a body larger than one such message goes on unchecked, for connect-node to
 * refuse as it does.
 */
export function messageChecked(
  handler: UniversalHandler,
  maxMessageBytes: number,
): UniversalHandlerFn {
  const input = handler.method.input;
  return (req) => {
    const type = (req.header.get("content-type") ?? "").split(";", 1)[0]?.trim().toLowerCase();
    const envelope = ENVELOPED.get(type ?? "");
    if ((envelope === undefined && type !== UNARY) || !isByteStream(req.body)) return handler(req);
    const encoding = req.header.get(envelope ?? "content-encoding") || "identity";
    const check = async (body: Buffer) => {
      const message = envelope === undefined ? unaryMessage(body, encoding) : firstFrame(body);
      if (message === undefined) return;
      let data: Uint8Array = message.data;
      if (message.compressed) {
        if (encoding === "identity") {
          // connect-node says INTERNAL here, though its own docs promise INVALID_ARGUMENT.
          throw new ConnectError(
            `the request message is flagged compressed, but the call names no ${envelope ?? "content-encoding"}`,
            Code.InvalidArgument,
          );
        }
        // An encoding connect-node does not take, or data that does not inflate, is its to refuse.
        const decompress = decompressors[encoding];
        if (decompress === undefined) return;
        try {
          data = await decompress(data, { maxOutputLength: maxMessageBytes });
        } catch {
          return;
        }
      }
      const problem = requestMessageProblem(input, data);
      if (problem !== undefined) throw problem;
    };
    const limit = maxMessageBytes + (envelope === undefined ? 0 : FRAME_PREFIX_BYTES);
    return handler({ ...req, body: checkedBody(req.body, limit, check) });
  };
}

interface RequestMessage {
  data: Buffer;
  compressed: boolean;
}

function isByteStream(body: unknown): body is AsyncIterable<Uint8Array> {
  return typeof body === "object" && body !== null && Symbol.asyncIterator in body;
}

function unaryMessage(body: Buffer, encoding: string): RequestMessage {
  return { data: body, compressed: encoding !== "identity" };
}

/** The first message of an enveloped body, when the body holds it whole. */
function firstFrame(body: Buffer): RequestMessage | undefined {
  if (body.length < FRAME_PREFIX_BYTES) return undefined;
  const length = body.readUInt32BE(1);
  if (FRAME_PREFIX_BYTES + length > body.length) return undefined;
  return {
    data: body.subarray(FRAME_PREFIX_BYTES, FRAME_PREFIX_BYTES + length),
    compressed: ((body[0] as number) & 1) === 1,
  };
}

/**
 * The body, read whole and checked before any of it goes on; a body over `limit` goes on as it
 * comes, unchecked.
 */
async function* checkedBody(
  body: AsyncIterable<Uint8Array>,
  limit: number,
  check: (body: Buffer) => Promise<void>,
): AsyncGenerator<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let size = 0;
  for (;;) {
    const read = await it.next();
    if (read.done === true) break;
    chunks.push(bufferOf(read.value));
    size += read.value.byteLength;
    if (size > limit) {
      yield* chunks;
      for (let rest = await it.next(); rest.done !== true; rest = await it.next()) {
        yield rest.value;
      }
      return;
    }
  }
  const whole = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
  await check(whole);
  if (whole.length > 0) yield whole;
}

function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** protobuf-es's limit on nested messages: the walk leaves a deeper one to its parse. */
const MAX_DEPTH = 100;

/**
 * What is wrong with `bytes` as a message of type `desc`, as INVALID_ARGUMENT: the first string
 * field that is not UTF-8, named (e.g. `params.messages[0].content[1].text`), or protobuf-es's
 * reason for not parsing it. Undefined when protobuf-es will parse it.
 */
export function requestMessageProblem(
  desc: DescMessage,
  bytes: Uint8Array,
): ConnectError | undefined {
  const found = findInvalid(desc, bytes, 0, bytes.length, 0);
  if (found === undefined) return undefined;
  if (found !== DOUBT) {
    return new ConnectError(
      `${found.path} is not valid UTF-8 (an invalid byte sequence starts at byte offset ${found.offset} of the field); proto3 string fields must be UTF-8`,
      Code.InvalidArgument,
    );
  }
  // The walk vouches for no more than it reads; the parse is the judge of the rest.
  try {
    fromBinary(desc, bytes);
    return undefined;
  } catch (err) {
    // protobuf-es's reasons ("premature EOF", "illegal tag: …") quote no bytes of the message.
    return new ConnectError(
      `the request message is not valid protobuf: ${(err as Error).message}`,
      Code.InvalidArgument,
    );
  }
}

/** A wire the walk cannot vouch for: protobuf-es's parse may refuse it. */
const DOUBT = Symbol("doubt");

/** The wire type protobuf-es reads a field from; -1 for none the walk vouches for (maps). */
const NONE = -1;

/** What the walk knows of a field: where it reads strings and messages, and its wire type. */
interface Watched {
  name: string;
  repeated: boolean;
  /** Undefined for any other field than a message. */
  message: DescMessage | undefined;
  string: boolean;
  /** The wire type protobuf-es reads the field's values from (then 2 for a packed list too). */
  wireType: number;
  packed: boolean;
}

const watchedFields = new WeakMap<DescMessage, ReadonlyMap<number, Watched>>();

function watchedOf(desc: DescMessage): ReadonlyMap<number, Watched> {
  let watched = watchedFields.get(desc);
  if (watched !== undefined) return watched;
  const fields = new Map<number, Watched>();
  for (const f of desc.fields) {
    const repeated = f.fieldKind === "list";
    const message =
      f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")
        ? f.message
        : undefined;
    const scalar =
      f.fieldKind === "scalar" || (f.fieldKind === "list" && f.listKind === "scalar")
        ? f.scalar
        : f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum")
          ? ScalarType.INT32
          : undefined;
    // Groups (delimited messages) do not occur in these protos; the walk vouches for none.
    const delimited =
      (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")) &&
      f.delimitedEncoding;
    const wireType =
      message !== undefined
        ? delimited
          ? NONE
          : 2
        : scalar === undefined
          ? NONE
          : scalarWireType(scalar);
    fields.set(f.number, {
      name: f.name,
      repeated,
      message,
      string: scalar === ScalarType.STRING,
      wireType,
      packed: repeated && message === undefined && wireType !== 2,
    });
  }
  watched = fields;
  watchedFields.set(desc, watched);
  return watched;
}

/** The wire type protobuf-es reads a scalar of `type` from. */
function scalarWireType(type: ScalarType): number {
  switch (type) {
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return 2;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 1;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return 5;
    default:
      return 0;
  }
}

/**
 * The wire walk, by hand rather than through a reader object: it runs on every binary call, and
 * reads no more than tags and lengths outside the strings it checks, in a few percent of the time
 * protobuf-es's parse of the same message takes (~0.5 µs for a short chat request against
 * ~10 µs). DOUBT where the wire is not what protobuf-es reads without fail (cut short, a field of
 * another wire type than its own, a group, too deep), so that only such a message is parsed
 * twice.
 */
function findInvalid(
  desc: DescMessage,
  b: Uint8Array,
  start: number,
  end: number,
  depth: number,
): { path: string; offset: number } | typeof DOUBT | undefined {
  if (depth > MAX_DEPTH) return DOUBT;
  const watched = watchedOf(desc);
  let pos = start;
  while (pos < end) {
    const tagAt = pos;
    const tag = varint(b, pos, end);
    if (tag < 8) return DOUBT;
    pos = next;
    const wireType = tag & 7;
    const field = watched.get(tag >>> 3);
    if (wireType !== 2) {
      if (field !== undefined && field.wireType !== wireType) return DOUBT;
      pos = skipped(b, pos, end, wireType);
      if (pos < 0) return DOUBT;
      continue;
    }
    const length = varint(b, pos, end);
    if (length < 0 || next + length > end) return DOUBT;
    const from = next;
    pos = from + length;
    if (field === undefined) continue;
    let found: { path: string; offset: number } | typeof DOUBT | undefined;
    if (field.message !== undefined) {
      found = findInvalid(field.message, b, from, pos, depth + 1);
      if (found !== undefined && found !== DOUBT) found.path = `.${found.path}`;
    } else if (field.packed) {
      if (!isPacked(b, from, pos, field.wireType)) return DOUBT;
    } else if (field.wireType !== 2) {
      return DOUBT;
    } else if (field.string && !isUtf8Span(b, from, pos)) {
      found = { path: "", offset: invalidUtf8Offset(b.subarray(from, pos)) };
    }
    if (found === undefined) continue;
    if (found === DOUBT) return DOUBT;
    const index = field.repeated ? `[${occurrences(b, start, tagAt, tag)}]` : "";
    found.path = `${field.name}${index}${found.path}`;
    return found;
  }
  return undefined;
}

/** Where the last varint read ended (varint's second result, kept here to spare an allocation). */
let next = 0;

/** The varint at `pos` (up to 32 bits, as tags and lengths are), or -1 if malformed. */
function varint(b: Uint8Array, pos: number, end: number): number {
  if (pos >= end) return -1;
  let byte = b[pos] as number;
  if (byte < 0x80) {
    // One byte: most tags, and the length of a string under 128 bytes.
    next = pos + 1;
    return byte;
  }
  let value = 0;
  let scale = 1;
  for (let n = 0; n < 5 && pos < end; n++) {
    byte = b[pos++] as number;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      next = pos;
      return value > 0xffffffff ? -1 : value;
    }
    scale *= 128;
  }
  return -1;
}

/** Where a field of `wireType` (not length-delimited) that starts at `pos` ends; -1 if it cannot. */
function skipped(b: Uint8Array, pos: number, end: number, wireType: number): number {
  switch (wireType) {
    case 0: {
      // protobuf-es reads a varint of at most ten bytes.
      const last = Math.min(end, pos + 10);
      while (pos < last) if ((b[pos++] as number) < 0x80) return pos;
      return -1;
    }
    case 1:
      return pos + 8 <= end ? pos + 8 : -1;
    case 5:
      return pos + 4 <= end ? pos + 4 : -1;
    default:
      // Groups (proto2's) do not occur in these messages: the parse that follows judges them.
      return -1;
  }
}

/** Whether b[from, to) is a packed list of values of `wireType`, whole. */
function isPacked(b: Uint8Array, from: number, to: number, wireType: number): boolean {
  if (wireType === 1) return (to - from) % 8 === 0;
  if (wireType === 5) return (to - from) % 4 === 0;
  if (wireType !== 0) return false;
  for (let pos = from; pos < to; ) {
    pos = skipped(b, pos, to, 0);
    if (pos < 0) return false;
  }
  return true;
}

/** Whether b[from, to) is UTF-8; short ASCII, the common case, without leaving JavaScript. */
function isUtf8Span(b: Uint8Array, from: number, to: number): boolean {
  if (to - from <= 64) {
    let i = from;
    while (i < to && (b[i] as number) < 0x80) i++;
    if (i === to) return true;
  }
  return isUtf8(b.subarray(from, to));
}

/** How many fields with `tag` come before `at` in the message b[start, …): a list item's index. */
function occurrences(b: Uint8Array, start: number, at: number, tag: number): number {
  let count = 0;
  let pos = start;
  while (pos < at) {
    const t = varint(b, pos, at);
    pos = next;
    if (t === tag) count++;
    if ((t & 7) === 2) {
      const length = varint(b, pos, at);
      pos = next + length;
    } else {
      pos = skipped(b, pos, at, t & 7);
    }
  }
  return count;
}
