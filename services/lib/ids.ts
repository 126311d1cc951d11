import { randomUUID } from "node:crypto";

/**
 * A random (v4) UUID as one flat string. node's randomUUID() builds it from ~30 concatenated
 * pieces and hands that rope over as is: ~480 bytes of heap, against ~56 for the same 36
 * characters flat. A request's ids live as long as the request (minutes, for a held stream) in
 * its reservation, response headers and SSE framing.
 */
export function newUuid(): string {
  return Buffer.from(randomUUID(), "latin1").toString("latin1");
}

/** The longest client-sent request id kept; a longer one is replaced (see requestIdOf). */
export const MAX_REQUEST_ID_LENGTH = 128;

/**
 * The request's id: the client's `x-request-id` when it is a plausible id, else a new one. A
 * client's id goes into every log line of the request and back in headers, so one of kilobytes
 * (headers may hold 16 KB) would multiply the logs' volume.
 */
export function requestIdOf(sent: string | null | undefined): string {
  if (sent === undefined || sent === null || sent === "" || sent.length > MAX_REQUEST_ID_LENGTH) {
    return newUuid();
  }
  return sent;
}
