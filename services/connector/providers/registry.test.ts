import { describe, expect, it } from "vitest";
import { createProvider, supportedProviderTypes } from "./registry.js";

describe("createProvider", () => {
  it("builds the provider its type names", async () => {
    const mock = createProvider("demo", { type: "mock" });
    expect(mock.name).toBe("demo");
    const openai = createProvider("local", { type: "openai", base_url: "http://127.0.0.1:1/v1" });
    expect(openai.config.base_url).toBe("http://127.0.0.1:1/v1");
    await Promise.all([mock.close(), openai.close()]);
  });

  it("refuses a type this build does not implement, naming the provider", () => {
    expect(() => createProvider("claude", { type: "anthropic", api_key: "k" })).toThrow(
      "provider claude: type anthropic is not supported yet",
    );
  });

  it("lists the types it can build", () => {
    expect(supportedProviderTypes().sort()).toEqual(["mock", "openai"]);
  });
});
