// W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` a request arrives
// with, or a new one, continued by every hop with a span id of its own and the same trace id.

import { randomFillSync } from "node:crypto";
import { type RequestContext, RequestContextSchema } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { makeMessage } from "./hop/codec.js";

export interface TraceContext {
  /** 32 lowercase hex digits, not all zero. */
  readonly traceId: string;
  /** This hop's span: 16 lowercase hex digits, not all zero. */
  readonly spanId: string;
  /** Two hex digits; "01" is sampled. */
  readonly flags: string;
}

const SAMPLED = "01";
const ZERO_TRACE = "00000000000000000000000000000000";
const ZERO_SPAN = "0000000000000000";

/**
 * The trace context of a `traceparent` header, or undefined when it is absent or malformed
 * (the spec says to start a new trace then). Versions above 00 are read by their 00 prefix.
 */
export function parseTraceparent(header: string | null | undefined): TraceContext | undefined {
  if (!header) return undefined;
  const h = header.trim();
  if (h.length < 55 || h[2] !== "-" || h[35] !== "-" || h[52] !== "-") return undefined;
  const version = h.slice(0, 2);
  if (!isHex(version) || version === "ff") return undefined;
  // Version 00 has exactly four fields; a later version may append more after a dash.
  if (version === "00" ? h.length !== 55 : h.length > 55 && h[55] !== "-") return undefined;
  const traceId = h.slice(3, 35);
  const spanId = h.slice(36, 52);
  const flags = h.slice(53, 55);
  if (!isHex(traceId) || !isHex(spanId) || !isHex(flags)) return undefined;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, flags };
}

/** This hop's span in the caller's trace; a new sampled trace when there is none. */
export function childSpan(parent: TraceContext | undefined): TraceContext {
  if (!parent) return { traceId: randomHex(16), spanId: randomHex(8), flags: SAMPLED };
  return { traceId: parent.traceId, spanId: randomHex(8), flags: parent.flags };
}

export function formatTraceparent(t: TraceContext): string {
  // join makes one flat string; a template would be a rope of five pieces (~160 bytes against
  // ~72), and each hop's context keeps its traceparent for as long as a stream is open.
  return ["00", t.traceId, t.spanId, t.flags].join("-");
}

/**
 * What a hop passes on: the `traceparent` it received (from RequestContext) continued with a new
 * span of its own. A hop that received none, or a malformed one, starts a trace.
 */
export function continueTrace(traceparent: string): TraceContext {
  return childSpan(parseTraceparent(traceparent));
}

/**
 * The request's context as a hop passes it on: same request id and tenant, this hop's own span
 * in the caller's trace (a new trace if the caller sent none).
 */
export function nextHop(context: RequestContext | undefined): RequestContext {
  return makeMessage(RequestContextSchema, {
    requestId: context?.requestId ?? "",
    tenant: context?.tenant ?? "",
    traceparent: formatTraceparent(continueTrace(context?.traceparent ?? "")),
  });
}

/** The trace id of a well-formed `traceparent`, for log lines; undefined otherwise. */
export function traceIdOf(traceparent: string): string | undefined {
  return parseTraceparent(traceparent)?.traceId;
}

function isHex(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // 0-9, a-f: the spec allows lowercase only.
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

// Ids come from a pool of random bytes refilled a page at a time, as crypto.randomUUID does, so a
// request costs no call into the system's random source.
const POOL = Buffer.alloc(4096);
let offset = POOL.length;

function randomHex(bytes: number): string {
  for (;;) {
    if (offset + bytes > POOL.length) {
      randomFillSync(POOL);
      offset = 0;
    }
    const hex = POOL.toString("hex", offset, offset + bytes);
    offset += bytes;
    // An all-zero id is invalid; 2^-64 at worst, but then draw again.
    if (hex !== ZERO_SPAN && hex !== ZERO_TRACE) return hex;
  }
}
