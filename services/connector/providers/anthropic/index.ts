// `type: anthropic` — the Anthropic Messages API (https://docs.anthropic.com/en/api/messages).
// Anthropic has no embeddings endpoint, so this provider has no `embed`.

import type { ChatChunk } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import type { ProviderConfig } from "../../../lib/config/types.js";
import { Failure } from "../../../lib/errors.js";
import { type ChatCall, type Provider, ReadBatch, takeParams } from "../provider.js";
import { parseSseBatches } from "../sse.js";
import {
  createUpstreamHttp,
  drainBody,
  errorCode,
  errorDetailFromJson,
  failureFromError,
  malformedAnswer,
  parseStreamEvent,
  readJsonAnswer,
  traceHeaders,
  type UpstreamResponse,
} from "../upstream-http.js";
import { fromAnthropicMessage } from "./from-response.js";
import { AnthropicStreamTranslator } from "./from-stream.js";
import { isRecord, toAnthropicRequest } from "./to-request.js";
import { ANTHROPIC_VERSION, type AnthropicMessage } from "./wire.js";

export const ANTHROPIC_BASE_URL = "https://api.anthropic.com";

/** Anthropic's "overloaded" status: the API is up but has no capacity right now. */
const OVERLOADED_STATUS = 529;

/** How long the rest of a body may take to arrive after message_stop before it is dropped. */
const DRAIN_AFTER_STOP_MS = 2000;
const DRAIN_LIMIT_BYTES = 64 * 1024;

export function createAnthropicProvider(name: string, config: ProviderConfig): Provider {
  const secrets = config.api_key ? [config.api_key] : [];
  // Configured headers may name another API version or add `anthropic-beta`.
  const headers: Record<string, string> = { "anthropic-version": ANTHROPIC_VERSION };
  for (const [key, value] of Object.entries(config.headers ?? {})) {
    headers[key.toLowerCase()] = value;
  }
  if (config.api_key) headers["x-api-key"] = config.api_key;
  const http = createUpstreamHttp({
    provider: name,
    baseUrl: config.base_url ?? ANTHROPIC_BASE_URL,
    headers,
    secrets,
    ...(config.max_connections !== undefined && { maxConnections: config.max_connections }),
  });

  const upstreamFailure = (message: string, cause?: unknown, code?: string) =>
    malformedAnswer(name, secrets, message, cause, code);

  /** Anthropic's 529 "overloaded" means no capacity right now: a retryable 503, not a 502. */
  function overloadedAsUnavailable(err: unknown): unknown {
    if (!(err instanceof Failure) || err.upstreamStatus !== OVERLOADED_STATUS) return err;
    return new Failure(
      {
        status: 503,
        kind: "upstream_unavailable",
        message: err.message,
        retryable: true,
        upstreamStatus: err.upstreamStatus,
        provider: name,
        ...(err.retryAfterMs > 0 && { retryAfterMs: err.retryAfterMs }),
        ...(err.code !== "" && { code: err.code }),
      },
      { cause: err },
    );
  }

  async function postMessages(
    body: unknown,
    signal: AbortSignal,
    model: string,
    headers: Record<string, string> = {},
  ): Promise<UpstreamResponse> {
    try {
      return await http.postJson("/v1/messages", body, signal, { model, headers });
    } catch (err) {
      throw overloadedAsUnavailable(err);
    }
  }

  async function readMessage(
    response: UpstreamResponse,
    signal: AbortSignal,
    jsonTool: string | undefined,
  ): Promise<ChatChunk> {
    const parsed = await readJsonAnswer(name, secrets, response.body, signal);
    if (!isRecord(parsed)) throw upstreamFailure(`answer from provider ${name} was malformed`);
    if (parsed.type === "error") {
      const detail = errorDetailFromJson(parsed);
      throw upstreamFailure(
        `provider ${name} failed: ${detail?.message ?? "unknown error"}`,
        undefined,
        detail?.type,
      );
    }
    if (!Array.isArray(parsed.content)) {
      throw upstreamFailure(`answer from provider ${name} was malformed: no content`);
    }
    return fromAnthropicMessage(parsed as unknown as AnthropicMessage, {
      provider: name,
      jsonTool,
    });
  }

  async function* readStream(
    response: UpstreamResponse,
    signal: AbortSignal,
    translator: AnthropicStreamTranslator,
    batch: ReadBatch,
  ): AsyncGenerator<ChatChunk> {
    // Leaving the loop must not destroy the body: after message_stop it is drained instead, so
    // the connection goes back to the pool (see `chat`).
    const body = {
      [Symbol.asyncIterator]: () => response.body.iterator({ destroyOnReturn: false }),
    };
    try {
      read: for await (const events of parseSseBatches(body)) {
        for (const event of events) {
          const parsed = parseStreamEvent(name, secrets, event.data);
          // Anthropic repeats the event name as `type` in the data; the name wins if they differ.
          if (event.event !== undefined && event.event !== "message") parsed.type = event.event;
          const chunk = translator.push(parsed);
          const now = chunk && batch.add(chunk);
          if (now !== undefined) yield now;
          if (translator.done) break read;
        }
        const kept = batch.take();
        if (kept !== undefined) yield kept;
      }
    } catch (err) {
      if (err instanceof Failure) throw err;
      if (signal.aborted) throw failureFromError(name, err, signal);
      throw upstreamFailure(`stream from provider ${name} ended early: ${errorCode(err)}`, err);
    }
    // Without message_stop the answer may be cut short; it must not pass for a complete one.
    if (!translator.done) throw upstreamFailure(`stream from provider ${name} ended early`);
    const kept = batch.take();
    if (kept !== undefined) yield kept;
  }

  /**
   * Builds the upstream request and sends it; resolves with the answer's head and the name of
   * the tool that stands for a JSON answer, if any (see takeParams).
   */
  async function send(call: ChatCall): Promise<{ response: UpstreamResponse; jsonTool?: string }> {
    const { body, jsonTool } = toAnthropicRequest(takeParams(call), call.model, name);
    const response = await postMessages(body, call.signal, call.model, traceHeaders(call.context));
    return jsonTool === undefined ? { response } : { response, jsonTool };
  }

  async function* chat(call: ChatCall): AsyncGenerator<ChatChunk> {
    const streamed = call.params?.stream === true;
    const { response, jsonTool } = await send(call);
    const translator = new AnthropicStreamTranslator({ provider: name, jsonTool, secrets });
    try {
      const contentType = String(response.headers["content-type"] ?? "");
      if (!streamed || contentType.includes("application/json")) {
        yield await readMessage(response, call.signal, jsonTool);
        return;
      }
      yield* readStream(response, call.signal, translator, new ReadBatch(call.merge === true));
    } finally {
      if (translator.done) {
        // The end of the HTTP body may trail message_stop by a packet; reading it keeps the
        // connection alive for the next request, where destroying would close it.
        drainBody(response.body, DRAIN_LIMIT_BYTES, DRAIN_AFTER_STOP_MS);
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
      const response = await http.get("/v1/models", signal).catch((err: unknown) => {
        throw overloadedAsUnavailable(err);
      });
      await response.body.dump();
      return;
    }
    const response = await postMessages(
      { model, max_tokens: 1, messages: [{ role: "user", content: "ping" }] },
      signal,
      model,
    );
    await readMessage(response, signal, undefined);
  }

  return {
    name,
    config,
    chat,
    probe,
    close: () => http.close(),
  };
}
