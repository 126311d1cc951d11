// The subset of the Connect protocol (https://connectrpc.com/docs/protocol) the fabric's own hops
// speak: binary messages, no compression, POST. Enough for a lean client and server to
// interoperate with every other Connect client and server, which handle the rest.

import type { IncomingHttpHeaders } from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";

export const STREAM_CONTENT_TYPE = "application/connect+proto";
export const UNARY_CONTENT_TYPE = "application/proto";
export const PROTOCOL_VERSION = "1";
/** The flag of the envelope that ends a stream: JSON with the error and trailers. */
export const END_STREAM_FLAG = 0b10;
const COMPRESSED_FLAG = 0b01;

/** One enveloped message: a flags byte, a 4-byte big-endian length, the bytes. */
export function envelope(flags: number, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + data.byteLength);
  out[0] = flags;
  out.writeUInt32BE(data.byteLength, 1);
  out.set(data, 5);
  return out;
}

/**
 * A message's headers as name, value, name, value…, pseudo-headers left out. Node hands headers
 * over in a dictionary-mode object (its table alone ~250–450 bytes, plus the pseudo-headers'
 * strings); a stream held open keeps these pairs instead, for the Headers someone may still ask
 * for, in an array of exactly their size.
 */
export function headerPairs(raw: IncomingHttpHeaders): string[] {
  let n = 0;
  for (const k in raw) {
    const v = raw[k];
    if (k.charCodeAt(0) !== 0x3a && v !== undefined) n += Array.isArray(v) ? 2 * v.length : 2;
  }
  const pairs = new Array<string>(n);
  let i = 0;
  for (const k in raw) {
    const v = raw[k];
    if (k.charCodeAt(0) === 0x3a || v === undefined) continue; // ':'
    for (const x of Array.isArray(v) ? v : [v]) {
      pairs[i++] = k;
      pairs[i++] = x;
    }
  }
  return pairs;
}

/** Headers from pairs made by headerPairs. */
export function headersOfPairs(pairs: readonly string[]): Headers {
  const h = new Headers();
  for (let i = 0; i < pairs.length; i += 2) h.append(pairs[i] as string, pairs[i + 1] as string);
  return h;
}

/** Headers from a message's headers as node gives them, pseudo-headers left out. */
export function headersOf(raw: IncomingHttpHeaders): Headers {
  return headersOfPairs(headerPairs(raw));
}

export interface Envelope {
  flags: number;
  data: Buffer;
}

/**
 * Splits a byte stream into envelopes as the chunks arrive, synchronously: a chunk that holds
 * several envelopes yields them all at once, an envelope split over chunks waits for the rest.
 */
export class EnvelopeReader {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;

  /** Adds a chunk and returns the envelopes it completed (an empty array for none). */
  push(chunk: Buffer): Envelope[] {
    let data: Buffer;
    if (this.bufferedBytes === 0) {
      data = chunk;
    } else {
      this.buffered.push(chunk);
      data = Buffer.concat(this.buffered, this.bufferedBytes + chunk.length);
      this.buffered = [];
      this.bufferedBytes = 0;
    }
    const out: Envelope[] = [];
    let at = 0;
    while (data.length - at >= 5) {
      const flags = data[at] as number;
      const length = data.readUInt32BE(at + 1);
      if (data.length - at - 5 < length) break;
      if (flags & COMPRESSED_FLAG) {
        throw new ConnectError("protocol error: compressed message not expected", Code.Internal);
      }
      out.push({ flags, data: data.subarray(at + 5, at + 5 + length) });
      at += 5 + length;
    }
    if (at < data.length) {
      const rest = data.subarray(at);
      this.buffered.push(rest);
      this.bufferedBytes = rest.length;
    }
    return out;
  }

  /** Bytes of an incomplete envelope still waiting for the rest. */
  get pending(): number {
    return this.bufferedBytes;
  }
}
