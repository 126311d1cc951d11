// `type: openai` — OpenAI itself and every server that speaks its Chat Completions API
// (vLLM, Ollama, LM Studio, Groq, Together, Mistral, DeepSeek, OpenRouter, …).

import type { ChatChunk } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import type { ProviderConfig } from "../../../lib/config/types.js";
import { Failure } from "../../../lib/errors.js";
import type { OpenAIChatChunk, OpenAIChatCompletion } from "../../../lib/wire/openai.js";
import type { ChatCall, Provider } from "../provider.js";
import { parseSse } from "../sse.js";
import {
  createUpstreamHttp,
  errorCode,
  errorDetailFromJson,
  failureFromError,
  scrubSecrets,
  type UpstreamResponse,
} from "../upstream-http.js";
import { fromOpenAICompletion, isRecord } from "./from-response.js";
import { fromOpenAIChunk, isEmptyChunk } from "./from-stream.js";
import { type ToRequestOptions, toOpenAIRequest } from "./to-request.js";

export const OPENAI_BASE_URL = "https://api.openai.com/v1";

/** How long the rest of a body may take to arrive after [DONE] before its connection is dropped. */
const DRAIN_AFTER_DONE_MS = 2000;
const DRAIN_LIMIT_BYTES = 64 * 1024;

export function createOpenAIProvider(name: string, config: ProviderConfig): Provider {
  const baseUrl = config.base_url ?? OPENAI_BASE_URL;
  const secrets = config.api_key ? [config.api_key] : [];
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(config.headers ?? {})) {
    headers[key.toLowerCase()] = value;
  }
  if (config.api_key) headers.authorization = `Bearer ${config.api_key}`;
  const http = createUpstreamHttp({
    provider: name,
    baseUrl,
    headers,
    secrets,
    ...(config.max_connections !== undefined && { maxConnections: config.max_connections }),
  });
  const requestOptions: ToRequestOptions = {
    maxTokensField:
      new URL(baseUrl).hostname === "api.openai.com" ? "max_completion_tokens" : "max_tokens",
  };

  function upstreamFailure(message: string, cause?: unknown, code?: string): Failure {
    return new Failure(
      {
        status: 502,
        kind: "upstream_error",
        message: scrubSecrets(message, secrets),
        // The router retries only if nothing reached the client yet.
        retryable: true,
        provider: name,
        ...(code !== undefined && { code }),
      },
      { cause },
    );
  }

  /** Turns a parsed JSON answer into a chunk, or the error it reports into a Failure. */
  function completionChunk(parsed: unknown): ChatChunk {
    if (!isRecord(parsed)) throw upstreamFailure(`answer from provider ${name} was malformed`);
    if (parsed.error !== undefined && parsed.error !== null) {
      const detail = errorDetailFromJson(parsed);
      throw upstreamFailure(
        `provider ${name} failed: ${detail?.message ?? "unknown error"}`,
        undefined,
        detail?.code,
      );
    }
    if (!Array.isArray(parsed.choices)) {
      throw upstreamFailure(`answer from provider ${name} was malformed: no choices`);
    }
    return fromOpenAICompletion(parsed as unknown as OpenAIChatCompletion, name);
  }

  async function readCompletion(
    response: UpstreamResponse,
    signal: AbortSignal,
  ): Promise<ChatChunk> {
    let text: string;
    try {
      text = await response.body.text();
    } catch (err) {
      if (signal.aborted) throw failureFromError(name, err, signal);
      throw upstreamFailure(`answer from provider ${name} ended early: ${errorCode(err)}`, err);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw upstreamFailure(`answer from provider ${name} was malformed: not JSON`, err);
    }
    return completionChunk(parsed);
  }

  async function* readStream(
    response: UpstreamResponse,
    signal: AbortSignal,
    outcome: { done: boolean },
  ): AsyncGenerator<ChatChunk> {
    let first = true;
    // Leaving the loop must not destroy the body: after [DONE] it is drained instead, so the
    // connection goes back to the pool (see `chat`).
    const body = {
      [Symbol.asyncIterator]: () => response.body.iterator({ destroyOnReturn: false }),
    };
    try {
      for await (const event of parseSse(body)) {
        if (event.data === "[DONE]") {
          outcome.done = true;
          break;
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(event.data);
        } catch (err) {
          throw upstreamFailure(`stream from provider ${name} was malformed: invalid JSON`, err);
        }
        if (!isRecord(parsed)) {
          throw upstreamFailure(`stream from provider ${name} was malformed: not an object`);
        }
        if (parsed.error !== undefined && parsed.error !== null) {
          const detail = errorDetailFromJson(parsed);
          throw upstreamFailure(
            `stream from provider ${name} failed: ${detail?.message ?? "unknown error"}`,
            undefined,
            detail?.code,
          );
        }
        const chunk = fromOpenAIChunk(parsed as unknown as OpenAIChatChunk, name, first);
        if (isEmptyChunk(chunk)) continue;
        first = false;
        yield chunk;
      }
    } catch (err) {
      if (err instanceof Failure) throw err;
      if (signal.aborted) throw failureFromError(name, err, signal);
      throw upstreamFailure(`stream from provider ${name} ended early: ${errorCode(err)}`, err);
    }
    // Without [DONE] the answer may be cut short; it must not pass for a complete one.
    if (!outcome.done) throw upstreamFailure(`stream from provider ${name} ended early`);
  }

  async function* chat(call: ChatCall): AsyncGenerator<ChatChunk> {
    const body = toOpenAIRequest(call.params, call.model, requestOptions);
    const response = await http.postJson("/chat/completions", body, call.signal, {
      model: call.model,
    });
    const outcome = { done: false };
    try {
      // A server that ignores `stream: true` answers with one JSON body; that is still an answer.
      const contentType = String(response.headers["content-type"] ?? "");
      if (!call.params.stream || contentType.includes("application/json")) {
        yield await readCompletion(response, call.signal);
        return;
      }
      yield* readStream(response, call.signal, outcome);
    } finally {
      if (outcome.done) {
        // The end of the HTTP body may trail [DONE] by a packet; reading it keeps the
        // connection alive for the next request, where destroying would close it.
        response.body
          .dump({ limit: DRAIN_LIMIT_BYTES, signal: AbortSignal.timeout(DRAIN_AFTER_DONE_MS) })
          .catch(() => {});
      } else if (!response.body.readableEnded) {
        // The caller gave up early (or the stream failed): stop the upstream generating.
        // Nobody reads the body any more, so its abort error has no one to tell.
        response.body.on("error", () => {}).destroy();
      }
    }
  }

  async function probe(model: string, signal: AbortSignal): Promise<void> {
    const mode = config.probe ?? "models";
    if (mode === "none") return;
    if (mode === "models") {
      const response = await http.get("/models", signal);
      await response.body.dump();
      return;
    }
    const response = await http.postJson(
      "/chat/completions",
      {
        model,
        messages: [{ role: "user", content: "ping" }],
        [requestOptions.maxTokensField ?? "max_tokens"]: 1,
      },
      signal,
      { model },
    );
    await readCompletion(response, signal);
  }

  return {
    name,
    config,
    chat,
    probe,
    close: () => http.close(),
  };
}
