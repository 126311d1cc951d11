import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";
import { afterEach, describe, expect, it } from "vitest";
import { ChatParamsSchema, Role } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { encodeUtf8, useFastUtf8Encoding } from "./utf8.js";

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
