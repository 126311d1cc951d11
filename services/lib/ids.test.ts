import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { newUuid } from "./ids.js";

describe("newUuid", () => {
  it("is a v4 UUID, a new one each time", () => {
    const a = newUuid();
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(newUuid()).not.toBe(a);
  });

  // A held stream keeps its ids for as long as it lasts.
  it("keeps little heap per id held", () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const ids = new Array<string>(5000);
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < ids.length; i++) ids[i] = newUuid();
    gc();
    const perId = (process.memoryUsage().heapUsed - before) / ids.length;
    expect(ids.at(-1)).toHaveLength(36);
    // crypto.randomUUID()'s own result: ~480 bytes; flat: ~56.
    expect(perId).toBeLessThan(200);
  });
});
