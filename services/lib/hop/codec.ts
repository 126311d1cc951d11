// Binary protobuf for the fabric's hops, compiled once per message type.
//
// protobuf-es's toBinary and fromBinary walk every message through its reflection layer: per
// field a reflective get, a presence check and a switch on the field's type, and a writer that
// collects each nested message in chunks of its own. That was 10–17 % of each gateway process's
// CPU in four-process profiles (bench/README.md). Here each message type gets a plan — its
// fields in wire order, with their tags and kinds worked out ahead — and one writer puts every
// byte into a single scratch buffer, so encoding a message is one loop over its plan.
//
// Only what the fabric's own proto3 files use is compiled: proto3 messages with strings, bools,
// doubles, floats, 32/64-bit integers, enums, nested and repeated messages and scalars, and
// oneofs. A type with anything else (proto2 or editions, maps, groups, bytes, fixed or zigzag
// integers, well-known types that protobuf-es unwraps) falls back to toBinary and fromBinary.
// Either way the bytes and the messages are protobuf-es's own: codec.test.ts checks both against
// it for every message of the fabric's services, valid and malformed input alike.

import { Buffer, isUtf8 } from "node:buffer";
import {
  type DescField,
  type DescMessage,
  fromBinary,
  type MessageShape,
  protoInt64,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";

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
  /** Fields by number, for reading. */
  readonly byNumber: ReadonlyMap<number, FieldPlan>;
  /** Properties of a zero message, in protobuf-es's order, and their zero values. */
  readonly zero: readonly ZeroMember[];
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
    byNumber: new Map(fields.map((f) => [f.no, f])),
    zero,
  };
  plans.set(desc, plan);
  return plan;
}

