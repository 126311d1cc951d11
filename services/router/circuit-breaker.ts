import type { PauseKind } from "../lib/errors.js";
import { targetKey } from "../lib/targets.js";

type Circuit =
  | { kind: "closed"; failures: number }
  | { kind: "open"; until: number }
  | { kind: "half-open" };

/** A pause the target asked for (Retry-After), and whether it was rate limiting or busy. */
interface Pause {
  until: number;
  kind: PauseKind;
}

/**
 * A local circuit breaker per target: opens after `consecutiveFailures` failures in a row,
 * lets one trial call through after `cooldownMs`, closes on its success, reopens on its failure.
 * A target's own request for a pause (Retry-After on a 429 or 503) is kept apart from the
 * circuit: no call goes to the target until it ends, whatever the circuit says, and it neither
 * trips nor closes the circuit. Whether the failure that asked for it also counts towards the
 * threshold is the caller's choice (see noteFailure in router-service.ts).
 */
export class CircuitBreakers {
  private readonly circuits = new Map<string, Circuit>();
  private readonly pauses = new Map<string, Pause>();

  constructor(
    private readonly consecutiveFailures: number,
    private readonly cooldownMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether a call may go to this target now. Taking the half-open trial claims it. */
  tryAcquire(provider: string, model: string): boolean {
    const key = targetKey(provider, model);
    if (this.pause(key) !== undefined) return false;
    const s = this.circuits.get(key);
    if (!s || s.kind === "closed") return true;
    if (s.kind === "half-open") return false; // a trial is already in flight
    if (this.now() < s.until) return false;
    this.circuits.set(key, { kind: "half-open" });
    return true;
  }

  /** Whether the breaker would refuse a call now (without claiming a trial). */
  isOpen(provider: string, model: string): boolean {
    const key = targetKey(provider, model);
    if (this.pause(key) !== undefined) return true;
    const s = this.circuits.get(key);
    if (s === undefined || s.kind === "closed") return false;
    return s.kind === "half-open" || this.now() < s.until;
  }

  /** How much longer a Retry-After pause keeps calls from this target; 0 when it is not paused. */
  pausedMs(provider: string, model: string): number {
    const p = this.pause(targetKey(provider, model));
    return p === undefined ? 0 : p.until - this.now();
  }

  /** What the target's pause in force was asked for with; undefined when it is not paused. */
  pauseKind(provider: string, model: string): PauseKind | undefined {
    return this.pause(targetKey(provider, model))?.kind;
  }

  /** The call succeeded: the circuit closes. A pause asked for since still holds. */
  onSuccess(provider: string, model: string): void {
    this.circuits.delete(targetKey(provider, model));
  }

  onFailure(provider: string, model: string): void {
    const key = targetKey(provider, model);
    const s = this.circuits.get(key);
    if (s?.kind === "half-open" || s?.kind === "open") {
      this.circuits.set(key, { kind: "open", until: this.now() + this.cooldownMs });
      return;
    }
    const failures = (s?.failures ?? 0) + 1;
    if (failures >= this.consecutiveFailures) {
      this.circuits.set(key, { kind: "open", until: this.now() + this.cooldownMs });
    } else {
      this.circuits.set(key, { kind: "closed", failures });
    }
  }

  /**
   * The target asked for a pause (Retry-After on a 429 or 503): no calls until then, after which
   * calls go through as the circuit says (an open breaker's cooldown, if longer, still ends in
   * one trial). Never shortens a longer pause already in force.
   */
  pauseFor(provider: string, model: string, ms: number, kind: PauseKind): void {
    const key = targetKey(provider, model);
    const until = this.now() + ms;
    const p = this.pause(key);
    if (p === undefined || p.until < until) this.pauses.set(key, { until, kind });
    // A half-open trial that was asked to wait is not a verdict; the next call is a trial again.
    if (this.circuits.get(key)?.kind === "half-open") {
      this.circuits.set(key, { kind: "open", until: 0 });
    }
  }

  /** The call holding the half-open trial ended without a verdict (e.g. the client left). */
  onAbandon(provider: string, model: string): void {
    const key = targetKey(provider, model);
    if (this.circuits.get(key)?.kind === "half-open")
      this.circuits.set(key, { kind: "open", until: 0 });
  }

  /** 0 closed (or paused: not a trip), 1 open, 2 half-open — the circuit-state gauge's value. */
  stateValue(provider: string, model: string): number {
    const s = this.circuits.get(targetKey(provider, model));
    if (!s || s.kind === "closed") return 0;
    return s.kind === "open" ? 1 : 2;
  }

  /** The pause in force for a target, forgetting one that has ended. */
  private pause(key: string): Pause | undefined {
    const p = this.pauses.get(key);
    if (p === undefined) return undefined;
    if (this.now() < p.until) return p;
    this.pauses.delete(key);
    return undefined;
  }
}
