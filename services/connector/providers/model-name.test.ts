import { describe, expect, it } from "vitest";
import { reportedModel } from "./model-name.js";

describe("reportedModel", () => {
  it("takes the model ids providers and local servers name", () => {
    for (const id of [
      "gpt-4o-2024-08-06",
      "claude-sonnet-4-5-20250929",
      "models/gemini-2.5-flash",
      "meta-llama/Llama-3.1-8B-Instruct:free",
      "accounts/fireworks/models/llama-v3p1-70b-instruct",
      "llama3.2:3b",
    ]) {
      expect(reportedModel(id), id).toBe(id);
    }
  });

  it("refuses what an HTTP header cannot carry: non-strings, empty, control characters, lone surrogates, 100 KB", () => {
    for (const bad of [
      undefined,
      null,
      0,
      [],
      {},
      "",
      " gpt",
      "gpt\n",
      "gpt\r\nx-evil: 1",
      "\ud800",
      "x".repeat(100 * 1024),
    ]) {
      expect(reportedModel(bad), JSON.stringify(bad)?.slice(0, 40)).toBeUndefined();
    }
  });
});
