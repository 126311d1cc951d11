// Gemini's thought signatures, carried in the tool call's id.
//
// A thinking Gemini model puts an opaque "thought signature" on the function call it makes, and
// Gemini 3 refuses the next step of the conversation unless that signature comes back on the same
// call. Chat Completions and Messages clients keep nothing of an answer's tool call but its id,
// name and arguments, yet every one of them sends the id back (it pairs the tool's result with the
// call). So the signature travels in the id: `<id>__thought__<signature as base64url>`. Upstreams
// that have no use for it get a short id instead: OpenAI has refused tool call ids over 40
// characters.

import { createHash } from "node:crypto";

const SEPARATOR = "__thought__";
/** Padded standard base64, as the Gemini API writes bytes in JSON. */
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/**
 * `id` with the signature appended. A signature that is not padded base64 (which Gemini always
 * sends) is left out rather than altered, since it must come back exactly as it came.
 */
export function withThoughtSignature(id: string, signature: string): string {
  if (signature.length % 4 !== 0 || !BASE64.test(signature)) return id;
  const url = signature.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  return `${id}${SEPARATOR}${url}`;
}

/** The signature an id carries (as Gemini sent it), or undefined for a plain id. */
export function thoughtSignatureOf(id: string): string | undefined {
  const at = id.indexOf(SEPARATOR);
  if (at < 0) return undefined;
  const url = id.slice(at + SEPARATOR.length);
  if (!BASE64URL.test(url)) return undefined;
  const base64 = url.replaceAll("-", "+").replaceAll("_", "/");
  return base64.padEnd(Math.ceil(base64.length / 4) * 4, "=");
}

/**
 * The id for an upstream that has no use for a signature: the id before it, and 8 hex digits of
 * the signature's hash, so calls that differ only by their signatures stay apart. A plain id is
 * returned as it is.
 */
export function plainToolCallId(id: string): string {
  const at = id.indexOf(SEPARATOR);
  if (at < 0) return id;
  const hash = createHash("sha256").update(id.slice(at)).digest("hex").slice(0, 8);
  return `${id.slice(0, at)}_${hash}`;
}
