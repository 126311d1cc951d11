import { targetKey } from "../lib/targets.js";

type State =
  | { kind: "closed"; failures: number }
  | { kind: "open"; until: number }
  | { kind: "half-open" };

/**
 * A local circuit breaker per target: opens after `consecutiveFailures` failures in a row,
 * lets one trial call through after `cooldownMs`, closes on its success, reopens on its failure.
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
    this.states.set(key, { kind: "half-open" });
    return true;
  }

  /** Whether the breaker would refuse a call now (without claiming a trial). */
  isOpen(provider: string, model: string): boolean {
    const s = this.states.get(targetKey(provider, model));
    return (
      s !== undefined && (s.kind === "half-open" || (s.kind === "open" && this.now() < s.until))
    );
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
    this.states.set(
      key,
      failures >= this.consecutiveFailures
        ? { kind: "open", until: this.now() + this.cooldownMs }
        : { kind: "closed", failures },
    );
  }

  /**
   * The target asked for a pause (429 with Retry-After): no calls until then, after which one
   * trial goes through as after any cooldown. Never shortens a longer pause already in force.
   */
  coolDown(provider: string, model: string, ms: number): void {
    const key = targetKey(provider, model);
    const until = this.now() + ms;
    const s = this.states.get(key);
    if (s?.kind === "open" && s.until >= until) return;
    this.states.set(key, { kind: "open", until });
  }

  /** The call holding the half-open trial ended without a verdict (e.g. the client left). */
  onAbandon(provider: string, model: string): void {
    const key = targetKey(provider, model);
    if (this.states.get(key)?.kind === "half-open")
      this.states.set(key, { kind: "open", until: 0 });
  }

  /** 0 closed, 1 open, 2 half-open — the value of the circuit-state gauge. */
  stateValue(provider: string, model: string): number {
    const s = this.states.get(targetKey(provider, model));
    if (!s || s.kind === "closed") return 0;
    return s.kind === "open" ? 1 : 2;
  }
}
