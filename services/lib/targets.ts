import type { Config } from "./config/types.js";

/**
 * Identity of an upstream deployment (provider + upstream model) in maps. Either name may hold
 * any character, so the pair is encoded rather than joined with a separator.
 *
 * The router asks for a target's key several times per request (plan, health, breakers, load),
 * and JSON.stringify was ~1 % of one process's CPU: keys are kept per pair. The pairs come from
 * the config and the health the fabric reports, so there are few; should something else ever
 * pass many, the cache starts over past KEY_CACHE_LIMIT instead of growing.
 */
export function targetKey(provider: string, model: string): string {
  let byModel = keyCache.get(provider);
  if (byModel === undefined) {
    if (keyCacheSize >= KEY_CACHE_LIMIT) {
      keyCache.clear();
      keyCacheSize = 0;
    }
    byModel = new Map();
    keyCache.set(provider, byModel);
  }
  let key = byModel.get(model);
  if (key === undefined) {
    key = JSON.stringify([provider, model]);
    if (keyCacheSize < KEY_CACHE_LIMIT) {
      byModel.set(model, key);
      keyCacheSize++;
    }
  }
  return key;
}

const KEY_CACHE_LIMIT = 4096;
const keyCache = new Map<string, Map<string, string>>();
let keyCacheSize = 0;

/** The distinct upstream targets named by any model, in config order. */
export function distinctTargets(config: Config): Array<{ provider: string; model: string }> {
  const seen = new Map<string, { provider: string; model: string }>();
  for (const m of Object.values(config.models)) {
    for (const t of m.targets)
      seen.set(targetKey(t.provider, t.model), { provider: t.provider, model: t.model });
  }
  return [...seen.values()];
}
