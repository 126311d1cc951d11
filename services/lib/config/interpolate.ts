// `${VAR}` / `${VAR:-default}` substitution in the string values of a parsed YAML tree.
//
// Rules:
// - Only string values are rewritten, never mapping keys.
// - `${VAR:-default}` uses `default` when VAR is unset or empty (as in POSIX shells).
// - `$${` is a literal `${`. Any other `${` that is not a well-formed reference is a problem.
// - An unset `${VAR}` without a default becomes "" and is remembered (path → names) rather than
//   reported here: it only matters where "" is invalid. The loader turns a validation problem at
//   such a path into "environment variable VAR is not set", so a key the config actually needs
//   is reported by name, while an unused provider's missing key is not an error.

import { type ConfigProblem, childPath, itemPath } from "./validate.js";

export type Environment = Readonly<Record<string, string | undefined>>;

export interface InterpolationResult {
  value: unknown;
  /** Paths of strings that contained at least one `${…}` reference. */
  fromEnvironment: Set<string>;
  /** Path → names of variables that were unset there and had no default. */
  unset: Map<string, string[]>;
  /** Malformed references. */
  problems: ConfigProblem[];
}

const MALFORMED_REASON =
  // biome-ignore lint/suspicious/noTemplateCurlyInString: this text is about ${} syntax itself.
  "invalid ${…} reference: use ${NAME} or ${NAME:-default} (a default holds no ${…}), and $${ for a literal ${";

const REFERENCE = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{/g;

export function interpolate(tree: unknown, env: Environment): InterpolationResult {
  const result: InterpolationResult = {
    value: undefined,
    fromEnvironment: new Set(),
    unset: new Map(),
    problems: [],
  };
  result.value = walk(tree, "", env, result);
  return result;
}

function walk(
  value: unknown,
  path: string,
  env: Environment,
  result: InterpolationResult,
): unknown {
  if (typeof value === "string") {
    const { text, references, unset, malformed } = interpolateString(value, env);
    if (references > 0) result.fromEnvironment.add(path);
    if (unset.length > 0) result.unset.set(path, unset);
    if (malformed) {
      result.problems.push({
        path: path === "" ? "(root)" : path,
        reason: MALFORMED_REASON,
      });
    }
    return text;
  }
  if (Array.isArray(value)) {
    return value.map((item, index) => walk(item, itemPath(path, index), env, result));
  }
  if (typeof value === "object" && value !== null) {
    // Rebuilt with defineProperty so a YAML key named "__proto__" stays a plain own key.
    const copy: Record<string, unknown> = {};
    for (const [key, child] of Object.entries(value)) {
      Object.defineProperty(copy, key, {
        value: walk(child, childPath(path, key), env, result),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return copy;
  }
  return value;
}

export interface InterpolatedString {
  text: string;
  /** How many `${…}` references were substituted. */
  references: number;
  /** Referenced variables that were unset and had no default. */
  unset: string[];
  malformed: boolean;
}

export function interpolateString(input: string, env: Environment): InterpolatedString {
  let references = 0;
  let malformed = false;
  const unset: string[] = [];
  const text = input.replace(REFERENCE, (match, name?: string, fallback?: string) => {
    if (match === "$${") return "${";
    if (name === undefined) {
      malformed = true;
      return match;
    }
    references++;
    // `${A:-${B}}`: the pattern stops at the first `}`, so the default would be the text
    // "${B" and the rest a stray "}". Nesting is not supported: say so rather than send that.
    if (fallback?.includes("${")) {
      malformed = true;
      return match;
    }
    const value = env[name];
    if (fallback !== undefined) return value === undefined || value === "" ? fallback : value;
    if (value === undefined) {
      unset.push(name);
      return "";
    }
    return value;
  });
  return { text, references, unset, malformed };
}
