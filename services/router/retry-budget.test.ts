import { describe, expect, it } from "vitest";
import { RetryBudget } from "./retry-budget.js";

describe("RetryBudget", () => {
  it("allows the per-second floor even with no traffic, then refuses", () => {
    const t = 0;
    const b = new RetryBudget(0.2, 3, 10_000, () => t);
    expect([b.tryRetry(), b.tryRetry(), b.tryRetry(), b.tryRetry()]).toEqual([
      true,
      true,
      true,
      false,
    ]);
  });

  it("lets retries reach the ratio of requests and no further during an outage", () => {
    let t = 0;
    const b = new RetryBudget(0.2, 0, 10_000, () => t);
    let retries = 0;
    for (let i = 0; i < 1000; i++) {
      t += 1; // 1000 requests within the window, every one wanting a retry
      b.onRequest();
      if (b.tryRetry()) retries++;
    }
    expect(retries).toBe(200);
  });

  it("forgets deposits older than the window", () => {
    let t = 0;
    const b = new RetryBudget(1, 0, 1_000, () => t);
    for (let i = 0; i < 5; i++) b.onRequest();
    t = 2_000;
    expect(b.tryRetry()).toBe(false);
    b.onRequest();
    expect(b.tryRetry()).toBe(true);
  });

  it("keeps a deposit for nine to ten tenths of the window", () => {
    let t = 0;
    const b = new RetryBudget(2, 0, 1_000, () => t);
    b.onRequest(); // two tokens at t=0
    t = 899;
    expect(b.tryRetry()).toBe(true);
    t = 1_000;
    expect(b.tryRetry()).toBe(false);
  });

  it("spends the oldest deposits first, so the newest last longest", () => {
    let t = 0;
    const b = new RetryBudget(1, 0, 1_000, () => t);
    b.onRequest(); // t=0
    t = 500;
    b.onRequest(); // t=500
    expect(b.tryRetry()).toBe(true); // spends t=0's token
    t = 1_200; // t=0's deposit has expired, t=500's has not
    expect([b.tryRetry(), b.tryRetry()]).toEqual([true, false]);
  });

  it("refills the floor over time", () => {
    let t = 0;
    const b = new RetryBudget(0, 2, 10_000, () => t);
    expect([b.tryRetry(), b.tryRetry(), b.tryRetry()]).toEqual([true, true, false]);
    t = 500; // half a second: one more
    expect([b.tryRetry(), b.tryRetry()]).toEqual([true, false]);
  });
});
