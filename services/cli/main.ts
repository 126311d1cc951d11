import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { SERVICE_NAMES, type ServiceName, startFabric } from "../fabric.js";
import { hashKey } from "../lib/config/keys.js";
import { ConfigError, formatProblems, loadConfig } from "../lib/config/load.js";
import type { Config } from "../lib/config/types.js";
import { createLogger } from "../lib/logger.js";

const USAGE = `Usage:
  switchyard start [--config FILE] [--service ingress|router|connector|prober|all]...
  switchyard check-config [--config FILE]
  switchyard hash-key [KEY]        (reads the key from stdin when KEY is absent)

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
  const fabric = await startFabric({ config, services, logger });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
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
  if (args.length > 1) throw new UsageError("hash-key takes at most one KEY");
  // A key from stdin loses its trailing newline (echo KEY | switchyard hash-key).
  const key = args[0] ?? readFileSync(0, "utf8").replace(/\r?\n$/, "");
  if (key === "") throw new UsageError("the key is empty");
  process.stdout.write(`${hashKey(key)}\n`);
  return 0;
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
    process.stderr.write(`switchyard: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
