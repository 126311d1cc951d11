// Walking and editing JSON values by path, for the mutation fuzz tests (test/fuzz-*.test.ts).

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
