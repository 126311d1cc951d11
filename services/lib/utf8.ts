// Protobuf-ES turns every string field into UTF-8 bytes through the text encoding it is
// configured with (by default the WHATWG TextEncoder). On Node 20, TextEncoder.encode crosses
// into C++ and allocates a fresh ArrayBuffer per call: ~0.7 µs for a 10-byte string, about 40%
// of encoding a connector request (bench/README.md, "Allocation, per-stream memory and idle RSS").
// The fabric's strings are mostly short ASCII (model names, ids, trace parents), which a plain
// loop copies in ~0.1 µs; anything longer or non-ASCII goes to Buffer.from, which writes into
// Node's pooled memory. Both give exactly TextEncoder's bytes, lone surrogates included (U+FFFD).

import { isUtf8 } from "node:buffer";
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

/**
 * Where the first ill-formed UTF-8 sequence of `bytes` starts, or -1 when they are all well
 * formed (Unicode's Table 3-7: no overlong forms, surrogates or code points past U+10FFFF, as
 * a fatal TextDecoder judges them). Node's isUtf8 answers the common case, valid text, in
 * native code; the walk that finds the offset runs only for a body that is being refused.
 */
export function invalidUtf8Offset(bytes: Uint8Array): number {
  if (isUtf8(bytes)) return -1;
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const length = wellFormedLength(bytes, i);
    if (length === 0) return i;
    i += length;
  }
  return -1;
}

/** How many bytes the well-formed sequence at `i` takes; 0 when none starts there. */
function wellFormedLength(b: Uint8Array, i: number): number {
  const lead = b[i] as number;
  if (lead < 0x80) return 1;
  // The second byte's range depends on the lead (Table 3-7); later ones are always 80..BF.
  let min = 0x80;
  let max = 0xbf;
  let length: number;
  if (lead >= 0xc2 && lead <= 0xdf) length = 2;
  else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead === 0xe0) min = 0xa0;
    else if (lead === 0xed) max = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead === 0xf0) min = 0x90;
    else if (lead === 0xf4) max = 0x8f;
  } else return 0;
  if (i + length > b.length) return 0;
  const second = b[i + 1] as number;
  if (second < min || second > max) return 0;
  for (let k = 2; k < length; k++) {
    const next = b[i + k] as number;
    if (next < 0x80 || next > 0xbf) return 0;
  }
  return length;
}
