// The Grafana dashboard and the Prometheus alert rules in deploy/ are checked against the code:
// both parse and have the shape their tools load, and every metric they name is one a running
// fabric really exports on /metrics (a renamed metric must not leave a silent panel or an alert
// that can never fire).

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { hashKey } from "../services/lib/config/keys.js";
import { type RunningFabric, startOneProcess, testConfig } from "../test/helpers/fabric.js";
import { metricFamilies } from "../test/helpers/metrics.js";
import { requireNats } from "../test/helpers/processes.js";

/** Grafana's reference to the dashboard's datasource variable (a literal, not a template). */
const DATASOURCE_UID = ["$", "{datasource}"].join("");
const DEPLOY = dirname(fileURLToPath(import.meta.url));
const DASHBOARD_TEXT = readFileSync(join(DEPLOY, "grafana", "switchyard-dashboard.json"), "utf8");
const ALERTS_TEXT = readFileSync(join(DEPLOY, "prometheus", "alerts.yaml"), "utf8");

interface Target {
  refId: string;
  expr: string;
  datasource?: { type: string; uid: string };
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
}

interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string }> };
}

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const dashboard = JSON.parse(DASHBOARD_TEXT) as Dashboard;
const alerts = parse(ALERTS_TEXT) as { groups: Array<{ name: string; rules: Rule[] }> };
const rules = alerts.groups.flatMap((g) => g.rules);
const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));

/** Every switchyard_ name a text mentions (expressions, descriptions, annotations). */
function metricNames(text: string): Set<string> {
  return new Set(text.match(/\bswitchyard_[a-z0-9_]+\b/g) ?? []);
}

/** Brackets balance and never close what they did not open (a cheap PromQL sanity check). */
function balanced(expr: string): boolean {
  const open: string[] = [];
  const pairs: Record<string, string> = { ")": "(", "]": "[", "}": "{" };
  let quoted = false;
  for (const c of expr) {
    if (c === '"') quoted = !quoted;
    if (quoted) continue;
    if ("([{".includes(c)) open.push(c);
    else if (c in pairs && open.pop() !== pairs[c]) return false;
  }
  return open.length === 0 && !quoted;
}

