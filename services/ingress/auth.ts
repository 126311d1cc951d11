import { hash as hashOnce, timingSafeEqual } from "node:crypto";
import { keyMatches } from "../lib/config/keys.js";
import type { Config, TenantConfig } from "../lib/config/types.js";
import { Failure } from "../lib/errors.js";

export interface Caller {
  /** The tenant name, or "" on an open gateway. */
  tenant: string;
  /** Public model names this caller may use; undefined = all. */
  models: ReadonlySet<string> | undefined;
  /** The `sha256:` hash of the key that authenticated (names per-key limits); "" when open. */
  keyHash: string;
}

const OPEN: Caller = { tenant: "", models: undefined, keyHash: "" };

/** Extracts the API key from `Authorization: Bearer KEY` or `x-api-key: KEY`. */
export function presentedKey(
  authorization: string | undefined,
  xApiKey: string | undefined,
): string | undefined {
  if (authorization) {
    const m = /^Bearer\s+(.+)$/i.exec(authorization.trim());
    if (m?.[1]) return m[1].trim();
  }
  return xApiKey?.trim() || undefined;
}

interface KeyEntry {
  tenant: string;
  hash: string;
  digest: Buffer;
  models: ReadonlySet<string> | undefined;
  /** Epoch ms from which the key is refused; undefined = never. */
  expiresAt: number | undefined;
}

/** Every configured key by its `sha256:` hash: one lookup per request, whatever the key count. */
export type KeyIndex = ReadonlyMap<string, KeyEntry>;

export function createKeyIndex(tenants: Record<string, TenantConfig>): KeyIndex {
  const index = new Map<string, KeyEntry>();
  for (const [tenant, t] of Object.entries(tenants)) {
    const models = t.models ? new Set(t.models) : undefined;
    for (const hash of t.keys) {
      const expires = t.key_options?.[hash]?.expires;
      index.set(hash, {
        tenant,
        hash,
        digest: Buffer.from(hash.slice("sha256:".length), "hex"),
        models,
        expiresAt: expires === undefined ? undefined : Date.parse(expires),
      });
    }
  }
  return index;
}

// Config objects are immutable once loaded, so each one's index is built once and kept with it.
const indexes = new WeakMap<Config, KeyIndex>();

/** The key index of a config, built on first use (the ingress asks for it at startup). */
export function keyIndexOf(config: Config): KeyIndex {
  let index = indexes.get(config);
  if (!index) {
    index = createKeyIndex(config.tenants ?? {});
    indexes.set(config, index);
  }
  return index;
}

/**
 * Who is calling. Without a `tenants` section the gateway is open; with one, every call needs a
 * key whose hash one tenant lists, and that has not expired by `now` (epoch ms).
 */
export function authenticate(config: Config, key: string | undefined, now = Date.now()): Caller {
  if (!config.tenants) return OPEN;
  if (!key) {
    throw new Failure({
      status: 401,
      kind: "auth",
      code: "missing_api_key",
      message:
        "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'.",
    });
  }
  // The key is hashed once (the one-shot hash: a Hash object costs twice as much); the map finds
  // the one candidate, and the digests are then compared in constant time so a near miss takes
  // as long as a hit.
  const digest = hashOnce("sha256", key, "buffer");
  const entry = keyIndexOf(config).get(`sha256:${digest.toString("hex")}`);
  if (!entry || !timingSafeEqual(digest, entry.digest)) {
    throw new Failure({
      status: 401,
      kind: "auth",
      code: "invalid_api_key",
      message: "Incorrect API key provided.",
    });
  }
  if (entry.expiresAt !== undefined && now >= entry.expiresAt) {
    throw new Failure({
      status: 401,
      kind: "auth",
      code: "expired_api_key",
      message: "This API key has expired. Ask your gateway operator for a new one.",
    });
  }
  return { tenant: entry.tenant, models: entry.models, keyHash: entry.hash };
}

/** Whether `key` is one of `admin.keys` (always false without an admin section). */
export function isAdminKey(config: Config, key: string | undefined): boolean {
  if (!key || !config.admin) return false;
  return keyMatches(key, config.admin.keys);
}

/** Refuses (403) a model outside the key's allow-list; `param` names where the request named it. */
export function authorizeModel(caller: Caller, model: string, param = "model"): void {
  if (caller.models && !caller.models.has(model)) {
    throw new Failure({
      status: 403,
      kind: "auth",
      code: "model_not_allowed",
      param,
      message: `This API key may not use the model '${model}'`,
    });
  }
}

export function visibleModels(config: Config, caller: Caller): string[] {
  return Object.keys(config.models).filter((m) => !caller.models || caller.models.has(m));
}
