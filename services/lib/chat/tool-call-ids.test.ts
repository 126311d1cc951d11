import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { plainToolCallId, thoughtSignatureOf, withThoughtSignature } from "./tool-call-ids.js";

describe("thought signatures in tool call ids", () => {
  it("gives back exactly the signature Gemini sent, for every padding and both odd characters", () => {
    // Every byte length mod 3: base64 with no, two and one padding characters.
    for (const size of [1, 2, 3, 30, 31, 32, 700]) {
      const signature = randomBytes(size).toString("base64");
      const id = withThoughtSignature("call_0_0", signature);
      expect(id.startsWith("call_0_0__thought__")).toBe(true);
      // Nothing a client or an upstream could read as anything but an id character.
      expect(id).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(thoughtSignatureOf(id)).toBe(signature);
    }
    const odd = "CiwBVKhc7nFq0dD1nMi8mRvdNXCPb0VAvn/mzJHzqX7ytV3Eaa0v0KAmjTE0jQ==";
    expect(withThoughtSignature("call_0_0", odd)).toBe(
      "call_0_0__thought__CiwBVKhc7nFq0dD1nMi8mRvdNXCPb0VAvn_mzJHzqX7ytV3Eaa0v0KAmjTE0jQ",
    );
    expect(thoughtSignatureOf(withThoughtSignature("x", "a+b/"))).toBe("a+b/");
  });

  it("leaves out a signature it could not give back unchanged", () => {
    expect(withThoughtSignature("call_1", "not base64!")).toBe("call_1");
    expect(withThoughtSignature("call_1", "YWJj-_")).toBe("call_1"); // base64url, not base64
    expect(withThoughtSignature("call_1", "YWJjZA")).toBe("call_1"); // unpadded
  });

  it("finds no signature in a plain id or a foreign one", () => {
    expect(thoughtSignatureOf("call_abc123")).toBeUndefined();
    expect(thoughtSignatureOf("toolu_01A09q90qw90lq917835lq9")).toBeUndefined();
    expect(thoughtSignatureOf("call__thought__has spaces")).toBeUndefined();
  });

  it("gives other upstreams a short id that tells signatures apart", () => {
    const a = withThoughtSignature("call_0_0", randomBytes(600).toString("base64"));
    const b = withThoughtSignature("call_0_0", randomBytes(600).toString("base64"));
    expect(plainToolCallId(a)).toMatch(/^call_0_0_[0-9a-f]{8}$/);
    expect(plainToolCallId(a)).toBe(plainToolCallId(a));
    expect(plainToolCallId(a)).not.toBe(plainToolCallId(b));
    // OpenAI has refused tool call ids over 40 characters.
    expect(plainToolCallId(a).length).toBeLessThanOrEqual(40);
    expect(plainToolCallId("call_abc123")).toBe("call_abc123");
  });
});
