import { describe, expect, it } from "vitest";
import type { ProviderConfig } from "../../lib/config/types.js";
import { createProvider } from "./registry.js";

describe("createProvider", () => {
  it.each<[string, ProviderConfig]>([
    ["mock", { type: "mock" }],
    ["openai", { type: "openai", base_url: "http://127.0.0.1:1/v1" }],
    [
      "azure",
      {
        type: "azure-openai",
        base_url: "http://127.0.0.1:1",
        api_key: "k",
        api_version: "2024-10-21",
      },
    ],
    ["anthropic", { type: "anthropic", base_url: "http://127.0.0.1:1", api_key: "k" }],
    ["gemini", { type: "gemini", base_url: "http://127.0.0.1:1", api_key: "k" }],
  ])(
    "builds a %s provider under its configured name, with chat and probe",
    async (name, config) => {
      const p = createProvider(name, config);
      expect(p.name).toBe(name);
      expect(p.config.type).toBe(config.type);
      expect(typeof p.chat).toBe("function");
      expect(typeof p.probe).toBe("function");
      await p.close();
    },
  );

  it("offers embeddings only where the upstream has them", async () => {
    const has = (config: ProviderConfig) => {
      const p = createProvider("x", config);
      void p.close();
      return typeof p.embed === "function";
    };
    expect(has({ type: "openai", base_url: "http://127.0.0.1:1/v1" })).toBe(true);
    expect(has({ type: "gemini", base_url: "http://127.0.0.1:1", api_key: "k" })).toBe(true);
    expect(has({ type: "anthropic", base_url: "http://127.0.0.1:1", api_key: "k" })).toBe(false);
  });
});
