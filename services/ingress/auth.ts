import { keyMatches } from "../lib/config/keys.js";
import type { Config } from "../lib/config/types.js";
import { Failure } from "../lib/errors.js";

export interface Caller {
  /** The tenant name, or "" on an open gateway. */
  tenant: string;
  /** Public model names this caller may use; undefined = all. */
  models: ReadonlySet<string> | undefined;
}

const OPEN: Caller = { tenant: "", models: undefined };

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

/**
 * Who is calling. Without a `tenants` section the gateway is open; with one, every call needs a
 * key whose hash one tenant lists.
 */
export function authenticate(config: Config, key: string | undefined): Caller {
  const tenants = config.tenants;
  if (!tenants) return OPEN;
  if (!key) {
    throw new Failure({
      status: 401,
      kind: "auth",
      code: "missing_api_key",
      message:
        "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'.",
    });
  }
  for (const [tenant, t] of Object.entries(tenants)) {
    if (keyMatches(key, t.keys))
      return { tenant, models: t.models ? new Set(t.models) : undefined };
  }
  throw new Failure({
    status: 401,
    kind: "auth",
    code: "invalid_api_key",
    message: "Incorrect API key provided.",
  });
}

export function authorizeModel(caller: Caller, model: string): void {
  if (caller.models && !caller.models.has(model)) {
    throw new Failure({
      status: 403,
      kind: "auth",
      code: "model_not_allowed",
      param: "model",
      message: `This API key may not use the model '${model}'`,
    });
  }
}

export function visibleModels(config: Config, caller: Caller): string[] {
  return Object.keys(config.models).filter((m) => !caller.models || caller.models.has(m));
}
