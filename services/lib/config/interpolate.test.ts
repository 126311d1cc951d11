import { describe, expect, it } from "vitest";
import { interpolate, interpolateString } from "./interpolate.js";

// biome-ignore lint/suspicious/noTemplateCurlyInString: a literal reference is the input under test.
const KEY_REFERENCE = "${KEY}";

describe("interpolateString", () => {
  const env = { HOST: "example.com", EMPTY: "", PORT: "9000" };

  it("replaces variable references anywhere in a string, several times", () => {
    const result = interpolateString(`https://\${HOST}:\${PORT}/v1`, env);
    expect(result).toEqual({
      text: "https://example.com:9000/v1",
      references: 2,
      unset: [],
      malformed: false,
    });
  });

  it("uses the :-default when the variable is unset or empty", () => {
    expect(interpolateString(`\${MISSING:-fallback}`, env).text).toBe("fallback");
    expect(interpolateString(`\${EMPTY:-fallback}`, env).text).toBe("fallback");
    expect(interpolateString(`\${HOST:-fallback}`, env).text).toBe("example.com");
    expect(interpolateString(`\${MISSING:-}`, env)).toMatchObject({ text: "", unset: [] });
  });

  it("turns $${ into a literal ${ without substituting", () => {
    const result = interpolateString(`cost: $\${HOST} and \${HOST}`, env);
    expect(result.text).toBe(`cost: \${HOST} and example.com`);
    expect(result.references).toBe(1);
  });

  it("leaves a lone $ alone", () => {
    expect(interpolateString("price $5 $HOST", env)).toMatchObject({
      text: "price $5 $HOST",
      references: 0,
    });
  });

  it("makes an unset variable without default empty and names it", () => {
    expect(interpolateString(`Bearer \${TOKEN}\${OTHER}`, env)).toMatchObject({
      text: "Bearer ",
      unset: ["TOKEN", "OTHER"],
    });
  });

  it("keeps a variable that is set to the empty string empty, without calling it unset", () => {
    expect(interpolateString(`\${EMPTY}`, env)).toMatchObject({ text: "", unset: [] });
  });

  it("flags malformed references", () => {
    expect(interpolateString(`\${NOT CLOSED`, env).malformed).toBe(true);
    expect(interpolateString(`\${1ABC}`, env).malformed).toBe(true);
    expect(interpolateString(`\${HOST:default}`, env).malformed).toBe(true);
  });

  it("flags a reference nested in a default, rather than send its text as the value", () => {
    // Without this, `${A:-${B}}` with A unset came out as the literal "${B}".
    expect(interpolateString(`\${MISSING:-\${HOST}}`, env).malformed).toBe(true);
    expect(interpolateString(`\${HOST:-\${MISSING}}`, env).malformed).toBe(true);
  });
});

describe("interpolate", () => {
  it("rewrites string values at every depth but never keys or non-strings", () => {
    const tree = {
      [KEY_REFERENCE]: KEY_REFERENCE,
      list: [1, true, null, `a-\${KEY}`, { deep: `\${KEY}` }],
    };
    const result = interpolate(tree, { KEY: "v" });
    expect(result.value).toEqual({
      [KEY_REFERENCE]: "v",
      list: [1, true, null, "a-v", { deep: "v" }],
    });
    expect([...result.fromEnvironment].sort()).toEqual([KEY_REFERENCE, "list[3]", "list[4].deep"]);
    expect(result.problems).toEqual([]);
  });

  it("records unset variables by the dotted path of the value", () => {
    const result = interpolate({ providers: { openai: { api_key: `\${OPENAI_API_KEY}` } } }, {});
    expect(result.value).toEqual({ providers: { openai: { api_key: "" } } });
    expect(result.unset).toEqual(new Map([["providers.openai.api_key", ["OPENAI_API_KEY"]]]));
  });

  it("reports malformed references as problems at their path", () => {
    const result = interpolate({ peers: { connectors: [`http://\${HOST`] } }, { HOST: "h" });
    expect(result.problems).toEqual([
      {
        path: "peers.connectors[0]",
        reason: `invalid \${…} reference: use \${NAME} or \${NAME:-default} (a default holds no \${…}), and $\${ for a literal \${`,
      },
    ]);
  });

  it("does not let a '__proto__' key change the copy's prototype", () => {
    const tree = JSON.parse('{"__proto__": {"polluted": "x"}}') as unknown;
    const result = interpolate(tree, {}).value as Record<string, unknown>;
    expect(Object.getPrototypeOf(result)).toBe(Object.prototype);
    expect(Object.keys(result)).toEqual(["__proto__"]);
  });
});
