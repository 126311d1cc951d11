import {
  create,
  type DescField,
  type DescMessage,
  fromBinary,
  type MessageShape,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  ChatParamsSchema,
  file_switchyard_chat_v1_chat,
  MessageSchema,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import {
  ChatRequestSchema,
  ChatResponseSchema,
  file_switchyard_connector_v1_connector,
} from "../../../gen/switchyard/connector/v1/connector_pb.js";
import { file_switchyard_gateway_v1_gateway } from "../../../gen/switchyard/gateway/v1/gateway_pb.js";
import { file_switchyard_health_v1_health } from "../../../gen/switchyard/health/v1/health_pb.js";
import { file_switchyard_router_v1_router } from "../../../gen/switchyard/router/v1/router_pb.js";
import { useFastUtf8Encoding } from "../utf8.js";
import { codecFor, makeMessage } from "./codec.js";

useFastUtf8Encoding();

// Every message type of the fabric's own protos, nested ones included.
const files = [
  file_switchyard_chat_v1_chat,
  file_switchyard_connector_v1_connector,
  file_switchyard_gateway_v1_gateway,
  file_switchyard_health_v1_health,
  file_switchyard_router_v1_router,
];
const schemas: DescMessage[] = [];
const collect = (m: DescMessage) => {
  schemas.push(m);
  for (const n of m.nestedMessages) collect(n);
};
for (const f of files) for (const m of f.messages) collect(m);

// A small deterministic generator, so a failure names a seed that reproduces it.
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x100000000;
  };
}
type Rand = ReturnType<typeof rng>;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;

const STRINGS = [
  "",
  "a",
  "gpt-4o-mini",
  "héllo wörld",
  "emoji 😀 and 漢字",
  "lone \ud800 surrogate",
  "x".repeat(127),
  "y".repeat(128),
  "long ü ".repeat(40),
  "z".repeat(20_000),
];
const DOUBLES = [0, -0, 1.5, -2.25, 1e300, -1e-300, Number.NaN, Number.POSITIVE_INFINITY, 0.1];
const UINT32S = [0, 1, 127, 128, 300, 16_383, 16_384, 2 ** 31, 2 ** 32 - 1];
const INT32S = [0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 127, 128, -300];
const INT64S = [
  0n,
  1n,
  -1n,
  2n ** 32n,
  2n ** 32n - 1n,
  2n ** 63n - 1n,
  -(2n ** 63n),
  1_764_000_000_000n,
];

function scalarValue(r: Rand, f: DescField): unknown {
  if (f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum")) {
    // Open enums keep numbers they do not name, negative ones included.
    return r() < 0.8 ? pick(r, f.enum.values).number : pick(r, INT32S);
  }
  const scalar =
    f.fieldKind === "scalar" || (f.fieldKind === "list" && f.listKind === "scalar")
      ? f.scalar
      : ScalarType.INT32;
  switch (scalar) {
    case ScalarType.STRING:
      return pick(r, STRINGS);
    case ScalarType.BOOL:
      return r() < 0.5;
    case ScalarType.DOUBLE:
      return r() < 0.5 ? pick(r, DOUBLES) : (r() - 0.5) * 1e6;
    case ScalarType.FLOAT:
      return Math.fround(r() < 0.5 ? pick(r, DOUBLES) : (r() - 0.5) * 1e3);
    case ScalarType.UINT32:
      return pick(r, UINT32S);
    case ScalarType.INT64:
      return pick(r, INT64S);
    default:
      return pick(r, INT32S);
  }
}

function randomMessage(r: Rand, desc: DescMessage, depth: number): Record<string, unknown> {
  const init: Record<string, unknown> = {};
  for (const member of desc.members) {
    if (member.kind === "oneof") {
      if (r() < 0.3) continue;
      const f = pick(r, member.fields);
      const value = fieldValue(r, f, depth);
      if (value !== undefined) init[member.localName] = { case: f.localName, value };
      continue;
    }
    if (r() < 0.3) continue;
    const value = fieldValue(r, member, depth);
    if (value !== undefined) init[member.localName] = value;
  }
  return create(desc, init as never) as unknown as Record<string, unknown>;
}

