import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { ConnectorService } from "../../gen/switchyard/connector/v1/connector_pb.js";

export interface ConnectorEndpoint {
  readonly id: string;
  readonly client: Client<typeof ConnectorService>;
  inflight: number;
}

/**
 * The connectors a router can call. Calls go to the one with the fewest calls in flight; ties
 * rotate so an idle fabric still spreads load.
 */
export class ConnectorPool {
  private readonly endpoints = new Map<string, ConnectorEndpoint>();
  private turn = 0;

  add(id: string, transport: Transport): void {
    if (this.endpoints.has(id)) return;
    this.endpoints.set(id, { id, client: createClient(ConnectorService, transport), inflight: 0 });
  }

  remove(id: string): void {
    this.endpoints.delete(id);
  }

  get size(): number {
    return this.endpoints.size;
  }

  ids(): string[] {
    return [...this.endpoints.keys()];
  }

  /** The least-loaded connector, avoiding `exclude` (one that just failed) when there is another. */
  pick(exclude?: string): ConnectorEndpoint | undefined {
    let best: ConnectorEndpoint | undefined;
    let bestScore = Number.POSITIVE_INFINITY;
    const n = this.endpoints.size;
    let i = 0;
    const start = this.turn++ % Math.max(n, 1);
    for (const e of this.endpoints.values()) {
      // Rotating the tie-break start spreads equal-load picks.
      const rotation = (i - start + n) % n;
      const score = e.inflight * n + rotation + (e.id === exclude && n > 1 ? n * 1e6 : 0);
      if (score < bestScore) {
        best = e;
        bestScore = score;
      }
      i++;
    }
    return best;
  }
}
