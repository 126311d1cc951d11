import { describe, expect, it } from "vitest";
import { hashKey, isKeyHash, keyMatches } from "./keys.js";

const TEST_HASH = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

describe("hashKey", () => {
  it("gives the sha256: form of the UTF-8 key (known vector for 'test')", () => {
    expect(hashKey("test")).toBe(TEST_HASH);
  });

  it("hashes exactly what it is given, trailing newline included", () => {
    expect(hashKey("test\n")).not.toBe(TEST_HASH);
  });

  it("hashes non-ASCII keys as UTF-8 bytes", () => {
    expect(hashKey("clé")).toBe(
      "sha256:51cbcf30514d0802eb5c60a018f384ea3fb9b69307c554ee63ecb43177594de4",
    );
  });
});

describe("isKeyHash", () => {
  it("accepts sha256: with 64 hex digits in either case", () => {
    expect(isKeyHash(TEST_HASH)).toBe(true);
    expect(isKeyHash(TEST_HASH.toUpperCase().replace("SHA256", "sha256"))).toBe(true);
  });

  it("rejects plaintext keys, short digests and other algorithms", () => {
    expect(isKeyHash("sk-live-123")).toBe(false);
    expect(isKeyHash(TEST_HASH.slice(0, -1))).toBe(false);
    expect(isKeyHash(TEST_HASH.replace("sha256", "md5"))).toBe(false);
    expect(isKeyHash(`${TEST_HASH}0`)).toBe(false);
  });
});

describe("keyMatches", () => {
  it("matches a presented key against any of several active hashes (rotation)", () => {
    expect(keyMatches("test", [hashKey("old"), TEST_HASH])).toBe(true);
    expect(keyMatches("old", [hashKey("old"), TEST_HASH])).toBe(true);
  });

  it("rejects a key whose hash is not listed", () => {
    expect(keyMatches("wrong", [TEST_HASH])).toBe(false);
    expect(keyMatches("test", [])).toBe(false);
  });

  it("compares digests, so the hex case of the configured hash does not matter", () => {
    expect(keyMatches("test", [`sha256:${TEST_HASH.slice(7).toUpperCase()}`])).toBe(true);
  });

  it("skips malformed entries instead of throwing", () => {
    expect(keyMatches("test", ["sha256:abc", "test", TEST_HASH])).toBe(true);
    expect(keyMatches("test", ["sha256:abc"])).toBe(false);
  });
});
