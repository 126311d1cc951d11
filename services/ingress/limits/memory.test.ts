import { describe, expect, it } from "vitest";
import { hashKey } from "../../lib/config/keys.js";
import { LimitExceeded } from "./limiter.js";
import { createMemoryLimiter, TimeQueue } from "./memory.js";

describe("TimeQueue", () => {
  it("answers as an array spliced at the front would, through many compactions", () => {
    const queue = new TimeQueue();
    const model: number[] = [];
    let t = 0;
    let seed = 7;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let step = 0; step < 50_000; step++) {
      t += Math.floor(random() * 3);
      if (random() < 0.7) {
        queue.push(t);
        model.push(t);
      } else {
        const cutoff = t - Math.floor(random() * 3000);
        queue.dropUpTo(cutoff);
        while (model.length > 0 && (model[0] as number) <= cutoff) model.shift();
      }
      expect(queue.size).toBe(model.length);
      const n = 1 + Math.floor(random() * 5000);
      expect(queue.fromEnd(n)).toBe(model[model.length - n]);
    }
    expect(queue.fromEnd(0)).toBeUndefined();
  });
});

describe("memory limiter", () => {
  it("keeps an exact sliding minute at a large rpm", async () => {
    let now = Date.UTC(2026, 2, 10, 12, 0, 0);
    const key = hashKey("key-a");
    const limiter = createMemoryLimiter({
      tenants: { acme: { keys: [key], limits: { rpm: 6000 } } },
      clock: () => now,
      maxLeaseMs: 60_000,
    });
    // 100 admissions a second for two minutes: the window always holds the last 6,000, so each
    // one fits, and the window drops its oldest entry at every admission after the first minute.
    for (let i = 0; i < 12_000; i++) {
      const r = await limiter.admit("acme", key, { tokens: 1, usd: 0 });
      expect(r.snapshot.requests?.remaining).toBe(Math.max(0, 6000 - 1 - i));
      now += 10;
    }
    now -= 10;
    const refused = await limiter.admit("acme", key, { tokens: 1, usd: 0 }).catch((e) => e);
    expect(refused).toBeInstanceOf(LimitExceeded);
    // The oldest admission in the window came 59.99 s ago: it leaves in 10 ms.
    expect((refused as LimitExceeded).retryAfterMs).toBe(10);
  });
});
