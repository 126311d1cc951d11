// Walking JSON values by path, and the wrong values put there, for the mutation fuzz tests
// (test/fuzz-*.test.ts).

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A value's place in a JSON document: objects' keys and arrays' indexes, from the root. */
export type Path = ReadonlyArray<string | number>;

/** Every path to a value in `value`, objects' keys and arrays' indexes alike, parents first. */
export function pathsOf(value: Json, at: Path = []): Path[] {
  const found: Path[] = [];
  if (Array.isArray(value)) {
    value.forEach((v, i) => {
      found.push([...at, i], ...pathsOf(v, [...at, i]));
    });
  } else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) found.push([...at, k], ...pathsOf(v, [...at, k]));
  }
  return found;
}

/** The value at `path` in `value`. */
export function valueAt(value: Json, path: Path): Json {
  let v = value;
  for (const step of path) v = (v as Record<string | number, Json>)[step] as Json;
  return v;
}

/** `path` as a failure message names it: `.messages[0].content`, or `(root)`. */
export function showPath(path: Path): string {
  return path.length === 0
    ? "(root)"
    : path.map((s) => (typeof s === "number" ? `[${s}]` : `.${s}`)).join("");
}

/** A number written as this text in the JSON, where JSON.stringify would write another. */
export function rawNumber(text: string): string {
  return `\u0000raw:${text}\u0000`;
}

/** Stands for an array nested 10,000 deep, written as such by `stringify`. */
export const DEEP_ARRAY = "\u0000deep";
export const DEEP_ARRAY_TEXT = `${"[".repeat(10_000)}${"]".repeat(10_000)}`;

/** JSON.stringify, with `rawNumber`s and `DEEP_ARRAY`s written as they stand for. */
export function stringify(value: unknown): string {
  return JSON.stringify(value)
    .replaceAll(JSON.stringify(DEEP_ARRAY), DEEP_ARRAY_TEXT)
    .replace(/"\\u0000raw:([-+.\w]*)\\u0000"/g, "$1");
}

/** Wrong values every fuzz test puts in every field, each named as failure messages name it. */
export const WRONG_VALUES: ReadonlyArray<[name: string, value: Json]> = [
  ["null", null],
  ["true", true],
  ["0", 0],
  ["-1", -1],
  ["1e308", 1e308],
  ['"x"', "x"],
  ['""', ""],
  ["[]", []],
  ["{}", {}],
  ["lone surrogate", "\ud800"],
  ["100 KB string", "x".repeat(100 * 1024)],
];
