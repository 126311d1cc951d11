import { describe, expect, it } from "vitest";
import { hashKey } from "../lib/config/keys.js";
import { parseConfigText } from "../lib/config/load.js";
import type { Config } from "../lib/config/types.js";
import { Failure } from "../lib/errors.js";
import { authenticate, isAdminKey } from "./auth.js";

function config(tenants: string): Config {
  const { config, problems } = parseConfigText(
    `providers: { demo: { type: mock } }
models: { m: { targets: [{ provider: demo, model: mock-1 }] } }
${tenants}`,
    {},
    "test.yaml",
  );
  if (!config) throw new Error(problems.map((p) => `${p.path}: ${p.reason}`).join("\n"));
  return config;
}

function refusal(fn: () => unknown): Failure {
  try {
    fn();
  } catch (err) {
    if (err instanceof Failure) return err;
    throw err;
  }
  throw new Error("expected a refusal");
}

const EXPIRES = "2026-06-01T00:00:00Z";
const withKeys = config(`tenants:
  acme:
    keys: ["${hashKey("sk-acme-1")}", { hash: "${hashKey("sk-acme-old")}", expires: "${EXPIRES}" }]
    models: [m]
  beta: { keys: ["${hashKey("sk-beta")}"] }
admin: { keys: ["${hashKey("sk-admin")}"] }
`);

describe("authenticate", () => {
  it("names the tenant, its allow-list and the key's hash for a listed key", () => {
    const caller = authenticate(withKeys, "sk-acme-1");
    expect(caller.tenant).toBe("acme");
    expect([...(caller.models ?? [])]).toEqual(["m"]);
    expect(caller.keyHash).toBe(hashKey("sk-acme-1"));
    expect(authenticate(withKeys, "sk-beta").tenant).toBe("beta");
  });

  it("accepts a key with an expiry until that instant, then refuses it with 401 expired", () => {
    const expiry = Date.parse(EXPIRES);
    expect(authenticate(withKeys, "sk-acme-old", expiry - 1).tenant).toBe("acme");
    const f = refusal(() => authenticate(withKeys, "sk-acme-old", expiry));
    expect([f.status, f.code]).toEqual([401, "expired_api_key"]);
    expect(f.message).toMatch(/expired/);
  });

  it("refuses a missing or unknown key with 401, and never echoes the key", () => {
    expect(refusal(() => authenticate(withKeys, undefined)).code).toBe("missing_api_key");
    const f = refusal(() => authenticate(withKeys, "sk-canary-unknown"));
    expect([f.status, f.code]).toEqual([401, "invalid_api_key"]);
    expect(f.message).not.toContain("sk-canary");
  });

  it("lets everyone in without a tenants section", () => {
    expect(authenticate(config(""), undefined)).toMatchObject({ tenant: "", keyHash: "" });
  });
});

describe("isAdminKey", () => {
  it("accepts only admin keys, and nothing without an admin section", () => {
    expect(isAdminKey(withKeys, "sk-admin")).toBe(true);
    expect(isAdminKey(withKeys, "sk-acme-1")).toBe(false);
    expect(isAdminKey(withKeys, undefined)).toBe(false);
    expect(isAdminKey(config(""), "sk-admin")).toBe(false);
  });
});
