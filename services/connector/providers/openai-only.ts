import type { Failure } from "../../lib/errors.js";

/** Builds the provider's 400 for a feature it cannot serve (`feature`, named by `param`). */
export type Refuse = (feature: string, param: string) => Failure;

/**
 * OpenAI request fields, passed through as they came, that change what the client gets back and
 * that an upstream of another API cannot give: log probabilities, audio, web search results. A
 * client that asked for them would wait for what never comes, so they are refused (400) rather
 * than dropped. Hints that only steer the answer (`seed`, `logit_bias`, `prediction`, `store`,
 * `metadata`) are left out where the upstream has no counterpart: an answer without them is
 * still one. (`reasoning_effort` has one in Gemini's and Anthropic's thinking.)
 */
export function refuseOpenAIOnly(extras: Record<string, unknown>, refuse: Refuse): void {
  if (extras.logprobs === true) throw refuse("logprobs", "logprobs");
  if (typeof extras.top_logprobs === "number" && extras.top_logprobs > 0) {
    throw refuse("top_logprobs", "top_logprobs");
  }
  const audio = audioOutputParam(extras);
  if (audio !== undefined) throw refuse("audio output", audio);
  if (isSet(extras.web_search_options)) throw refuse("web search", "web_search_options");
}

/**
 * The field by which an OpenAI client asked for a spoken answer (`audio`, or `modalities` with
 * "audio"), if it did. No answer in this gateway carries audio, so such a request is refused for
 * every upstream, OpenAI's too, rather than answered with its text alone.
 */
export function audioOutputParam(extras: Record<string, unknown>): string | undefined {
  if (isSet(extras.audio)) return "audio";
  const modalities = extras.modalities;
  return Array.isArray(modalities) && modalities.includes("audio") ? "modalities" : undefined;
}

function isSet(value: unknown): boolean {
  return value !== undefined && value !== null;
}
