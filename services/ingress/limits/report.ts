// The usage report as the admin route serves it and `switchyard usage` prints it.

import type { LimitName, UsageReport } from "./limiter.js";

export interface UsageJson {
  backend: "memory" | "redis";
  /** When the report was taken (RFC 3339). */
  at: string;
  subjects: Array<{
    tenant: string;
    /** Set for per-key limits: the start of the key's hash. */
    key?: string;
    limits: Array<{
      limit: LimitName;
      used: number;
      max: number;
      remaining: number;
      reset_ms: number;
    }>;
  }>;
}

export function usageJson(report: UsageReport): UsageJson {
  return {
    backend: report.backend,
    at: new Date(report.at).toISOString(),
    subjects: report.subjects.map((s) => ({
      tenant: s.tenant,
      ...(s.key === undefined ? {} : { key: s.key }),
      limits: s.lines.map((l) => ({
        limit: l.limit,
        used: l.used,
        max: l.max,
        remaining: l.remaining,
        reset_ms: Math.max(0, Math.round(l.resetMs)),
      })),
    })),
  };
}

/** A plain-text table: one row per limit, tenant rows first and each key's rows after them. */
export function formatUsage(usage: UsageJson): string {
  const rows = [["TENANT", "KEY", "LIMIT", "USED", "MAX", "REMAINING", "RESETS IN"]];
  for (const s of usage.subjects) {
    const key = s.key === undefined ? "-" : `sha256:${s.key}…`;
    if (s.limits.length === 0) rows.push([s.tenant, key, "(no limits)", "", "", "", ""]);
    for (const l of s.limits) {
      const money = l.limit === "monthly_usd";
      const n = (v: number) => (money ? `$${v.toFixed(2)}` : String(v));
      rows.push([
        s.tenant,
        key,
        l.limit,
        n(l.used),
        n(l.max),
        n(l.remaining),
        l.reset_ms > 0 ? inWords(l.reset_ms) : "-",
      ]);
    }
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  const lines = rows.map((r) =>
    r
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd(),
  );
  return `usage at ${usage.at} (${usage.backend} backend)\n${lines.join("\n")}\n`;
}

function inWords(ms: number): string {
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 48 * 3600) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}
