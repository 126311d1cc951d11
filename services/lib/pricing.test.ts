import { describe, expect, it } from "vitest";
import type { Price } from "./config/types.js";
import { costUsd, DEFAULT_PRICES, priceFor } from "./pricing.js";

const target = (model: string) => ({ provider: "p", model, weight: 1 });

describe("priceFor", () => {
  it("returns the target's configured price over the built-in one", () => {
    const price = { input: 1, output: 2 };
    expect(priceFor({ ...target("gpt-4o"), price })).toBe(price);
  });

  it("falls back on the list price of the upstream model", () => {
    expect(priceFor(target("gpt-4o"))).toEqual({ input: 2.5, output: 10, cached_input: 1.25 });
    expect(priceFor(target("claude-sonnet-4-5"))?.input).toBe(3);
  });

  it("prices dated snapshots, -latest aliases and Gemini's models/ names as their model", () => {
    expect(priceFor(target("gpt-4o-2024-08-06"))).toBe(DEFAULT_PRICES["gpt-4o"]);
    expect(priceFor(target("claude-sonnet-4-5-20250929"))).toBe(
      DEFAULT_PRICES["claude-sonnet-4-5"],
    );
    expect(priceFor(target("claude-3-5-haiku-latest"))).toBe(DEFAULT_PRICES["claude-3-5-haiku"]);
    expect(priceFor(target("models/gemini-2.5-flash"))).toBe(DEFAULT_PRICES["gemini-2.5-flash"]);
  });

  it("does not mistake a model for a longer-named sibling, nor guess at unknown ones", () => {
    expect(priceFor(target("gpt-4o-mini"))).toBe(DEFAULT_PRICES["gpt-4o-mini"]);
    expect(priceFor(target("gpt-4o-prod-deployment"))).toBeUndefined();
    expect(priceFor(target("llama3.1:8b"))).toBeUndefined();
  });

  it("has a list price for the common OpenAI, Anthropic and Gemini models", () => {
    for (const model of [
      "gpt-4o",
      "gpt-4o-mini",
      "gpt-4.1",
      "gpt-4.1-mini",
      "o3",
      "o4-mini",
      "claude-sonnet-4-5",
      "claude-opus-4-1",
      "claude-haiku-4-5",
      "gemini-2.5-pro",
      "gemini-2.5-flash",
      "text-embedding-3-small",
      "text-embedding-3-large",
    ]) {
      expect(DEFAULT_PRICES[model], model).toBeDefined();
    }
  });
});

describe("costUsd", () => {
  const price = { input: 2, output: 8, cached_input: 0.5 };

  it("charges prompt and completion tokens per million", () => {
    expect(costUsd(price, { prompt: 1_000_000, completion: 500_000 })).toBeCloseTo(6);
  });

  it("charges the cached share of the prompt at the cached price", () => {
    // 600k fresh at $2, 400k cached at $0.50, 100k out at $8.
    const usd = costUsd(price, { prompt: 1_000_000, completion: 100_000, cachedPrompt: 400_000 });
    expect(usd).toBeCloseTo(1.2 + 0.2 + 0.8);
  });

  it("charges prompt tokens written to the cache at the cache-write price, or the input price", () => {
    // Anthropic's list prices for Sonnet: $3 in, $0.30 read, $3.75 written, $15 out.
    const sonnet = { input: 3, output: 15, cached_input: 0.3, cache_write: 3.75 };
    const usage = { prompt: 812, completion: 7, cachedPrompt: 300, cacheWritePrompt: 500 };
    expect(costUsd(sonnet, usage)).toBeCloseTo((12 * 3 + 300 * 0.3 + 500 * 3.75 + 7 * 15) / 1e6);
    expect(costUsd({ input: 3, output: 15 }, usage)).toBeCloseTo((812 * 3 + 7 * 15) / 1e6);
    expect(priceFor(target("claude-sonnet-4-5-20250929"))?.cache_write).toBe(3.75);
  });

  it("charges cache writes that live an hour at the 1-hour price, built in as twice the input", () => {
    const sonnet = priceFor(target("claude-sonnet-4-5-20250929"));
    expect(sonnet).toMatchObject({ cache_write: 3.75, cache_write_1h: 6 });
    // 1,200 written: 1,000 for an hour at $6, 200 for five minutes at $3.75.
    const usage = {
      prompt: 1_225,
      completion: 17,
      cacheWritePrompt: 1_200,
      cacheWrite1hPrompt: 1_000,
    };
    expect(costUsd(sonnet as Price, usage)).toBeCloseTo(
      (25 * 3 + 200 * 3.75 + 1_000 * 6 + 17 * 15) / 1e6,
    );
    // Without a 1-hour price, the cache-write price.
    expect(costUsd({ input: 3, output: 15, cache_write: 3.75 }, usage)).toBeCloseTo(
      (25 * 3 + 1_200 * 3.75 + 17 * 15) / 1e6,
    );
  });

  it("charges cached tokens at the input price when the price has no cached rate", () => {
    const usd = costUsd(
      { input: 3, output: 15 },
      { prompt: 1000, completion: 0, cachedPrompt: 1000 },
    );
    expect(usd).toBeCloseTo(0.003);
  });
});
