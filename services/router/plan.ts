import type { Config, TargetConfig } from "../lib/config/types.js";
import { Failure, modelNotFound } from "../lib/errors.js";
import type { RequestParams, Strategies } from "./strategies.js";

/** One target the router may try, and the public model it serves (a fallback may differ). */
export interface PlannedTarget {
  model: string;
  target: TargetConfig;
}

export interface PlanHints {
  /** Only targets of this provider. */
  provider?: string | undefined;
  /** Replaces the model's configured fallbacks. */
  fallbacks?: string[] | undefined;
  /**
   * The models the request's tenant may use (its `models`), when it has such a list: a fallback
   * outside it is skipped, or a tenant would be answered by a model it is not allowed.
   */
  allowed?: ReadonlySet<string> | undefined;
  /** What the request asks for, for strategies that weigh it (lowest-cost). */
  request?: RequestParams | undefined;
}

/**
 * The order in which targets are tried: the model's targets, then each fallback model's that the
 * tenant may use, each model's in the order its strategy gives for this request. Unusable targets
 * (shared health says down, the local breaker refuses, or a Retry-After pause) move to the end
 * rather than out: one that shared health marks down is still tried after the others; one whose
 * breaker refuses is skipped, unless every breaker does, and a paused one is skipped (the
 * router's `candidates`).
 */
export function planTargets(
  config: Config,
  modelName: string,
  hints: PlanHints,
  usable: (t: TargetConfig) => boolean,
  strategies: Strategies,
): PlannedTarget[] {
  const model = config.models[modelName];
  if (!model) {
    throw modelNotFound(modelName);
  }
  const chain = [modelName, ...(hints.fallbacks ?? model.fallbacks)];
  const seen = new Set<string>();
  const planned: PlannedTarget[] = [];
  for (const name of chain) {
    if (seen.has(name)) continue;
    seen.add(name);
    if (name !== modelName && hints.allowed && !hints.allowed.has(name)) continue;
    const m = config.models[name];
    if (!m) continue; // request-level fallbacks may name unknown models; config ones are validated
    for (const target of strategies.order(name, m, hints.request)) {
      if (hints.provider !== undefined && target.provider !== hints.provider) continue;
      planned.push({ model: name, target });
    }
  }
  if (planned.length === 0) {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      param: "provider",
      message: `The model '${modelName}' has no target on provider '${hints.provider ?? ""}'`,
    });
  }
  const good = planned.filter((p) => usable(p.target));
  if (good.length === planned.length) return planned;
  return [...good, ...planned.filter((p) => !usable(p.target))];
}
