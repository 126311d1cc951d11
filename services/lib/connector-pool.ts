import type { Client, Transport } from "@connectrpc/connect";
import { ConnectorService } from "../../gen/switchyard/connector/v1/connector_pb.js";
import { asClient } from "./transport-client.js";

export interface ConnectorEndpoint {
  readonly id: string;
  readonly client: Client<typeof ConnectorService>;
  inflight: number;
  /** Until when (ms) calls avoid this connector after it could not be reached. */
  suspectUntil: number;
  /**
   * Until when (ms) calls avoid it because it said it is leaving (a drain) yet stays in the pool,
   * as `peers.connectors` lists it; 0 when it has not. Its refusals are expected meanwhile.
   */
  leavingUntil: number;
}

/** How long a connector that could not be reached is passed over while others are available. */
export const SUSPECT_MS = 2_000;

/**
 * The connectors a router (or prober) can call. Calls go to the one with the fewest calls in
 * flight; ties rotate so an idle fabric still spreads load; a connector that just failed to
 * answer is avoided while another one is available.
 */
export class ConnectorPool {
  private readonly endpoints = new Map<string, ConnectorEndpoint>();
  private turn = 0;
  /** Callers waiting for a first connector (whenAny). */
  private waiters: Array<() => void> = [];

  constructor(private readonly now: () => number = Date.now) {}

  /** Adds a connector reached through `via`: a Transport, or a ready client (in process). */
  add(id: string, via: Transport | Client<typeof ConnectorService>): void {
    if (this.endpoints.has(id)) return;
    this.endpoints.set(id, {
      id,
      client: asClient(ConnectorService, via),
      inflight: 0,
      suspectUntil: 0,
      leavingUntil: 0,
    });
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /**
   * Resolves true once the pool has a connector (at once if it has one), false when `ms` pass
   * without one.
   */
  whenAny(ms: number): Promise<boolean> {
    if (this.endpoints.size > 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== wake);
        resolve(false);
      }, ms);
      this.waiters.push(wake);
    });
  }

  remove(id: string): void {
    this.endpoints.delete(id);
  }

  has(id: string): boolean {
    return this.endpoints.has(id);
  }

  get size(): number {
    return this.endpoints.size;
  }

  ids(): string[] {
    return [...this.endpoints.keys()];
  }

  /** Marks a connector unreachable for SUSPECT_MS (e.g. its process died). */
  suspect(id: string): void {
    const e = this.endpoints.get(id);
    if (e) e.suspectUntil = this.now() + SUSPECT_MS;
  }

  /**
   * Marks a connector that said it is leaving (true) for at most `forMs`, or that announced
   * itself again (false). Returns whether that changed anything.
   */
  setLeaving(id: string, leaving: boolean, forMs = Number.POSITIVE_INFINITY): boolean {
    const e = this.endpoints.get(id);
    if (e === undefined) return false;
    if (!leaving) {
      const was = e.leavingUntil !== 0;
      e.leavingUntil = 0;
      return was;
    }
    if (e.leavingUntil > this.now()) return false;
    e.leavingUntil = this.now() + forMs;
    return true;
  }

  /**
   * Whether the connector said it is leaving, has not announced itself since, and its mark has
   * not run out.
   */
  isLeaving(id: string): boolean {
    return (this.endpoints.get(id)?.leavingUntil ?? 0) > this.now();
  }

  /**
   * The least-loaded connector, preferring ones not under suspicion, and any to one that is
   * leaving (which takes no new calls, but is the only hope when it is all there is).
   */
  pick(): ConnectorEndpoint | undefined {
    const n = this.endpoints.size;
    if (n === 0) return undefined;
    const now = this.now();
    const start = this.turn++ % n;
    let best: ConnectorEndpoint | undefined;
    let bestScore = Number.POSITIVE_INFINITY;
    let i = 0;
    for (const e of this.endpoints.values()) {
      // Rotating the tie-break start spreads equal-load picks.
      const rotation = (i - start + n) % n;
      const penalty = (e.leavingUntil > now ? 2e9 : 0) + (e.suspectUntil > now ? 1e9 : 0);
      const score = penalty + e.inflight * n + rotation;
      if (score < bestScore) {
        best = e;
        bestScore = score;
      }
      i++;
    }
    return best;
  }
}
