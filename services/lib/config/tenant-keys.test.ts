import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { hashKey } from "./keys.js";
import type { Config } from "./types.js";
import { validateConfig } from "./validate.js";

// Tenant keys in their object form, admin keys and redis.prefix.

function problemsOf(yaml: string): string[] {
  return validateConfig(parse(yaml)).problems.map((p) => `${p.path}: ${p.reason}`);
}

function configOf(yaml: string): Config {
  const { config, problems } = validateConfig(parse(yaml));
  expect(problems).toEqual([]);
  if (config === undefined) throw new Error("no config");
  return config;
}

const MINIMAL = `
providers:
  demo: { type: mock }
models:
  m:
    targets: [{ provider: demo, model: mock-1 }]
`;

const KEY_A = hashKey("key-a");
const KEY_B = hashKey("key-b");
const KEY_C = hashKey("key-c");

describe("tenant keys", () => {
  it("accept the object form with expiry and per-key limits beside bare hashes", () => {
    const config = configOf(`${MINIMAL}
tenants:
  acme:
    keys:
      - "${KEY_A}"
      - { hash: "${KEY_B.toUpperCase().replace("SHA256", "sha256")}", expires: "2026-12-31T00:00:00Z" }
      - hash: "${KEY_C}"
        limits: { rpm: 5, monthly_usd: 2.5 }
    limits: { rpm: 60 }
`);
    expect(config.tenants?.acme).toEqual({
      keys: [KEY_A, KEY_B, KEY_C],
      key_options: {
        [KEY_B]: { expires: "2026-12-31T00:00:00Z" },
        [KEY_C]: { limits: { rpm: 5, monthly_usd: 2.5 } },
      },
      limits: { rpm: 60 },
    });
  });

  it("leaves key_options out when every key is a bare hash", () => {
    expect(configOf(`${MINIMAL}\ntenants:\n  acme: { keys: ["${KEY_A}"] }`).tenants?.acme).toEqual({
      keys: [KEY_A],
      limits: {},
    });
  });

  it("rejects a missing hash, unknown fields, bad expiry and bad per-key limits", () => {
    expect(
      problemsOf(`${MINIMAL}
tenants:
  acme:
    keys:
      - { expires: "2026-12-31T00:00:00Z" }
      - { hash: "${KEY_A}", expires: "2026-12-31", limit: {} }
      - { hash: "${KEY_B}", expires: "tomorrow", limits: { rpm: 0 } }
      - { hash: "sk-plaintext" }
`),
    ).toEqual([
      "tenants.acme.keys[0].hash: required",
      "tenants.acme.keys[1].limit: unknown key, did you mean 'limits'?",
      "tenants.acme.keys[1].expires: must be an ISO 8601 date-time with a time zone, e.g. 2026-12-31T00:00:00Z, got '2026-12-31'",
      "tenants.acme.keys[2].expires: must be an ISO 8601 date-time with a time zone, e.g. 2026-12-31T00:00:00Z, got 'tomorrow'",
      "tenants.acme.keys[2].limits.rpm: must be a positive integer, got 0",
      "tenants.acme.keys[3].hash: must be 'sha256:' followed by 64 hex digits (make one with `switchyard hash-key`)",
    ]);
  });

  it("catches the same key in both forms across tenants", () => {
    expect(
      problemsOf(`${MINIMAL}
tenants:
  acme: { keys: ["${KEY_A}"] }
  beta: { keys: [{ hash: "${KEY_A}", expires: "2027-01-01T00:00:00Z" }] }
`),
    ).toEqual(["tenants.beta.keys[0]: key already belongs to tenant 'acme'"]);
  });
});

describe("admin", () => {
  it("reads admin key hashes", () => {
    expect(configOf(`${MINIMAL}\nadmin: { keys: ["${KEY_A}"] }`).admin).toEqual({ keys: [KEY_A] });
  });

  it("refuses plaintext keys, an empty list, and a key a tenant also uses", () => {
    expect(problemsOf(`${MINIMAL}\nadmin: { keys: [] }`)).toEqual([
      "admin.keys: must list at least one key",
    ]);
    expect(
      problemsOf(`${MINIMAL}
tenants:
  acme: { keys: ["${KEY_A}"] }
admin: { keys: ["${KEY_A}", "hunter2"], users: [] }
`),
    ).toEqual([
      "admin.users: unknown key",
      "admin.keys[0]: key already belongs to tenant 'acme'",
      "admin.keys[1]: must be 'sha256:' followed by 64 hex digits (make one with `switchyard hash-key`)",
    ]);
  });
});

describe("redis.prefix", () => {
  it("is kept when valid and refused when it holds other characters", () => {
    expect(
      configOf(`${MINIMAL}\nredis: { url: "redis://r:6379", prefix: "prod-eu" }`).redis,
    ).toEqual({ url: "redis://r:6379", on_error: "fail_open", prefix: "prod-eu" });
    expect(problemsOf(`${MINIMAL}\nredis: { url: "redis://r:6379", prefix: "a b" }`)).toEqual([
      "redis.prefix: must be 1 to 64 letters, digits, '_', '.', ':' or '-'",
    ]);
  });
});
