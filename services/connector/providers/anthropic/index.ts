// `type: anthropic` — the Anthropic Messages API (https://docs.anthropic.com/en/api/messages).
// Anthropic has no embeddings endpoint, so this provider has no `embed`.

import type { ChatChunk, TokenCount } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import type { ProviderConfig } from "../../../lib/config/types.js";
import { Failure } from "../../../lib/errors.js";
import {
  AnswerStream,
  type OpenedAnswer,
  type StreamEvents,
  streamEndedEarly,
} from "../answer-stream.js";
import { isRecord } from "../json-object.js";
import { type ChatCall, type CountTokensCall, type Provider, takeParams } from "../provider.js";
import type { SseEvent } from "../sse.js";
import {
  createUpstreamHttp,
  errorDetailFromJson,
  malformedAnswer,
  parseStreamEvent,
  readJsonAnswer,
  traceHeaders,
  type UpstreamResponse,
} from "../upstream-http.js";
import { fromAnthropicCountTokens, fromAnthropicMessage } from "./from-response.js";
import { AnthropicStreamTranslator } from "./from-stream.js";
import { toAnthropicCountTokensRequest, toAnthropicRequest } from "./to-request.js";
import { ANTHROPIC_VERSION, type AnthropicMessage } from "./wire.js";

export const ANTHROPIC_BASE_URL = "https://api.anthropic.com";

/** Anthropic's "overloaded" status: the API is up but has no capacity right now. */
const OVERLOADED_STATUS = 529;

export function createAnthropicProvider(name: string, config: ProviderConfig): Provider {
  const secrets = config.api_key ? [config.api_key] : [];
  // Configured headers may name another API version or add `anthropic-beta`.
  const headers: Record<string, string> = { "anthropic-version": ANTHROPIC_VERSION };
  for (const [key, value] of Object.entries(config.headers ?? {})) {
    headers[key.toLowerCase()] = value;
  }
  if (config.api_key) headers["x-api-key"] = config.api_key;
  const configuredBetas = (headers["anthropic-beta"] ?? "")
    .split(",")
    .map((b) => b.trim())
    .filter((b) => b !== "");
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
    path = "/v1/messages",
  ): Promise<UpstreamResponse> {
    try {
      return await http.postJson(path, body, signal, { model, headers });
    } catch (err) {
      throw overloadedAsUnavailable(err);
    }
  }

  /** The headers of one call: its trace, and the client's betas joined to the configured ones. */
  function callHeaders(context: ChatCall["context"], betas: readonly string[]) {
    const perCall = traceHeaders(context);
    // The client's beta features join the ones the provider's config sets (a comma list).
    if (betas.length > 0) {
      perCall["anthropic-beta"] = [...new Set([...configuredBetas, ...betas])].join(",");
    }
    return perCall;
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

  /** The events of an Anthropic stream: chunks until message_stop, which a whole answer ends with. */
  class AnthropicEvents implements StreamEvents {
    constructor(private readonly translator: AnthropicStreamTranslator) {}

    get complete(): boolean {
      return this.translator.done;
    }

    push(event: SseEvent): ChatChunk | undefined {
      const parsed = parseStreamEvent(name, secrets, event.data);
      // Anthropic repeats the event name as `type` in the data; the name wins if they differ.
      if (event.event !== undefined && event.event !== "message") parsed.type = event.event;
      return this.translator.push(parsed);
    }

    finish(): ChatChunk | undefined {
      // Without message_stop the answer may be cut short; it must not pass for a complete one.
      if (!this.translator.done) throw streamEndedEarly(name, secrets);
      return undefined;
    }
  }

  /**
   * Builds the upstream request and sends it; resolves with the answer's head and the name of
   * the tool that stands for a JSON answer, if any (see takeParams).
   */
  async function send(call: ChatCall): Promise<{ response: UpstreamResponse; jsonTool?: string }> {
    const params = takeParams(call);
    const betas = params.anthropicBeta;
    const { body, jsonTool } = toAnthropicRequest(params, call.model, name);
    const perCall = callHeaders(call.context, betas);
    const response = await postMessages(body, call.signal, call.model, perCall);
    return jsonTool === undefined ? { response } : { response, jsonTool };
  }

  function chat(call: ChatCall): AsyncIterableIterator<ChatChunk> {
    const streamed = call.params?.stream === true;
    return new AnswerStream(name, secrets, call, () =>
      send(call).then(({ response, jsonTool }): OpenedAnswer => {
        const contentType = String(response.headers["content-type"] ?? "");
        if (!streamed || contentType.includes("application/json")) {
          return {
            response,
            whole: () => readMessage(response, call.signal, jsonTool).then((c) => [c]),
          };
        }
        const translator = new AnthropicStreamTranslator({ provider: name, jsonTool, secrets });
        return { response, events: new AnthropicEvents(translator) };
      }),
    );
  }

  async function countTokens(call: CountTokensCall): Promise<TokenCount> {
    const body = toAnthropicCountTokensRequest(call.params, call.model, name);
    const headers = callHeaders(call.context, call.params.anthropicBeta);
    const response = await postMessages(
      body,
      call.signal,
      call.model,
      headers,
      "/v1/messages/count_tokens",
    );
    const answer = await readJsonAnswer(name, secrets, response.body, call.signal, "token count");
    const count = fromAnthropicCountTokens(answer, call);
    if (!count) throw upstreamFailure(`token count from provider ${name} was malformed`);
    return count;
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
    countTokens,
    probe,
    close: () => http.close(),
  };
}
