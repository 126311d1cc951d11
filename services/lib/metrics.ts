import { collectDefaultMetrics, Gauge, Registry } from "prom-client";
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

/**
 * How often the event loop lag is sampled. prom-client's default, 10 ms, is a timer that wakes an
 * idle process 100 times a second (with the loop's extra turn after it, 200 epoll_wait calls a
 * second in every process, seen with strace); a tenth of that still gives a scrape every 15 s
 * 150 samples for its percentiles.
 */
const EVENT_LOOP_SAMPLE_MS = 100;

const PROCESS_PREFIX = "switchyard_process_";

/** Process metrics (CPU, RSS, event loop lag) once per process, in their own registry. */
export function createProcessRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({
    register: registry,
    prefix: PROCESS_PREFIX,
    eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
  });
  takeSampleIntervalOffLag(registry);
  return registry;
}

/**
 * prom-client reads the lag's min, mean, percentiles, … off Node's `monitorEventLoopDelay`
 * histogram, which records the time between two of its timer's turns: the sample interval plus
 * the lag. An idle process would read 100 ms at every statistic, so each is stored less the
 * interval (the standard deviation is left as it is: a constant does not move it).
 * `nodejs_eventloop_lag_seconds`, timed with setImmediate at the scrape, is already the lag.
 * prom-client sets these gauges from another's collect(), so the shift goes into their set().
 */
function takeSampleIntervalOffLag(registry: Registry): void {
  const intervalSeconds = EVENT_LOOP_SAMPLE_MS / 1000;
  for (const stat of ["min", "max", "mean", "p50", "p90", "p99"]) {
    const gauge = registry.getSingleMetric(`${PROCESS_PREFIX}nodejs_eventloop_lag_${stat}_seconds`);
    if (!(gauge instanceof Gauge)) continue;
    const set = gauge.set.bind(gauge) as (labels: LabelValues, value: number) => void;
    gauge.set = ((labels: LabelValues | number, value?: number) => {
      const seconds = typeof labels === "number" ? labels : (value ?? 0);
      set(typeof labels === "number" ? {} : labels, Math.max(0, seconds - intervalSeconds));
    }) as typeof gauge.set;
  }
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

/** Label values as call sites pass them, by label name. */
type LabelValues = Readonly<Partial<Record<string, string | number>>>;
type Sample = { labels: Record<string, string>; value: number; metricName?: string };
type MetricData = { name: string; help: string; type: string; values: Sample[]; aggregator: "sum" };

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * The series of one metric, found by label values without building a key. prom-client's own
 * metrics hash a sorted copy of the labels and validate them on every call (~0.5 µs, a dozen
 * times per request); here a series is one Map lookup per label, in `labelNames` order, and
 * labels are validated only when a series is made.
 */
class SeriesIndex<S> {
  private root = new Map<string, unknown>();
  private list: S[] = [];

  constructor(
    private readonly metric: string,
    private readonly labelNames: readonly string[],
    private readonly make: (labels: Record<string, string>) => S,
  ) {
    if (!METRIC_NAME.test(metric)) throw new Error(`Invalid metric name: ${metric}`);
    for (const n of labelNames) {
      if (!LABEL_NAME.test(n) || n.startsWith("__")) throw new Error(`Invalid label name: ${n}`);
    }
  }

  get(labels: LabelValues | undefined): S {
    const names = this.labelNames;
    let node = this.root;
    const last = names.length - 1;
    for (let i = 0; i < last; i++) {
      const value = labelValue(labels, names[i] as string);
      let next = node.get(value) as Map<string, unknown> | undefined;
      if (next === undefined) {
        next = new Map();
        node.set(value, next);
      }
      node = next;
    }
    const leaf = last < 0 ? "" : labelValue(labels, names[last] as string);
    const found = node.get(leaf) as S | undefined;
    if (found !== undefined) return found;
    const made = this.make(this.checked(labels));
    node.set(leaf, made);
    this.list.push(made);
    return made;
  }

  all(): readonly S[] {
    return this.list;
  }

  clear(): void {
    this.root = new Map();
    this.list = [];
  }

  /** The labels a new series renders with; a label the metric does not have is an error. */
  checked(labels: LabelValues | undefined): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(labels ?? {})) {
      if (!this.labelNames.includes(name)) {
        throw new Error(
          `Added label "${name}" is not included in initial labelset: ${JSON.stringify(this.labelNames)} (metric ${this.metric})`,
        );
      }
      if (value !== undefined) out[name] = String(value);
    }
    return out;
  }
}

function labelValue(labels: LabelValues | undefined, name: string): string {
  const v = labels?.[name];
  return typeof v === "string" ? v : v === undefined ? "" : String(v);
}

/** prom-client's registries take these as their own metrics (they call `get` and `reset`). */
function register(registry: Registry, metric: { name: string }): void {
  registry.registerMetric(metric as unknown as Parameters<Registry["registerMetric"]>[0]);
}

/** One label combination of a counter or gauge. */
class Cell {
  value = 0;
  constructor(readonly labels: Record<string, string>) {}
}

