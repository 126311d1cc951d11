import { describe, expect, it } from "vitest";
import { targetKey } from "./targets.js";

describe("targetKey", () => {
  it("tells apart pairs that a separator would run together", () => {
    expect(targetKey("a,b", "c")).not.toBe(targetKey("a", "b,c"));
    expect(targetKey('a"', "b")).not.toBe(targetKey("a", '"b'));
    expect(targetKey("openai", "gpt-4o")).toBe(JSON.stringify(["openai", "gpt-4o"]));
  });

  it("gives the same key every time, also past its cache's limit", () => {
    const first = targetKey("openai", "gpt-4o");
    for (let i = 0; i < 10_000; i++) {
      expect(targetKey(`p${i % 7}`, `m${i}`)).toBe(JSON.stringify([`p${i % 7}`, `m${i}`]));
      expect(targetKey(`q${i}`, "m")).toBe(JSON.stringify([`q${i}`, "m"]));
    }
    expect(targetKey("openai", "gpt-4o")).toBe(first);
  });
});
