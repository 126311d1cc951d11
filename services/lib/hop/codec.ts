// Binary protobuf for the fabric's hops, compiled once per message type.
//
// protobuf-es's toBinary and fromBinary walk every message through its reflection layer: per
// field a reflective get, a presence check and a switch on the field's type, and a writer that
// collects each nested message in chunks of its own. That was 10–17 % of each gateway process's
// CPU in four-process profiles (bench/README.md). Here each message type gets a plan (its fields
// in wire order, with their tags and kinds worked out ahead), and from the plan an encoder, a
// decoder and a zero-message factory generated as plain JavaScript, each field's property read
// or written by name. One writer puts every byte into a single scratch buffer. For a connector
// request that is ~1.7 µs to encode and ~3 µs to decode, against ~20 and ~11 (bench/codec.ts).
//
// The same plans give makeMessage, create() for these types without the reflection (~4 µs →
// ~0.5 µs for a chat request's params), which the services use in place of create().
//
// Only what the fabric's own proto3 files use is compiled: proto3 messages with strings, bools,
// doubles, floats, 32/64-bit integers, enums, nested and repeated messages and scalars, and
// oneofs. A type with anything else (proto2 or editions, maps, groups, bytes, fixed or zigzag
// integers, well-known types that protobuf-es unwraps) falls back to toBinary and fromBinary.
// Either way the bytes and the messages are protobuf-es's own: codec.test.ts checks both against
// it for every message of the fabric's services, valid and cut-off input alike. Two differences
// are deliberate: a string's leading byte-order mark is kept (protobuf-es's TextDecoder drops
// it), and a known field sent with the wrong wire type is kept as an unknown field (protobuf-es
// reads it as its own type, which yields garbage or an error).

