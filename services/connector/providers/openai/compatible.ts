// The shared base of every upstream that speaks OpenAI's Chat Completions and Embeddings wire
// format (`type: openai` and its many compatible servers, `type: azure-openai`). A vendor
// supplies where requests go, how it authenticates and its dialect of the request; the
// translations, the stream handling and the failure mapping are shared.

import type { ChatChunk, EmbedResult } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import type { ProviderConfig } from "../../../lib/config/types.js";
import { Failure } from "../../../lib/errors.js";
import type { OpenAIChatChunk, OpenAIChatCompletion } from "../../../lib/wire/openai.js";
import { BodyReader } from "../body-reader.js";
import {
  type ChatCall,
  type EmbedCall,
  type Provider,
  ReadBatch,
  takeParams,
} from "../provider.js";
import { SseParser } from "../sse.js";
import {
  createUpstreamHttp,
  drainBody,
  errorCode,
  errorDetailFromJson,
  failureFromError,
  malformedAnswer,
  parseStreamEvent,
  type RequestInfo,
  readJsonAnswer,
  traceHeaders,
  type UpstreamResponse,
} from "../upstream-http.js";
import { fromOpenAIEmbeddings, toOpenAIEmbeddingsRequest } from "./embeddings.js";
import { fromOpenAICompletion, isRecord } from "./from-response.js";
import { createOpenAIStreamTranslator } from "./from-stream.js";
import { type ToRequestOptions, toOpenAIRequest } from "./to-request.js";

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

/** How long the rest of a body may take to arrive after [DONE] before its connection is dropped. */
const DRAIN_AFTER_DONE_MS = 2000;
const DRAIN_LIMIT_BYTES = 64 * 1024;

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
    const body = toOpenAIRequest(takeParams(call), call.model, requestOptions);
    return post("chat", routes.chat(call.model), body, call.signal, {
      model: call.model,
      headers: traceHeaders(call.context),
    });
  }

  /**
   * One chat answer, read, parsed and translated as the caller asks for each chunk. An iterator
   * object rather than an async generator: an open stream waits here for every token, and a
   * suspended generator keeps its frame (the last event and chunk among it) and, under it, the
   * body's own async iterator, for as long as the stream lasts.
   */
  class ChatStream implements AsyncIterableIterator<ChatChunk> {
    readonly #call: ChatCall;
    /** Read before send() takes the call's parameters. */
    readonly #streamed: boolean;
    readonly #batch: ReadBatch;
    readonly #parser = new SseParser();
    #translator: ReturnType<typeof createOpenAIStreamTranslator> | undefined;
    #response: UpstreamResponse | undefined;
    #reader: BodyReader | undefined;
    /** Chunks of the last read not handed out yet. */
    readonly #ready: ChatChunk[] = [];
    /** The stream said [DONE]: the answer is complete. */
    #done = false;
    /** Nothing more is read: the answer ended, failed, or its reader stopped. */
    #over = false;
    /** A failure that comes after the chunks before it in the same read. */
    #failure: unknown;

    constructor(call: ChatCall) {
      this.#call = call;
      this.#streamed = call.params?.stream === true;
      this.#batch = new ReadBatch(call.merge === true);
    }

    [Symbol.asyncIterator](): this {
      return this;
    }

    next(): Promise<IteratorResult<ChatChunk>> {
      const ready = this.#ready.shift();
      if (ready !== undefined) return Promise.resolve({ done: false, value: ready });
      const failure = this.#failure;
      if (failure !== undefined) {
        this.#failure = undefined;
        return Promise.reject(failure);
      }
      if (this.#over) return Promise.resolve(DONE);
      const reader = this.#reader;
      if (reader === undefined) return send(this.#call).then(this.#onResponse);
      return reader.read().then(this.#onBytes, this.#onReadError);
    }

    /** The caller stopped reading: the upstream request is cancelled (or its body drained). */
    async return(): Promise<IteratorResult<ChatChunk>> {
      this.#ready.length = 0;
      this.#failure = undefined;
      this.#finish();
      return DONE;
    }

    readonly #onResponse = (
      response: UpstreamResponse,
    ): IteratorResult<ChatChunk> | Promise<IteratorResult<ChatChunk>> => {
      this.#response = response;
      if (this.#over) {
        // Stopped while the request was under way.
        this.#finish();
        return DONE;
      }
      // A server that ignores `stream: true` answers with one JSON body; that is still an answer.
      const contentType = String(response.headers["content-type"] ?? "");
      if (!this.#streamed || contentType.includes("application/json")) {
        this.#over = true;
        return readCompletion(response, this.#call.signal).then(wholeAnswer, (err: unknown) => {
          this.#finish();
          throw err;
        });
      }
      this.#translator = createOpenAIStreamTranslator(name);
      this.#reader = new BodyReader(response.body);
      return this.next();
    };

    /** One network read: its events become chunks (merged, for a caller that merges them). */
    readonly #onBytes = (
      bytes: Buffer | undefined,
    ): IteratorResult<ChatChunk> | Promise<IteratorResult<ChatChunk>> => {
      if (this.#over) return DONE;
      const translator = this.#translator as ReturnType<typeof createOpenAIStreamTranslator>;
      try {
        // Without [DONE] the answer may be cut short; it must not pass for a complete one.
        if (bytes === undefined) throw upstreamFailure(`stream from provider ${name} ended early`);
        for (const event of this.#parser.push(bytes)) {
          if (event.data === "[DONE]") {
            this.#done = true;
            break;
          }
          const chunk = translate(translator, event.data);
          const now = chunk && this.#batch.add(chunk);
          if (now !== undefined) this.#ready.push(now);
        }
        const kept = this.#batch.take();
        if (kept !== undefined) this.#ready.push(kept);
        if (this.#done) {
          const last = translator.end();
          if (last !== undefined) this.#ready.push(last);
          this.#finish();
        }
      } catch (err) {
        this.#finish();
        if (this.#ready.length === 0) throw err;
        this.#failure = err;
      }
      return this.next();
    };

    readonly #onReadError = (err: unknown): never | IteratorResult<ChatChunk> => {
      if (this.#over) return DONE;
      this.#finish();
      if (this.#call.signal.aborted) throw failureFromError(name, err, this.#call.signal);
      throw upstreamFailure(`stream from provider ${name} ended early: ${errorCode(err)}`, err);
    };

    /** Leaves the body: drained after [DONE], so its connection is reused; destroyed otherwise. */
    #finish(): void {
      this.#over = true;
      this.#reader?.release();
      this.#reader = undefined;
      const body = this.#response?.body;
      this.#response = undefined;
      if (body === undefined) return;
      if (this.#done) {
        // The end of the HTTP body may trail [DONE] by a packet; reading it keeps the
        // connection alive for the next request, where destroying would close it.
        drainBody(body, DRAIN_LIMIT_BYTES, DRAIN_AFTER_DONE_MS);
      } else if (!body.readableEnded) {
        // The caller gave up early (or the stream failed): stop the upstream generating.
        // Nobody reads the body any more, so its abort error has no one to tell.
        body.on("error", () => {}).destroy();
      }
    }
  }

  function chat(call: ChatCall): AsyncIterableIterator<ChatChunk> {
    return new ChatStream(call);
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
    const reading = fromOpenAIEmbeddings(parsed, call.params.inputs.length, name);
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

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

function wholeAnswer(chunk: ChatChunk): IteratorResult<ChatChunk> {
  return { done: false, value: chunk };
}
