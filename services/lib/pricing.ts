import type { Price, TargetConfig } from "./config/types.js";

/**
 * List prices in USD per 1M tokens for common upstream models, from the providers' public price
 * pages as of late 2025 (standard tier, no batch discount; Gemini's for prompts up to 200k
 * tokens). They are a fallback only: a target's `price` in the config always overrides them, and
 * negotiated or regional prices belong there.
 */
export const DEFAULT_PRICES: Readonly<Record<string, Price>> = {
  // OpenAI
  "gpt-4o": { input: 2.5, output: 10, cached_input: 1.25 },
  "gpt-4o-mini": { input: 0.15, output: 0.6, cached_input: 0.075 },
  "gpt-4.1": { input: 2, output: 8, cached_input: 0.5 },
  "gpt-4.1-mini": { input: 0.4, output: 1.6, cached_input: 0.1 },
  "gpt-4.1-nano": { input: 0.1, output: 0.4, cached_input: 0.025 },
  "gpt-5": { input: 1.25, output: 10, cached_input: 0.125 },
  "gpt-5-mini": { input: 0.25, output: 2, cached_input: 0.025 },
  "gpt-5-nano": { input: 0.05, output: 0.4, cached_input: 0.005 },
  o3: { input: 2, output: 8, cached_input: 0.5 },
  "o3-mini": { input: 1.1, output: 4.4, cached_input: 0.55 },
  "o4-mini": { input: 1.1, output: 4.4, cached_input: 0.275 },
  "text-embedding-3-small": { input: 0.02, output: 0 },
  "text-embedding-3-large": { input: 0.13, output: 0 },
  "text-embedding-ada-002": { input: 0.1, output: 0 },
  // Anthropic (cached_input is the cache-read price, cache_write the 5-minute cache write's,
  // cache_write_1h the 1-hour one's: twice the input price)
  "claude-sonnet-4-5": {
    input: 3,
    output: 15,
    cached_input: 0.3,
    cache_write: 3.75,
    cache_write_1h: 6,
  },
  "claude-sonnet-4-0": {
    input: 3,
    output: 15,
    cached_input: 0.3,
    cache_write: 3.75,
    cache_write_1h: 6,
  },
  "claude-sonnet-4": {
    input: 3,
    output: 15,
    cached_input: 0.3,
    cache_write: 3.75,
    cache_write_1h: 6,
  },
  "claude-3-7-sonnet": {
    input: 3,
    output: 15,
    cached_input: 0.3,
    cache_write: 3.75,
    cache_write_1h: 6,
  },
  "claude-opus-4-1": {
    input: 15,
    output: 75,
    cached_input: 1.5,
    cache_write: 18.75,
    cache_write_1h: 30,
  },
  "claude-opus-4-0": {
    input: 15,
    output: 75,
    cached_input: 1.5,
    cache_write: 18.75,
    cache_write_1h: 30,
  },
  "claude-opus-4": {
    input: 15,
    output: 75,
    cached_input: 1.5,
    cache_write: 18.75,
    cache_write_1h: 30,
  },
  "claude-haiku-4-5": {
    input: 1,
    output: 5,
    cached_input: 0.1,
    cache_write: 1.25,
    cache_write_1h: 2,
  },
  "claude-3-5-haiku": {
    input: 0.8,
    output: 4,
    cached_input: 0.08,
    cache_write: 1,
    cache_write_1h: 1.6,
  },
  // Google Gemini
  "gemini-2.5-pro": { input: 1.25, output: 10, cached_input: 0.125 },
  "gemini-2.5-flash": { input: 0.3, output: 2.5, cached_input: 0.03 },
  "gemini-2.5-flash-lite": { input: 0.1, output: 0.4, cached_input: 0.01 },
  "gemini-2.0-flash": { input: 0.1, output: 0.4, cached_input: 0.025 },
  "gemini-embedding-001": { input: 0.15, output: 0 },
};

/**
 * Dated snapshots and aliases of a listed model cost what it costs:
 * gpt-4o-2024-08-06, claude-sonnet-4-5-20250929, claude-3-5-haiku-latest, models/gemini-2.5-pro.
 */
const SNAPSHOT_SUFFIX = /-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$/;

/** What a target costs: its configured price, else the list price of its upstream model. */
export function priceFor(target: TargetConfig): Price | undefined {
  if (target.price) return target.price;
  const name = target.model.replace(/^models\//, "");
  return DEFAULT_PRICES[name] ?? DEFAULT_PRICES[name.replace(SNAPSHOT_SUFFIX, "")];
}

export interface TokenUsage {
  /** All prompt tokens, cached ones included (the canonical Usage.prompt_tokens). */
  prompt: number;
  completion: number;
  /** The cached share of `prompt` (read from the provider's cache). */
  cachedPrompt?: number | undefined;
  /** The share of `prompt` written to the provider's cache. */
  cacheWritePrompt?: number | undefined;
  /** The share of `cacheWritePrompt` written to live an hour (Anthropic's 1-hour cache). */
  cacheWrite1hPrompt?: number | undefined;
}

/**
 * USD for one call. Cached prompt tokens cost `cached_input`, tokens written to the cache
 * `cache_write` (`cache_write_1h` those written to live an hour), each `input` when the price
 * has none.
 */
export function costUsd(price: Price, usage: TokenUsage): number {
  const cached = Math.min(usage.cachedPrompt ?? 0, usage.prompt);
  const written = Math.min(usage.cacheWritePrompt ?? 0, usage.prompt - cached);
  const hour = Math.min(usage.cacheWrite1hPrompt ?? 0, written);
  const fresh = usage.prompt - cached - written;
  const micro =
    fresh * price.input +
    cached * (price.cached_input ?? price.input) +
    (written - hour) * (price.cache_write ?? price.input) +
    hour * (price.cache_write_1h ?? price.cache_write ?? price.input) +
    usage.completion * price.output;
  return micro / 1_000_000;
}

/** USD to 1e-10 (a ten-thousandth of a micro-dollar): the float noise off, sums unchanged. */
export function roundUsd(usd: number): number {
  return Math.round(usd * 1e10) / 1e10;
}

/** USD as a plain decimal for a header (never exponent notation): 0.000075, 0. */
export function formatUsd(usd: number): string {
  return usd.toFixed(10).replace(/\.?0+$/, "");
}