import { Buffer, isUtf8 } from "node:buffer";
import {
  create,
  type DescField,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  protoInt64,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import { envelope } from "./protocol.js";

export interface Codec<D extends DescMessage = DescMessage> {
  /** The message's bytes, as toBinary gives them. */
  encode(message: MessageShape<D>): Buffer;
  /** The message in one Connect envelope: a flags byte, a 4-byte length, the bytes. */
  encodeEnvelope(flags: number, message: MessageShape<D>): Buffer;
  /** The message these bytes hold, as fromBinary gives it; throws on malformed input. */
  decode(bytes: Uint8Array): MessageShape<D>;
}

const codecs = new WeakMap<DescMessage, Codec>();

/** The codec of a message type (made once, then cached). */
export function codecFor<D extends DescMessage>(schema: D): Codec<D> {
  let codec = codecs.get(schema);
  if (!codec) {
    codec = compilable(schema, new Set())
      ? new PlanCodec(planOf(schema))
      : new FallbackCodec(schema);
    codecs.set(schema, codec);
  }
  return codec as Codec<D>;
}

// ---------------------------------------------------------------------------------------------
// Plans

const EDITION_PROTO3 = 999;
const IMPLICIT = 2;

const WIRE_VARINT = 0;
const WIRE_BIT64 = 1;
const WIRE_LEN = 2;
const WIRE_START_GROUP = 3;
const WIRE_END_GROUP = 4;
const WIRE_BIT32 = 5;

/** The scalar types compiled here; a type using any other falls back to protobuf-es. */
const SCALARS = new Set([
  ScalarType.STRING,
  ScalarType.BOOL,
  ScalarType.DOUBLE,
  ScalarType.FLOAT,
  ScalarType.INT32,
  ScalarType.UINT32,
  ScalarType.INT64,
]);

/** Whether `desc`, and every message type it contains, can be compiled. */
function compilable(desc: DescMessage, seen: Set<DescMessage>): boolean {
  if (seen.has(desc)) return true;
  seen.add(desc);
  if (desc.file.edition !== EDITION_PROTO3 || desc.typeName.startsWith("google.protobuf.")) {
    return false;
  }
  for (const f of desc.fields) {
    switch (f.fieldKind) {
      case "map":
        return false;
      case "enum":
        if (!f.enum.open) return false;
        break;
      case "scalar":
        if (!SCALARS.has(f.scalar)) return false;
        break;
      case "message":
        if (f.delimitedEncoding || !compilable(f.message, seen)) return false;
        break;
      case "list":
        if (f.listKind === "message") {
          if (f.delimitedEncoding || !compilable(f.message, seen)) return false;
        } else if (f.listKind === "scalar" && !SCALARS.has(f.scalar)) {
          return false;
        }
        break;
    }
  }
  return true;
}

enum Kind {
  Scalar,
  Message,
  ScalarList,
  MessageList,
}

interface FieldPlan {
  readonly no: number;
  readonly name: string;
  /** The oneof's property, for a field in a oneof. */
  readonly oneof: string | undefined;
  readonly kind: Kind;
  /** The scalar type (INT32 for enums). */
  readonly scalar: ScalarType;
  /** Implicit presence: written only when not the zero value. */
  readonly implicit: boolean;
  readonly packed: boolean;
  /** The tag as written: field number and wire type. */
  readonly tag: number;
  readonly wireType: number;
  readonly longAsString: boolean;
  readonly message: DescMessage | undefined;
  /** For messages and the error text: `Type.field`. */
  readonly path: string;
}

interface Plan {
  readonly desc: DescMessage;
  readonly typeName: string;
  /** Fields by field number, in ascending order: the order protobuf-es writes them in. */
  readonly fields: readonly FieldPlan[];
  /** A new message with every field unset, as create() makes it (see zeroFactory). */
  readonly zero: () => Fields;
  /** Made on first use (encoderOf, decoderOf). */
  encode?: Encoder;
  decode?: Decoder;
  fill?: Filler;
}

type ZeroMember = readonly [name: string, zero: ZeroValue];
enum ZeroValue {
  EmptyString,
  False,
  Zero,
  ZeroBigInt,
  ZeroString,
  EmptyList,
  NoCase,
}

const plans = new WeakMap<DescMessage, Plan>();

function planOf(desc: DescMessage): Plan {
  let plan = plans.get(desc);
  if (plan) return plan;
  const fields = [...desc.fields].sort((a, b) => a.number - b.number).map(fieldPlan);
  const zero: ZeroMember[] = [];
  for (const member of desc.members) {
    if (member.kind === "oneof") zero.push([member.localName, ZeroValue.NoCase]);
    else if (member.presence === IMPLICIT) zero.push([member.localName, zeroOf(member)]);
  }
  plan = {
    desc,
    typeName: desc.typeName,
    fields,
    zero: zeroFactory(desc.typeName, zero),
  };
  plans.set(desc, plan);
  return plan;
}

type FieldBase = Pick<FieldPlan, "no" | "name" | "oneof" | "implicit" | "path">;

function fieldPlan(f: DescField): FieldPlan {
  const base: FieldBase = {
    no: f.number,
    name: f.localName,
    oneof: f.oneof?.localName,
    implicit: f.presence === IMPLICIT && !f.oneof,
    path: `${f.parent.typeName}.${f.name}`,
  };
  switch (f.fieldKind) {
    case "scalar":
      return scalarField(base, Kind.Scalar, f.scalar, false, f.longAsString);
    case "enum":
      return scalarField(base, Kind.Scalar, ScalarType.INT32, false, false);
    case "message":
      return messageField(base, Kind.Message, f.message);
    case "list":
      switch (f.listKind) {
        case "message":
          return messageField(base, Kind.MessageList, f.message);
        case "enum":
          return scalarField(base, Kind.ScalarList, ScalarType.INT32, f.packed, false);
        default:
          return scalarField(base, Kind.ScalarList, f.scalar, f.packed, f.longAsString);
      }
    default:
      throw new Error(`${base.path}: maps are not compiled`);
  }
}

function scalarField(
  base: FieldBase,
  kind: Kind.Scalar | Kind.ScalarList,
  scalar: ScalarType,
  packed: boolean,
  longAsString: boolean,
): FieldPlan {
  const wireType = wireTypeOf(scalar);
  const tag = (base.no << 3) | (packed ? WIRE_LEN : wireType);
  return { ...base, kind, scalar, packed, tag, wireType, longAsString, message: undefined };
}

function messageField(
  base: FieldBase,
  kind: Kind.Message | Kind.MessageList,
  message: DescMessage,
): FieldPlan {
  return {
    ...base,
    kind,
    scalar: ScalarType.INT32,
    packed: false,
    tag: (base.no << 3) | WIRE_LEN,
    wireType: WIRE_LEN,
    longAsString: false,
    message,
  };
}

function wireTypeOf(scalar: ScalarType): number {
  switch (scalar) {
    case ScalarType.STRING:
      return WIRE_LEN;
    case ScalarType.DOUBLE:
      return WIRE_BIT64;
    case ScalarType.FLOAT:
      return WIRE_BIT32;
    default:
      return WIRE_VARINT;
  }
}

function zeroOf(f: DescField): ZeroValue {
  if (f.fieldKind === "list") return ZeroValue.EmptyList;
  if (f.fieldKind === "enum") return ZeroValue.Zero; // proto3 enums open with 0
  if (f.fieldKind !== "scalar") throw new Error(`${f.parent.typeName}.${f.name}: no zero value`);
  switch (f.scalar) {
    case ScalarType.STRING:
      return ZeroValue.EmptyString;
    case ScalarType.BOOL:
      return ZeroValue.False;
    case ScalarType.INT64:
      return f.longAsString ? ZeroValue.ZeroString : ZeroValue.ZeroBigInt;
    default:
      return ZeroValue.Zero;
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding

type Fields = Record<string, unknown> & { $unknown?: UnknownField[] };
interface UnknownField {
  no: number;
  wireType: number;
  data: Uint8Array;
}

/** A scratch buffer that grows; every encode starts at its beginning and copies out. */
class Writer {
  buf = Buffer.allocUnsafeSlow(16 * 1024);
  pos = 0;

  reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafeSlow(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** An unsigned 32-bit varint. */
  varint32(v: number): void {
    this.reserve(5);
    const b = this.buf;
    let p = this.pos;
    while (v > 0x7f) {
      b[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    b[p++] = v;
    this.pos = p;
  }

  /** A 64-bit varint from two's-complement halves (negative int32s are sign-extended to 64). */
  varint64(lo: number, hi: number): void {
    this.reserve(10);
    const b = this.buf;
    let p = this.pos;
    lo >>>= 0;
    hi >>>= 0;
    while (hi !== 0 || lo > 0x7f) {
      b[p++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    b[p++] = lo;
    this.pos = p;
  }

  string(s: string): void {
    const n = s.length;
    if (n < 0x80) {
      // Most of the fabric's strings are short ASCII: one length byte, one byte per unit.
      this.reserve(1 + n);
      const b = this.buf;
      let p = this.pos + 1;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        b[p++] = c;
      }
      if (i === n) {
        b[this.pos] = n;
        this.pos = p;
        return;
      }
    }
    // UTF-8 as TextEncoder writes it (a lone surrogate becomes U+FFFD), so the same bytes.
    const bytes = Buffer.byteLength(s, "utf8");
    this.varint32(bytes);
    this.reserve(bytes);
    this.buf.write(s, this.pos, bytes, "utf8");
    this.pos += bytes;
  }

  double(v: number): void {
    this.reserve(8);
    this.pos = this.buf.writeDoubleLE(v, this.pos);
  }

  float(v: number): void {
    this.reserve(4);
    this.pos = this.buf.writeFloatLE(v, this.pos);
  }

  raw(data: Uint8Array): void {
    this.reserve(data.byteLength);
    this.buf.set(data, this.pos);
    this.pos += data.byteLength;
  }

  /** Starts a length-delimited part: one byte kept for its length (moved over if it needs more). */
  fork(): number {
    this.reserve(1);
    return this.pos++;
  }

  join(at: number): void {
    const len = this.pos - at - 1;
    if (len < 0x80) {
      this.buf[at] = len;
      return;
    }
    let extra = 1;
    while (len >>> (7 * (extra + 1)) !== 0) extra++;
    this.reserve(extra);
    this.buf.copyWithin(at + 1 + extra, at + 1, this.pos);
    this.pos += extra;
    let v = len;
    let p = at;
    while (v > 0x7f) {
      this.buf[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[p] = v;
  }

  /** Copies the bytes written out of the scratch buffer, which is reused. */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    // One very large message does not keep its buffer for the life of the process.
    if (this.buf.length > 1024 * 1024) this.buf = Buffer.allocUnsafeSlow(16 * 1024);
    return out;
  }
}

const writer = new Writer();

type Encoder = (w: Writer, msg: Fields, depth: number) => void;

/**
 * The encoder of a message type: straight-line code generated once from its plan, one block per
 * field in wire order, each reading its property by name. (A loop over the plan reads every
 * field through one keyed property load that sees every type and name, which V8 cannot cache:
 * that load was most of such a loop's time.) The source is made from the plan alone, with names
 * quoted by JSON.stringify, and calls back into the writer and writeScalar for the bytes.
 */
function encoderOf(plan: Plan): Encoder {
  if (plan.encode) return plan.encode;
  const lines = [
    `if (depth > ${RECURSION_LIMIT}) throw h.tooDeep(${q(plan.typeName)});`,
    "let v, at, i;",
  ];
  plan.fields.forEach((f, n) => {
    if (f.oneof === undefined) lines.push(`v = m[${q(f.name)}];`);
    else
      lines.push(
        `v = m[${q(f.oneof)}];`,
        `v = v !== undefined && v.case === ${q(f.name)} ? v.value : undefined;`,
      );
    switch (f.kind) {
      case Kind.Scalar:
        lines.push(
          `if (v !== undefined${f.implicit ? ` && ${nonZero(f.scalar)}` : ""}) {`,
          `  w.varint32(${f.tag}); h.writeScalar(w, F[${n}], v);`,
          "}",
        );
        break;
      case Kind.Message:
        lines.push(
          "if (v !== undefined) {",
          `  w.varint32(${f.tag}); at = w.fork(); h.encoderOf(P[${n}])(w, v, depth + 1); w.join(at);`,
          "}",
        );
        break;
      case Kind.MessageList:
        lines.push(
          "if (v !== undefined) for (i = 0; i < v.length; i++) {",
          `  w.varint32(${f.tag}); at = w.fork(); h.encoderOf(P[${n}])(w, v[i], depth + 1); w.join(at);`,
          "}",
        );
        break;
      case Kind.ScalarList:
        if (f.packed) {
          lines.push(
            "if (v !== undefined && v.length > 0) {",
            `  w.varint32(${f.tag}); at = w.fork();`,
            `  for (i = 0; i < v.length; i++) h.writeScalar(w, F[${n}], v[i]);`,
            "  w.join(at);",
            "}",
          );
        } else {
          lines.push(
            "if (v !== undefined) for (i = 0; i < v.length; i++) {",
            `  w.varint32(${f.tag}); h.writeScalar(w, F[${n}], v[i]);`,
            "}",
          );
        }
        break;
    }
  });
  lines.push("if (m.$unknown !== undefined) h.writeUnknown(w, m.$unknown);");
  const make = new Function(
    "h",
    "F",
    "P",
    `"use strict";\nreturn function encode(w, m, depth) {\n${lines.join("\n")}\n};`,
  );
  const children = plan.fields.map((f) => (f.message ? planOf(f.message) : undefined));
  plan.encode = make(encoderHelpers, plan.fields, children) as Encoder;
  return plan.encode;
}

/** A string as a JavaScript literal, for generated code. */
function q(text: string): string {
  return JSON.stringify(text);
}

/** protobuf-es's isScalarZeroValue, negated, as code: -0 and NaN are values; 0n, 0, "0" zero. */
function nonZero(scalar: ScalarType): string {
  switch (scalar) {
    case ScalarType.STRING:
      return 'v !== ""';
    case ScalarType.BOOL:
      return "v !== false";
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return "!Object.is(v, 0)";
    default:
      return "v != 0";
  }
}

function writeUnknown(w: Writer, unknown: readonly UnknownField[]): void {
  for (const { no, wireType, data } of unknown) {
    w.varint32(((no << 3) | wireType) >>> 0);
    w.raw(data);
  }
}

const INT32_MAX = 0x7fffffff;
const INT32_MIN = -0x80000000;
const UINT32_MAX = 0xffffffff;
const FLOAT32_MAX = 3.4028234663852886e38;

function writeScalar(w: Writer, f: FieldPlan, value: unknown): void {
  switch (f.scalar) {
    case ScalarType.STRING:
      if (typeof value !== "string") throw invalid(f, "string", value);
      w.string(value);
      return;
    case ScalarType.BOOL:
      w.reserve(1);
      w.buf[w.pos++] = value ? 1 : 0;
      return;
    case ScalarType.DOUBLE:
      w.double(toNumber(f, value));
      return;
    case ScalarType.FLOAT: {
      const v = toNumber(f, value);
      if (Number.isFinite(v) && (v > FLOAT32_MAX || v < -FLOAT32_MAX)) {
        throw invalid(f, "float32", value);
      }
      w.float(v);
      return;
    }
    case ScalarType.INT32: {
      const v = toNumber(f, value);
      if (!Number.isInteger(v) || v > INT32_MAX || v < INT32_MIN) throw invalid(f, "int32", value);
      if (v >= 0) w.varint32(v);
      else w.varint64(v, -1);
      return;
    }
    case ScalarType.UINT32: {
      const v = toNumber(f, value);
      if (!Number.isInteger(v) || v > UINT32_MAX || v < 0) throw invalid(f, "uint32", value);
      w.varint32(v);
      return;
    }
    case ScalarType.INT64: {
      if (typeof value === "bigint" && value >= 0n && value <= 0xffffffffn) {
        w.varint32(Number(value));
        return;
      }
      let tc: { lo: number; hi: number };
      try {
        tc = protoInt64.enc(value as bigint | string | number);
      } catch (err) {
        throw new Error(`cannot encode field ${f.path} to binary: ${(err as Error).message}`);
      }
      w.varint64(tc.lo, tc.hi);
      return;
    }
  }
}

function toNumber(f: FieldPlan, value: unknown): number {
  if (typeof value === "number") return value;
  // protobuf-es also takes numeric strings for 32-bit and floating-point fields.
  if (typeof value === "string") {
    const n = Number(value);
    if (!Number.isNaN(n) || value === "NaN") return n;
  }
  throw invalid(f, ScalarType[f.scalar].toLowerCase(), value);
}

function invalid(f: FieldPlan, what: string, value: unknown): Error {
  const shown = typeof value === "number" || typeof value === "string" ? value : typeof value;
  return new Error(`cannot encode field ${f.path} to binary: invalid ${what}: ${shown}`);
}

/** What generated encoders call. */
const encoderHelpers = {
  writeScalar,
  encoderOf,
  writeUnknown,
  tooDeep: (typeName: string) => new Error(`cannot encode ${typeName}: nested too deep`),
};

// ---------------------------------------------------------------------------------------------
// Decoding

/** As protobuf-es: how deep messages may nest in what is read. */
const RECURSION_LIMIT = 100;

class Reader {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    readonly len: number,
  ) {}

  varint32(): number {
    const b = this.buf;
    let p = this.pos;
    let byte = b[p++] as number;
    let v = byte & 0x7f;
    if (byte & 0x80) {
      byte = b[p++] as number;
      v |= (byte & 0x7f) << 7;
      if (byte & 0x80) {
        byte = b[p++] as number;
        v |= (byte & 0x7f) << 14;
        if (byte & 0x80) {
          byte = b[p++] as number;
          v |= (byte & 0x7f) << 21;
          if (byte & 0x80) {
            byte = b[p++] as number;
            v |= (byte & 0x0f) << 28;
            // A negative int32 is written sign-extended to ten bytes: the rest only carry ones.
            for (let i = 0; byte & 0x80 && i < 5; i++) byte = b[p++] as number;
            if (byte & 0x80) throw new Error("invalid varint");
          }
        }
      }
    }
    if (p > this.len) throw new RangeError("premature EOF");
    this.pos = p;
    return v >>> 0;
  }

  /** A 64-bit varint as two's-complement halves. */
  varint64(): [lo: number, hi: number] {
    const b = this.buf;
    let p = this.pos;
    let lo = 0;
    let hi = 0;
    let shift = 0;
    let byte: number;
    for (; shift < 28; shift += 7) {
      byte = b[p++] as number;
      lo |= (byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return this.done64(p, lo, hi);
    }
    byte = b[p++] as number;
    lo |= (byte & 0x0f) << 28;
    hi = (byte & 0x70) >> 4;
    if ((byte & 0x80) === 0) return this.done64(p, lo, hi);
    for (shift = 3; shift <= 31; shift += 7) {
      byte = b[p++] as number;
      hi |= (byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return this.done64(p, lo, hi);
    }
    throw new Error("invalid varint");
  }

  private done64(p: number, lo: number, hi: number): [number, number] {
    if (p > this.len) throw new RangeError("premature EOF");
    this.pos = p;
    return [lo >>> 0, hi >>> 0];
  }

  /** Moves past `n` bytes and returns where they start. */
  take(n: number): number {
    const at = this.pos;
    if (n > this.len - at) throw new RangeError("premature EOF");
    this.pos = at + n;
    return at;
  }

  /** Where a part of `n` bytes starting here ends (checked against the input, not moved past). */
  end(n: number): number {
    if (n > this.len - this.pos) throw new RangeError("premature EOF");
    return this.pos + n;
  }

  /** Moves past a field of an unknown number and returns where its data starts. */
  skip(wireType: number, no: number, depth: number): number {
    const start = this.pos;
    switch (wireType) {
      case WIRE_VARINT:
        this.varint64();
        break;
      case WIRE_BIT64:
        this.take(8);
        break;
      case WIRE_BIT32:
        this.take(4);
        break;
      case WIRE_LEN:
        this.take(this.varint32());
        break;
      case WIRE_START_GROUP: {
        if (depth > RECURSION_LIMIT) throw new Error("cannot skip group: nested too deep");
        for (;;) {
          const tag = this.tag();
          const wt = tag & 7;
          if (wt === WIRE_END_GROUP) {
            if (tag >>> 3 !== no) throw new Error("invalid end group tag");
            break;
          }
          this.skip(wt, tag >>> 3, depth + 1);
        }
        break;
      }
      default:
        throw new Error(`cant skip wire type ${wireType}`);
    }
    return start;
  }

  tag(): number {
    const tag = this.varint32();
    const no = tag >>> 3;
    const wt = tag & 7;
    if (no <= 0 || wt > 5) throw new Error(`illegal tag: field no ${no} wire type ${wt}`);
    return tag;
  }
}

/**
 * A function that returns a new zero message as one object literal, generated once per type: the
 * properties protobuf-es's create() sets, in its order, with their zero values.
 */
function zeroFactory(typeName: string, members: readonly ZeroMember[]): () => Fields {
  const props = [`$typeName: ${q(typeName)}`];
  for (const [name, zero] of members) props.push(`${q(name)}: ${ZERO_SOURCE[zero]}`);
  return new Function(
    `"use strict";\nreturn function zero() {\n  return { ${props.join(", ")} };\n};`,
  )();
}

const ZERO_SOURCE: Record<ZeroValue, string> = {
  [ZeroValue.EmptyString]: '""',
  [ZeroValue.False]: "false",
  [ZeroValue.Zero]: "0",
  [ZeroValue.ZeroBigInt]: "0n",
  [ZeroValue.ZeroString]: '"0"',
  [ZeroValue.EmptyList]: "[]",
  [ZeroValue.NoCase]: "{ case: undefined }",
};

type Decoder = (r: Reader, msg: Fields, end: number, depth: number) => void;

/**
 * The decoder of a message type, generated once from its plan as the encoder is (encoderOf): a
 * switch on the tag with one case per field, each setting its property by name. A tag it does not
 * know, or a known field with the wrong wire type, is kept as an unknown field, as protobuf-es
 * keeps fields it does not know, and written back when the message is encoded again.
 */
function decoderOf(plan: Plan): Decoder {
  if (plan.decode) return plan.decode;
  const cases: string[] = [];
  plan.fields.forEach((f, n) => {
    const set = (value: string) =>
      f.oneof === undefined
        ? `m[${q(f.name)}] = ${value};`
        : `m[${q(f.oneof)}] = { case: ${q(f.name)}, value: ${value} };`;
    switch (f.kind) {
      case Kind.Scalar:
        cases.push(`case ${f.tag}: ${set(`h.readScalar(r, F[${n}])`)} break;`);
        break;
      case Kind.Message: {
        // A message field that comes twice is merged, as protobuf-es does.
        const prior =
          f.oneof === undefined
            ? `m[${q(f.name)}]`
            : `(m[${q(f.oneof)}].case === ${q(f.name)} ? m[${q(f.oneof)}].value : undefined)`;
        cases.push(`case ${f.tag}: ${set(`h.readChild(r, P[${n}], ${prior}, depth)`)} break;`);
        break;
      }
      case Kind.MessageList:
        cases.push(
          `case ${f.tag}: m[${q(f.name)}].push(h.readChild(r, P[${n}], undefined, depth)); break;`,
        );
        break;
      case Kind.ScalarList: {
        const one = (f.no << 3) | f.wireType;
        cases.push(`case ${one}: m[${q(f.name)}].push(h.readScalar(r, F[${n}])); break;`);
        if (f.wireType !== WIRE_LEN) {
          // Packed (one length, then the values back to back), which every writer may send.
          cases.push(
            `case ${(f.no << 3) | WIRE_LEN}: h.readPacked(r, F[${n}], m[${q(f.name)}]); break;`,
          );
        }
        break;
      }
    }
  });
  const source = [
    `if (depth > ${RECURSION_LIMIT}) throw h.decodeTooDeep(${q(plan.typeName)});`,
    "while (r.pos < end) {",
    "  const tag = r.tag();",
    "  switch (tag) {",
    ...cases.map((c) => `    ${c}`),
    "    default: h.readUnknown(r, m, tag, depth);",
    "  }",
    "}",
    'if (r.pos !== end) throw new RangeError("premature EOF");',
  ];
  const make = new Function(
    "h",
    "F",
    "P",
    `"use strict";\nreturn function decode(r, m, end, depth) {\n${source.join("\n")}\n};`,
  );
  const children = plan.fields.map((f) => (f.message ? planOf(f.message) : undefined));
  plan.decode = make(decoderHelpers, plan.fields, children) as Decoder;
  return plan.decode;
}

/** A length-delimited message of type `plan`, merged into `prior` if there is one. */
function readChild(r: Reader, plan: Plan, prior: Fields | undefined, depth: number): Fields {
  const len = r.varint32();
  const end = r.end(len);
  const child = prior ?? plan.zero();
  decoderOf(plan)(r, child, end, depth + 1);
  return child;
}

function readPacked(r: Reader, f: FieldPlan, list: unknown[]): void {
  const len = r.varint32();
  const stop = r.end(len);
  while (r.pos < stop) list.push(readScalar(r, f));
  if (r.pos !== stop) throw new RangeError("premature EOF");
}

function readUnknown(r: Reader, msg: Fields, tag: number, depth: number): void {
  const no = tag >>> 3;
  const wireType = tag & 7;
  const start = r.skip(wireType, no, depth);
  msg.$unknown ??= [];
  msg.$unknown.push({ no, wireType, data: r.buf.subarray(start, r.pos) });
}

function readScalar(r: Reader, f: FieldPlan): unknown {
  switch (f.scalar) {
    case ScalarType.STRING: {
      const len = r.varint32();
      const at = r.take(len);
      return readUtf8(r.buf, at, at + len);
    }
    case ScalarType.BOOL: {
      const [lo, hi] = r.varint64();
      return lo !== 0 || hi !== 0;
    }
    case ScalarType.DOUBLE:
      return r.buf.readDoubleLE(r.take(8));
    case ScalarType.FLOAT:
      return r.buf.readFloatLE(r.take(4));
    case ScalarType.INT32:
      return r.varint32() | 0;
    case ScalarType.UINT32:
      return r.varint32();
    case ScalarType.INT64: {
      const [lo, hi] = r.varint64();
      const v = hi === 0 ? BigInt(lo) : protoInt64.dec(lo | 0, hi | 0);
      return f.longAsString ? String(v) : v;
    }
  }
  throw new Error(`${f.path}: scalar type ${f.scalar} not compiled`);
}

/** Strict UTF-8, as protobuf-es reads proto3 strings: malformed bytes are an error. */
function readUtf8(buf: Buffer, start: number, end: number): string {
  const text = buf.toString("utf8", start, end);
  // Node replaces malformed bytes with U+FFFD; only a string with one can be malformed.
  if (text.includes("\ufffd") && !isUtf8(buf.subarray(start, end))) {
    throw new TypeError("The encoded data was not valid for encoding utf-8");
  }
  return text;
}

/** What generated decoders call. */
const decoderHelpers = {
  readScalar,
  readChild,
  readPacked,
  readUnknown,
  decodeTooDeep: (typeName: string) =>
    new Error(
      `cannot decode ${typeName} from binary: maximum recursion depth of ${RECURSION_LIMIT} reached`,
    ),
};

// ---------------------------------------------------------------------------------------------
// Making messages

type Filler = (msg: Fields, init: Fields) => void;

/**
 * `create(schema, init)`, for the types this module compiles: the zero message, then each field
 * the init object sets, in the schema's order, nested messages made the same way, with exactly
 * create()'s rules (null and undefined skipped, a message of the right type kept as it is, a
 * list of scalars kept as the same array). create() walks the init object through reflection,
 * which was ~7 % of one process's CPU for the requests, answers and merged chunks it builds;
 * this is generated once per type like the encoder. Other types go to create().
 */
export function makeMessage<D extends DescMessage>(
  schema: D,
  init?: MessageInitShape<D>,
): MessageShape<D> {
  if (isMessageOf(init, schema.typeName)) return init as MessageShape<D>;
  if (!(codecFor(schema) instanceof PlanCodec)) return create(schema, init);
  return fromInit(planOf(schema), init as Fields | undefined) as MessageShape<D>;
}

function isMessageOf(value: unknown, typeName: string): boolean {
  return (
    value !== null &&
    typeof value === "object" &&
    (value as { $typeName?: unknown }).$typeName === typeName
  );
}

function fromInit(plan: Plan, init: Fields | undefined): Fields {
  const msg = plan.zero();
  if (init !== undefined && init !== null) fillerOf(plan)(msg, init);
  return msg;
}

/** create()'s toMessage: an object that is not yet this message is made into one. */
function toMessage(plan: Plan, value: unknown): unknown {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
  return isMessageOf(value, plan.typeName) ? value : fromInit(plan, value as Fields);
}

function fillerOf(plan: Plan): Filler {
  if (plan.fill) return plan.fill;
  const lines = ["let v;"];
  const fields: FieldPlan[] = [];
  const planFor = (f: FieldPlan) => {
    fields.push(f);
    return `P[${fields.length - 1}]`;
  };
  const byName = new Map(plan.fields.map((f) => [f.name, f]));
  for (const member of plan.desc.members) {
    const name = q(member.localName);
    lines.push(`v = init[${name}];`);
    if (member.kind === "oneof") {
      const cases = member.fields.map((d) => {
        const f = byName.get(d.localName) as FieldPlan;
        const value = f.kind === Kind.Message ? `h.toMessage(${planFor(f)}, v.value)` : "v.value";
        return `case ${q(f.name)}: msg[${name}] = { case: v.case, value: ${value} }; break;`;
      });
      lines.push(`if (v != null) switch (v.case) { ${cases.join(" ")} }`);
      continue;
    }
    const f = byName.get(member.localName) as FieldPlan;
    switch (f.kind) {
      case Kind.Message:
        lines.push(`if (v != null) msg[${name}] = h.toMessage(${planFor(f)}, v);`);
        break;
      case Kind.MessageList:
        lines.push(
          `if (v != null) msg[${name}] = Array.isArray(v) ? v.map((x) => h.toMessage(${planFor(f)}, x)) : v;`,
        );
        break;
      default:
        lines.push(`if (v != null) msg[${name}] = v;`);
    }
  }
  const make = new Function(
    "h",
    "P",
    `"use strict";\nreturn function fill(msg, init) {\n${lines.join("\n")}\n};`,
  );
  const children = fields.map((f) => planOf(f.message as DescMessage));
  plan.fill = make({ toMessage }, children) as Filler;
  return plan.fill;
}

// ---------------------------------------------------------------------------------------------

class PlanCodec<D extends DescMessage> implements Codec<D> {
  constructor(private readonly plan: Plan) {}

  encode(message: MessageShape<D>): Buffer {
    writer.pos = 0;
    encoderOf(this.plan)(writer, message as unknown as Fields, 0);
    return writer.take();
  }

  encodeEnvelope(flags: number, message: MessageShape<D>): Buffer {
    writer.pos = 0;
    writer.reserve(5);
    writer.pos = 5;
    encoderOf(this.plan)(writer, message as unknown as Fields, 0);
    writer.buf[0] = flags;
    writer.buf.writeUInt32BE(writer.pos - 5, 1);
    return writer.take();
  }

  decode(bytes: Uint8Array): MessageShape<D> {
    const buf = Buffer.isBuffer(bytes)
      ? bytes
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const r = new Reader(buf, buf.length);
    const msg = this.plan.zero();
    decoderOf(this.plan)(r, msg, buf.length, 1);
    return msg as unknown as MessageShape<D>;
  }
}

class FallbackCodec<D extends DescMessage> implements Codec<D> {
  constructor(private readonly schema: D) {}

  encode(message: MessageShape<D>): Buffer {
    const bytes = toBinary(this.schema, message);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  encodeEnvelope(flags: number, message: MessageShape<D>): Buffer {
    return envelope(flags, toBinary(this.schema, message));
  }

  decode(bytes: Uint8Array): MessageShape<D> {
    return fromBinary(this.schema, bytes);
  }
}
