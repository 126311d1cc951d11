import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Registry } from "prom-client";
import { parseFabricTransport, SERVICE_NAMES, type ServiceName, startFabric } from "../fabric.js";
import { createLimiter } from "../ingress/limits/index.js";
import { formatUsage, type UsageJson, usageJson } from "../ingress/limits/report.js";
import { hashKey } from "../lib/config/keys.js";
import { ConfigError, formatProblems, loadConfig } from "../lib/config/load.js";
import type { Config } from "../lib/config/types.js";
import { createLogger } from "../lib/logger.js";
import { StartupError } from "../lib/startup-error.js";

const USAGE = `Usage:
  switchyard start [--config FILE] [--service ingress|router|connector|prober|all]...
  switchyard check-config [--config FILE]
  switchyard hash-key [KEY]        (reads the key from stdin when KEY is absent)
  switchyard usage [--config FILE] [--url URL] [TENANT]
                                   tenants' usage against their limits: from Redis when the
                                   config has one, else from the ingress at URL
                                   (GET /admin/usage with $SWITCHYARD_ADMIN_KEY)

Config: --config, else $SWITCHYARD_CONFIG, else ./switchyard.yaml, else the built-in demo.
Environment: LOG_LEVEL (pino level, default info).`;

/** The composition root: the only place that reads argv and the environment. */
async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "start":
      return start(rest);
    case "check-config":
      return checkConfig(rest);
    case "hash-key":
      return hashKeyCommand(rest);
    case "usage":
      return usageCommand(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(`${USAGE}\n`);
      return command === undefined ? 1 : 0;
    default:
      process.stderr.write(`switchyard: unknown command '${command}'\n\n${USAGE}\n`);
      return 2;
  }
}

function parseStartArgs(args: string[]) {
  return parseArgs({
    args,
    options: {
      config: { type: "string", short: "c" },
      service: { type: "string", multiple: true, short: "s" },
    },
    strict: true,
  }).values;
}

function parseConfigFlag(args: string[]) {
  return parseArgs({ args, options: { config: { type: "string", short: "c" } }, strict: true })
    .values;
}

function load(flag: string | undefined): { config: Config; source: string } {
  return loadConfig({
    ...(flag === undefined ? {} : { flag }),
    env: process.env,
    cwd: process.cwd(),
  });
}

