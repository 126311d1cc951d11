import {
  type TargetOutcome,
  TargetOutcomeBatchSchema,
  TargetOutcomeSchema,
  TargetSchema,
} from "../../gen/switchyard/health/v1/health_pb.js";
import type { Bus } from "../lib/bus/bus.js";
import { type Failure, SHUTTING_DOWN } from "../lib/errors.js";
import { makeMessage } from "../lib/hop/codec.js";

const FLUSH_MS = 250;
const MAX_BATCH = 512;

/**
 * Passive health: what happened to live calls, published in batches so the prober can mark a
 * failing target down before its next probe. Client mistakes, cancellations and calls a shutdown
 * cut say nothing about a target and are not reported.
 */
export class OutcomeReporter {
  private pending: TargetOutcome[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly bus: Bus,
    private readonly connectorId: string,
  ) {}

  success(provider: string, model: string, firstTokenMs: number): void {
    this.add(
      makeMessage(TargetOutcomeSchema, {
        target: makeMessage(TargetSchema, { provider, model }),
        success: true,
        firstTokenMs: Math.round(firstTokenMs),
        atMs: BigInt(Date.now()),
      }),
    );
  }

  failure(provider: string, model: string, f: Failure): void {
    if (f.kind === "cancelled" || !f.retryable || f.code === SHUTTING_DOWN) return;
    this.add(
      makeMessage(TargetOutcomeSchema, {
        target: makeMessage(TargetSchema, { provider, model }),
        success: false,
        errorKind: f.kind,
        retryAfterMs: f.retryAfterMs,
        upstreamStatus: f.upstreamStatus,
        atMs: BigInt(Date.now()),
      }),
    );
  }

  private add(o: TargetOutcome): void {
    this.pending.push(o);
    if (this.pending.length >= MAX_BATCH) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FLUSH_MS).unref();
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const outcomes = this.pending;
    this.pending = [];
    this.bus.publishOutcomes(
      makeMessage(TargetOutcomeBatchSchema, { connectorId: this.connectorId, outcomes }),
    );
  }
}
