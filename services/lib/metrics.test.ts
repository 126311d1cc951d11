import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import {
  counter,
  createProcessRegistry,
  createRegistry,
  FastHistogram,
  gauge,
  histogram,
  renderMetrics,
} from "./metrics.js";

describe("process metrics", () => {
  it("report the event loop's lag, not the lag plus the 100 ms sample interval", async () => {
    const registry = createProcessRegistry();
    // An idle loop: several sample intervals with nothing to do.
    await new Promise((resolve) => setTimeout(resolve, 650));
    const text = await registry.metrics();
    const stat = (name: string) =>
      Number(
        new RegExp(`^switchyard_process_nodejs_eventloop_lag_${name}_seconds (\\S+)$`, "m").exec(
          text,
        )?.[1],
      );
    // The interval alone would read 0.1 s for every sample.
    expect(stat("min")).toBeGreaterThanOrEqual(0);
    expect(stat("min")).toBeLessThan(0.05);
    expect(stat("p50")).toBeLessThan(stat("max") + 1e-9);
  });
});

describe("renderMetrics", () => {
  it("keeps each registry's service label and writes a shared metric as one family", async () => {
    const ingress = createRegistry("ingress");
    const router = createRegistry("router");
    counter(ingress, "switchyard_demo_total", "Demo", ["model"]).inc({ model: "a" }, 2);
    gauge(router, "switchyard_demo_total", "Demo").set(5);
    gauge(router, "switchyard_router_only", "Only here").set(1);
    const { contentType, body } = await renderMetrics([ingress, router]);
    expect(contentType).toBe(Registry.PROMETHEUS_CONTENT_TYPE);
    expect(body).toBe(
      [
        "# HELP switchyard_demo_total Demo",
        "# TYPE switchyard_demo_total counter",
        'switchyard_demo_total{model="a",service="ingress"} 2',
        'switchyard_demo_total{service="router"} 5',
        "# HELP switchyard_router_only Only here",
        "# TYPE switchyard_router_only gauge",
        'switchyard_router_only{service="router"} 1',
        "",
      ].join("\n"),
    );
  });
});

describe("FastHistogram", () => {
  it("renders exactly as a prom-client Histogram fed the same observations", async () => {
    const buckets = [0.01, 0.1, 1];
    const values = [0.005, 0.01, 0.05, 0.5, 2, 0.2];
    const fastRegistry = createRegistry("ingress");
    const fast = new FastHistogram(
      fastRegistry,
      "switchyard_gap_seconds",
      "Gaps",
      ["model"],
      buckets,
    );
    const series = fast.seriesFor("m");
    for (const v of values) series.observe(v);
    expect(fast.seriesFor("m")).toBe(series);

    const plainRegistry = createRegistry("ingress");
    const plain = new Histogram({
      name: "switchyard_gap_seconds",
      help: "Gaps",
      labelNames: ["model"],
      buckets,
      registers: [plainRegistry],
    });
    for (const v of values) plain.observe({ model: "m" }, v);

    // Same samples; prom-client orders a histogram's labels `le` last, like this one.
    const samples = (text: string) =>
      text
        .split("\n")
        .filter((l) => l.startsWith("switchyard_"))
        .map((l) => l.replace(/\{(.*)\}/, (_, inner: string) => `{${inner.split(",").sort()}}`))
        .sort();
    expect(samples((await renderMetrics([fastRegistry])).body)).toEqual(
      samples((await renderMetrics([plainRegistry])).body),
    );
    expect((await renderMetrics([fastRegistry])).body).toContain(
      'switchyard_gap_seconds_bucket{model="m",le="+Inf",service="ingress"} 6',
    );
  });

  it("starts empty again on reset", async () => {
    const registry = createRegistry("ingress");
    const fast = new FastHistogram(registry, "switchyard_gap_seconds", "Gaps", ["model"]);
    fast.seriesFor("m").observe(1);
    registry.resetMetrics();
    expect((await renderMetrics([registry])).body).not.toContain("switchyard_gap_seconds_count");
  });
});

/** A rendering's samples, each line's labels sorted (prom-client and ours may order them apart). */
function samples(text: string): string[] {
  return text
    .split("\n")
    .filter((l) => l.startsWith("switchyard_"))
    .map((l) => l.replace(/\{(.*)\}/, (_, inner: string) => `{${inner.split(",").sort()}}`))
    .sort();
}

