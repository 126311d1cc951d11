import { Failure } from "../lib/errors.js";
import { isAdminKey } from "./auth.js";
import type { IngressDeps } from "./exchange.js";
import { type UsageJson, usageJson } from "./limits/report.js";

/**
 * `GET /admin/usage[?tenant=NAME]`: every tenant's (or one tenant's) usage against its limits,
 * for operators holding a key listed in `admin.keys`. Throws a Failure.
 */
export async function adminUsage(
  deps: IngressDeps,
  key: string | undefined,
  query: URLSearchParams,
): Promise<UsageJson> {
  if (!deps.config.admin) {
    throw new Failure({
      status: 404,
      kind: "not_found",
      code: "admin_disabled",
      message: "The admin routes are off; list admin keys under 'admin.keys' in the config.",
    });
  }
  if (!isAdminKey(deps.config, key)) {
    throw new Failure({
      status: 401,
      kind: "auth",
      code: "invalid_api_key",
      message: "The admin routes need an admin key ('Authorization: Bearer KEY').",
    });
  }
  const tenant = query.get("tenant") ?? undefined;
  if (tenant !== undefined && !deps.config.tenants?.[tenant]) {
    throw new Failure({
      status: 404,
      kind: "not_found",
      code: "tenant_not_found",
      param: "tenant",
      message: `No tenant named '${tenant}' is configured.`,
    });
  }
  return usageJson(await deps.limiter.usage(tenant));
}
