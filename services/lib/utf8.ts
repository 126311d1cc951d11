// Protobuf-ES turns every string field into UTF-8 bytes through the text encoding it is
// configured with (by default the WHATWG TextEncoder). On Node 20, TextEncoder.encode crosses
// into C++ and allocates a fresh ArrayBuffer per call: ~0.7 µs for a 10-byte string, about 40%
// of encoding a connector request (bench/README.md, "Allocation, per-stream memory and idle RSS").
// The fabric's strings are mostly short ASCII (model names, ids, trace parents), which a plain
// loop copies in ~0.1 µs; anything longer or non-ASCII goes to Buffer.from, which writes into
// Node's pooled memory. Both give exactly TextEncoder's bytes, lone surrogates included (U+FFFD).

import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";

/** Strings up to this many UTF-16 units are tried as ASCII in JavaScript first. */
const SHORT = 48;

/** UTF-8 bytes of `text`, byte for byte what TextEncoder.encode gives. */
export function encodeUtf8(text: string): Uint8Array<ArrayBuffer> {
  const n = text.length;
  if (n <= SHORT) {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c > 0x7f) return Buffer.from(text, "utf8");
      out[i] = c;
    }
    return out;
  }
  return Buffer.from(text, "utf8");
}

/**
 * Makes protobuf-es encode strings with encodeUtf8 (decoding and validation stay as they are).
 * Called once per process at start; messages encode to the same bytes either way.
 */
export function useFastUtf8Encoding(): void {
  const base = getTextEncoding();
  if (base.encodeUtf8 === encodeUtf8) return;
  configureTextEncoding({ ...base, encodeUtf8 });
}
