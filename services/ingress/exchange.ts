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
import {
  answerCost,
  estimateChat,
  estimateEmbed,
  tokensOfText,
  worstCaseCost,
} from "./limits/estimate.js";
import { rateLimitHeaders } from "./limits/headers.js";
import type { Clock, Limiter, Reservation } from "./limits/index.js";

export interface IngressDeps {
  config: Config;
  router: Client<typeof RouterService>;
  logger: Logger;
  registry: Registry;
  /** Tenant limits: admit before routing, settle with the real usage at the end. */
  limiter: Limiter;
  clock: Clock;
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
  private reservation: Reservation | undefined;
  private estimate = { prompt: 0, completion: 0 };
  /** Characters of answer handed out, for the usage of a stream cut before its usage came. */
  private answerChars = 0;
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
    if (this.caller.tenant) {
      this.estimate = estimateChat(this.params);
      this.reservation = await this.deps.limiter.admit(this.caller.tenant, this.caller.keyHash, {
        tokens: this.estimate.prompt + this.estimate.completion,
        usd: worstCaseCost(config, this.params.model, this.estimate),
      });
    }
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
    for (const c of chunk.choices) {
      this.answerChars += (c.content?.length ?? 0) + (c.reasoning?.length ?? 0);
      this.answerChars += c.refusal?.length ?? 0;
      for (const t of c.toolCalls) this.answerChars += t.arguments?.length ?? 0;
    }
    return chunk;
  }

  /** Response headers that say who answered (SPEC §4), and what is left of the caller's limits. */
  routeHeaders(): Record<string, string> {
    return {
      "x-switchyard-provider": this.provider,
      "x-switchyard-model": this.upstreamModel,
      "x-switchyard-attempts": String(this.attempts),
      ...(this.reservation
        ? rateLimitHeaders(this.reservation.snapshot, this.api, this.deps.clock())
        : {}),
    };
  }

  /**
   * What the request used: the upstream's final usage when the answer ended cleanly; for one cut
   * short, the prompt (reported or estimated) and the answer handed out so far; nothing when no
   * answer began.
   */
  private usedTokens(complete: boolean): { prompt: number; completion: number; cached: number } {
    const u = this.usage;
    if (complete && u && (u.promptTokens > 0 || u.completionTokens > 0)) {
      return {
        prompt: u.promptTokens,
        completion: u.completionTokens,
        cached: u.cachedPromptTokens ?? 0,
      };
    }
    if (this.firstTokenMs === undefined) return { prompt: 0, completion: 0, cached: 0 };
    return {
      prompt: u?.promptTokens || this.estimate.prompt,
      completion: Math.max(u?.completionTokens ?? 0, tokensOfText(this.answerChars)),
      cached: u?.cachedPromptTokens ?? 0,
    };
  }

  private settle(status: number, truncated: boolean): void {
    const reservation = this.reservation;
    if (!reservation) return;
    const used = this.usedTokens(status === 200 && !truncated);
    const cost = answerCost(
      this.deps.config,
      this.params.model,
      { provider: this.provider, upstreamModel: this.upstreamModel },
      { prompt: used.prompt, completion: used.completion, cachedPrompt: used.cached },
    );
    void this.deps.limiter.settle(reservation, { tokens: used.prompt + used.completion }, cost);
  }

  /**
   * Records the outcome once. `truncated` marks a stream that failed after its first token.
   * Client mistakes are logged without a stack; the log line never holds keys or prompts.
   */
  finish(status: number, opts: { error?: Failure; truncated?: boolean } = {}): void {
    if (this.finished) return;
    this.finished = true;
    this.settle(status, opts.truncated === true);
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

export interface EmbedAnswer {
  result: EmbedResult;
  /** What is left of the caller's limits, for the response headers. */
  limitHeaders: Record<string, string>;
}

/**
 * One embeddings request, whatever the client API: routes it within the caller's limits and
 * writes its log line and metrics. Throws a Failure.
 */
export async function runEmbed(
  deps: IngressDeps,
  metrics: IngressMetrics,
  api: ClientApi,
  requestId: string,
  caller: Caller,
  params: EmbedParams,
  signal: AbortSignal,
): Promise<EmbedAnswer> {
  const started = performance.now();
  const model = deps.config.models[params.model] ? params.model : "(unknown)";
  let status = 200;
  let result: EmbedResult | undefined;
  let error: Failure | undefined;
  let reservation: Reservation | undefined;
  const estimate = estimateEmbed(params);
  metrics.inflight.inc({ api });
  try {
    if (model === "(unknown)") throw modelNotFound(params.model);
    authorizeModel(caller, params.model);
    if (caller.tenant) {
      reservation = await deps.limiter.admit(caller.tenant, caller.keyHash, {
        tokens: estimate,
        usd: worstCaseCost(deps.config, params.model, { prompt: estimate, completion: 0 }),
      });
    }
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
    const limitHeaders = reservation
      ? rateLimitHeaders(reservation.snapshot, api, deps.clock())
      : {};
    return { result, limitHeaders };
  } catch (err) {
    error = Failure.from(err);
    status = signal.aborted ? 499 : error.status;
    throw error;
  } finally {
    if (reservation) {
      const prompt = result ? result.usage?.promptTokens || estimate : 0;
      const cost = result
        ? answerCost(deps.config, params.model, result, { prompt, completion: 0 })
        : 0;
      void deps.limiter.settle(reservation, { tokens: prompt }, cost);
    }
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
