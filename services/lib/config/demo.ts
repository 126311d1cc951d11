// The config used when no file is found (SPEC §2), so `npm start` works on a fresh clone with no
// keys: two deterministic mock providers, one paced like a real model and one instant.

export const DEMO_CONFIG_SOURCE = "built-in demo";

export const DEMO_CONFIG_YAML = `# Switchyard built-in demo: no network, no API keys.
providers:
  mock:
    type: mock
    first_token_ms: 40
    token_interval_ms: 25
    tokens: 24
  mock-fast:
    type: mock
    tokens: 16
models:
  demo:
    targets:
      - { provider: mock, model: mock-1 }
  demo-fast:
    targets:
      - { provider: mock-fast, model: mock-1 }
`;
