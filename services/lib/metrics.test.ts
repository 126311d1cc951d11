import { Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { counter, createRegistry, FastHistogram, gauge, renderMetrics } from "./metrics.js";

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