function fieldValue(r: Rand, f: DescField, depth: number): unknown {
  switch (f.fieldKind) {
    case "message":
      return depth > 3 ? undefined : randomMessage(r, f.message, depth + 1);
    case "list": {
      const n = depth > 3 ? 0 : Math.floor(r() * 4);
      const out: unknown[] = [];
      for (let i = 0; i < n; i++) {
        out.push(
          f.listKind === "message" ? randomMessage(r, f.message, depth + 1) : scalarValue(r, f),
        );
      }
      return out;
    }
    case "map":
      return undefined;
    default:
      return scalarValue(r, f);
  }
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("hop codec", () => {
  it("compiles every message type of the fabric's protos", () => {
    expect(schemas.length).toBeGreaterThan(30);
    for (const s of schemas) expect(codecFor(s).constructor.name, s.typeName).toBe("PlanCodec");
  });

  it("encodes to protobuf-es's bytes and decodes to its messages, for every type", () => {
    for (const schema of schemas) {
      const codec = codecFor(schema);
      for (let seed = 1; seed <= 40; seed++) {
        const r = rng(seed * 7919 + schema.typeName.length);
        const msg = randomMessage(r, schema, 0) as MessageShape<DescMessage>;
        const expected = toBinary(schema, msg);
        const ours = codec.encode(msg);
        expect(hex(ours), `${schema.typeName} seed ${seed}`).toBe(hex(expected));
        expect(codec.decode(expected), `${schema.typeName} seed ${seed}`).toEqual(
          fromBinary(schema, expected),
        );
        const env = codec.encodeEnvelope(2, msg);
        expect(env[0]).toBe(2);
        expect(env.readUInt32BE(1)).toBe(expected.byteLength);
        expect(hex(env.subarray(5))).toBe(hex(expected));
      }
    }
  });

  it("reads a cut-off message as protobuf-es does: an error, or the fields before a boundary", () => {
    let errors = 0;
    for (const schema of [ChatRequestSchema, ChatResponseSchema, MessageSchema]) {
      const codec = codecFor(schema);
      for (let seed = 1; seed <= 5; seed++) {
        const bytes = toBinary(schema, randomMessage(rng(seed), schema, 0) as never);
        for (let cut = 0; cut < Math.min(bytes.length, 400); cut++) {
          const part = bytes.subarray(0, cut);
          let want: unknown;
          try {
            want = fromBinary(schema, part);
          } catch {
            errors++;
            expect(() => codec.decode(part), `${schema.typeName} cut at ${cut}`).toThrow();
            continue;
          }
          expect(codec.decode(part), `${schema.typeName} cut at ${cut}`).toEqual(want);
        }
      }
    }
    expect(errors).toBeGreaterThan(100);
  });

  it("keeps unknown fields and writes them back", () => {
    // Message with role=2, then field 99 (a string) and field 100 (a varint) it does not know.
    const known = toBinary(MessageSchema, create(MessageSchema, { role: 2 }));
    const bytes = Buffer.concat([
      known,
      Buffer.from([0x9a, 0x06, 0x02, 0x68, 0x69, 0xa0, 0x06, 0x2a]),
    ]);
    const codec = codecFor(MessageSchema);
    const ours = codec.decode(bytes);
    expect(ours).toEqual(fromBinary(MessageSchema, bytes));
    expect(ours.$unknown).toHaveLength(2);
    expect(hex(codec.encode(ours))).toBe(hex(bytes));

    // `name` (a string, field 4) sent as a varint: kept as an unknown field, not misread.
    const name = MessageSchema.fields.find((f) => f.localName === "name");
    if (!name) throw new Error("no name field");
    const wrongType = Buffer.from([name.number << 3, 0x05]);
    const read = codec.decode(wrongType);
    expect(read.name).toBeUndefined();
    expect(read.$unknown).toEqual([{ no: name.number, wireType: 0, data: Buffer.from([0x05]) }]);
    expect(hex(codec.encode(read))).toBe(hex(wrongType));
  });

  it("reads what other writers may send: unpacked lists, merged messages, ten-byte int32s", () => {
    const embedding = file_switchyard_chat_v1_chat.messages.find((m) => m.name === "Embedding");
    if (!embedding) throw new Error("no Embedding message");
    const values = embedding.fields.find((f) => f.localName === "values");
    if (!values) throw new Error("no values field");
    const tag = (values.number << 3) | 5; // unpacked floats
    const unpacked = Buffer.alloc(10);
    unpacked[0] = tag;
    unpacked.writeFloatLE(1.5, 1);
    unpacked[5] = tag;
    unpacked.writeFloatLE(-2, 6);
    expect(codecFor(embedding).decode(unpacked)).toEqual(fromBinary(embedding, unpacked));

    // A ChatRequest whose `context` comes in two parts: the parts merge.
    const a = toBinary(ChatRequestSchema, create(ChatRequestSchema, { context: { tenant: "t1" } }));
    const b = toBinary(
      ChatRequestSchema,
      create(ChatRequestSchema, { context: { requestId: "r" } }),
    );
    const merged = Buffer.concat([a, b]);
    const decoded = codecFor(ChatRequestSchema).decode(merged);
    expect(decoded).toEqual(fromBinary(ChatRequestSchema, merged));
    expect(decoded.context?.tenant).toBe("t1");
    expect(decoded.context?.requestId).toBe("r");

    // role = -1 as an int32 is written sign-extended to ten bytes.
    const negative = toBinary(MessageSchema, create(MessageSchema, { role: -1 as never }));
    expect(negative.length).toBe(11);
    expect(codecFor(MessageSchema).decode(negative).role).toBe(-1);
  });

  it("rejects malformed UTF-8 in a string, as protobuf-es does, and keeps a leading BOM", () => {
    const text = MessageSchema.fields.find((f) => f.localName === "name");
    if (!text) throw new Error("no name field");
    const bad = Buffer.from([(text.number << 3) | 2, 2, 0xff, 0xfe]);
    expect(() => fromBinary(MessageSchema, bad)).toThrow();
    expect(() => codecFor(MessageSchema).decode(bad)).toThrow(/utf-8/);
    // A real U+FFFD is text, not an error.
    const replacement = toBinary(MessageSchema, create(MessageSchema, { name: "a\ufffdb" }));
    expect(codecFor(MessageSchema).decode(replacement).name).toBe("a\ufffdb");
    // protobuf-es decodes with TextDecoder, which drops a leading byte-order mark; a hop passes
    // the text on as it was sent.
    const bom = codecFor(MessageSchema).encode(create(MessageSchema, { name: "\ufeffhi" }));
    expect(codecFor(MessageSchema).decode(bom).name).toBe("\ufeffhi");
  });

  it("refuses to encode values that do not fit their fields", () => {
    const codec = codecFor(MessageSchema);
    expect(() => codec.encode(create(MessageSchema, { role: 1.5 as never }))).toThrow(
      /switchyard.chat.v1.Message.role.*invalid int32/,
    );
    expect(() => codec.encode({ ...create(MessageSchema), name: 5 as never })).toThrow(
      /invalid string/,
    );
  });

  it("makes messages from init objects as create() does, for every type", () => {
    // An init object: the message with its $typeName dropped here and there, nulls sprinkled in.
    const toInit = (r: Rand, value: unknown): unknown => {
      if (Array.isArray(value)) return value.map((x) => toInit(r, x));
      if (value === null || typeof value !== "object" || value instanceof Uint8Array) return value;
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) {
        if (k === "$typeName" && r() < 0.6) continue;
        out[k] = r() < 0.1 && k !== "$typeName" ? null : toInit(r, v);
      }
      return out;
    };
    for (const schema of schemas) {
      for (let seed = 1; seed <= 25; seed++) {
        const r = rng(seed * 104_729 + schema.typeName.length);
        const init = toInit(r, randomMessage(r, schema, 0)) as never;
        expect(makeMessage(schema, init), `${schema.typeName} seed ${seed}`).toStrictEqual(
          create(schema, init),
        );
      }
      expect(makeMessage(schema)).toStrictEqual(create(schema));
    }
    // A message of the type is kept as it is; a list of scalars stays the same array.
    const msg = create(MessageSchema, { name: "a" });
    expect(makeMessage(MessageSchema, msg)).toBe(msg);
    const stop = ["\n\n"];
    expect(makeMessage(ChatParamsSchema, { stop }).stop).toBe(stop);
    // A oneof whose case names no field is left unset, as create() leaves it.
    const odd = { content: [{ part: { case: "nothing", value: 1 } }] } as never;
    expect(makeMessage(MessageSchema, odd)).toStrictEqual(create(MessageSchema, odd));
  });

  it("falls back to protobuf-es for what it does not compile (proto2, maps)", () => {
    const codec = codecFor(FileDescriptorProtoSchema);
    expect(codec.constructor.name).toBe("FallbackCodec");
    const msg = create(FileDescriptorProtoSchema, { name: "a.proto", dependency: ["b.proto"] });
    const bytes = codec.encode(msg);
    expect(hex(bytes)).toBe(hex(toBinary(FileDescriptorProtoSchema, msg)));
    expect(codec.decode(bytes)).toEqual(fromBinary(FileDescriptorProtoSchema, bytes));
    const env = codec.encodeEnvelope(0, msg);
    expect([env[0], env.readUInt32BE(1), hex(env.subarray(5))]).toEqual([
      0,
      bytes.length,
      hex(bytes),
    ]);
  });
});
