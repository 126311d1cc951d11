// `type: gemini` — the Google AI Gemini API (generativelanguage.googleapis.com, v1beta REST):
// generateContent, streamGenerateContent (SSE), batchEmbedContents, models.get.

import { randomUUID } from "node:crypto";
import type {
  ChatChunk,
  EmbedParams,
  EmbedResult,
  RequestContext,
  TokenCount,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { CallAbort } from "../../../lib/abort.js";
import type { ProviderConfig } from "../../../lib/config/types.js";
import { Failure } from "../../../lib/errors.js";
import { AnswerStream, type OpenedAnswer, type StreamEvents } from "../answer-stream.js";
import {
  type ChatCall,
  type CountTokensCall,
  type EmbedCall,
  type Provider,
  takeParams,
} from "../provider.js";
import type { SseEvent } from "../sse.js";
import {
  failureFromError,
  malformedAnswer,
  parseStreamEvent,
  readJsonAnswer,
  readLimited,
  traceHeaders,
  type UpstreamPool,
  type UpstreamResponse,
  upstreamPool,
} from "../upstream-http.js";
import {
  EMBED_BATCH,
  EMBED_BATCHES_AT_ONCE,
  fromGeminiEmbedResponse,
  joinEmbedResults,
  toGeminiEmbedRequest,
} from "./embed.js";
import {
  checkAnswer,
  failureFromGoogle,
  fromGeminiCountTokens,
  fromGeminiResponse,
  type TranslateOptions,
} from "./from-response.js";
import { GeminiStream } from "./from-stream.js";
import { geminiModelPath, toGeminiCountTokensRequest, toGeminiRequest } from "./to-request.js";
import type { GeminiGenerateContentRequest } from "./wire.js";

export const GEMINI_BASE_URL = "https://generativelanguage.googleapis.com";

/** A base_url that already ends in an API version (".../v1beta") is used as it is. */
const API_VERSION_PATH = /\/v1(?:alpha|beta)?\d*$/;
const ERROR_BODY_LIMIT = 64 * 1024;

export function createGeminiProvider(name: string, config: ProviderConfig): Provider {
  const base = new URL(config.base_url ?? GEMINI_BASE_URL);
  const basePath = base.pathname.replace(/\/+$/, "");
  const apiPath = API_VERSION_PATH.test(basePath) ? basePath : `${basePath}/v1beta`;
  const secrets = config.api_key ? [config.api_key] : [];
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(config.headers ?? {})) {
    headers[key.toLowerCase()] = value;
  }
  // A header, never `?key=`: URLs end up in logs and error messages.
  if (config.api_key) headers["x-goog-api-key"] = config.api_key;
  const pool = upstreamPool(base.origin, config.max_connections ?? 128);

  /**
   * One request to `{apiPath}{path}`. Resolves once a 2xx answer's headers arrive; otherwise
   * reads the error body and throws the mapped `Failure` (Google's envelope understood).
   * Connection errors and aborts throw a `Failure` too.
   */
  async function send(
    method: "GET" | "POST",
    path: string,
    query: Record<string, string>,
    body: unknown,
    signal: AbortSignal,
    model: string,
    extraHeaders: Record<string, string> = {},
  ): Promise<UpstreamResponse> {
    const search = new URLSearchParams(base.search);
    for (const [key, value] of Object.entries(query)) search.set(key, value);
    const qs = search.toString();
    const requestHeaders = { ...headers, ...extraHeaders };
    if (body !== undefined) requestHeaders["content-type"] = "application/json";
    let data: Awaited<ReturnType<UpstreamPool["request"]>>;
    try {
      signal.throwIfAborted();
      data = await pool.request({
        origin: base.origin,
        path: `${apiPath}${path}${qs === "" ? "" : `?${qs}`}`,
        method,
        headers: requestHeaders,
        body: body === undefined ? null : JSON.stringify(body),
        signal,
      });
    } catch (err) {
      throw failureFromError(name, err, signal);
    }
    if (data.statusCode >= 200 && data.statusCode < 300) {
      return { status: data.statusCode, headers: data.headers, body: data.body };
    }
    let text: string;
    try {
      text = await readLimited(data.body, ERROR_BODY_LIMIT);
    } catch (err) {
      if (signal.aborted) throw failureFromError(name, err, signal);
      // The status alone still says what went wrong.
      text = "";
    }
    throw failureFromGoogle(name, data.statusCode, data.headers, text, { model, secrets });
  }

  function readJson(response: UpstreamResponse, signal: AbortSignal, what: string) {
    return readJsonAnswer(name, secrets, response.body, signal, what);
  }

  /** The events of a Gemini stream: each a whole response; the body's end ends the answer. */
  class GeminiEvents implements StreamEvents {
    readonly complete = false;

    constructor(private readonly stream: GeminiStream) {}

    push(event: SseEvent): ChatChunk | undefined {
      return this.stream.push(parseStreamEvent(name, secrets, event.data));
    }

    finish(): ChatChunk | undefined {
      this.stream.end();
      return undefined;
    }
  }

  /** Builds the upstream request and sends it; resolves with the answer's head (see takeParams). */
  function sendChat(call: ChatCall, streamed: boolean): Promise<UpstreamResponse> {
    const body = toGeminiRequest(takeParams(call), { provider: name, model: call.model });
    const method = streamed ? "streamGenerateContent" : "generateContent";
    return send(
      "POST",
      `/${geminiModelPath(call.model)}:${method}`,
      streamed ? { alt: "sse" } : {},
      body,
      call.signal,
      call.model,
      traceHeaders(call.context),
    );
  }

  function chat(call: ChatCall): AsyncIterableIterator<ChatChunk> {
    const options = translateOptions(call.model, call.context);
    if (call.params?.parallelToolCalls === false) options.oneToolCall = true;
    const streamed = call.params?.stream === true;
    return new AnswerStream(name, secrets, call, () =>
      sendChat(call, streamed).then((response): OpenedAnswer => {
        if (!streamed) {
          return {
            response,
            whole: async () => [
              fromGeminiResponse(await readJson(response, call.signal, "answer"), options),
            ],
          };
        }
        const stream = new GeminiStream(options);
        const contentType = String(response.headers["content-type"] ?? "");
        if (contentType.includes("application/json")) {
          // Without SSE the API streams one JSON array of the same events; accept it whole.
          return { response, whole: () => readEventArray(response, call.signal, stream) };
        }
        return { response, events: new GeminiEvents(stream) };
      }),
    );
  }

  async function readEventArray(
    response: UpstreamResponse,
    signal: AbortSignal,
    stream: GeminiStream,
  ): Promise<ChatChunk[]> {
    const parsed = await readJson(response, signal, "stream");
    const chunks: ChatChunk[] = [];
    for (const event of Array.isArray(parsed) ? parsed : [parsed]) {
      const chunk = stream.push(event);
      if (chunk !== undefined) chunks.push(chunk);
    }
    stream.end();
    return chunks;
  }

  /**
   * batchEmbedContents takes at most 100 inputs a call, where OpenAI's API takes 2,048: a longer
   * list goes in batches of 100, a few at a time, and comes back as one answer in input order.
   * The first batch to fail stops the others and is the answer.
   */
  async function embed(call: EmbedCall): Promise<EmbedResult> {
    if (call.params.tokenInputs.length > 0) {
      // batchEmbedContents embeds text only; token ids from another model's tokenizer mean
      // nothing to Gemini, and turning them into text is not ours to guess.
      throw new Failure({
        status: 400,
        kind: "unsupported",
        param: "input",
        provider: name,
        message: `provider ${name} (type gemini) cannot embed token ids: Gemini takes text only, so send the input as strings`,
      });
    }
    const inputs = call.params.inputs;
    if (inputs.length <= EMBED_BATCH) return embedBatch(call, call.params, call.signal);
    const abort = new CallAbort();
    const onAbort = () => abort.abort(call.signal.reason);
    if (call.signal.aborted) onAbort();
    else call.signal.addEventListener("abort", onAbort, { once: true });
    const results: EmbedResult[] = [];
    let next = 0;
    const worker = async () => {
      while (next < inputs.length) {
        const start = next;
        next += EMBED_BATCH;
        const part = { ...call.params, inputs: inputs.slice(start, start + EMBED_BATCH) };
        results[start / EMBED_BATCH] = await embedBatch(call, part, abort.signal);
      }
    };
    try {
      await Promise.all(
        Array.from({ length: EMBED_BATCHES_AT_ONCE }, () =>
          worker().catch((err: unknown) => {
            abort.abort(err);
            throw err;
          }),
        ),
      );
    } finally {
      call.signal.removeEventListener("abort", onAbort);
    }
    return joinEmbedResults(results);
  }

  async function embedBatch(
    call: EmbedCall,
    params: EmbedParams,
    signal: AbortSignal,
  ): Promise<EmbedResult> {
    const body = toGeminiEmbedRequest(params, call.model);
    const response = await send(
      "POST",
      `/${geminiModelPath(call.model)}:batchEmbedContents`,
      {},
      body,
      signal,
      call.model,
      traceHeaders(call.context),
    );
    try {
      const parsed = await readJson(response, signal, "embeddings");
      return fromGeminiEmbedResponse(parsed, {
        provider: name,
        model: call.model,
        inputs: params.inputs.length,
      });
    } finally {
      if (!response.body.readableEnded) response.body.on("error", () => {}).destroy();
    }
  }

  async function countTokens(call: CountTokensCall): Promise<TokenCount> {
    const body = toGeminiCountTokensRequest(call.params, { provider: name, model: call.model });
    const response = await send(
      "POST",
      `/${geminiModelPath(call.model)}:countTokens`,
      {},
      body,
      call.signal,
      call.model,
      traceHeaders(call.context),
    );
    const count = fromGeminiCountTokens(await readJson(response, call.signal, "token count"), call);
    if (!count) {
      throw malformedAnswer(name, secrets, `token count from provider ${name} was malformed`);
    }
    return count;
  }

  async function probe(model: string, signal: AbortSignal): Promise<void> {
    const mode = config.probe ?? "models";
    if (mode === "none") return;
    if (mode === "models") {
      // models.get costs nothing and fails with 404 for a model the key cannot use.
      const response = await send(
        "GET",
        `/${geminiModelPath(model)}`,
        {},
        undefined,
        signal,
        model,
      );
      await response.body.dump();
      return;
    }
    const ping: GeminiGenerateContentRequest = {
      contents: [{ role: "user", parts: [{ text: "ping" }] }],
      generationConfig: { maxOutputTokens: 1 },
    };
    const path = `/${geminiModelPath(model)}:generateContent`;
    const response = await send("POST", path, {}, ping, signal, model);
    checkAnswer(await readJson(response, signal, "answer"), translateOptions(model), "answer");
  }

  function translateOptions(model: string, context?: RequestContext): TranslateOptions {
    return {
      provider: name,
      model,
      // Tied to the request, so a streamed and a whole answer to it carry the same id.
      fallbackId: `gemini-${context?.requestId || randomUUID()}`,
      now: Math.floor(Date.now() / 1000),
      secrets,
    };
  }

  return {
    name,
    config,
    chat,
    embed,
    countTokens,
    probe,
    close: () => pool.close(),
  };
}