function fieldPlan(f: DescField): FieldPlan {
  const base = {
    no: f.number,
    name: f.localName,
    oneof: f.oneof?.localName,
    implicit: f.presence === IMPLICIT && !f.oneof,
    path: `${f.parent.typeName}.${f.name}`,
  };
  switch (f.fieldKind) {
    case "scalar":
    case "enum": {
      const scalar = f.fieldKind === "enum" ? ScalarType.INT32 : f.scalar;
      const wireType = wireTypeOf(scalar);
      return {
        ...base,
        kind: Kind.Scalar,
        scalar,
        packed: false,
        tag: (f.number << 3) | wireType,
        wireType,
        longAsString: f.fieldKind === "scalar" && f.longAsString,
        message: undefined,
      };
    }
    case "message":
      return {
        ...base,
        kind: Kind.Message,
        scalar: ScalarType.INT32,
        packed: false,
        tag: (f.number << 3) | WIRE_LEN,
        wireType: WIRE_LEN,
        longAsString: false,
        message: f.message,
      };
    case "list": {
      if (f.listKind === "message") {
        return {
          ...base,
          kind: Kind.MessageList,
          scalar: ScalarType.INT32,
          packed: false,
          tag: (f.number << 3) | WIRE_LEN,
          wireType: WIRE_LEN,
          longAsString: false,
          message: f.message,
        };
      }
      const scalar = f.listKind === "enum" ? ScalarType.INT32 : f.scalar;
      const wireType = wireTypeOf(scalar);
      return {
        ...base,
        kind: Kind.ScalarList,
        scalar,
        packed: f.packed,
        tag: (f.number << 3) | (f.packed ? WIRE_LEN : wireType),
        wireType,
        longAsString: f.listKind === "scalar" && f.longAsString,
        message: undefined,
      };
    }
    default:
      throw new Error(`${base.path}: maps are not compiled`);
  }
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

function writeMessage(w: Writer, plan: Plan, msg: Fields, depth: number): void {
  if (depth > RECURSION_LIMIT) throw new Error(`cannot encode ${plan.typeName}: nested too deep`);
  for (const f of plan.fields) {
    let value: unknown;
    if (f.oneof !== undefined) {
      const group = msg[f.oneof] as { case: string | undefined; value?: unknown } | undefined;
      if (group?.case !== f.name) continue;
      value = group.value;
    } else {
      value = msg[f.name];
      if (value === undefined) continue;
    }
    switch (f.kind) {
      case Kind.Scalar:
        if (f.implicit && isZero(f.scalar, value)) continue;
        w.varint32(f.tag);
        writeScalar(w, f, value);
        break;
      case Kind.Message: {
        w.varint32(f.tag);
        const at = w.fork();
        writeMessage(w, planOf(f.message as DescMessage), value as Fields, depth + 1);
        w.join(at);
        break;
      }
      case Kind.MessageList: {
        const list = value as Fields[];
        const plan = planOf(f.message as DescMessage);
        for (let i = 0; i < list.length; i++) {
          w.varint32(f.tag);
          const at = w.fork();
          writeMessage(w, plan, list[i] as Fields, depth + 1);
          w.join(at);
        }
        break;
      }
      case Kind.ScalarList: {
        const list = value as unknown[];
        if (list.length === 0) continue;
        if (f.packed) {
          w.varint32(f.tag);
          const at = w.fork();
          for (let i = 0; i < list.length; i++) writeScalar(w, f, list[i]);
          w.join(at);
        } else {
          for (let i = 0; i < list.length; i++) {
            w.varint32(f.tag);
            writeScalar(w, f, list[i]);
          }
        }
        break;
      }
    }
  }
  const unknown = msg.$unknown;
  if (unknown) {
    for (const { no, wireType, data } of unknown) {
      w.varint32(((no << 3) | wireType) >>> 0);
      w.raw(data);
    }
  }
}

/** protobuf-es's isScalarZeroValue: -0 and NaN are values, 0n, 0 and "0" are zero. */
function isZero(scalar: ScalarType, value: unknown): boolean {
  switch (scalar) {
    case ScalarType.STRING:
      return value === "";
    case ScalarType.BOOL:
      return value === false;
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return Object.is(value, 0);
    default:
      // biome-ignore lint/suspicious/noDoubleEquals: 0n, 0 and "0" are all the zero value
      return value == 0;
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
    case ScalarType.DOUBLE: {
      const v = toNumber(f, value);
      w.reserve(8);
      w.buf.writeDoubleLE(v, w.pos);
      w.pos += 8;
      return;
    }
    case ScalarType.FLOAT: {
      const v = toNumber(f, value);
      if (Number.isFinite(v) && (v > FLOAT32_MAX || v < -FLOAT32_MAX)) {
        throw invalid(f, "float32", value);
      }
      w.reserve(4);
      w.buf.writeFloatLE(v, w.pos);
      w.pos += 4;
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

function newMessage(plan: Plan): Fields {
  const msg: Fields = { $typeName: plan.typeName };
  for (const [name, zero] of plan.zero) {
    switch (zero) {
      case ZeroValue.EmptyString:
        msg[name] = "";
        break;
      case ZeroValue.False:
        msg[name] = false;
        break;
      case ZeroValue.Zero:
        msg[name] = 0;
        break;
      case ZeroValue.ZeroBigInt:
        msg[name] = 0n;
        break;
      case ZeroValue.ZeroString:
        msg[name] = "0";
        break;
      case ZeroValue.EmptyList:
        msg[name] = [];
        break;
      case ZeroValue.NoCase:
        msg[name] = { case: undefined };
        break;
    }
  }
  return msg;
}

function readMessage(r: Reader, plan: Plan, msg: Fields, end: number, depth: number): void {
  if (depth > RECURSION_LIMIT) {
    throw new Error(
      `cannot decode ${plan.typeName} from binary: maximum recursion depth of ${RECURSION_LIMIT} reached`,
    );
  }
  while (r.pos < end) {
    const tag = r.tag();
    const no = tag >>> 3;
    const wireType = tag & 7;
    const f = plan.byNumber.get(no);
    if (f === undefined || !wireTypeFits(f, wireType)) {
      // Kept as protobuf-es keeps it, and written back when the message is encoded again.
      const start = r.skip(wireType, no, depth);
      msg.$unknown ??= [];
      msg.$unknown.push({ no, wireType, data: r.buf.subarray(start, r.pos) });
      continue;
    }
    switch (f.kind) {
      case Kind.Scalar:
        set(msg, f, readScalar(r, f));
        break;
      case Kind.Message: {
        const len = r.varint32();
        const childPlan = planOf(f.message as DescMessage);
        // A message field that comes twice is merged, as protobuf-es does.
        const prior = f.oneof === undefined ? msg[f.name] : oneofValue(msg, f);
        const child = (prior as Fields | undefined) ?? newMessage(childPlan);
        readMessage(r, childPlan, child, r.end(len), depth + 1);
        set(msg, f, child);
        break;
      }
      case Kind.MessageList: {
        const len = r.varint32();
        const childPlan = planOf(f.message as DescMessage);
        const child = newMessage(childPlan);
        readMessage(r, childPlan, child, r.end(len), depth + 1);
        (msg[f.name] as Fields[]).push(child);
        break;
      }
      case Kind.ScalarList: {
        const list = msg[f.name] as unknown[];
        if (wireType === WIRE_LEN && f.wireType !== WIRE_LEN) {
          // Packed: one length, then the values back to back.
          const len = r.varint32();
          const stop = r.end(len);
          while (r.pos < stop) list.push(readScalar(r, f));
          if (r.pos !== stop) throw new RangeError("premature EOF");
        } else {
          list.push(readScalar(r, f));
        }
        break;
      }
    }
  }
  if (r.pos !== end) throw new RangeError("premature EOF");
}

/** Whether a known field came with a wire type it can be read from (packed or not, for lists). */
function wireTypeFits(f: FieldPlan, wireType: number): boolean {
  if (wireType === f.wireType) return true;
  return f.kind === Kind.ScalarList && wireType === WIRE_LEN;
}

function oneofValue(msg: Fields, f: FieldPlan): unknown {
  const group = msg[f.oneof as string] as { case: string | undefined; value?: unknown };
  return group.case === f.name ? group.value : undefined;
}

function set(msg: Fields, f: FieldPlan, value: unknown): void {
  if (f.oneof === undefined) msg[f.name] = value;
  else msg[f.oneof] = { case: f.name, value };
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

// ---------------------------------------------------------------------------------------------

class PlanCodec<D extends DescMessage> implements Codec<D> {
  constructor(private readonly plan: Plan) {}

  encode(message: MessageShape<D>): Buffer {
    writer.pos = 0;
    writeMessage(writer, this.plan, message as unknown as Fields, 0);
    return writer.take();
  }

  encodeEnvelope(flags: number, message: MessageShape<D>): Buffer {
    writer.pos = 0;
    writer.reserve(5);
    writer.pos = 5;
    writeMessage(writer, this.plan, message as unknown as Fields, 0);
    writer.buf[0] = flags;
    writer.buf.writeUInt32BE(writer.pos - 5, 1);
    return writer.take();
  }

  decode(bytes: Uint8Array): MessageShape<D> {
    const buf = Buffer.isBuffer(bytes)
      ? bytes
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const r = new Reader(buf, buf.length);
    const msg = newMessage(this.plan);
    readMessage(r, this.plan, msg, buf.length, 1);
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
    const bytes = toBinary(this.schema, message);
    const out = Buffer.allocUnsafe(5 + bytes.byteLength);
    out[0] = flags;
    out.writeUInt32BE(bytes.byteLength, 1);
    out.set(bytes, 5);
    return out;
  }

  decode(bytes: Uint8Array): MessageShape<D> {
    return fromBinary(this.schema, bytes);
  }
}
