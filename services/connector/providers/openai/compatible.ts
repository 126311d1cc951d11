// The shared base of every upstream that speaks OpenAI's Chat Completions and Embeddings wire
// format (`type: openai` and its many compatible servers, `type: azure-openai`). A vendor
// supplies where requests go, how it authenticates and its dialect of the request; the
// translations, the stream handling and the failure mapping are shared.

import type { ChatChunk, EmbedResult } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import type { ProviderConfig } from "../../../lib/config/types.js";
import { embedInputCount } from "../../../lib/embed-inputs.js";
import { Failure } from "../../../lib/errors.js";
import type { OpenAIChatChunk, OpenAIChatCompletion } from "../../../lib/wire/openai.js";
import {
  AnswerStream,
  type OpenedAnswer,
  type StreamEvents,
  streamEndedEarly,
} from "../answer-stream.js";
import { refusal, refuseAnthropicOnly } from "../anthropic-only.js";
import { isRecord } from "../json-object.js";
import { type ChatCall, type EmbedCall, type Provider, takeParams } from "../provider.js";
import type { SseEvent } from "../sse.js";
import {
  createUpstreamHttp,
  errorDetailFromJson,
  malformedAnswer,
  parseStreamEvent,
  type RequestInfo,
  readJsonAnswer,
  traceHeaders,
  type UpstreamResponse,
} from "../upstream-http.js";
import { fromOpenAIEmbeddings, toOpenAIEmbeddingsRequest } from "./embeddings.js";
import { fromOpenAICompletion } from "./from-response.js";
import { createOpenAIStreamTranslator } from "./from-stream.js";
import { inClientTerms, type ToRequestOptions, toOpenAIRequest } from "./to-request.js";

/** Request paths under `baseUrl` (without a query: the base URL's query is added to each). */
export interface OpenAICompatibleRoutes {
  chat(model: string): string;
  embeddings(model: string): string;
  models: string;
}

export interface OpenAICompatibleOptions {
  /** The configured provider name. */
  name: string;
  config: ProviderConfig;
  /** Origin, base path and (e.g. Azure's api-version) a query sent with every request. */
  baseUrl: string;
  routes: OpenAICompatibleRoutes;
  /** Credential headers, sent after (and so over) the configured `headers`. */
  authHeaders: Record<string, string>;
  /** The vendor's dialect of the request body. */
  request: ToRequestOptions;
  /** Restates an upstream HTTP failure in the vendor's own terms (e.g. Azure's content filter). */
  mapFailure?: (failure: Failure, operation: UpstreamOperation) => Failure;
}

/** What a request to the upstream was for. */
export type UpstreamOperation = "chat" | "embed" | "probe";

