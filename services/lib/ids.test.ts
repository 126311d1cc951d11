import { describe, expect, it } from "vitest";
import { heapKeptEach } from "../../test/helpers/heap.js";
import { MAX_REQUEST_ID_LENGTH, newUuid, requestIdOf } from "./ids.js";

describe("newUuid", () => {
  it("is a v4 UUID, a new one each time", () => {
    const a = newUuid();
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(newUuid()).not.toBe(a);
  });

  // A held stream keeps its ids for as long as it lasts.
  it("keeps little heap per id held", async () => {
    const { bytesEach, kept } = await heapKeptEach(5000, () => newUuid());
    expect(kept.at(-1)).toHaveLength(36);
    // crypto.randomUUID()'s own result: ~480 bytes; flat: ~56.
    expect(bytesEach).toBeLessThan(200);
  });
});

describe("requestIdOf", () => {
  it("keeps a client's id, and replaces a missing or oversized one with a new id", () => {
    expect(requestIdOf("req-123")).toBe("req-123");
    expect(requestIdOf("x".repeat(MAX_REQUEST_ID_LENGTH))).toHaveLength(MAX_REQUEST_ID_LENGTH);
    for (const sent of [undefined, null, "", "x".repeat(MAX_REQUEST_ID_LENGTH + 1)]) {
      expect(requestIdOf(sent)).toMatch(/^[0-9a-f-]{36}$/);
    }
  });
});
