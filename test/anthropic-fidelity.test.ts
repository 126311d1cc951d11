import Anthropic from "@anthropic-ai/sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { type AnthropicUpstream, startAnthropicUpstream } from "./upstreams/anthropic-upstream.js";

// What an Anthropic client gets from an Anthropic upstream through the gateway, beyond what
// every pair of APIs shares: the official @anthropic-ai/sdk through one gateway process to the
// fake Anthropic upstream, which answers in Anthropic's wire format, streamed and whole.

let upstream: AnthropicUpstream;
let gw: RunningFabric;
let claude: Anthropic;

beforeAll(async () => {
  upstream = await startAnthropicUpstream();
  gw = await startOneProcess(
    testConfig(`
providers:
  an: { type: anthropic, base_url: "${upstream.url}", api_key: an-key }
models:
  claude: { targets: [{ provider: an, model: claude-up }] }
routing: { retries: 0 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
  claude = new Anthropic({ baseURL: gw.url, apiKey: "x", maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await upstream?.close();
});

afterEach(() => {
  upstream.setBehavior({ kind: "answer" });
});

const ask = {
  model: "claude",
  max_tokens: 1024,
  messages: [{ role: "user" as const, content: "What is new today?" }],
};

/** Every event of a streamed answer, as the SDK reads them off the wire. */
async function streamedEvents(
  body: Anthropic.MessageCreateParamsNonStreaming,
): Promise<Anthropic.RawMessageStreamEvent[]> {
  const events: Anthropic.RawMessageStreamEvent[] = [];
  for await (const event of await claude.messages.create({ ...body, stream: true })) {
    events.push(event);
  }
  return events;
}

describe("Anthropic's usage details", () => {
  const serverToolUse = { web_search_requests: 2, web_fetch_requests: 1 };

  it("reach an anthropic client whole and streamed: the service tier and the server tool requests", async () => {
    upstream.setBehavior({
      kind: "answer",
      text: "Two searches later: nothing.",
      usage: {
        input_tokens: 12,
        output_tokens: 7,
        service_tier: "priority",
        server_tool_use: serverToolUse,
      },
    });

    const whole = await claude.messages.create(ask);
    expect(whole.usage).toMatchObject({ service_tier: "priority", server_tool_use: serverToolUse });

    // Streamed, each where Anthropic puts it: the tier in message_start's usage, the cumulative
    // server tool counts in message_start's and again in message_delta's.
    const events = await streamedEvents(ask);
    const start = events.find((e) => e.type === "message_start");
    const delta = events.find((e) => e.type === "message_delta");
    expect(start?.message.usage).toMatchObject({
      service_tier: "priority",
      server_tool_use: serverToolUse,
    });
    expect(delta?.usage).toMatchObject({ server_tool_use: serverToolUse });
    expect(delta?.usage).not.toHaveProperty("service_tier");

    const streamed = await claude.messages.stream(ask).finalMessage();
    expect(streamed.usage).toMatchObject({
      service_tier: "priority",
      server_tool_use: serverToolUse,
    });
  });

  it("are left out when the upstream reported none", async () => {
    const whole = await claude.messages.create(ask);
    expect(whole.usage).not.toHaveProperty("service_tier");
    expect(whole.usage).not.toHaveProperty("server_tool_use");
  });
});
