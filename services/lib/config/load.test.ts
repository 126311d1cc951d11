import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DEMO_CONFIG_YAML } from "./demo.js";
import {
  ConfigError,
  formatProblems,
  loadConfig,
  parseConfigText,
  resolveConfigPath,
} from "./load.js";

function problemLines(text: string, env: Record<string, string | undefined> = {}): string[] {
  return parseConfigText(text, env, "switchyard.yaml").problems.map(
    (p) => `${p.path}: ${p.reason}`,
  );
}

function configErrorOf(load: () => unknown): ConfigError {
  try {
    load();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

const OPENAI_CONFIG = `
providers:
  openai: { type: openai, api_key: "\${OPENAI_API_KEY}" }
  anthropic: { type: anthropic, api_key: "\${ANTHROPIC_API_KEY}" }
models:
  gpt-4o:
    targets: [{ provider: openai, model: gpt-4o }]
`;

describe("parseConfigText", () => {
  it("reports YAML syntax errors with the source and line", () => {
    expect(problemLines("models:\n  m: [1, 2\nproviders: {}\n")).toEqual([
      "switchyard.yaml:3: Flow sequence in block collection must be sufficiently indented and end with a ]",
    ]);
  });

  it("reports the first syntax error only, not the parser's follow-on errors", () => {
    expect(
      problemLines("server: { ingress: { port: 1 }\nproviders: { a: { type: mock } }\n"),
    ).toHaveLength(1);
  });

  it("reports duplicate keys with their line", () => {
    expect(problemLines("providers:\n  a: { type: mock }\n  a: { type: mock }\n")).toEqual([
      "switchyard.yaml:3: duplicate key 'a'",
    ]);
    // The whole key, not its first character; quoted keys too.
    expect(
      problemLines(
        'providers:\n  openai: { type: mock }\n  openai: { type: mock }\n  "gpt-4o": {}\n  "gpt-4o" : {}\n',
      ),
    ).toEqual([
      "switchyard.yaml:3: duplicate key 'openai'",
      "switchyard.yaml:5: duplicate key 'gpt-4o'",
    ]);
  });

  it("says a file of several YAML documents is not a config, in a user's words", () => {
    expect(problemLines("providers: {}\n---\nmodels: {}\n")).toEqual([
      "switchyard.yaml:2: the file holds more than one YAML document (---); a config is one",
    ]);
  });

  it("names the unset variable behind a key that a used provider needs", () => {
    expect(problemLines(OPENAI_CONFIG)).toEqual([
      "providers.openai.api_key: environment variable OPENAI_API_KEY is not set",
    ]);
  });

  it("accepts an unset key on a provider no model uses", () => {
    const { config, problems } = parseConfigText(OPENAI_CONFIG, { OPENAI_API_KEY: "sk-1" }, "x");
    expect(problems).toEqual([]);
    expect(config?.providers.openai?.api_key).toBe("sk-1");
    expect(config?.providers.anthropic?.api_key).toBe("");
  });

  it("names unset variables wherever an empty value is invalid", () => {
    expect(
      problemLines(`
peers: { router: "http://\${ROUTER_HOST}:8081" }
nats: { url: "\${NATS_URL}" }
providers:
  demo: { type: mock }
models:
  m: { targets: [{ provider: demo, model: "\${MODEL}\${VERSION}" }] }
`),
    ).toEqual([
      "peers.router: environment variable ROUTER_HOST is not set",
      "nats.url: environment variable NATS_URL is not set",
      "models.m.targets[0].model: environment variables MODEL, VERSION are not set",
    ]);
  });

  it("reads numbers from the environment, with defaults", () => {
    const text = `
server:
  ingress:
    port: \${PORT:-9000}
  max_body_bytes: \${MAX_BODY}
providers: { demo: { type: mock } }
models: { m: { targets: [{ provider: demo, model: x }] } }
`;
    const { config } = parseConfigText(text, { MAX_BODY: "1024" }, "x");
    expect(config?.server.ingress.port).toBe(9000);
    expect(config?.server.max_body_bytes).toBe(1024);
    expect(problemLines(text, { PORT: "http", MAX_BODY: "1" })).toEqual([
      "server.ingress.port: must be an integer from 0 to 65535, got a string",
    ]);
  });

  it("reports malformed variable references alongside validation problems", () => {
    expect(
      problemLines(`
providers: { demo: { type: mock, headers: { x-a: "\${BROKEN" } } }
models: { m: { targets: [{ provider: nowhere, model: x }] } }
`),
    ).toEqual([
      `providers.demo.headers.x-a: invalid \${…} reference: use \${NAME} or \${NAME:-default} (a default holds no \${…}), and $\${ for a literal \${`,
      "models.m.targets[0].provider: unknown provider 'nowhere'",
    ]);
  });

  it("refuses an unset variable as a targeted provider's key or header, unless marked optional", () => {
    const yaml = `
providers:
  groq: { type: openai, base_url: "https://api.groq.com/openai/v1", api_key: "\${GROQ_API_KEY}", headers: { x-team: "\${TEAM}" } }
  local: { type: openai, base_url: "http://127.0.0.1:8000/v1", api_key: "\${LOCAL_KEY:-}" }
  spare: { type: openai, base_url: "https://api.example.com/v1", api_key: "\${SPARE_KEY}" }
models:
  m: { targets: [{ provider: groq, model: x }, { provider: local, model: y }] }
`;
    expect(problemLines(yaml)).toEqual([
      `providers.groq.api_key: environment variable GROQ_API_KEY is not set (write \${NAME:-} where an empty value is meant)`,
      `providers.groq.headers.x-team: environment variable TEAM is not set (write \${NAME:-} where an empty value is meant)`,
    ]);
    expect(problemLines(yaml, { GROQ_API_KEY: "gsk-1", TEAM: "t" })).toEqual([]);
  });

  it("reports an unset key together with the file's other problems, not after they are fixed", () => {
    expect(
      problemLines(`
server: { drain_timout_ms: 5 }
providers:
  groq: { type: openai, base_url: "https://api.groq.com/openai/v1", api_key: "\${GROQ_API_KEY}" }
models:
  m: { targets: [{ provider: groq, model: x }] }
`),
    ).toEqual([
      "server.drain_timout_ms: unknown key, did you mean 'drain_timeout_ms'?",
      `providers.groq.api_key: environment variable GROQ_API_KEY is not set (write \${NAME:-} where an empty value is meant)`,
    ]);
  });

  it("never puts environment values into problem reasons", () => {
    const lines = problemLines(
      `
providers: { demo: { type: mock, probe: "\${SECRET}" } }
models: { m: { targets: [{ provider: demo, model: x }] } }
`,
      { SECRET: "sk-very-secret" },
    );
    expect(lines).toEqual([
      "providers.demo.probe: must be one of models, completion, none, got a string",
    ]);
  });
});

describe("demo config", () => {
  it("validates and serves demo and demo-fast from two mock providers", () => {
    const { config, problems } = parseConfigText(DEMO_CONFIG_YAML, {}, "built-in demo");
    expect(problems).toEqual([]);
    expect(config?.providers).toEqual({
      mock: {
        type: "mock",
        probe: "models",
        first_token_ms: 40,
        token_interval_ms: 25,
        tokens: 24,
      },
      "mock-fast": {
        type: "mock",
        probe: "models",
        first_token_ms: 0,
        token_interval_ms: 0,
        tokens: 16,
      },
    });
    expect(config?.models).toEqual({
      demo: {
        strategy: "priority",
        targets: [{ provider: "mock", model: "mock-1", weight: 1 }],
        fallbacks: [],
        context_window_fallbacks: [],
      },
      "demo-fast": {
        strategy: "priority",
        targets: [{ provider: "mock-fast", model: "mock-1", weight: 1 }],
        fallbacks: [],
        context_window_fallbacks: [],
      },
    });
    expect(config?.tenants).toBeUndefined();
    expect(config?.nats).toBeUndefined();
  });
});

describe("finding and loading the config file", () => {
  let dir: string;
  const VALID =
    "providers: { p: { type: mock } }\nmodels: { m: { targets: [{ provider: p, model: x }] } }\n";

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "switchyard-config-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("prefers --config, then $SWITCHYARD_CONFIG, then ./switchyard.yaml, then nothing", () => {
    expect(resolveConfigPath({ env: {}, cwd: dir })).toBeUndefined();
    writeFileSync(join(dir, "switchyard.yaml"), VALID);
    expect(resolveConfigPath({ env: {}, cwd: dir })).toBe(join(dir, "switchyard.yaml"));
    expect(resolveConfigPath({ env: { SWITCHYARD_CONFIG: "" }, cwd: dir })).toBe(
      join(dir, "switchyard.yaml"),
    );
    const env = { SWITCHYARD_CONFIG: "from-env.yaml" };
    expect(resolveConfigPath({ env, cwd: dir })).toBe(join(dir, "from-env.yaml"));
    expect(resolveConfigPath({ flag: "conf/flag.yaml", env, cwd: dir })).toBe(
      join(dir, "conf/flag.yaml"),
    );
    expect(resolveConfigPath({ flag: "/etc/s.yaml", env, cwd: dir })).toBe("/etc/s.yaml");
  });

  it("falls back to the built-in demo when no file is found", () => {
    const { config, source } = loadConfig({ env: {}, cwd: dir });
    expect(source).toBe("built-in demo");
    expect(Object.keys(config.models)).toEqual(["demo", "demo-fast"]);
  });

  it("loads ./switchyard.yaml with the given environment and names it relative to cwd", () => {
    writeFileSync(
      join(dir, "switchyard.yaml"),
      `server:\n  ingress:\n    port: \${PORT}\n${VALID}`,
    );
    const { config, source } = loadConfig({ env: { PORT: "1234" }, cwd: dir });
    expect(source).toBe("switchyard.yaml");
    expect(config.server.ingress.port).toBe(1234);
  });

  it("fails on a named file that does not exist instead of using the demo or ./switchyard.yaml", () => {
    writeFileSync(join(dir, "switchyard.yaml"), VALID);
    const error = configErrorOf(() => loadConfig({ flag: "missing.yaml", env: {}, cwd: dir }));
    expect(error.problems).toEqual([{ path: "missing.yaml", reason: "config file not found" }]);
    expect(error.message).toContain("\nmissing.yaml: config file not found");
  });

  it("reports an unreadable path, by absolute path when it is not below cwd", () => {
    expect(() => loadConfig({ env: { SWITCHYARD_CONFIG: "." }, cwd: dir })).toThrow(
      `\n${dir}: cannot read config file (EISDIR)`,
    );
  });

  it("throws every problem of an invalid file in one ConfigError", () => {
    writeFileSync(
      join(dir, "bad.yaml"),
      "providers: { p: { type: mocks } }\nmodels: { m: { targets: [] } }\nroutng: {}\n",
    );
    const error = configErrorOf(() => loadConfig({ flag: "bad.yaml", env: {}, cwd: dir }));
    expect(error.source).toBe("bad.yaml");
    expect(error.message).toBe(
      [
        "invalid configuration (bad.yaml), 3 problems:",
        "routng: unknown key, did you mean 'routing'?",
        "providers.p.type: must be one of openai, azure-openai, anthropic, gemini, mock, got 'mocks'",
        "models.m.targets: must have at least one target",
      ].join("\n"),
    );
  });
});

describe("formatProblems", () => {
  it("prints one path: reason per line", () => {
    expect(
      formatProblems([
        { path: "a.b", reason: "required" },
        { path: "c[0]", reason: "unknown key" },
      ]),
    ).toBe("a.b: required\nc[0]: unknown key");
  });
});
