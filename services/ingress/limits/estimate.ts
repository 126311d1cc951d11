// What an admission reserves before the upstream is known (tokens ≈ characters / 4, plus the
// answer's max_tokens), and what a request really cost once the answering target is known.

import type { ChatParams, EmbedParams } from "../../../gen/switchyard/chat/v1/chat_pb.js";
import type { Config, Price, TargetConfig } from "../../lib/config/types.js";
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
    }
    chars += (m.name?.length ?? 0) + (m.refusal?.length ?? 0);
    for (const call of m.toolCalls) chars += call.name.length + call.arguments.length;
  }
  for (const tool of params.tools) {
    chars += tool.name.length + (tool.description?.length ?? 0) + tool.parametersJson.length;
  }
  return {
    prompt: tokensOfText(chars) + parts * NON_TEXT_PART_TOKENS,
    completion: params.maxTokens ?? DEFAULT_COMPLETION_ESTIMATE,
  };
}

/** Expected tokens of an embeddings request (all prompt). */
export function estimateEmbed(params: EmbedParams): number {
  return tokensOfText(params.inputs.reduce((sum, input) => sum + input.length, 0));
}

/** The targets a request for `model` may be answered by: its own, then its fallbacks'. */
function candidates(config: Config, model: string): TargetConfig[] {
  const m = config.models[model];
  if (!m) return [];
  return [...m.targets, ...m.fallbacks.flatMap((f) => config.models[f]?.targets ?? [])];
}

/** The most a request could cost on any of its candidate targets (0 when none has a price). */
export function worstCaseCost(config: Config, model: string, usage: TokenUsage): number {
  let worst = 0;
  for (const target of candidates(config, model)) {
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
): Price | undefined {
  let byProvider: TargetConfig | undefined;
  for (const t of candidates(config, model)) {
    if (t.provider !== answeredBy.provider) continue;
    if (t.model === answeredBy.upstreamModel) return priceFor(t);
    byProvider ??= t;
  }
  return byProvider ? priceFor(byProvider) : undefined;
}
