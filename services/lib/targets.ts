import type { Config } from "./config/types.js";

/**
 * Identity of an upstream deployment (provider + upstream model) in maps. Either name may hold
 * any character, so the pair is encoded rather than joined with a separator.
 */
export function targetKey(provider: string, model: string): string {
  return JSON.stringify([provider, model]);
}

/** The distinct upstream targets named by any model, in config order. */
export function distinctTargets(config: Config): Array<{ provider: string; model: string }> {
  const seen = new Map<string, { provider: string; model: string }>();
  for (const m of Object.values(config.models)) {
    for (const t of m.targets)
      seen.set(targetKey(t.provider, t.model), { provider: t.provider, model: t.model });
  }
  return [...seen.values()];
}
