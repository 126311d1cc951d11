import type { ProviderConfig, ProviderType } from "../../lib/config/types.js";
import { createAnthropicProvider } from "./anthropic/index.js";
import { createAzureOpenAIProvider } from "./azure-openai/index.js";
import { createGeminiProvider } from "./gemini/index.js";
import { createMockProvider } from "./mock/index.js";
import { createOpenAIProvider } from "./openai/index.js";
import type { Provider, ProviderFactory } from "./provider.js";

// Adding a provider: a folder beside this file, its type in config/types.ts, and one line here.
const factories: Record<ProviderType, ProviderFactory> = {
  openai: createOpenAIProvider,
  "azure-openai": createAzureOpenAIProvider,
  anthropic: createAnthropicProvider,
  gemini: createGeminiProvider,
  mock: createMockProvider,
};

/** Builds the provider configured as `name`. */
export function createProvider(name: string, config: ProviderConfig): Provider {
  return factories[config.type](name, config);
}