describe("deploy/grafana/switchyard-dashboard.json", () => {
  it("is a dashboard Grafana can import: uid, title, unique panel ids, 24-column grid", () => {
    expect(dashboard.uid).toBe("switchyard-overview");
    expect(dashboard.title).toBe("Switchyard");
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    }
    expect(dashboard.templating.list.map((v) => `${v.name}:${v.type}`)).toContain(
      "datasource:datasource",
    );
  });

  it("queries Prometheus through the datasource variable, with well-formed expressions", () => {
    const panels = dashboard.panels.filter((p) => p.type !== "row");
    expect(panels.length).toBeGreaterThan(15);
    for (const p of panels) {
      expect(p.datasource, p.title).toEqual({ type: "prometheus", uid: DATASOURCE_UID });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) {
        expect(t.datasource?.uid, p.title).toBe(DATASOURCE_UID);
        expect(balanced(t.expr), `${p.title}: ${t.expr}`).toBe(true);
      }
    }
  });

  it("shows what operators ask for first", () => {
    const all = queries.join("\n");
    for (const needed of [
      /sum by \(model\) \(rate\(switchyard_requests_total/, // request rate by model
      /status_class="5xx"/, // error rate
      /histogram_quantile\(0\.5, sum by \(le, model\) \(rate\(switchyard_time_to_first_token_seconds_bucket/,
      /histogram_quantile\(0\.99, sum by \(le, model\) \(rate\(switchyard_time_to_first_token_seconds_bucket/,
      /sum by \(tenant, direction\) \(rate\(switchyard_tokens_total/,
      /sum by \(tenant\) \(rate\(switchyard_cost_usd_total/,
      /switchyard_router_circuit_state/,
      /switchyard_target_health/,
      /switchyard_connectors_known/,
      /switchyard_open_streams/,
      /switchyard_gateway_overhead_seconds_bucket/,
    ]) {
      expect(all).toMatch(needed);
    }
  });
});

describe("deploy/prometheus/alerts.yaml", () => {
  it("is a Prometheus rule file: named groups of alerts with expr, for, severity and summary", () => {
    expect(alerts.groups.length).toBeGreaterThan(0);
    const names = rules.map((r) => r.alert);
    expect(new Set(names).size).toBe(names.length);
    for (const r of rules) {
      expect(r.alert, JSON.stringify(r)).toMatch(/^Switchyard[A-Za-z]+$/);
      expect(balanced(r.expr), `${r.alert}: ${r.expr}`).toBe(true);
      expect(r.for, r.alert).toMatch(/^\d+[smh]$/);
      expect(["page", "warn", "info"], r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      for (const key of Object.keys(r)) {
        expect(["alert", "expr", "for", "keep_firing_for", "labels", "annotations"]).toContain(key);
      }
    }
  });

  it("alerts on error rate, p99 first token, budget burn, open circuits, NATS and connectors", () => {
    const exprOf = (alert: string) => rules.find((r) => r.alert === alert)?.expr ?? "";
    expect(exprOf("SwitchyardHighErrorRate")).toContain('status_class="5xx"');
    expect(exprOf("SwitchyardSlowFirstToken")).toMatch(
      /histogram_quantile\(0\.99,\s+sum by \(le, model\) \(rate\(switchyard_time_to_first_token_seconds_bucket/,
    );
    expect(exprOf("SwitchyardBudgetBurn")).toContain("switchyard_tenant_budget_usd");
    expect(exprOf("SwitchyardBudgetBurnFast")).toContain("switchyard_cost_usd_total");
    expect(exprOf("SwitchyardCircuitOpen")).toContain("switchyard_router_circuit_state");
    expect(exprOf("SwitchyardNatsDown")).toContain("switchyard_nats_connected");
    expect(exprOf("SwitchyardNoConnectors")).toContain("switchyard_connectors_known");
  });
});

describe("every metric the dashboard and the alerts name", () => {
  let gw: RunningFabric;
  let exported: Set<string>;
  let histograms: Set<string>;

  // NATS configured, so the bus-backed gauges exist too; a tenant with a budget.
  beforeAll(async () => {
    await requireNats();
    gw = await startOneProcess(
      testConfig(`
nats: { url: nats://127.0.0.1:4222, namespace: deploy-observability-test }
providers:
  demo: { type: mock, first_token_ms: 0, token_interval_ms: 0 }
models:
  demo: { targets: [{ provider: demo, model: mock-1 }] }
tenants:
  acme: { keys: ["${hashKey("sk-deploy-test")}"], limits: { monthly_usd: 100 } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    const text = await (await request(`${gw.url}/metrics`)).body.text();
    exported = metricFamilies(text);
    histograms = new Set(
      text
        .split("\n")
        .filter((l) => l.startsWith("# TYPE ") && l.endsWith(" histogram"))
        .map((l) => l.split(" ")[2] ?? ""),
    );
  });

  afterAll(async () => {
    await gw?.stop();
  });

  it.each([
    ["the dashboard", DASHBOARD_TEXT],
    ["the alert rules", ALERTS_TEXT],
  ])("in %s is exported by a running fabric", (_, text) => {
    const names = metricNames(text);
    expect(names.size).toBeGreaterThan(5);
    const missing = [...names].filter((name) => {
      if (exported.has(name)) return false;
      // A histogram's series are its family name plus _bucket, _sum or _count.
      const base = name.replace(/_(bucket|sum|count)$/, "");
      return !(base !== name && histograms.has(base));
    });
    expect(missing).toEqual([]);
  });

  it("queries buckets only of histograms", () => {
    const buckets = [...metricNames(`${DASHBOARD_TEXT}\n${ALERTS_TEXT}`)].filter((n) =>
      n.endsWith("_bucket"),
    );
    expect(buckets.length).toBeGreaterThan(0);
    for (const b of buckets) expect(histograms).toContain(b.replace(/_bucket$/, ""));
  });
});
