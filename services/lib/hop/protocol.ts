// The subset of the Connect protocol (https://connectrpc.com/docs/protocol) the fabric's own hops
// speak: binary messages, no compression, POST. Enough for a lean client and server to
// interoperate with every other Connect client and server, which handle the rest.

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
