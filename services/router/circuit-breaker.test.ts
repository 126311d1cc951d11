import { describe, expect, it } from "vitest";
import { CircuitBreakers } from "./circuit-breaker.js";

const COOLDOWN = 30_000;

/** Breakers that open after 3 failures, on a clock the test moves by hand. */
function breakersWithClock() {
  const clock = { now: 1_000_000 };
  const breakers = new CircuitBreakers(3, COOLDOWN, () => clock.now);
  return { clock, breakers };
}

function fail(breakers: CircuitBreakers, times: number, provider = "p", model = "m") {
  for (let i = 0; i < times; i++) breakers.onFailure(provider, model);
}

describe("CircuitBreakers", () => {
  it("lets calls through while failures stay under the threshold", () => {
    const { breakers } = breakersWithClock();
    fail(breakers, 2);
    expect(breakers.isOpen("p", "m")).toBe(false);
    expect(breakers.tryAcquire("p", "m")).toBe(true);
    expect(breakers.stateValue("p", "m")).toBe(0);
  });

  it("opens after consecutive_failures failures in a row", () => {
    const { breakers } = breakersWithClock();
    fail(breakers, 3);
    expect(breakers.isOpen("p", "m")).toBe(true);
    expect(breakers.tryAcquire("p", "m")).toBe(false);
    expect(breakers.stateValue("p", "m")).toBe(1);
  });

  it("counts only failures in a row: a success starts the count again", () => {
    const { breakers } = breakersWithClock();
    fail(breakers, 2);
    breakers.onSuccess("p", "m");
    fail(breakers, 2);
    expect(breakers.isOpen("p", "m")).toBe(false);
    fail(breakers, 1);
    expect(breakers.isOpen("p", "m")).toBe(true);
  });

  it("keeps each target apart", () => {
    const { breakers } = breakersWithClock();
    fail(breakers, 3, "p", "m");
    expect(breakers.isOpen("p", "other-model")).toBe(false);
    expect(breakers.isOpen("q", "m")).toBe(false);
    expect(breakers.tryAcquire("q", "m")).toBe(true);
  });

  it("stays open for the whole cooldown, then lets exactly one trial through", () => {
    const { clock, breakers } = breakersWithClock();
    fail(breakers, 3);
    clock.now += COOLDOWN - 1;
    expect(breakers.tryAcquire("p", "m")).toBe(false);
    clock.now += 1;
    // Past the cooldown the breaker no longer refuses, but asking does not claim the trial.
    expect(breakers.isOpen("p", "m")).toBe(false);
    expect(breakers.isOpen("p", "m")).toBe(false);
    expect(breakers.tryAcquire("p", "m")).toBe(true);
    expect(breakers.stateValue("p", "m")).toBe(2);
    expect(breakers.isOpen("p", "m")).toBe(true);
    expect(breakers.tryAcquire("p", "m")).toBe(false);
  });

  it("closes when the trial succeeds", () => {
    const { clock, breakers } = breakersWithClock();
    fail(breakers, 3);
    clock.now += COOLDOWN;
    expect(breakers.tryAcquire("p", "m")).toBe(true);
    breakers.onSuccess("p", "m");
    expect(breakers.stateValue("p", "m")).toBe(0);
    expect(breakers.tryAcquire("p", "m")).toBe(true);
    expect(breakers.tryAcquire("p", "m")).toBe(true);
    // Closed again means a fresh count: one failure does not reopen it.
    fail(breakers, 1);
    expect(breakers.isOpen("p", "m")).toBe(false);
  });

  it("reopens for a full cooldown when the trial fails", () => {
    const { clock, breakers } = breakersWithClock();
    fail(breakers, 3);
    clock.now += COOLDOWN;
    expect(breakers.tryAcquire("p", "m")).toBe(true);
    breakers.onFailure("p", "m");
    expect(breakers.stateValue("p", "m")).toBe(1);
    clock.now += COOLDOWN - 1;
    expect(breakers.tryAcquire("p", "m")).toBe(false);
    clock.now += 1;
    expect(breakers.tryAcquire("p", "m")).toBe(true);
  });

  it("offers the trial again at once when its holder gave up without a verdict", () => {
    const { clock, breakers } = breakersWithClock();
    fail(breakers, 3);
    clock.now += COOLDOWN;
    expect(breakers.tryAcquire("p", "m")).toBe(true);
    breakers.onAbandon("p", "m");
    expect(breakers.isOpen("p", "m")).toBe(false);
    expect(breakers.tryAcquire("p", "m")).toBe(true);
    expect(breakers.tryAcquire("p", "m")).toBe(false);
  });

  it("ignores an abandoned call when no trial is out", () => {
    const { breakers } = breakersWithClock();
    fail(breakers, 3);
    breakers.onAbandon("p", "m");
    expect(breakers.tryAcquire("p", "m")).toBe(false);
    const fresh = breakersWithClock().breakers;
    fresh.onAbandon("p", "m");
    expect(fresh.stateValue("p", "m")).toBe(0);
  });

  it("restarts the cooldown when a call that began before it opened fails late", () => {
    const { clock, breakers } = breakersWithClock();
    fail(breakers, 3);
    clock.now += COOLDOWN / 2;
    breakers.onFailure("p", "m");
    clock.now += COOLDOWN / 2;
    expect(breakers.tryAcquire("p", "m")).toBe(false);
    clock.now += COOLDOWN / 2;
    expect(breakers.tryAcquire("p", "m")).toBe(true);
  });

  describe("a pause the target asked for (Retry-After)", () => {
    /** A 429 with Retry-After as the router settles it: the pause alone. */
    function rateLimited(breakers: CircuitBreakers, ms: number) {
      breakers.pauseFor("p", "m", ms, "rate_limited");
    }

    it("refuses calls until it ends, then lets every call through: it is not a trip", () => {
      const { clock, breakers } = breakersWithClock();
      rateLimited(breakers, 1_000);
      expect(breakers.isOpen("p", "m")).toBe(true);
      expect(breakers.tryAcquire("p", "m")).toBe(false);
      expect(breakers.stateValue("p", "m")).toBe(0);
      clock.now += 1_000;
      expect(breakers.tryAcquire("p", "m")).toBe(true);
      expect(breakers.tryAcquire("p", "m")).toBe(true);
      expect(breakers.stateValue("p", "m")).toBe(0);
    });

    it("does not open the breaker on the next single failure", () => {
      const { clock, breakers } = breakersWithClock();
      rateLimited(breakers, 1_000);
      clock.now += 1_000;
      expect(breakers.tryAcquire("p", "m")).toBe(true);
      breakers.onFailure("p", "m");
      expect(breakers.isOpen("p", "m")).toBe(false);
      expect(breakers.tryAcquire("p", "m")).toBe(true);
    });

    it("never trips however many pauses come in a row, each waited out", () => {
      const { clock, breakers } = breakersWithClock();
      for (let i = 0; i < 10; i++) {
        expect(breakers.tryAcquire("p", "m")).toBe(true);
        rateLimited(breakers, 1_000);
        clock.now += 1_000;
      }
      expect(breakers.stateValue("p", "m")).toBe(0);
    });

    it("keeps counting the other failures in a row towards the threshold", () => {
      const { clock, breakers } = breakersWithClock();
      breakers.onFailure("p", "m");
      rateLimited(breakers, 1_000);
      breakers.onFailure("p", "m"); // a call that began before the pause
      clock.now += 1_000;
      expect(breakers.tryAcquire("p", "m")).toBe(true);
      breakers.onFailure("p", "m"); // the third in a row
      expect(breakers.stateValue("p", "m")).toBe(1);
      clock.now += 1_000;
      expect(breakers.tryAcquire("p", "m")).toBe(false);
    });

    it("lengthens an open breaker's cooldown when longer, and never shortens it", () => {
      const { clock, breakers } = breakersWithClock();
      fail(breakers, 3);
      breakers.pauseFor("p", "m", 1_000, "rate_limited");
      clock.now += COOLDOWN;
      expect(breakers.tryAcquire("p", "m")).toBe(true); // the trial, on time
      breakers.onFailure("p", "m");
      breakers.pauseFor("p", "m", 2 * COOLDOWN, "upstream_unavailable");
      clock.now += COOLDOWN;
      expect(breakers.tryAcquire("p", "m")).toBe(false);
      clock.now += COOLDOWN;
      expect(breakers.tryAcquire("p", "m")).toBe(true);
      expect(breakers.stateValue("p", "m")).toBe(2);
    });

    it("is a pause of its own while the circuit is open, which a last resort must respect", () => {
      // A 503 with Retry-After as the router settles it: a failure, and the pause.
      const { clock, breakers } = breakersWithClock();
      fail(breakers, 3);
      breakers.pauseFor("p", "m", 2 * COOLDOWN, "upstream_unavailable");
      expect(breakers.stateValue("p", "m")).toBe(1);
      expect(breakers.pausedMs("p", "m")).toBe(2 * COOLDOWN);
      expect(breakers.pauseKind("p", "m")).toBe("upstream_unavailable");
      clock.now += COOLDOWN;
      expect(breakers.pausedMs("p", "m")).toBe(COOLDOWN);
      expect(breakers.tryAcquire("p", "m")).toBe(false);
      clock.now += COOLDOWN;
      expect(breakers.pausedMs("p", "m")).toBe(0);
      expect(breakers.pauseKind("p", "m")).toBeUndefined();
      expect(breakers.tryAcquire("p", "m")).toBe(true);
      expect(breakers.stateValue("p", "m")).toBe(2);
    });

    it("outlasts a success of a call that began before it", () => {
      const { clock, breakers } = breakersWithClock();
      rateLimited(breakers, 1_000);
      breakers.onSuccess("p", "m");
      expect(breakers.tryAcquire("p", "m")).toBe(false);
      clock.now += 1_000;
      expect(breakers.tryAcquire("p", "m")).toBe(true);
    });

    it("keeps the longer of two pauses, and the kind that asked for it", () => {
      const { clock, breakers } = breakersWithClock();
      breakers.pauseFor("p", "m", 5_000, "upstream_unavailable");
      breakers.pauseFor("p", "m", 1_000, "rate_limited");
      expect(breakers.pauseKind("p", "m")).toBe("upstream_unavailable");
      clock.now += 1_000;
      expect(breakers.pausedMs("p", "m")).toBe(4_000);
      breakers.pauseFor("p", "m", 6_000, "rate_limited");
      expect(breakers.pauseKind("p", "m")).toBe("rate_limited");
    });
  });

  it("uses the real clock when none is given", () => {
    const breakers = new CircuitBreakers(1, 60_000);
    breakers.onFailure("p", "m");
    expect(breakers.isOpen("p", "m")).toBe(true);
  });
});
