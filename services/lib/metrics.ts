import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Bus } from "./bus/bus.js";
import type { ConnectorPool } from "./connector-pool.js";

// Buckets for LLM timings: sub-millisecond gateway work up to multi-minute generations.
export const LATENCY_BUCKETS_SECONDS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
  600,
];

/** Buckets for the gateway's own time: tens of microseconds up to a slow second. */
export const OVERHEAD_BUCKETS_SECONDS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
];

/** One registry per service; in one-process mode /metrics merges them. */
export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  return registry;
}

/** Process metrics (CPU, RSS, event loop lag) once per process, in their own registry. */
export function createProcessRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "switchyard_process_" });
  return registry;
}

/**
 * The Prometheus text of several registries as one exposition. Each registry renders itself
 * (so its `service` default label stays on its series), and a metric that several services
 * export (e.g. `switchyard_nats_connected`) becomes one family with a series per service:
 * a family may appear only once in an exposition.
 */
export async function renderMetrics(
  registries: Registry[],
): Promise<{ contentType: string; body: string }> {
  const families = new Map<string, string[]>();
  const texts = await Promise.all(registries.map((r) => r.metrics()));
  for (const text of texts) {
    let current: string[] | undefined;
    // Whether this registry opened the current family (and so writes its HELP and TYPE).
    let opened = false;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      if (line.startsWith("# HELP ")) {
        const name = line.slice(7, line.indexOf(" ", 7));
        current = families.get(name);
        opened = current === undefined;
        if (!current) {
          current = [line];
          families.set(name, current);
        }
      } else if (line.startsWith("# TYPE ")) {
        if (opened) current?.push(line);
      } else {
        current?.push(line);
      }
    }
  }
  const lines: string[] = [];
  for (const family of families.values()) lines.push(...family);
  return { contentType: Registry.PROMETHEUS_CONTENT_TYPE, body: `${lines.join("\n")}\n` };
}

export function counter(registry: Registry, name: string, help: string, labelNames: string[] = []) {
  return new Counter({ name, help, labelNames, registers: [registry] });
}

export function gauge(registry: Registry, name: string, help: string, labelNames: string[] = []) {
  return new Gauge({ name, help, labelNames, registers: [registry] });
}

/**
 * A gauge read when scraped rather than kept up to date: `read` sets its values, so state that
 * lives elsewhere (breakers, the connector pool, the NATS connection) costs nothing per request.
 */
export function observedGauge(
  registry: Registry,
  name: string,
  help: string,
  labelNames: string[],
  read: (g: Gauge) => void,
): Gauge {
  return new Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      read(this);
    },
  });
}

export function histogram(
  registry: Registry,
  name: string,
  help: string,
  labelNames: string[] = [],
  buckets: number[] = LATENCY_BUCKETS_SECONDS,
) {
  return new Histogram({ name, help, labelNames, buckets, registers: [registry] });
}

/** One label combination of a FastHistogram: observing costs a bucket search and nothing else. */
export class HistogramSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= (bounds[i] as number)) {
        this.counts[i] = (this.counts[i] as number) + 1;
        return;
      }
    }
  }
}

type HistogramData = Awaited<ReturnType<Histogram<string>["get"]>>;

/**
 * A histogram for observations made per chunk (e.g. the gaps between tokens). prom-client's
 * `observe` hashes its labels on every call; here a request looks its series up once and each
 * observation after that allocates nothing. Rendered like any prom-client histogram.
 */
export class FastHistogram extends Histogram<string> {
  private series = new Map<string, HistogramSeries>();
  private readonly bounds: readonly number[];

  constructor(
    registry: Registry,
    private readonly metricName: string,
    private readonly helpText: string,
    private readonly labelNames: readonly string[],
    buckets: number[] = LATENCY_BUCKETS_SECONDS,
  ) {
    super({ name: metricName, help: helpText, labelNames, buckets, registers: [registry] });
    this.bounds = [...buckets].sort((a, b) => a - b);
  }

  /** The series for these label values (in `labelNames` order), made on first use. */
  seriesFor(...values: string[]): HistogramSeries {
    const key = values.join("\u0000");
    let s = this.series.get(key);
    if (!s) {
      const labels: Record<string, string> = {};
      for (const [i, n] of this.labelNames.entries()) labels[n] = values[i] ?? "";
      s = new HistogramSeries(labels, this.bounds);
      this.series.set(key, s);
    }
    return s;
  }

  override async get(): Promise<HistogramData> {
    const bucket = `${this.metricName}_bucket`;
    const values: Array<{
      labels: Record<string, string | number>;
      value: number;
      metricName: string;
    }> = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      for (const [i, le] of this.bounds.entries()) {
        cumulative += s.counts[i] ?? 0;
        values.push({ labels: { ...s.labels, le }, value: cumulative, metricName: bucket });
      }
      values.push({ labels: { ...s.labels, le: "+Inf" }, value: s.count, metricName: bucket });
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.metricName}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.metricName}_count` });
    }
    // prom-client's typings declare `type` as a numeric enum that its runtime never uses (it
    // writes "histogram"), so the object is handed over as the type `get` is declared with.
    const data = { name: this.metricName, help: this.helpText, type: "histogram", values };
    return data as unknown as HistogramData;
  }

  /** What the registry calls to render text (prom-client prefers it to `get`). */
  getForPromString(): Promise<HistogramData> {
    return this.get();
  }

  // Also called by prom-client's constructor, before this class's fields exist.
  override reset(): void {
    this.series = new Map();
  }
}

/**
 * `switchyard_nats_connected`: 1 while the service's NATS connection is up, 0 while it is away.
 * Only for a bus on NATS: the in-memory bus of one process has no connection to lose.
 */
export function natsConnectedGauge(registry: Registry, bus: Pick<Bus, "kind" | "connected">) {
  if (bus.kind !== "nats") return;
  observedGauge(
    registry,
    "switchyard_nats_connected",
    "1 while this service's NATS connection is up, 0 while it is away",
    [],
    (g) => g.set(bus.connected() ? 1 : 0),
  );
}

/** `switchyard_connectors_known`: the connectors a router or prober can call right now. */
export function connectorsGauge(registry: Registry, pool: Pick<ConnectorPool, "size">) {
  observedGauge(
    registry,
    "switchyard_connectors_known",
    "Connectors this service can call (static peers, the in-process one, and announced members)",
    [],
    (g) => g.set(pool.size),
  );
}