/** A counter with prom-client's `inc` and `labels`, cheap per call (see SeriesIndex). */
export class FastCounter {
  private readonly cells: SeriesIndex<Cell>;

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    labelNames: readonly string[] = [],
  ) {
    this.cells = new SeriesIndex(name, labelNames, (labels) => new Cell(labels));
    register(registry, this);
  }

  /** Adds `value` (default 1) to the series of `labels`. */
  inc(labels?: LabelValues | number, value?: number): void {
    if (typeof labels === "number" || labels === undefined) {
      this.add(this.cells.get(undefined), labels ?? 1);
    } else {
      this.add(this.cells.get(labels), value ?? 1);
    }
  }

  /**
   * The series of `labels`, to count on without looking it up again. As with prom-client, the
   * series is rendered once it is first counted on, not before.
   */
  labels(labels: LabelValues): { inc(value?: number): void } {
    this.cells.checked(labels);
    let cell: Cell | undefined;
    return {
      inc: (value = 1) => {
        cell ??= this.cells.get(labels);
        this.add(cell, value);
      },
    };
  }

  private add(cell: Cell, value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
    if (value < 0) throw new Error("It is not possible to decrease a counter");
    cell.value += value;
  }

  async get(): Promise<MetricData> {
    const values = this.cells.all().map((c) => ({ labels: c.labels, value: c.value }));
    return { name: this.name, help: this.help, type: "counter", values, aggregator: "sum" };
  }

  reset(): void {
    this.cells.clear();
  }
}

/** A gauge with prom-client's `set`, `inc`, `dec` and `labels`, cheap per call. */
export class FastGauge {
  private readonly cells: SeriesIndex<Cell>;

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    labelNames: readonly string[] = [],
  ) {
    this.cells = new SeriesIndex(name, labelNames, (labels) => new Cell(labels));
    register(registry, this);
  }

  set(labels: LabelValues | number, value?: number): void {
    if (typeof labels === "number") setCell(this.cells.get(undefined), labels);
    else setCell(this.cells.get(labels), value);
  }

  inc(labels?: LabelValues | number, value?: number): void {
    if (typeof labels === "number" || labels === undefined) {
      addCell(this.cells.get(undefined), labels ?? 1);
    } else {
      addCell(this.cells.get(labels), value ?? 1);
    }
  }

  dec(labels?: LabelValues | number, value?: number): void {
    if (typeof labels === "number" || labels === undefined) {
      addCell(this.cells.get(undefined), -(labels ?? 1));
    } else {
      addCell(this.cells.get(labels), -(value ?? 1));
    }
  }

  /** The series of `labels`, to change without looking it up again (rendered once changed). */
  labels(labels: LabelValues): {
    inc(value?: number): void;
    dec(value?: number): void;
    set(value: number): void;
  } {
    this.cells.checked(labels);
    let cell: Cell | undefined;
    const series = () => {
      cell ??= this.cells.get(labels);
      return cell;
    };
    return {
      inc: (value = 1) => addCell(series(), value),
      dec: (value = 1) => addCell(series(), -value),
      set: (value) => setCell(series(), value),
    };
  }

  async get(): Promise<MetricData> {
    const values = this.cells.all().map((c) => ({ labels: c.labels, value: c.value }));
    return { name: this.name, help: this.help, type: "gauge", values, aggregator: "sum" };
  }

  reset(): void {
    this.cells.clear();
  }
}

function setCell(cell: Cell, value: number | undefined): void {
  if (typeof value !== "number") throw new TypeError(`Value is not a valid number: ${value}`);
  cell.value = value;
}

function addCell(cell: Cell, delta: number): void {
  if (typeof delta !== "number") throw new TypeError(`Delta is not a valid number: ${delta}`);
  cell.value += delta;
}

export function counter(
  registry: Registry,
  name: string,
  help: string,
  labelNames: string[] = [],
): FastCounter {
  return new FastCounter(registry, name, help, labelNames);
}

export function gauge(
  registry: Registry,
  name: string,
  help: string,
  labelNames: string[] = [],
): FastGauge {
  return new FastGauge(registry, name, help, labelNames);
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
): FastHistogram {
  return new FastHistogram(registry, name, help, labelNames, buckets);
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
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
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

/**
 * A histogram with prom-client's `observe` and `labels`, cheap per call (see SeriesIndex); per
 * chunk, a request looks its series up once (`seriesFor`) and each observation after that
 * allocates nothing. Rendered as prom-client renders a histogram.
 */
export class FastHistogram {
  private readonly series: SeriesIndex<HistogramSeries>;
  private readonly bounds: readonly number[];

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[] = [],
    buckets: number[] = LATENCY_BUCKETS_SECONDS,
  ) {
    this.bounds = [...buckets].sort((a, b) => a - b);
    this.series = new SeriesIndex(
      name,
      labelNames,
      (labels) => new HistogramSeries(labels, this.bounds),
    );
    register(registry, this);
  }

  observe(labels: LabelValues | number, value?: number): void {
    if (typeof labels === "number") this.series.get(undefined).observe(labels);
    else this.series.get(labels).observe(value as number);
  }

  /** The series of `labels`, to observe into without looking it up again (rendered once used). */
  labels(labels: LabelValues): { observe(value: number): void } {
    this.series.checked(labels);
    let series: HistogramSeries | undefined;
    return {
      observe: (value) => {
        series ??= this.series.get(labels);
        series.observe(value);
      },
    };
  }

  /** The series for these label values (in `labelNames` order), made on first use. */
  seriesFor(...values: string[]): HistogramSeries {
    const labels: Record<string, string> = {};
    for (const [i, n] of this.labelNames.entries()) labels[n] = values[i] ?? "";
    return this.series.get(labels);
  }

  async get(): Promise<MetricData> {
    const bucket = `${this.name}_bucket`;
    const values: Sample[] = [];
    for (const s of this.series.all()) {
      let cumulative = 0;
      for (const [i, le] of this.bounds.entries()) {
        cumulative += s.counts[i] ?? 0;
        values.push({
          labels: { ...s.labels, le: String(le) },
          value: cumulative,
          metricName: bucket,
        });
      }
      values.push({ labels: { ...s.labels, le: "+Inf" }, value: s.count, metricName: bucket });
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: "histogram", values, aggregator: "sum" };
  }

  reset(): void {
    this.series.clear();
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
