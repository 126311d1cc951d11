// `type: openai` — OpenAI itself and every server that speaks its Chat Completions API
// (vLLM, Ollama, LM Studio, Groq, Together, Mistral, DeepSeek, OpenRouter, …).

import type { ProviderConfig } from "../../../lib/config/types.js";
import type { Provider } from "../provider.js";
import { createOpenAICompatibleProvider } from "./compatible.js";

export const OPENAI_BASE_URL = "https://api.openai.com/v1";

export function createOpenAIProvider(name: string, config: ProviderConfig): Provider {
  const baseUrl = config.base_url ?? OPENAI_BASE_URL;
  return createOpenAICompatibleProvider({
    name,
    config,
    baseUrl,
    routes: {
      chat: () => "/chat/completions",
      embeddings: () => "/embeddings",
      models: "/models",
    },
    authHeaders: config.api_key ? { authorization: `Bearer ${config.api_key}` } : {},
    // Elsewhere the limit goes under the client's own name for it (to-request.ts).
    request:
      new URL(baseUrl).hostname === "api.openai.com"
        ? { maxTokensField: "max_completion_tokens" }
        : {},
  });
}
