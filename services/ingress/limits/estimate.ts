// What an admission reserves before the upstream is known (tokens ≈ characters / 4, plus the
// answer's max_tokens), and what a request really cost once the answering target is known.

import type { ChatParams, EmbedParams } from "../../../gen/switchyard/chat/v1/chat_pb.js";
import type { Config, Price, TargetConfig } from "../../lib/config/types.js";
import { tokenInputCount } from "../../lib/embed-inputs.js";
import { costUsd, priceFor, type TokenUsage } from "../../lib/pricing.js";

/** The answer length assumed when a request sets no max_tokens. */
export const DEFAULT_COMPLETION_ESTIMATE = 256;
/** Images, audio and files count as this many tokens each (their bytes say little). */
const NON_TEXT_PART_TOKENS = 256;

export function tokensOfText(chars: number): number {
  return Math.ceil(chars / 4);
}

/** Expected prompt and completion tokens of a chat request. */
export function estimateChat(params: ChatParams): { prompt: number; completion: number } {
  let chars = 0;
  let parts = 0;
  for (const m of params.messages) {
    for (const p of m.content) {
      if (p.part.case === "text") chars += p.part.value.length;
      else if (p.part.case !== undefined) parts += 1;
      chars += p.citationsJson.length + p.anthropicFieldsJson.length;
    }
    chars += (m.name?.length ?? 0) + (m.refusal?.length ?? 0);
    for (const call of m.toolCalls) chars += call.name.length + call.arguments.length;
    for (const block of m.anthropicBlocks) chars += block.json.length;
  }
  for (const tool of params.tools) {
    chars +=
      tool.name.length +
      (tool.description?.length ?? 0) +
      tool.parametersJson.length +
      tool.anthropicJson.length;
  }
  return {
    prompt: tokensOfText(chars) + parts * NON_TEXT_PART_TOKENS,
    completion: params.maxTokens ?? DEFAULT_COMPLETION_ESTIMATE,
  };
}

/**
 * Expected tokens of an embeddings request (all prompt). Token-array inputs are not estimated:
 * what they send is exactly what the upstream embeds.
 */
export function estimateEmbed(params: EmbedParams): number {
  if (params.tokenInputs.length > 0) return tokenInputCount(params);
  return tokensOfText(params.inputs.reduce((sum, input) => sum + input.length, 0));
}

/** What decides which models may answer a request besides the one it names. */
export interface Reach {
  /** The fallbacks the client named in place of the configured ones, if it did. */
  fallbacks?: readonly string[] | undefined;
  /** The caller's allow-list, if it has one: no other model answers it (the router skips them). */
  allowed?: ReadonlySet<string> | undefined;
}

/**
 * The targets a request for `model` may be answered by, as the router plans them: its own, then
 * its fallbacks' (the client's, when it named them, else the configured ones), and for each of
 * those models the one its context window overflows to (`context_window_fallbacks`), in turn;
 * of these, only the models the caller may use.
 */
function candidates(config: Config, model: string, reach: Reach): TargetConfig[] {
  const m = config.models[model];
  if (!m) return [];
  const { allowed } = reach;
  const names = new Set([model, ...(reach.fallbacks ?? m.fallbacks)]);
  // A Set's iteration visits what is added during it.
  for (const name of names) {
    if (name !== model && allowed && !allowed.has(name)) continue;
    const bigger = config.models[name]?.context_window_fallbacks[0];
    if (bigger) names.add(bigger);
  }
  return [...names]
    .filter((name) => name === model || !allowed || allowed.has(name))
    .flatMap((name) => config.models[name]?.targets ?? []);
}

/** The most a request could cost on any of its candidate targets (0 when none has a price). */
export function worstCaseCost(
  config: Config,
  model: string,
  usage: TokenUsage,
  reach: Reach = {},
): number {
  let worst = 0;
  for (const target of candidates(config, model, reach)) {
    const price = priceFor(target);
    if (price) worst = Math.max(worst, costUsd(price, usage));
  }
  return worst;
}

/**
 * The price of the target that gave an answer: the candidate with that provider and upstream
 * model, else the candidate with that provider (upstreams may name a dated snapshot). Undefined
 * when that target has no price, configured or built in.
 */
export function answerPrice(
  config: Config,
  model: string,
  answeredBy: { provider: string; upstreamModel: string },
  reach: Reach = {},
): Price | undefined {
  let byProvider: TargetConfig | undefined;
  for (const t of candidates(config, model, reach)) {
    if (t.provider !== answeredBy.provider) continue;
    if (t.model === answeredBy.upstreamModel) return priceFor(t);
    byProvider ??= t;
  }
  return byProvider ? priceFor(byProvider) : undefined;
}