export function createOpenAICompatibleProvider(options: OpenAICompatibleOptions): Provider {
  const { name, config, routes, request: requestOptions } = options;
  const secrets = config.api_key ? [config.api_key] : [];
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(config.headers ?? {})) {
    headers[key.toLowerCase()] = value;
  }
  for (const [key, value] of Object.entries(options.authHeaders)) {
    headers[key.toLowerCase()] = value;
  }
  const http = createUpstreamHttp({
    provider: name,
    baseUrl: options.baseUrl,
    headers,
    secrets,
    ...(config.max_connections !== undefined && { maxConnections: config.max_connections }),
  });
  const mapFailure = options.mapFailure ?? ((failure: Failure) => failure);

  async function post(
    operation: UpstreamOperation,
    path: string,
    body: unknown,
    signal: AbortSignal,
    info: RequestInfo,
  ): Promise<UpstreamResponse> {
    try {
      return await http.postJson(path, body, signal, info);
    } catch (err) {
      throw err instanceof Failure ? mapFailure(err, operation) : err;
    }
  }

  const upstreamFailure = (message: string, cause?: unknown, code?: string) =>
    malformedAnswer(name, secrets, message, cause, code);

  /** Reads a whole JSON answer; a body that is cut off or not JSON is the upstream's failure. */
  async function readJson(response: UpstreamResponse, signal: AbortSignal): Promise<unknown> {
    const parsed = await readJsonAnswer(name, secrets, response.body, signal);
    if (!isRecord(parsed)) throw upstreamFailure(`answer from provider ${name} was malformed`);
    // Some servers answer 200 with an error object.
    if (parsed.error !== undefined && parsed.error !== null) {
      const detail = errorDetailFromJson(parsed);
      throw upstreamFailure(
        `provider ${name} failed: ${detail?.message ?? "unknown error"}`,
        undefined,
        detail?.code,
      );
    }
    return parsed;
  }

  async function readCompletion(
    response: UpstreamResponse,
    signal: AbortSignal,
  ): Promise<ChatChunk> {
    const parsed = (await readJson(response, signal)) as Record<string, unknown>;
    if (!Array.isArray(parsed.choices)) {
      throw upstreamFailure(`answer from provider ${name} was malformed: no choices`);
    }
    return fromOpenAICompletion(parsed as unknown as OpenAIChatCompletion, name);
  }

  /** Builds the upstream request and sends it; resolves with the answer's head (see takeParams). */
  function send(call: ChatCall): Promise<UpstreamResponse> {
    const params = takeParams(call);
    refuseAnthropicOnly(params, refusal({ provider: name, model: call.model }, config.type));
    const body = toOpenAIRequest(params, call.model, requestOptions);
    // Only what a refusal's words need: the params (the prompt) are let go once sent.
    const clientApi = params.clientApi;
    return post("chat", routes.chat(call.model), body, call.signal, {
      model: call.model,
      headers: traceHeaders(call.context),
    }).catch((err: unknown) => {
      throw err instanceof Failure ? inClientTerms(err, clientApi) : err;
    });
  }

  function chat(call: ChatCall): AsyncIterableIterator<ChatChunk> {
    const streamed = call.params?.stream === true;
    return new AnswerStream(name, secrets, call, () =>
      send(call).then((response): OpenedAnswer => {
        // A server that ignores `stream: true` answers with one JSON body; that is still an answer.
        const contentType = String(response.headers["content-type"] ?? "");
        if (!streamed || contentType.includes("application/json")) {
          return { response, whole: () => readCompletion(response, call.signal).then(oneChunk) };
        }
        return { response, events: new OpenAIEvents(createOpenAIStreamTranslator(name)) };
      }),
    );
  }

  /** The events of an OpenAI stream: chunks until `[DONE]`, which a complete answer ends with. */
  class OpenAIEvents implements StreamEvents {
    complete = false;

    constructor(private readonly translator: ReturnType<typeof createOpenAIStreamTranslator>) {}

    push(event: SseEvent): ChatChunk | undefined {
      if (event.data === "[DONE]") {
        this.complete = true;
        return undefined;
      }
      return translate(this.translator, event.data);
    }

    finish(): ChatChunk | undefined {
      // Without [DONE] the answer may be cut short; it must not pass for a complete one. The
      // body ended whole, though, and some servers (TGI, llama.cpp forks) never send [DONE]: an
      // answer whose every choice gave its finish reason is complete all the same.
      if (!this.complete && !this.translator.finished()) throw streamEndedEarly(name, secrets);
      return this.translator.end();
    }
  }

  /** One stream event's chunk, if it makes one; an error event is the upstream's failure. */
  function translate(
    translator: ReturnType<typeof createOpenAIStreamTranslator>,
    data: string,
  ): ChatChunk | undefined {
    const parsed = parseStreamEvent(name, secrets, data);
    if (parsed.error !== undefined && parsed.error !== null) {
      const detail = errorDetailFromJson(parsed);
      throw upstreamFailure(
        `stream from provider ${name} failed: ${detail?.message ?? "unknown error"}`,
        undefined,
        detail?.code,
      );
    }
    return translator.push(parsed as unknown as OpenAIChatChunk);
  }

  async function embed(call: EmbedCall): Promise<EmbedResult> {
    const body = toOpenAIEmbeddingsRequest(call.params, call.model);
    const response = await post("embed", routes.embeddings(call.model), body, call.signal, {
      model: call.model,
      headers: traceHeaders(call.context),
    });
    const parsed = await readJson(response, call.signal);
    const reading = fromOpenAIEmbeddings(parsed, embedInputCount(call.params), name);
    if (!reading.ok) {
      throw upstreamFailure(`answer from provider ${name} was malformed: ${reading.problem}`);
    }
    if (reading.result.upstreamModel === "") reading.result.upstreamModel = call.model;
    return reading.result;
  }

  async function probe(model: string, signal: AbortSignal): Promise<void> {
    const mode = config.probe ?? "models";
    if (mode === "none") return;
    if (mode === "models") {
      const response = await http.get(routes.models, signal);
      await response.body.dump();
      return;
    }
    const response = await post(
      "probe",
      routes.chat(model),
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
    embed,
    probe,
    close: () => http.close(),
  };
}

function oneChunk(chunk: ChatChunk): ChatChunk[] {
  return [chunk];
}
