import {
  PauseKind as SharedPauseKind,
  type TargetHealth,
  TargetState,
} from "../../gen/switchyard/health/v1/health_pb.js";
import type { HealthStore } from "../lib/bus/bus.js";
import type { PauseKind } from "../lib/errors.js";
import type { Logger } from "../lib/logger.js";
import { targetKey } from "../lib/targets.js";

/**
 * The router's copy of shared target health, kept current by watching the health store.
 * Reads are synchronous map lookups on the request path.
 */
export class HealthView {
  private readonly byTarget = new Map<string, TargetHealth>();
  private readonly abort = new AbortController();

  constructor(
    private readonly staleAfterMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Follows the store until `stop()`; survives a watch that ends by restarting it. */
  follow(store: HealthStore, logger: Logger): void {
    const run = async () => {
      while (!this.abort.signal.aborted) {
        try {
          for await (const h of store.watch(this.abort.signal)) this.apply(h);
        } catch (err) {
          if (this.abort.signal.aborted) return;
          logger.warn({ err: String(err) }, "health watch failed; retrying");
        }
        if (!this.abort.signal.aborted) await new Promise((r) => setTimeout(r, 1000).unref());
      }
    };
    void run();
  }

  apply(h: TargetHealth): void {
    if (!h.target) return;
    this.byTarget.set(targetKey(h.target.provider, h.target.model), h);
  }

  get(provider: string, model: string): TargetHealth | undefined {
    return this.byTarget.get(targetKey(provider, model));
  }

  /**
   * Down in shared state and neither stale nor past its cooldown. Stale state is ignored so a
   * router cut off from the prober falls back on its own circuit breakers.
   */
  isDown(provider: string, model: string): boolean {
    const h = this.get(provider, model);
    if (!h || h.state !== TargetState.DOWN) return false;
    const now = this.now();
    if (now - Number(h.updatedMs) > this.staleAfterMs) return false;
    const until = Number(h.cooldownUntilMs);
    return until === 0 || now < until;
  }

  /**
   * How much longer a pause the target asked another router for (Retry-After, `pause_until_ms`)
   * keeps calls from it; 0 when there is none, or when the state is stale (as for isDown).
   */
  pausedMs(provider: string, model: string): number {
    const h = this.get(provider, model);
    if (!h || h.pauseUntilMs === 0n) return 0;
    const now = this.now();
    if (now - Number(h.updatedMs) > this.staleAfterMs) return 0;
    return Math.max(0, Number(h.pauseUntilMs) - now);
  }

  /** What the target's pause in shared health was asked for with (see pausedMs). */
  pauseKind(provider: string, model: string): PauseKind | undefined {
    if (this.pausedMs(provider, model) === 0) return undefined;
    const kind = this.get(provider, model)?.pauseKind;
    // A busy target (503) says so; anything else, an unknown kind too, is a 429's pause.
    return kind === SharedPauseKind.UNAVAILABLE ? "upstream_unavailable" : "rate_limited";
  }

  stop(): void {
    this.abort.abort();
  }
}
