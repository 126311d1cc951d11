import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import {
  type ChatChunk,
  type ChatParams,
  type EmbedParams,
  type EmbedResult,
  RequestContextSchema,
  type Usage,
} from "../../gen/switchyard/chat/v1/chat_pb.js";
import type { RouterService, RoutingHints } from "../../gen/switchyard/router/v1/router_pb.js";
import type { Config } from "../lib/config/types.js";
import { Failure, modelNotFound } from "../lib/errors.js";
import type { Logger } from "../lib/logger.js";
import { counter, gauge, histogram } from "../lib/metrics.js";
import { authorizeModel, type Caller } from "./auth.js";

export interface IngressDeps {
  config: Config;
  router: Client<typeof RouterService>;
  logger: Logger;
  registry: Registry;
}

export type ClientApi = "openai" | "anthropic" | "grpc";

/** The ingress's request metrics, created once per service. */
export function createIngressMetrics(registry: Registry) {
  return {
    requests: counter(registry, "switchyard_requests_total", "Requests answered, by outcome", [
      "api",
      "model",
      "provider",
      "status_class",
    ]),
    duration: histogram(
      registry,
      "switchyard_request_duration_seconds",
      "Time from request to last byte",
      ["api", "model", "stream"],
    ),
    firstToken: histogram(
      registry,
      "switchyard_time_to_first_token_seconds",
      "Time from request to the first chunk of the answer",
      ["api", "model"],
    ),
    tokens: counter(registry, "switchyard_tokens_total", "Tokens reported by upstreams", [
      "model",
      "provider",
      "direction",
    ]),
    attempts: histogram(
      registry,
      "switchyard_request_attempts",
      "Attempts the router needed per answered request",
      ["model"],
      [1, 2, 3, 4, 5, 8],
    ),
    inflight: gauge(
      registry,
      "switchyard_inflight_requests",
      "Requests and open streams in flight",
      ["api"],
    ),
    truncated: counter(
      registry,
      "switchyard_truncated_streams_total",
      "Streams that failed after their first token",
      ["model", "provider"],
    ),
  };
}
export type IngressMetrics = ReturnType<typeof createIngressMetrics>;

/**
 * One chat request as the ingress sees it, whatever the client API: it opens the router stream,
 * holds back until the first chunk (so failures before it still get a proper status), then hands
 * out the rest, and writes the request's log line and metrics once at the end.
 */
export class ChatExchange {
  private readonly started = performance.now();
  private firstTokenMs: number | undefined;
  private usage: Usage | undefined;
  private provider = "";
  private upstreamModel = "";
  private attempts = 0;
  private stream: AsyncIterator<{ chunk?: ChatChunk | undefined }> | undefined;
  private finished = false;
  /** Per-request routing overrides (pinned provider, fallbacks) the client sent. */
  hints: RoutingHints | undefined;
  /** The client's own deadline, when shorter than `routing.timeouts.total_ms`. */
  deadlineMs: number | undefined;

  constructor(
    private readonly deps: IngressDeps,
    private readonly metrics: IngressMetrics,
    readonly api: ClientApi,
    readonly requestId: string,
    readonly caller: Caller,
    readonly params: ChatParams,
    private readonly traceparent = "",
  ) {
    metrics.inflight.inc({ api });
  }

  /** Sends the request to the router and waits for the first chunk. Throws a Failure. */
  async open(signal: AbortSignal): Promise<ChatChunk> {
    const { config } = this.deps;
    if (!config.models[this.params.model]) {
      throw modelNotFound(this.params.model);
    }
    authorizeModel(this.caller, this.params.model);
    const stream = this.deps.router.chat(
      {
        context: create(RequestContextSchema, {
          requestId: this.requestId,
          tenant: this.caller.tenant,
          traceparent: this.traceparent,
        }),
        params: this.params,
        hints: this.hints,
      },
      {
        signal,
        timeoutMs: Math.min(config.routing.timeouts.total_ms, this.deadlineMs ?? Infinity),
      },
    );
    this.stream = stream[Symbol.asyncIterator]();
    const first = await this.next();
    if (!first) {
      throw new Failure({
        status: 502,
        kind: "upstream_error",
        message: "the upstream answer was empty",
      });
    }
    return first;
  }

  /** The next chunk, or undefined at the clean end. Throws a Failure. */
  async next(): Promise<ChatChunk | undefined> {
    if (!this.stream) throw new Error("open() first");
    let r: IteratorResult<{ chunk?: ChatChunk | undefined }>;
    try {
      r = await this.stream.next();
    } catch (err) {
      throw Failure.from(err);
    }
    if (r.done) return undefined;
    const chunk = r.value.chunk;
    if (!chunk) return this.next();
    if (chunk.start) {
      this.firstTokenMs ??= performance.now() - this.started;
      this.provider = chunk.start.provider;
      this.upstreamModel = chunk.start.upstreamModel;
      this.attempts = chunk.start.attempts;
    }
    if (chunk.usage) this.usage = chunk.usage;
    return chunk;
  }

