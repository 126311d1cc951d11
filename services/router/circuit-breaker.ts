import { targetKey } from "../lib/targets.js";

type State =
  | { kind: "closed"; failures: number }
  | { kind: "open"; until: number }
  | { kind: "half-open" }
  /** A pause the target asked for (Retry-After): no calls until then, the count kept. */
  | { kind: "paused"; until: number; failures: number };

/**
 * A local circuit breaker per target: opens after `consecutiveFailures` failures in a row,
 * lets one trial call through after `cooldownMs`, closes on its success, reopens on its failure.
 * A target's own request for a pause (a 429 with Retry-After) is not a trip: calls wait it out,
 * and then go on as before, the failures in a row still counted towards the threshold.
 */
export class CircuitBreakers {
  private readonly states = new Map<string, State>();

  constructor(
    private readonly consecutiveFailures: number,
    private readonly cooldownMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether a call may go to this target now. Taking the half-open trial claims it. */
  tryAcquire(provider: string, model: string): boolean {
    const key = targetKey(provider, model);
    const s = this.states.get(key);
    if (!s || s.kind === "closed") return true;
    if (s.kind === "half-open") return false; // a trial is already in flight
    if (this.now() < s.until) return false;
    this.states.set(
      key,
      s.kind === "paused" ? { kind: "closed", failures: s.failures } : { kind: "half-open" },
    );
    return true;
  }

  /** Whether the breaker would refuse a call now (without claiming a trial). */
  isOpen(provider: string, model: string): boolean {
    const s = this.states.get(targetKey(provider, model));
    if (s === undefined || s.kind === "closed") return false;
    return s.kind === "half-open" || this.now() < s.until;
  }

  /** How much longer a Retry-After pause keeps calls from this target; 0 when it is not paused. */
  pausedMs(provider: string, model: string): number {
    const s = this.states.get(targetKey(provider, model));
    return s?.kind === "paused" ? Math.max(0, s.until - this.now()) : 0;
  }

  onSuccess(provider: string, model: string): void {
    this.states.delete(targetKey(provider, model));
  }

  onFailure(provider: string, model: string): void {
    const key = targetKey(provider, model);
    const s = this.states.get(key);
    if (s?.kind === "half-open" || s?.kind === "open") {
      this.states.set(key, { kind: "open", until: this.now() + this.cooldownMs });
      return;
    }
    const failures = (s?.failures ?? 0) + 1;
    if (failures >= this.consecutiveFailures) {
      this.states.set(key, { kind: "open", until: this.now() + this.cooldownMs });
    } else if (s?.kind === "paused") {
      this.states.set(key, { ...s, failures });
    } else {
      this.states.set(key, { kind: "closed", failures });
    }
  }

  /**
   * The target asked for a pause (429 with Retry-After): no calls until then, after which calls
   * go through as before (an open breaker's cooldown, if longer, still ends in one trial). Never
   * shortens a longer pause or cooldown already in force.
   */
  coolDown(provider: string, model: string, ms: number): void {
    const key = targetKey(provider, model);
    const until = this.now() + ms;
    const s = this.states.get(key);
    if (s?.kind === "open" || s?.kind === "paused") {
      if (s.until < until) this.states.set(key, { ...s, until });
      return;
    }
    // A half-open trial that was asked to wait is not a verdict; the next call is a trial again.
    if (s?.kind === "half-open") this.states.set(key, { kind: "open", until });
    else this.states.set(key, { kind: "paused", until, failures: s?.failures ?? 0 });
  }

  /** The call holding the half-open trial ended without a verdict (e.g. the client left). */
  onAbandon(provider: string, model: string): void {
    const key = targetKey(provider, model);
    if (this.states.get(key)?.kind === "half-open")
      this.states.set(key, { kind: "open", until: 0 });
  }

  /** 0 closed (or paused: not a trip), 1 open, 2 half-open — the circuit-state gauge's value. */
  stateValue(provider: string, model: string): number {
    const s = this.states.get(targetKey(provider, model));
    if (!s || s.kind === "closed" || s.kind === "paused") return 0;
    return s.kind === "open" ? 1 : 2;
  }
}
