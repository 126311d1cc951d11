// Finding, reading and checking switchyard.yaml (SPEC §2 lookup order, §3 format).

import { existsSync, readFileSync } from "node:fs";
import { isAbsolute, relative, resolve } from "node:path";
import { parseDocument, type YAMLError } from "yaml";
import { DEMO_CONFIG_SOURCE, DEMO_CONFIG_YAML } from "./demo.js";
import { type Environment, interpolate } from "./interpolate.js";
import type { Config } from "./types.js";
import { type ConfigProblem, validateConfig } from "./validate.js";

export type { ConfigProblem } from "./validate.js";

export interface ConfigLocation {
  /** The `--config` flag, if given. */
  flag?: string;
  env: Environment;
  cwd: string;
}

/** A config that cannot be used; `problems` are what `check-config` prints. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";

  constructor(
    readonly source: string,
    readonly problems: ConfigProblem[],
  ) {
    const count = problems.length === 1 ? "1 problem" : `${problems.length} problems`;
    super(`invalid configuration (${source}), ${count}:\n${formatProblems(problems)}`);
  }
}

export function formatProblems(problems: readonly ConfigProblem[]): string {
  return problems.map((problem) => `${problem.path}: ${problem.reason}`).join("\n");
}

/**
 * YAML text → Config. `source` names the text in syntax-error paths (`switchyard.yaml:3`).
 * A config comes back only when there are no problems.
 */
export function parseConfigText(
  text: string,
  env: Environment,
  source: string,
): { config?: Config; problems: ConfigProblem[] } {
  const document = parseDocument(text, { uniqueKeys: true, merge: true });
  // After one real syntax error the parser's recovery produces a cascade of follow-on errors;
  // only the first is worth reading. Duplicate keys do not cascade, so all of them are kept.
  const errors = [...document.errors, ...document.warnings];
  const firstSyntaxError = errors.find((error) => error.code !== "DUPLICATE_KEY");
  const syntax = errors
    .filter((error) => error.code === "DUPLICATE_KEY" || error === firstSyntaxError)
    .sort((a, b) => a.pos[0] - b.pos[0])
    .map((error) => syntaxProblem(error, text, source));
  if (syntax.length > 0) return { problems: syntax };

  const interpolated = interpolate(document.toJS(), env);
  const validated = validateConfig(interpolated.value, {
    fromEnvironment: interpolated.fromEnvironment,
  });
  // A value that is invalid only because a variable was unset is reported by the variable's name.
  const problems = [
    ...interpolated.problems,
    ...validated.problems.map((problem) => {
      const unset = interpolated.unset.get(problem.path);
      if (unset === undefined) return problem;
      const names = unset.join(", ");
      const reason =
        unset.length === 1
          ? `environment variable ${names} is not set`
          : `environment variables ${names} are not set`;
      return { path: problem.path, reason };
    }),
  ];
  // Read off the raw document, so that a missing key shows up with every other problem, not
  // only once the rest of the file is right.
  const seen = new Set(problems.map((p) => p.path));
  for (const p of unsetCredentials(interpolated.value, interpolated.unset)) {
    if (!seen.has(p.path)) problems.push(p);
  }
  if (problems.length > 0 || validated.config === undefined) return { problems };
  return { config: validated.config, problems: [] };
}

/**
 * An unset `${VAR}` (no default) in the `api_key` or a header of a provider that a model
 * targets: requests would go out without the credential, which no one means by naming a
 * variable. `${VAR:-}` says an empty value is meant. Providers no model targets may lack theirs,
 * so one file can list accounts that a given environment does not have.
 */
function unsetCredentials(document: unknown, unset: Map<string, string[]>): ConfigProblem[] {
  const used = targetedProviders(document);
  const problems: ConfigProblem[] = [];
  for (const [path, names] of unset) {
    const [root, provider, field] = path.split(".");
    if (root !== "providers" || provider === undefined || !used.has(provider)) continue;
    if (field !== "api_key" && field !== "headers") continue;
    const list = names.join(", ");
    problems.push({
      path,
      reason: `environment variable${names.length > 1 ? "s" : ""} ${list} ${names.length > 1 ? "are" : "is"} not set (write \${NAME:-} where an empty value is meant)`,
    });
  }
  return problems;
}

/** The providers the document's models target, as far as its shape can be read. */
function targetedProviders(document: unknown): Set<string> {
  const used = new Set<string>();
  const models = isRecord(document) ? document.models : undefined;
  if (!isRecord(models)) return used;
  for (const model of Object.values(models)) {
    const targets = isRecord(model) ? model.targets : undefined;
    if (!Array.isArray(targets)) continue;
    for (const target of targets) {
      if (isRecord(target) && typeof target.provider === "string") used.add(target.provider);
    }
  }
  return used;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function syntaxProblem(error: YAMLError, text: string, source: string): ConfigProblem {
  const line = error.linePos?.[0].line;
  const path = line === undefined ? source : `${source}:${line}`;
  if (error.code === "DUPLICATE_KEY") {
    // The error's span is the key's first character only: the key runs to its colon.
    const key = /^\s*(?:"([^"]*)"|'([^']*)'|([^:#\n]*?))\s*:/.exec(text.slice(error.pos[0]));
    const name = key?.[1] ?? key?.[2] ?? key?.[3] ?? text.slice(error.pos[0], error.pos[1]);
    return { path, reason: `duplicate key '${name}'` };
  }
  if (error.code === "MULTIPLE_DOCS") {
    return { path, reason: "the file holds more than one YAML document (---); a config is one" };
  }
  // yaml appends " at line L, column C:" and a source excerpt; the path already says where.
  const reason = error.message.split("\n")[0]?.replace(/ at line \d+, column \d+:?$/, "") ?? "";
  return { path, reason };
}

/**
 * `--config`, else `$SWITCHYARD_CONFIG`, else `./switchyard.yaml` if it exists; undefined means
 * the built-in demo config. Returned paths are absolute.
 */
export function resolveConfigPath(location: ConfigLocation): string | undefined {
  if (location.flag !== undefined) return resolve(location.cwd, location.flag);
  const fromEnv = location.env.SWITCHYARD_CONFIG;
  if (fromEnv !== undefined && fromEnv !== "") return resolve(location.cwd, fromEnv);
  const local = resolve(location.cwd, "switchyard.yaml");
  return existsSync(local) ? local : undefined;
}

/**
 * The config to run with, and where it came from (a path relative to `cwd` when inside it, or
 * "built-in demo"). A named file that cannot be read is an error, never a quiet fall back to
 * the demo. Throws ConfigError.
 */
export function loadConfig(location: ConfigLocation): { config: Config; source: string } {
  const path = resolveConfigPath(location);
  const source = path === undefined ? DEMO_CONFIG_SOURCE : displayName(path, location.cwd);
  const text = path === undefined ? DEMO_CONFIG_YAML : readConfigFile(path, source);
  const { config, problems } = parseConfigText(text, location.env, source);
  if (config === undefined) throw new ConfigError(source, problems);
  return { config, source };
}

function readConfigFile(path: string, source: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    const code = error instanceof Error && "code" in error ? String(error.code) : String(error);
    const reason =
      code === "ENOENT" ? "config file not found" : `cannot read config file (${code})`;
    throw new ConfigError(source, [{ path: source, reason }]);
  }
}

function displayName(path: string, cwd: string): string {
  const inside = relative(cwd, path);
  return inside === "" || inside.startsWith("..") || isAbsolute(inside) ? path : inside;
}
