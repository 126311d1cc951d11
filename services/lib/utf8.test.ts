import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";
import { afterEach, describe, expect, it } from "vitest";
import { ChatParamsSchema, Role } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { encodeUtf8, invalidUtf8Offset, useFastUtf8Encoding } from "./utf8.js";

const reference = new TextEncoder();

const samples = [
  "",
  "gpt-4o-mini",
  "0193b0f0-aaaa-bbbb-cccc-ddddeeeeffff",
  "x".repeat(48),
  "x".repeat(49),
  "a".repeat(5000),
  "héllo wörld",
  "日本語のテキスト",
  "emoji 🚀 and more",
  "lone surrogate \ud800 here",
  "\udc00",
  "\u007f\u0080\u07ff\u0800\uffff",
  `${"ascii ".repeat(7)}é`,
];

describe("encodeUtf8", () => {
  it.each(samples.map((s) => [s]))("gives TextEncoder's bytes for %j", (text) => {
    expect(Buffer.from(encodeUtf8(text))).toEqual(Buffer.from(reference.encode(text)));
  });

  it("gives TextEncoder's bytes for random strings of every kind of code unit", () => {
    let seed = 42;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let i = 0; i < 2000; i++) {
      const len = Math.floor(rand() * 80);
      let text = "";
      for (let j = 0; j < len; j++) {
        const r = rand();
        text += String.fromCharCode(
          r < 0.7
            ? Math.floor(rand() * 0x80)
            : r < 0.9
              ? Math.floor(rand() * 0x800)
              : Math.floor(rand() * 0x10000),
        );
      }
      expect(Buffer.from(encodeUtf8(text))).toEqual(Buffer.from(reference.encode(text)));
    }
  });
});

describe("useFastUtf8Encoding", () => {
  const before = getTextEncoding();
  afterEach(() => configureTextEncoding(before));

  it("makes protobuf-es encode strings with it, to the same bytes", () => {
    const params = create(ChatParamsSchema, {
      model: "bench-model",
      user: "wörld 🚀",
      messages: [
        {
          role: Role.USER,
          content: [{ part: { case: "text", value: `Say hello ${"in one sentence ".repeat(9)}` } }],
        },
      ],
    });
    const plain = toBinary(ChatParamsSchema, params);
    useFastUtf8Encoding();
    expect(getTextEncoding().encodeUtf8).toBe(encodeUtf8);
    const fast = toBinary(ChatParamsSchema, params);
    expect(Buffer.from(fast)).toEqual(Buffer.from(plain));
    expect(fromBinary(ChatParamsSchema, fast).user).toBe("wörld 🚀");
  });
});

describe("invalidUtf8Offset", () => {
  const bytes = (...parts: Array<string | number[]>) =>
    Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p) : Buffer.from(p))));

  it.each([
    ["valid text of every length of sequence", bytes("aé€🚀"), -1],
    ["nothing", bytes(), -1],
    ["a lone continuation byte", bytes("ab", [0x80], "c"), 2],
    ["a byte UTF-8 never uses", bytes("abc", [0xff]), 3],
    ["an overlong form", bytes("x", [0xc0, 0xaf]), 1],
    ["an overlong three-byte form", bytes("x", [0xe0, 0x80, 0xaf]), 1],
    ["a surrogate", bytes("xy", [0xed, 0xa0, 0x80]), 2],
    ["a code point past U+10FFFF", bytes([0xf4, 0x90, 0x80, 0x80]), 0],
    ["a sequence cut by the end", bytes("é€", [0xf0, 0x9f, 0x9a]), 5],
    ["a sequence cut by an ASCII byte", bytes("€", [0xe2, 0x82], "a"), 3],
  ])("finds %s", (_name, input, at) => {
    expect(invalidUtf8Offset(input)).toBe(at);
  });

  it("agrees with a fatal TextDecoder, and points at where its replacement begins, on random bytes", () => {
    const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
    const lenient = new TextDecoder("utf-8", { ignoreBOM: true });
    let seed = 7;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    // Mostly valid text with a few random bytes in it: every kind of sequence, cut or not.
    const pieces = ["a", "é", "€", "🚀", "\u{10FFFF}"].map((t) => Buffer.from(t));
    let invalid = 0;
    for (let i = 0; i < 3000; i++) {
      const parts: Buffer[] = [];
      for (let j = Math.floor(rand() * 12); j > 0; j--) {
        parts.push(
          rand() < 0.9
            ? (pieces[Math.floor(rand() * pieces.length)] as Buffer)
            : Buffer.from([Math.floor(rand() * 256)]),
        );
      }
      const input = Buffer.concat(parts);
      const at = invalidUtf8Offset(input);
      let valid = true;
      try {
        fatal.decode(input);
      } catch {
        valid = false;
      }
      expect([input.toString("hex"), at === -1]).toEqual([input.toString("hex"), valid]);
      if (at === -1) continue;
      invalid++;
      expect(fatal.decode(input.subarray(0, at))).toBeTypeOf("string");
      expect(lenient.decode(input.subarray(at)).startsWith("\uFFFD")).toBe(true);
    }
    expect(invalid).toBeGreaterThan(300);
  });
});
