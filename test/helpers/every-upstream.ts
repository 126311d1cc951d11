// A fake upstream for each wire format the gateway speaks (OpenAI's, Azure's, Anthropic's,
// Gemini's), the config lines that name them, and one answer (a text, or a weather tool call)
// told to each in its own format: for tests that run every client API against every upstream.

import { type AnthropicUpstream, startAnthropicUpstream } from "../upstreams/anthropic-upstream.js";
import { type GeminiUpstream, startGeminiUpstream } from "../upstreams/gemini-upstream.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "../upstreams/openai-upstream.js";

/** The text every upstream answers with. */
export const TEXT = "The answer is 42.";
/** The arguments of the get_weather call every upstream answers with. */
export const ARGS = '{"city":"Paris"}';

export type UpstreamKind = "openai" | "azure" | "anthropic" | "gemini";

export interface EveryUpstream {
  openai: OpenAIUpstream;
  /** The OpenAI fake on its Azure routes. */
  azure: OpenAIUpstream;
  anthropic: AnthropicUpstream;
  gemini: GeminiUpstream;
  /** Lines for `providers:`: oa, az, an and ge, one on each fake. */
  providers: string;
  /** Lines for `models:`: `m-<kind>`, one target each (gpt-up, my-deployment, claude-up, gemini-up). */
  models: string;
  /** Tells `kind`'s fake to answer TEXT in three chunks, or with `tools` one get_weather call. */
  answerWith(kind: UpstreamKind, tools: boolean): void;
  /** The JSON body `kind`'s fake received last (`{}` before any). */
  lastBody(kind: UpstreamKind): Record<string, unknown>;
  close(): Promise<void>;
}

export async function startEveryUpstream(): Promise<EveryUpstream> {
  const starts = [
    startOpenAIUpstream(),
    startOpenAIUpstream(),
    startAnthropicUpstream(),
    startGeminiUpstream(),
  ] as const;
  const settled = await Promise.allSettled(starts);
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) {
    // Closes the fakes that did start, so a failed start leaves no server behind.
    for (const s of settled) if (s.status === "fulfilled") await s.value.close();
    throw failed.reason;
  }
  const [openai, azure, anthropic, gemini] = await Promise.all(starts);
  const fakes = { openai, azure, anthropic, gemini };
  return {
    ...fakes,
    providers: [
      `  oa: { type: openai, base_url: "${openai.url}", api_key: sk-oa }`,
      `  az: { type: azure-openai, base_url: "${azure.origin}", api_key: az-key, api_version: "2024-10-21" }`,
      `  an: { type: anthropic, base_url: "${anthropic.url}", api_key: an-key }`,
      `  ge: { type: gemini, base_url: "${gemini.url}", api_key: ge-key }`,
    ].join("\n"),
    models: [
      "  m-openai: { targets: [{ provider: oa, model: gpt-up }] }",
      "  m-azure: { targets: [{ provider: az, model: my-deployment }] }",
      "  m-anthropic: { targets: [{ provider: an, model: claude-up }] }",
      "  m-gemini: { targets: [{ provider: ge, model: gemini-up }] }",
    ].join("\n"),
    answerWith(kind, tools) {
      switch (kind) {
        case "openai":
        case "azure":
          fakes[kind].setBehavior(
            tools
              ? {
                  kind: "answer",
                  text: "",
                  toolCalls: [{ id: "call_1", name: "get_weather", arguments: ARGS, fragments: 3 }],
                  finishReason: "tool_calls",
                }
              : { kind: "answer", text: TEXT, chunks: 3 },
          );
          return;
        case "anthropic":
          anthropic.setBehavior(
            tools
              ? {
                  kind: "answer",
                  text: "",
                  toolUses: [{ id: "toolu_1", name: "get_weather", input: ARGS, fragments: 3 }],
                }
              : { kind: "answer", text: TEXT, chunks: 3 },
          );
          return;
        case "gemini":
          gemini.setBehavior(
            tools
              ? {
                  kind: "answer",
                  text: "",
                  functionCalls: [{ name: "get_weather", args: { city: "Paris" } }],
                }
              : { kind: "answer", text: TEXT, chunks: 3 },
          );
      }
    },
    lastBody(kind) {
      return (fakes[kind].requests.at(-1)?.body ?? {}) as Record<string, unknown>;
    },
    async close() {
      await Promise.all([openai.close(), azure.close(), anthropic.close(), gemini.close()]);
    },
  };
}
