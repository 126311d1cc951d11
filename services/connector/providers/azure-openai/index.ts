// `type: azure-openai` — Azure OpenAI deployments
// (https://learn.microsoft.com/azure/ai-services/openai/reference). The wire format is OpenAI's,
// so this is the OpenAI-compatible base with Azure's addressing, key header and dialect:
//
// - A target's `model` is the deployment name. The dated API puts it in the path,
//   {base}/openai/deployments/{deployment}/chat/completions?api-version={v}; the body still
//   carries `model` (the deployment), as the official SDK sends it: Azure ignores it there.
// - A base_url ending in /openai/v1 selects the v1 API: OpenAI's own paths under it, the
//   deployment in the body's `model`, and no dated api-version (a non-dated one such as
//   "preview" is still sent).
// - The key goes in `api-key`, never `Authorization` (configured headers may add a Microsoft
//   Entra token there instead).
// - A prompt blocked by Azure's content filter is a 400 with code "content_filter"; an answer cut
//   by it ends with finish_reason "content_filter" (CONTENT_FILTER).

import type { ProviderConfig } from "../../../lib/config/types.js";
import { Failure } from "../../../lib/errors.js";
import {
  createOpenAICompatibleProvider,
  type OpenAICompatibleRoutes,
  type UpstreamOperation,
} from "../openai/compatible.js";
import type { ToRequestOptions } from "../openai/to-request.js";
import type { Provider } from "../provider.js";

export interface AzureEndpoint {
  /** The base URL handed to the HTTP pool, api-version included as its query. */
  baseUrl: string;
  routes: OpenAICompatibleRoutes;
  request: ToRequestOptions;
}

const DATED_VERSION = /^(\d{4}-\d{2}-\d{2})(-preview)?$/;

/**
 * The request fields an api-version understands. The reference adds `stream_options` and
 * `max_completion_tokens` in 2024-09-01-preview (reasoning deployments accept only the latter);
 * the GA 2024-10-21 schema has `stream_options` but still only `max_tokens`, and older versions
 * reject both fields, so their streamed answers carry no usage. Versions that are not dated
 * ("preview", "latest") belong to the v1 API, which has both.
 */
export function azureDialect(apiVersion: string | undefined): ToRequestOptions {
  const dated = DATED_VERSION.exec(apiVersion ?? "");
  if (dated?.[1] === undefined) {
    return { maxTokensField: "max_completion_tokens", streamUsage: true };
  }
  const date = dated[1];
  const preview = dated[2] !== undefined;
  const completionTokens = preview ? date >= "2024-09-01" : date > "2024-10-21";
  return {
    maxTokensField: completionTokens ? "max_completion_tokens" : "max_tokens",
    streamUsage: date >= "2024-09-01",
  };
}

/** Where requests for a configured `base_url` and `api_version` go. Throws if they are unusable. */
export function azureEndpoint(baseUrl: string, apiVersion: string | undefined): AzureEndpoint {
  const url = new URL(baseUrl);
  url.hash = "";
  const path = url.pathname.replace(/\/+$/, "");
  if (path.endsWith("/openai/v1")) {
    url.pathname = path;
    if (apiVersion !== undefined && !DATED_VERSION.test(apiVersion)) {
      url.searchParams.set("api-version", apiVersion);
    }
    return {
      baseUrl: url.toString(),
      routes: {
        chat: () => "/chat/completions",
        embeddings: () => "/embeddings",
        models: "/models",
      },
      request: { maxTokensField: "max_completion_tokens", streamUsage: true },
    };
  }
  if (apiVersion === undefined || apiVersion === "") {
    throw new Error("api_version is required unless base_url ends in /openai/v1");
  }
  url.pathname = path.endsWith("/openai") ? path : `${path}/openai`;
  url.searchParams.set("api-version", apiVersion);
  const deployment = (name: string) => `/deployments/${encodeURIComponent(name)}`;
  return {
    baseUrl: url.toString(),
    routes: {
      chat: (name) => `${deployment(name)}/chat/completions`,
      embeddings: (name) => `${deployment(name)}/embeddings`,
      models: "/models",
    },
    request: azureDialect(apiVersion),
  };
}

export function createAzureOpenAIProvider(name: string, config: ProviderConfig): Provider {
  if (config.base_url === undefined) {
    throw new Error(`provider ${name}: type azure-openai needs base_url`);
  }
  let endpoint: AzureEndpoint;
  try {
    endpoint = azureEndpoint(config.base_url, config.api_version);
  } catch (err) {
    throw new Error(`provider ${name}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const provider = createOpenAICompatibleProvider({
    name,
    config,
    baseUrl: endpoint.baseUrl,
    routes: endpoint.routes,
    authHeaders: config.api_key ? { "api-key": config.api_key } : {},
    request: endpoint.request,
    mapFailure: (failure, operation) => contentFilterFailure(name, failure, operation),
  });
  if (endpoint.request.streamUsage) return provider;
  // The gateway asks upstreams to stream, also for clients that are not streaming.
  const caveat = `api_version ${config.api_version} predates usage in streams (2024-09-01): this provider's token counts, limits and costs are estimates; use 2024-10-21 or later, or the v1 path`;
  return { ...provider, caveats: [caveat] };
}

/**
 * Names Azure's content filter in the failure of a prompt it blocked. Not retryable, like any
 * other refused request: routing around a safety filter is not the gateway's call.
 */
export function contentFilterFailure(
  provider: string,
  failure: Failure,
  operation: UpstreamOperation,
): Failure {
  if (failure.upstreamStatus !== 400 || failure.code !== "content_filter") return failure;
  // Keep Azure's own words, which follow the generic prefix upstream-http puts first.
  const prefix = `provider ${provider} rejected the request (400)`;
  const said = failure.message.startsWith(prefix) ? failure.message.slice(prefix.length) : "";
  const param = operation === "chat" ? "messages" : operation === "embed" ? "input" : failure.param;
  return new Failure(
    {
      status: 400,
      kind: "invalid_request",
      message: `provider ${provider}'s content filter blocked the prompt (400)${said}`,
      upstreamStatus: 400,
      provider,
      code: "content_filter",
      ...(param !== "" && { param }),
    },
    { cause: failure },
  );
}