describe("counter, gauge and histogram", () => {
  it("render exactly as prom-client's own metrics fed the same calls", async () => {
    const ours = createRegistry("ingress");
    const theirs = createRegistry("ingress");
    const labels = ["api", "model"];
    const buckets = [0.1, 1];
    const c = counter(ours, "switchyard_c_total", "C", labels);
    const pc = new Counter({
      name: "switchyard_c_total",
      help: "C",
      labelNames: labels,
      registers: [theirs],
    });
    const g = gauge(ours, "switchyard_g", "G", labels);
    const pg = new Gauge({
      name: "switchyard_g",
      help: "G",
      labelNames: labels,
      registers: [theirs],
    });
    const h = histogram(ours, "switchyard_h_seconds", "H", labels, buckets);
    const ph = new Histogram({
      name: "switchyard_h_seconds",
      help: "H",
      labelNames: labels,
      buckets,
      registers: [theirs],
    });
    const unlabelled = counter(ours, "switchyard_u_total", "U");
    const pu = new Counter({ name: "switchyard_u_total", help: "U", registers: [theirs] });

    const calls: Array<[string, string, number]> = [
      ["openai", "a", 0.05],
      ["anthropic", "a", 0.5],
      ["openai", "b", 2],
      ["openai", "a", 1],
    ];
    for (const [api, model, v] of calls) {
      c.inc({ api, model });
      pc.inc({ api, model });
      c.inc({ model, api }, v); // label order does not matter
      pc.inc({ model, api }, v);
      g.inc({ api, model }, v);
      pg.inc({ api, model }, v);
      g.dec({ api, model });
      pg.dec({ api, model });
      h.observe({ api, model }, v);
      ph.observe({ api, model }, v);
    }
    g.set({ api: "grpc", model: "z" }, 7);
    pg.set({ api: "grpc", model: "z" }, 7);
    unlabelled.inc();
    unlabelled.inc(3);
    pu.inc();
    pu.inc(3);
    // Children count on the same series as the parent.
    c.labels({ api: "openai", model: "a" }).inc(10);
    pc.labels({ api: "openai", model: "a" }).inc(10);
    const child = g.labels({ api: "openai", model: "b" });
    child.inc();
    child.dec(4);
    const pchild = pg.labels({ api: "openai", model: "b" });
    pchild.inc();
    pchild.dec(4);
    h.labels({ api: "openai", model: "b" }).observe(0.2);
    ph.labels({ api: "openai", model: "b" }).observe(0.2);

    // A child that was never used renders nothing, as with prom-client.
    c.labels({ api: "unused", model: "x" });
    pc.labels({ api: "unused", model: "x" });
    g.labels({ api: "unused", model: "x" });
    pg.labels({ api: "unused", model: "x" });
    h.labels({ api: "unused", model: "x" });
    ph.labels({ api: "unused", model: "x" });

    const body = (await renderMetrics([ours])).body;
    expect(body).not.toContain("unused");
    expect(samples(body)).toEqual(samples((await renderMetrics([theirs])).body));
    expect(body).toContain('switchyard_c_total{api="openai",model="a",service="ingress"} 13.05');
    expect(body).toContain("# TYPE switchyard_g gauge");
    expect(body).toContain("# TYPE switchyard_h_seconds histogram");
  });

  it("refuse a label the metric was not made with, and bad values, as prom-client does", () => {
    const registry = createRegistry("ingress");
    const c = counter(registry, "switchyard_c_total", "C", ["model"]);
    expect(() => c.inc({ model: "a", tenant: "t" })).toThrow(/not included in initial labelset/);
    expect(() => c.labels({ tenant: "t" })).toThrow(/not included in initial labelset/);
    expect(() => c.inc({ model: "a" }, -1)).toThrow(/not possible to decrease/);
    expect(() => c.inc({ model: "a" }, Number.NaN)).toThrow(TypeError);
    const g = gauge(registry, "switchyard_g", "G", ["model"]);
    expect(() => g.set({ model: "a" }, "1" as unknown as number)).toThrow(TypeError);
    expect(() =>
      histogram(registry, "switchyard_h", "H").observe(Number.POSITIVE_INFINITY),
    ).toThrow(TypeError);
    expect(() => counter(registry, "switchyard bad", "B")).toThrow(/Invalid metric name/);
    expect(() => counter(registry, "switchyard_c2_total", "C", ["__x"])).toThrow(/Invalid label/);
    expect(() => counter(registry, "switchyard_c_total", "again")).toThrow(
      /already been registered/,
    );
  });

  it("start empty again on reset", async () => {
    const registry = createRegistry("ingress");
    counter(registry, "switchyard_c_total", "C", ["model"]).inc({ model: "a" });
    gauge(registry, "switchyard_g", "G", ["model"]).set({ model: "a" }, 1);
    histogram(registry, "switchyard_h_seconds", "H", ["model"]).observe({ model: "a" }, 1);
    registry.resetMetrics();
    expect(samples((await renderMetrics([registry])).body)).toEqual([]);
  });
});
