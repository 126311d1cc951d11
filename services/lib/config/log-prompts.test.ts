import { describe, expect, it } from "vitest";
import { hashKey } from "./keys.js";
import { parseConfigText } from "./load.js";

const config = (tenant: string, env: Record<string, string> = {}) =>
  parseConfigText(
    `
providers:
  demo: { type: mock }
models:
  m: { targets: [{ provider: demo, model: mock-1 }] }
tenants:
  acme: { keys: ["${hashKey("key-a")}"]${tenant} }
`,
    env,
    "test.yaml",
  );

describe("tenants.<name>.log_prompts", () => {
  it("is off unless set to true", () => {
    expect(config("").config?.tenants?.acme).not.toHaveProperty("log_prompts");
    expect(config(", log_prompts: false").config?.tenants?.acme).not.toHaveProperty("log_prompts");
    expect(config(", log_prompts: true").config?.tenants?.acme?.log_prompts).toBe(true);
  });

  it("may come from the environment as true or false", () => {
    const on = config(`, log_prompts: "\${LOG_PROMPTS}"`, { LOG_PROMPTS: "true" });
    expect(on.config?.tenants?.acme?.log_prompts).toBe(true);
  });

  it("refuses anything but a boolean", () => {
    expect(config(", log_prompts: yes-please").problems).toEqual([
      { path: "tenants.acme.log_prompts", reason: "must be true or false, got 'yes-please'" },
    ]);
    expect(config(', log_prompts: "true"').problems).toEqual([
      { path: "tenants.acme.log_prompts", reason: "must be true or false, got 'true'" },
    ]);
  });
});
