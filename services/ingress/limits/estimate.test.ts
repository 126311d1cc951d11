import { describe, expect, it } from "vitest";
import { testConfig } from "../../../test/helpers/fabric.js";
import { worstCaseCost } from "./estimate.js";

const config = testConfig(`
providers:
  a: { type: mock }
  b: { type: mock }
models:
  cheap:
    targets: [{ provider: a, model: a1, price: { input: 1, output: 1 } }]
    fallbacks: [premium]
    context_window_fallbacks: [huge]
  premium:
    targets: [{ provider: b, model: b1, price: { input: 100, output: 100 } }]
  huge:
    targets: [{ provider: b, model: b2, price: { input: 10, output: 10 } }]
`);
const usage = { prompt: 1_000_000, completion: 0 };

describe("worstCaseCost", () => {
  it("prices a request at the dearest model that may answer it, fallbacks included", () => {
    expect(worstCaseCost(config, "cheap", usage)).toBe(100);
    expect(worstCaseCost(config, "cheap", usage, { fallbacks: [] })).toBe(10);
  });

  it("leaves out the models the caller may not use: the router never reaches them", () => {
    expect(worstCaseCost(config, "cheap", usage, { allowed: new Set(["cheap"]) })).toBe(1);
    expect(worstCaseCost(config, "cheap", usage, { allowed: new Set(["cheap", "huge"]) })).toBe(10);
  });
});
