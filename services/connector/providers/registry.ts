import type { ProviderConfig, ProviderType } from "../../lib/config/types.js";
import { createMockProvider } from "./mock/index.js";
import { createOpenAIProvider } from "./openai/index.js";
import type { Provider, ProviderFactory } from "./provider.js";

// Adding a provider: a folder beside this file and one line here.
const factories: Record<ProviderType, ProviderFactory | undefined> = {
  openai: createOpenAIProvider,
  mock: createMockProvider,
  anthropic: undefined,
  gemini: undefined,
  "azure-openai": undefined,
};

/** The provider types this build can serve. */
export function supportedProviderTypes(): ProviderType[] {
  return (Object.keys(factories) as ProviderType[]).filter((type) => factories[type] !== undefined);
}

/** Builds the provider configured as `name`; throws at startup for a type not implemented. */
export function createProvider(name: string, config: ProviderConfig): Provider {
  const factory = factories[config.type];
  if (factory === undefined) {
    throw new Error(`provider ${name}: type ${config.type} is not supported yet`);
  }
  return factory(name, config);
}
