// One gateway process in front of a fake Anthropic upstream, a fake OpenAI upstream and the mock,
// read by the official @anthropic-ai/sdk: for tests of what only an Anthropic target carries,
// and of how every other target refuses it.

import Anthropic from "@anthropic-ai/sdk";
import { afterAll, afterEach, beforeAll } from "vitest";
import { type AnthropicUpstream, startAnthropicUpstream } from "../upstreams/anthropic-upstream.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "../upstreams/openai-upstream.js";
import { type RunningFabric, startOneProcess, testConfig } from "./fabric.js";

export interface AnthropicGateway {
  /** The fake Anthropic upstream, behind models `claude` and `demo-then-claude`. */
  readonly anthropicUp: AnthropicUpstream;
  /** The fake OpenAI upstream, behind model `gpt`. */
  readonly openaiUp: OpenAIUpstream;
  readonly gw: RunningFabric;
  /** The SDK client on the gateway, retrying nothing itself. */
  readonly claude: Anthropic;
}

/**
 * Starts the upstreams and the gateway before the file's tests and stops them after; after each
 * test the Anthropic upstream answers normally again. The models: `claude` (Anthropic), `gpt`
 * (OpenAI), `demo` (the mock), `claude-or-gpt` (claude, falling back to gpt) and
 * `demo-then-claude` (two targets, the mock first). `routing` is the config's `routing:`.
 */
export function useAnthropicGateway(routing: string): AnthropicGateway {
  let anthropicUp: AnthropicUpstream | undefined;
  let openaiUp: OpenAIUpstream | undefined;
  let gw: RunningFabric | undefined;
  let claude: Anthropic | undefined;
  const started = <T>(part: T | undefined): T => {
    if (part === undefined) throw new Error("the gateway starts in beforeAll");
    return part;
  };
  beforeAll(async () => {
    anthropicUp = await startAnthropicUpstream();
    openaiUp = await startOpenAIUpstream();
    gw = await startOneProcess(
      testConfig(`
providers:
  an: { type: anthropic, base_url: "${anthropicUp.url}", api_key: an-key }
  oa: { type: openai, base_url: "${openaiUp.url}", api_key: sk-oa }
  mk: { type: mock }
models:
  claude: { targets: [{ provider: an, model: claude-up }] }
  gpt: { targets: [{ provider: oa, model: gpt-up }] }
  demo: { targets: [{ provider: mk, model: echo }] }
  claude-or-gpt: { targets: [{ provider: an, model: claude-up }], fallbacks: [gpt] }
  demo-then-claude: { targets: [{ provider: mk, model: echo }, { provider: an, model: claude-up }] }
routing: ${routing}
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    claude = new Anthropic({ baseURL: gw.url, apiKey: "x", maxRetries: 0 });
  });
  afterAll(async () => {
    await gw?.stop();
    await Promise.all([anthropicUp?.close(), openaiUp?.close()]);
  });
  afterEach(() => {
    started(anthropicUp).setBehavior({ kind: "answer" });
  });
  return {
    get anthropicUp() {
      return started(anthropicUp);
    },
    get openaiUp() {
      return started(openaiUp);
    },
    get gw() {
      return started(gw);
    },
    get claude() {
      return started(claude);
    },
  };
}