  /** Response headers that say who answered (SPEC §4). */
  routeHeaders(): Record<string, string> {
    return {
      "x-switchyard-provider": this.provider,
      "x-switchyard-model": this.upstreamModel,
      "x-switchyard-attempts": String(this.attempts),
    };
  }

  /**
   * Records the outcome once. `truncated` marks a stream that failed after its first token.
   * Client mistakes are logged without a stack; the log line never holds keys or prompts.
   */
  finish(status: number, opts: { error?: Failure; truncated?: boolean } = {}): void {
    if (this.finished) return;
    this.finished = true;
    const { metrics, api, params } = this;
    const seconds = (performance.now() - this.started) / 1000;
    const model = this.deps.config.models[params.model] ? params.model : "(unknown)";
    metrics.inflight.dec({ api });
    metrics.requests.inc({
      api,
      model,
      provider: this.provider,
      status_class: `${Math.floor(status / 100)}xx`,
    });
    metrics.duration.observe({ api, model, stream: String(params.stream) }, seconds);
    if (this.firstTokenMs !== undefined) {
      metrics.firstToken.observe({ api, model }, this.firstTokenMs / 1000);
      metrics.attempts.observe({ model }, this.attempts);
    }
    if (this.usage) {
      metrics.tokens.inc(
        { model, provider: this.provider, direction: "input" },
        this.usage.promptTokens,
      );
      metrics.tokens.inc(
        { model, provider: this.provider, direction: "output" },
        this.usage.completionTokens,
      );
    }
    if (opts.truncated) metrics.truncated.inc({ model, provider: this.provider });
    const line = {
      request_id: this.requestId,
      tenant: this.caller.tenant || undefined,
      api,
      model: params.model,
      provider: this.provider || undefined,
      upstream_model: this.upstreamModel || undefined,
      attempts: this.attempts,
      stream: params.stream,
      status,
      tokens_in: this.usage?.promptTokens,
      tokens_out: this.usage?.completionTokens,
      first_token_ms: this.firstTokenMs === undefined ? undefined : round(this.firstTokenMs),
      latency_ms: round(seconds * 1000),
      truncated: opts.truncated || undefined,
      error: opts.error ? { kind: opts.error.kind, message: opts.error.message } : undefined,
    };
    if (status >= 500 || opts.truncated) this.deps.logger.warn(line, "request failed");
    else this.deps.logger.info(line, "request");
  }
}

/**
 * One embeddings request, whatever the client API: routes it and writes its log line and metrics.
 * Throws a Failure.
 */
export async function runEmbed(
  deps: IngressDeps,
  metrics: IngressMetrics,
  api: ClientApi,
  requestId: string,
  caller: Caller,
  params: EmbedParams,
  signal: AbortSignal,
): Promise<EmbedResult> {
  const started = performance.now();
  const model = deps.config.models[params.model] ? params.model : "(unknown)";
  let status = 200;
  let result: EmbedResult | undefined;
  let error: Failure | undefined;
  metrics.inflight.inc({ api });
  try {
    if (model === "(unknown)") throw modelNotFound(params.model);
    authorizeModel(caller, params.model);
    const res = await deps.router.embed(
      {
        context: create(RequestContextSchema, { requestId, tenant: caller.tenant }),
        params,
      },
      { signal, timeoutMs: deps.config.routing.timeouts.total_ms },
    );
    if (!res.result)
      throw new Failure({ status: 502, kind: "upstream_error", message: "empty answer" });
    result = res.result;
    return result;
  } catch (err) {
    error = Failure.from(err);
    status = signal.aborted ? 499 : error.status;
    throw error;
  } finally {
    const seconds = (performance.now() - started) / 1000;
    metrics.inflight.dec({ api });
    metrics.requests.inc({
      api,
      model,
      provider: result?.provider ?? "",
      status_class: `${Math.floor(status / 100)}xx`,
    });
    metrics.duration.observe({ api, model, stream: "false" }, seconds);
    if (result?.usage) {
      metrics.tokens.inc(
        { model, provider: result.provider, direction: "input" },
        result.usage.promptTokens,
      );
    }
    const line = {
      request_id: requestId,
      tenant: caller.tenant || undefined,
      api,
      endpoint: "embeddings",
      model: params.model,
      provider: result?.provider,
      upstream_model: result?.upstreamModel,
      attempts: result?.attempts,
      inputs: params.inputs.length,
      status,
      tokens_in: result?.usage?.promptTokens,
      latency_ms: round(seconds * 1000),
      error: error ? { kind: error.kind, message: error.message } : undefined,
    };
    if (status >= 500) deps.logger.warn(line, "request failed");
    else deps.logger.info(line, "request");
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
