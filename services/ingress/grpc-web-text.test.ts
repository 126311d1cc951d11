import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  base64Length,
  decodeBase64Body,
  encodeBase64Body,
  isGrpcWebText,
  maxTextBodyBytes,
} from "./grpc-web-text.js";

/** `pieces` as a request body's stream, counting how many of them were read. */
function bodyOf(pieces: string[]): AsyncIterable<Uint8Array> & { read: number } {
  const body = {
    read: 0,
    async *[Symbol.asyncIterator]() {
      for (const piece of pieces) {
        body.read++;
        yield Buffer.from(piece, "latin1");
      }
    },
  };
  return body;
}

async function decodeAll(pieces: string[], max = 1 << 20): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const bytes of decodeBase64Body(bodyOf(pieces), max)) out.push(Buffer.from(bytes));
  return Buffer.concat(out);
}

async function refusal(pieces: string[], max = 1 << 20): Promise<ConnectError | undefined> {
  return decodeAll(pieces, max).then(
    () => undefined,
    (e) => ConnectError.from(e),
  );
}

let seed = 11;
const rand = (n: number) => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return Math.floor((seed / 2 ** 31) * n);
};

describe("decodeBase64Body", () => {
  it("decodes a body cut into pieces anywhere, groups split across pieces included", async () => {
    for (let i = 0; i < 300; i++) {
      const bytes = Buffer.from(Array.from({ length: rand(200) }, () => rand(256)));
      const text = bytes.toString("base64");
      const pieces: string[] = [];
      for (let at = 0; at < text.length; ) {
        const size = 1 + rand(9);
        pieces.push(text.slice(at, at + size));
        at += size;
      }
      expect((await decodeAll(pieces)).equals(bytes)).toBe(true);
    }
  });

  it("takes padding at the end of any group, so pieces encoded on their own join up", async () => {
    const parts = ["a", "bc", "def", "ghij"].map((s) => Buffer.from(s));
    const text = parts.map((p) => p.toString("base64")).join("");
    expect(text).toBe("YQ==YmM=ZGVmZ2hpag==");
    expect((await decodeAll([text])).toString()).toBe("abcdefghij");
    expect((await decodeAll(text.split(""))).toString()).toBe("abcdefghij");
  });

  it("yields nothing for an empty body", async () => {
    expect((await decodeAll([])).length).toBe(0);
    expect((await decodeAll([""])).length).toBe(0);
  });

  it.each([
    ["a character outside the alphabet", ["QUJD", "R*==" /* at 5 */], /character 5 is not base64/],
    ["a byte past ASCII", ["QUJD\u00c3EFG"], /character 4 is not base64/],
    ["whitespace", ["QUJD\r\nRUZH"], /character 4 is not base64/],
    ["base64url's alphabet", ["QUJ-"], /character 3 is not base64/],
    [
      "a body that ends inside a group",
      ["QUJDRA"],
      /ends inside a 4-character group, at character 4/,
    ],
    ["padding at a group's start", ["QUJD=AAA"], /padding at character 4 is misplaced/],
    ["a group of padding", ["===="], /padding at character 0 is misplaced/],
    ["one '=' where two are due", ["QQ=A"], /padding at character 2 is misplaced/],
  ])("refuses %s with INVALID_ARGUMENT, saying where", async (_name, pieces, why) => {
    const err = await refusal(pieces);
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toMatch(why);
  });

  it("refuses a body longer than `max` encoded bytes without reading on", async () => {
    const pieces = Array(10).fill("AAAA");
    const body = bodyOf(pieces);
    const out = decodeBase64Body(body, 18);
    const got: number[] = [];
    const err = await (async () => {
      for await (const bytes of out) got.push(bytes.length);
    })().then(
      () => undefined,
      (e) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.ResourceExhausted);
    expect(got).toEqual([3, 3, 3, 3]);
    expect(body.read).toBe(5);
  });
});

describe("maxTextBodyBytes", () => {
  it("is the encoded length of one frame that holds a message of the limit", () => {
    expect(maxTextBodyBytes(1)).toBe(8); // 6 bytes of frame
    expect(maxTextBodyBytes(4_194_304)).toBe(base64Length(4_194_309));
    expect(base64Length(4_194_309)).toBe(5_592_412);
  });
});

describe("encodeBase64Body", () => {
  it("encodes each piece on its own, padded, so none waits for the next", async () => {
    async function* pieces() {
      yield Buffer.from("a");
      yield new Uint8Array([0x62, 0x63]);
      yield Buffer.from("def");
    }
    const out: string[] = [];
    for await (const piece of encodeBase64Body(pieces())) out.push(Buffer.from(piece).toString());
    expect(out).toEqual(["YQ==", "YmM=", "ZGVm"]);
  });
});

describe("isGrpcWebText", () => {
  it.each([
    ["application/grpc-web-text", true],
    ["application/grpc-web-text+proto", true],
    ["Application/GRPC-Web-Text", true],
    ["application/grpc-web", false],
    ["application/grpc-web+proto", false],
    ["application/grpc-web-text+json", false],
    [undefined, false],
  ])("%s: %s", (type, text) => {
    expect(isGrpcWebText(type)).toBe(text);
  });
});