async function start(args: string[]): Promise<number> {
  const values = parseStartArgs(args);
  const services = selectServices(values.service ?? ["all"]);
  const { config, source } = load(values.config);
  const logger = createLogger({ level: process.env.LOG_LEVEL });
  logger.info({ config: source, services: [...services] }, "starting");
  if (services.has("ingress") && !config.tenants) {
    logger.warn("no tenants are configured: the gateway is open to anyone who can reach it");
  }
  const fabric = await startFabric({
    config,
    services,
    logger,
    transport: parseFabricTransport(process.env.SWITCHYARD_FABRIC_TRANSPORT),
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      // A second Ctrl-C (or signal) does not wait for the drain, as in most servers.
      logger.warn({ signal }, "second signal: stopping now, without waiting for the drain");
      logger.flush();
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal, drain_timeout_ms: config.server.drain_timeout_ms }, "draining");
    fabric.stop().then(
      () => {
        logger.info("stopped");
        logger.flush();
        process.exit(0);
      },
      (err) => {
        logger.error({ err }, "error while stopping");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  return -1; // keep running
}

function selectServices(names: string[]): Set<ServiceName> {
  const out = new Set<ServiceName>();
  for (const name of names) {
    if (name === "all") {
      for (const s of SERVICE_NAMES) out.add(s);
    } else if ((SERVICE_NAMES as readonly string[]).includes(name)) {
      out.add(name as ServiceName);
    } else {
      throw new UsageError(`unknown service '${name}' (one of: ${SERVICE_NAMES.join(", ")}, all)`);
    }
  }
  return out;
}

function checkConfig(args: string[]): number {
  const values = parseConfigFlag(args);
  try {
    const { source } = load(values.config);
    process.stdout.write(`${source}: ok\n`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${formatProblems(err.problems)}\n`);
      return 1;
    }
    throw err;
  }
}

function hashKeyCommand(args: string[]): number {
  if (args[0] === "--help" || args[0] === "-h") {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (args[0]?.startsWith("-")) {
    // Likely a flag, not a key: hashing it would print a hash of "--verbose" without a word.
    throw new UsageError(
      `hash-key takes no options ('${args[0]}'); give a key starting with '-' on stdin`,
    );
  }
  if (args.length > 1) throw new UsageError("hash-key takes at most one KEY");
  // The gateway trims the key a client presents (ingress/auth.ts), so the hash is of the trimmed
  // key: one of " k " would never match. A key from stdin loses its newline the same way.
  const key = (args[0] ?? readFileSync(0, "utf8")).trim();
  if (key === "") throw new UsageError("the key is empty");
  process.stdout.write(`${hashKey(key)}\n`);
  return 0;
}

/**
 * Prints usage against limits. Counters kept in Redis are read directly; counters kept in an
 * ingress's memory can only be asked of that ingress, over its admin route.
 */
async function usageCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { config: { type: "string", short: "c" }, url: { type: "string" } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 1) throw new UsageError("usage takes at most one TENANT");
  const tenant = positionals[0];
  if (values.url !== undefined) {
    const usage = await usageFromIngress(values.url, tenant, process.env.SWITCHYARD_ADMIN_KEY);
    if (typeof usage === "string") {
      process.stderr.write(`switchyard: ${usage}\n`);
      return 1;
    }
    process.stdout.write(formatUsage(usage));
    return 0;
  }

  const { config } = load(values.config);
  if (!config.tenants) {
    process.stdout.write("No tenants are configured: the gateway is open and counts no usage.\n");
    return 0;
  }
  if (tenant !== undefined && !config.tenants[tenant]) {
    process.stderr.write(`switchyard: no tenant named '${tenant}' in the config\n`);
    return 1;
  }
  if (!config.redis) {
    process.stderr.write(
      "switchyard: this config keeps limit counters in the memory of the running ingress (no\n" +
        "'redis' section), so only that process knows them. Ask it over its admin route:\n" +
        "  SWITCHYARD_ADMIN_KEY=... switchyard usage --url http://HOST:PORT [TENANT]\n" +
        "(the config needs 'admin: { keys: [sha256:...] }' for that route).\n",
    );
    return 1;
  }
  const limiter = await createLimiter({
    config,
    logger: createLogger({ level: "silent" }),
    registry: new Registry(),
  });
  try {
    process.stdout.write(formatUsage(usageJson(await limiter.usage(tenant))));
    return 0;
  } catch {
    // The URL may hold a password: name the setting, not its value.
    process.stderr.write("switchyard: cannot read usage: Redis at redis.url is unreachable\n");
    return 1;
  } finally {
    await limiter.close();
  }
}

/** GET /admin/usage from a running ingress; a string is what went wrong. */
async function usageFromIngress(
  baseUrl: string,
  tenant: string | undefined,
  adminKey: string | undefined,
): Promise<UsageJson | string> {
  if (!adminKey) return "set SWITCHYARD_ADMIN_KEY to an admin key to ask an ingress";
  const url = new URL("/admin/usage", baseUrl);
  if (tenant !== undefined) url.searchParams.set("tenant", tenant);
  let res: Response;
  try {
    res = await fetch(url, {
      headers: { authorization: `Bearer ${adminKey}` },
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    return `cannot reach ${url.origin}: ${(err as Error).message}`;
  }
  const body = (await res.json().catch(() => undefined)) as
    | (UsageJson & { error?: { message?: string } })
    | undefined;
  if (res.status !== 200 || !body) {
    return `${url.origin} answered ${res.status}: ${body?.error?.message ?? "no usage report"}`;
  }
  return body;
}

class UsageError extends Error {}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`switchyard: invalid configuration\n${formatProblems(err.problems)}\n`);
      process.exit(1);
    }
    if (
      err instanceof UsageError ||
      (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
    ) {
      process.stderr.write(`switchyard: ${(err as Error).message}\n\n${USAGE}\n`);
      process.exit(2);
    }
    if (err instanceof StartupError) {
      process.stderr.write(`switchyard: ${err.message}\n`);
      process.exit(1);
    }
    process.stderr.write(`switchyard: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
