import { type Client, Code, ConnectError } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import {
  type ChatChunk,
  type ChatParams,
  type ChatStart,
  type EmbedParams,
  type EmbedResult,
  RequestContextSchema,
  Role,
  type TokenCount,
  UpstreamErrorSchema,
  type Usage,
  UsageSchema,
} from "../../gen/switchyard/chat/v1/chat_pb.js";
import type { RouterService, RoutingHints } from "../../gen/switchyard/router/v1/router_pb.js";
import { requestContext, routerChatRequest } from "../lib/chat/messages.js";
import type { Config, Price } from "../lib/config/types.js";
import { embedInputCount } from "../lib/embed-inputs.js";
import {
  Failure,
  LIMITS_UNAVAILABLE,
  modelNotFound,
  SHUTTING_DOWN,
  shuttingDown,
} from "../lib/errors.js";
import { makeMessage } from "../lib/hop/codec.js";
import type { Logger } from "../lib/logger.js";
import {
  counter,
  FastHistogram,
  gauge,
  type HistogramSeries,
  histogram,
  OVERHEAD_BUCKETS_SECONDS,
} from "../lib/metrics.js";
import { costUsd, formatUsd, roundUsd, type TokenUsage } from "../lib/pricing.js";
import { formatTraceparent, type TraceContext } from "../lib/trace.js";
import { authorizeModel, type Caller } from "./auth.js";
import {
  answerPrice,
  estimateChat,
  estimateEmbed,
  type Reach,
  tokensOfText,
  worstCaseCost,
} from "./limits/estimate.js";
import { rateLimitHeaders } from "./limits/headers.js";
import type { Clock, Limiter, Reservation } from "./limits/index.js";

export interface IngressDeps {
  config: Config;
  router: Client<typeof RouterService>;
  logger: Logger;
  /** The one line per request (requestLineLogger(logger)). */
  requestLog: Logger;
  registry: Registry;
  /** Tenant limits: admit before routing, settle with the real usage at the end. */
  limiter: Limiter;
  clock: Clock;
}

export type ClientApi = "openai" | "anthropic" | "responses" | "grpc";
/**
 * The `api` label of the ingress's request metrics: the client APIs, and Anthropic's token counts
 * apart from its messages (Claude Code sends one every turn: counted with the messages, they would
 * skew the request rate, error share and latency of the real answers).
 */
export type MetricApi = ClientApi | "count_tokens";
const METRIC_APIS: readonly MetricApi[] = [
  "openai",
  "anthropic",
  "responses",
  "grpc",
  "count_tokens",
];
/** The longest an answer's end waits for its settlement in Redis (see settleBeforeEnd). */
const SETTLE_WAIT_MS = 250;

/** The ingress's request metrics, created once per service. */
export function createIngressMetrics(registry: Registry) {
  const inflight = gauge(
    registry,
    "switchyard_inflight_requests",
    "Requests in flight at the ingress (open streams included)",
    ["api"],
  );
  const openStreams = gauge(
    registry,
    "switchyard_open_streams",
    "Streamed answers being sent to clients right now",
    ["api"],
  );
  const overhead = histogram(
    registry,
    "switchyard_gateway_overhead_seconds",
    "Time the gateway added before an answer could be released: the ingress's time to the first chunk minus the answering upstream's (requests answered on their first attempt)",
    ["api"],
    OVERHEAD_BUCKETS_SECONDS,
  );
  // Label children made once, so a request's gauges cost no label objects.
  const byApi = <T>(make: (api: MetricApi) => T) =>
    Object.fromEntries(METRIC_APIS.map((api) => [api, make(api)])) as Record<MetricApi, T>;
  return {
    requests: counter(registry, "switchyard_requests_total", "Requests answered, by outcome", [
      "api",
      "model",
      "provider",
      "tenant",
      "status_class",
      "outcome",
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
      "Time from request to the first chunk of a streamed answer",
      ["api", "model", "provider"],
    ),
    interToken: new FastHistogram(
      registry,
      "switchyard_inter_token_seconds",
      "Gaps between consecutive token chunks of a streamed answer, as the ingress receives them",
      ["model", "provider"],
    ),
    tokens: counter(
      registry,
      "switchyard_tokens_total",
      "Tokens charged per request (input includes cached_input): the upstream's usage, or for an answer cut short the prompt and the answer so far",
      ["model", "provider", "tenant", "direction"],
    ),
    cost: counter(
      registry,
      "switchyard_cost_usd_total",
      "Spend in USD, priced from each answering target's price (or the built-in table)",
      ["tenant", "model"],
    ),
    attempts: histogram(
      registry,
      "switchyard_request_attempts",
      "Attempts the router needed per answered request",
      ["model"],
      [1, 2, 3, 4, 5, 8],
    ),
    truncated: counter(
      registry,
      "switchyard_truncated_streams_total",
      "Streams that failed after their first token",
      ["model", "provider"],
    ),
    inflight: byApi((api) => inflight.labels({ api })),
    openStreams: byApi((api) => openStreams.labels({ api })),
    overhead: byApi((api) => overhead.labels({ api })),
    /** The same requests as `inflight`, counted for a shutdown to wait on. */
    active: new ActiveRequests(),
  };
}
export type IngressMetrics = ReturnType<typeof createIngressMetrics>;

/**
 * How a request in flight is cancelled: REST's CallAbort, or a GatewayService call's
 * HandlerContext (whose abort() aborts its signal).
 */
export interface Cancellable {
  readonly signal: AbortSignal;
  abort(reason?: unknown): void;
}

/** The reason ActiveRequests.cancelAll aborts a request with. */
const CUT_BY_SHUTDOWN = new Error("the gateway is shutting down");

/**
 * The failure a request whose call was aborted ends with, if a shutdown's cut aborted it:
 * shuttingDown, which its client is answered. Undefined when it was not: its client left.
 */
export function cutFailure(signal: AbortSignal, attempts: number): Failure | undefined {
  return signal.reason === CUT_BY_SHUTDOWN ? shuttingDown(attempts) : undefined;
}

/**
 * Requests between their start and their log line. When a shutdown's drain time runs out, those
 * still open are answered (503 / UNAVAILABLE: the gateway is shutting down) before their
 * connections are cut: by the router when it is in this process (it knows how many attempts
 * each made), else here (cancelAll), and the process waits for their lines before it exits.
 * A request whose connection is cut before that ends as a cancelled one would (status 499,
 * outcome "shutdown").
 */
export class ActiveRequests {
  #count = 0;
  #cut = false;
  #cancelled = false;
  /** The requests cancelAll can reach: a Set entry each, nothing allocated for them. */
  readonly #calls = new Set<Cancellable>();
  #onIdle: Array<() => void> = [];

  begin(): void {
    this.#count++;
  }

  end(): void {
    if (--this.#count > 0) return;
    const waiting = this.#onIdle;
    this.#onIdle = [];
    for (const resolve of waiting) resolve();
  }

  /** A request's call, which cancelAll aborts if it is still open then. */
  track(call: Cancellable): void {
    if (this.#cancelled) call.abort(CUT_BY_SHUTDOWN);
    else this.#calls.add(call);
  }

  untrack(call: Cancellable): void {
    this.#calls.delete(call);
  }

  /** Whether the requests still open are being cut by a shutdown. */
  get cut(): boolean {
    return this.#cut;
  }

  /** The shutdown's drain time ran out: what ends now was cut. */
  cutting(): void {
    this.#cut = true;
  }

  /** Aborts every request still open; each answers its client with shuttingDown (cutFailure). */
  cancelAll(): void {
    this.#cut = true;
    this.#cancelled = true;
    for (const call of this.#calls) call.abort(CUT_BY_SHUTDOWN);
    this.#calls.clear();
  }

  /** Resolves once no request is open, or after `ms`. */
  settled(ms: number): Promise<void> {
    if (this.#count === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#onIdle = this.#onIdle.filter((f) => f !== done);
        resolve();
      }, ms);
      this.#onIdle.push(done);
    });
  }
}

/**
 * One chat request as the ingress sees it, whatever the client API: it opens the router stream,
 * holds back until the first chunk (so failures before it still get a proper status), then hands
 * out the rest, prices the usage, and writes the request's log line and metrics once at the end.
 */
/** What answering a chat request needs of it, once the request itself has been sent on. */
export type AnswerParams = Pick<ChatParams, "model" | "stream" | "stop" | "includeUsage">;

export class ChatExchange {
  /**
   * The request as the answer needs it. The request itself (`#request`, with the prompt: tens of
   * KB, more with long contexts) is let go once open() has sent it to the router, rather than
   * kept for the minutes a stream can last.
   */
  readonly params: AnswerParams;
  #request: ChatParams | undefined;
  /** The prompt for the request's log line, kept only for a tenant that logs prompts. */
  #prompt: ReturnType<typeof promptOf> | undefined;
  private readonly started = performance.now();
  private firstTokenMs: number | undefined;
  /** The answering upstream's share of `firstTokenMs` (ChatStart.upstream_ms). */
  private upstreamMs: number | undefined;
  private usage: Usage | undefined;
  private provider = "";
  private upstreamModel = "";
  private attempts = 0;
  /** The answering target's price, known from the first chunk; undefined = none known. */
  private price: Price | undefined;
  private stream: AsyncIterator<{ chunk?: ChatChunk | undefined }> | undefined;
  /** The call that cancels the request, tracked for a shutdown's cut until finish(). */
  private call: Cancellable | undefined;
  private finished = false;
  private streaming = false;
  private gaps: HistogramSeries | undefined;
  private lastTokenAt = 0;
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
    params: ChatParams,
    /** The ingress's span of the request's trace (see rest.ts / gateway-service.ts). */
    readonly trace: TraceContext,
  ) {
    const { model, stream, stop, includeUsage } = params;
    this.params = { model, stream, stop, includeUsage };
    this.#request = params;
    const tenant = caller.tenant;
    if (tenant && deps.config.tenants?.[tenant]?.log_prompts) this.#prompt = promptOf(params);
    metrics.inflight[api].inc();
    metrics.active.begin();
  }

  /** The fallbacks the client named in place of the configured ones, if it did. */
  private get clientFallbacks(): readonly string[] | undefined {
    return this.hints?.hasFallbacks ? this.hints.fallbacks : undefined;
  }

  /** Which other models may answer, for pricing: the client's fallbacks, within the allow-list. */
  private get reach(): Reach {
    return { fallbacks: this.clientFallbacks, allowed: this.caller.models };
  }

  /**
   * Sends the request to the router and waits for the first chunk. Throws a Failure. `call`
   * cancels the request (its client left, or a shutdown cut it: see failureOf()).
   */
  async open(call: Cancellable): Promise<ChatChunk> {
    const { config } = this.deps;
    const request = this.#request;
    if (!request) throw new Error("open() once");
    this.call = call;
    if (!this.finished) this.metrics.active.track(call);
    if (!config.models[request.model]) {
      throw modelNotFound(request.model);
    }
    authorizeModel(this.caller, request.model);
    // Fallbacks the client names are models it asks for too: the same allow-list holds, or a
    // key limited to a cheap model could reach any other through them.
    for (const fallback of this.clientFallbacks ?? []) {
      if (!config.models[fallback]) throw modelNotFound(fallback, "fallbacks");
      authorizeModel(this.caller, fallback, "fallbacks");
    }
    // An answer whose upstream did not report usage (a stream cut short, a server that predates
    // stream_options) is counted and charged its prompt as estimated here, so every request
    // needs the estimate, not only a tenant's for admission. It is a pass over the prompt's
    // lengths, and the prompt is let go below.
    this.estimate = estimateChat(request);
    if (this.caller.tenant) {
      const reservation = await this.deps.limiter.admit(this.caller.tenant, this.caller.keyHash, {
        tokens: this.estimate.prompt + this.estimate.completion,
        usd: worstCaseCost(config, request.model, this.estimate, this.reach),
      });
      if (this.finished) {
        // The request ended while it waited to be admitted (a gRPC client that cancelled, whose
        // finish() ran on the abort): nothing will settle this admission later, and its
        // concurrency slot would stay taken until the lease ran out.
        void this.deps.limiter.settle(reservation, { tokens: 0 }, 0);
        throw new Failure({ status: 499, kind: "cancelled", message: "client cancelled" });
      }
      this.reservation = reservation;
    }
    this.#request = undefined;
    const stream = this.deps.router.chat(
      routerChatRequest(
        requestContext(this.requestId, this.caller.tenant, formatTraceparent(this.trace)),
        request,
        this.hints,
      ),
      {
        signal: call.signal,
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

  /**
   * The next chunk, or undefined at the clean end; rejects with a Failure. A promise chained on
   * the router's, not an async method: a held stream waits here for minutes, and a suspended
   * async frame would cost several times what the pending reaction does.
   */
  next(): Promise<ChatChunk | undefined> {
    if (!this.stream) return Promise.reject(new Error("open() first"));
    let read: Promise<IteratorResult<{ chunk?: ChatChunk | undefined }>>;
    try {
      read = this.stream.next();
    } catch (err) {
      read = Promise.reject(err);
    }
    return read.then(this.#onMessage, routerFailureOf);
  }

  readonly #onMessage = (
    r: IteratorResult<{ chunk?: ChatChunk | undefined }>,
  ): ChatChunk | undefined | Promise<ChatChunk | undefined> => {
    if (r.done) return undefined;
    const chunk = r.value.chunk;
    if (!chunk) return this.next();
    if (chunk.start) this.begin(chunk.start);
    if (chunk.usage) {
      this.usage = chunk.usage;
      // The client sees what its usage cost wherever it sees the usage (SSE, body, gRPC).
      if (this.price) chunk.usage.costUsd = roundUsd(costUsd(this.price, usageTokens(chunk.usage)));
    }
    if (chunk.choices.length > 0) {
      if (this.gaps) {
        const now = performance.now();
        if (this.lastTokenAt > 0) this.gaps.observe((now - this.lastTokenAt) / 1000);
        this.lastTokenAt = now;
      }
      for (const c of chunk.choices) {
        this.answerChars += (c.content?.length ?? 0) + (c.reasoning?.length ?? 0);
        this.answerChars += c.refusal?.length ?? 0;
        for (const t of c.toolCalls) this.answerChars += t.arguments?.length ?? 0;
      }
    }
    return chunk;
  };

  /** The first chunk names who answers: everything priced and labelled by it starts here. */
  private begin(start: ChatStart): void {
    if (this.firstTokenMs !== undefined) return;
    this.firstTokenMs = performance.now() - this.started;
    this.upstreamMs = start.upstreamMs;
    this.provider = start.provider;
    this.upstreamModel = start.upstreamModel;
    this.attempts = start.attempts;
    this.price = answerPrice(this.deps.config, this.params.model, start, this.reach);
    if (this.params.stream) {
      this.streaming = true;
      this.metrics.openStreams[this.api].inc();
      this.gaps = this.metrics.interToken.seriesFor(this.params.model, this.provider);
    }
  }

  /**
   * Response headers that say who answered (SPEC §4), what is left of the caller's limits, and,
   * for a whole (non-streamed) answer, what it cost.
   */
  routeHeaders(): Record<string, string> {
    const headers: Record<string, string> = {
      "x-switchyard-provider": this.provider,
      "x-switchyard-model": this.upstreamModel,
      "x-switchyard-attempts": String(this.attempts),
      ...(this.reservation
        ? rateLimitHeaders(this.reservation.snapshot, this.api, this.deps.clock())
        : {}),
    };
    const cost = this.usage?.costUsd;
    if (!this.params.stream && cost !== undefined) headers[COST_HEADER] = formatUsd(cost);
    return headers;
  }

  /**
   * The failure that ends the request after `err`: the shutdown's, answered to the client, if a
   * shutdown's cut aborted its call (cutFailure), else the error's own.
   */
  failureOf(err: unknown): Failure {
    const signal = this.call?.signal;
    return (signal && cutFailure(signal, this.attempts)) || Failure.from(err);
  }

  /** Whether its client went away (its call aborted, and not by a shutdown): nothing to answer. */
  get clientLeft(): boolean {
    const signal = this.call?.signal;
    return signal?.aborted === true && signal.reason !== CUT_BY_SHUTDOWN;
  }

  /**
   * What the request used: the upstream's final usage when the answer ended cleanly; for one cut
   * short, the prompt (reported or estimated) and the answer handed out so far; nothing when no
   * answer began.
   */
  private usedTokens(complete: boolean): TokenUsage {
    const u = this.usage;
    if (complete && u && (u.promptTokens > 0 || u.completionTokens > 0)) return usageTokens(u);
    if (this.firstTokenMs === undefined) return { prompt: 0, completion: 0, cachedPrompt: 0 };
    return {
      prompt: u?.promptTokens || this.estimate.prompt,
      completion: Math.max(u?.completionTokens ?? 0, tokensOfText(this.answerChars)),
      cachedPrompt: u?.cachedPromptTokens ?? 0,
      cacheWritePrompt: u?.cacheWritePromptTokens ?? 0,
      cacheWrite1hPrompt: u?.cacheWrite1hPromptTokens ?? 0,
    };
  }

  /** What is left of the request's deadline (the client's, or `total_ms`), in ms. */
  remainingMs(): number {
    const total = Math.min(this.deps.config.routing.timeouts.total_ms, this.deadlineMs ?? Infinity);
    return Math.max(0, total - (performance.now() - this.started));
  }

  /**
   * Settles a complete answer's limits before its last bytes go to the client. With limits
   * shared through Redis the answer waits for the settlement (a round trip, at most
   * SETTLE_WAIT_MS): a client that sends its next request as soon as it has this answer, to
   * another replica, then finds its concurrency slot free. Sent without waiting, the settlement
   * can reach Redis after that request's admission (Redis reads its clients in turn, not in the
   * order they wrote), and a client at its limit is refused now and then. finish() does the rest.
   * Undefined when there is nothing to wait for.
   */
  settleBeforeEnd(): Promise<void> | undefined {
    const reservation = this.reservation;
    if (!reservation) return undefined;
    this.reservation = undefined;
    const used = this.usedTokens(true);
    const cost = this.price ? roundUsd(costUsd(this.price, used)) : 0;
    const settled = this.deps.limiter.settle(
      reservation,
      { tokens: used.prompt + used.completion },
      cost,
    );
    if (this.deps.limiter.backend !== "redis" || !reservation.counted) return undefined;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, SETTLE_WAIT_MS);
      void settled.finally(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * Records the outcome once: limits settled, metrics, and the request's log line. `truncated`
   * marks a stream that failed after its first token. Client mistakes are logged without a
   * stack; the log line never holds keys, and prompts only for a tenant with `log_prompts`.
   */
  finish(status: number, opts: { error?: Failure; truncated?: boolean } = {}): void {
    if (this.finished) return;
    this.finished = true;
    if (this.call) this.metrics.active.untrack(this.call);
    const { metrics, api, params, caller } = this;
    // A stream a shutdown cut ends with an error event, but no upstream failed it: like a
    // client that leaves, it is not counted truncated (its outcome is "shutdown").
    const truncated = opts.truncated === true && opts.error?.code !== SHUTTING_DOWN;
    // A request that failed before any answer made as many attempts as the router says it did.
    if (this.firstTokenMs === undefined && opts.error) this.attempts = opts.error.attempts;
    const used = this.usedTokens(status === 200 && !truncated);
    // One price, one computation: what the limiter is charged is what metrics and logs say.
    const cost = this.price ? roundUsd(costUsd(this.price, used)) : 0;
    const reservation = this.reservation;
    this.reservation = undefined;
    if (reservation) {
      void this.deps.limiter.settle(reservation, { tokens: used.prompt + used.completion }, cost);
    }
    const seconds = (performance.now() - this.started) / 1000;
    const model = this.deps.config.models[params.model] ? params.model : "(unknown)";
    const provider = this.provider;
    const tenant = caller.tenant;
    const outcome = outcomeOf(status, truncated, opts.error, metrics.active.cut);
    metrics.inflight[api].dec();
    if (this.streaming) metrics.openStreams[api].dec();
    metrics.requests.inc({
      api,
      model,
      provider,
      tenant,
      status_class: statusClass(status),
      outcome,
    });
    metrics.duration.observe({ api, model, stream: String(params.stream) }, seconds);
    let overheadMs: number | undefined;
    if (this.firstTokenMs !== undefined) {
      if (params.stream)
        metrics.firstToken.observe({ api, model, provider }, this.firstTokenMs / 1000);
      metrics.attempts.observe({ model }, this.attempts);
      // Earlier attempts' time is the upstreams' and the backoff's, not overhead: only a first
      // attempt's answer tells the gateway's own time apart.
      if (this.attempts === 1 && this.upstreamMs !== undefined) {
        overheadMs = Math.max(0, this.firstTokenMs - this.upstreamMs);
        metrics.overhead[api].observe(overheadMs / 1000);
      }
    }
    if (used.prompt > 0) {
      metrics.tokens.inc({ model, provider, tenant, direction: "input" }, used.prompt);
    }
    if (used.completion > 0) {
      metrics.tokens.inc({ model, provider, tenant, direction: "output" }, used.completion);
    }
    if (used.cachedPrompt) {
      metrics.tokens.inc({ model, provider, tenant, direction: "cached_input" }, used.cachedPrompt);
    }
    if (cost > 0) metrics.cost.inc({ tenant, model }, cost);
    if (truncated) metrics.truncated.inc({ model, provider });
    const line: Record<string, unknown> = {
      request_id: this.requestId,
      trace_id: this.trace.traceId,
      span_id: this.trace.spanId,
      tenant: tenant || undefined,
      api,
      model: params.model,
      provider: provider || undefined,
      upstream_model: this.upstreamModel || undefined,
      attempts: this.attempts,
      stream: params.stream,
      status,
      outcome,
      tokens_in: used.prompt,
      tokens_out: used.completion,
      tokens_cached: used.cachedPrompt || undefined,
      tokens_cache_write: used.cacheWritePrompt || undefined,
      tokens_cache_write_1h: used.cacheWrite1hPrompt || undefined,
      cost_usd: this.price ? cost : undefined,
      first_token_ms: this.firstTokenMs === undefined ? undefined : round(this.firstTokenMs),
      upstream_ms: this.upstreamMs === undefined ? undefined : round(this.upstreamMs),
      overhead_ms: overheadMs === undefined ? undefined : round(overheadMs),
      latency_ms: round(seconds * 1000),
      truncated,
      error: opts.error ? errorField(opts.error) : undefined,
    };
    if (this.#prompt) line.prompt = this.#prompt;
    if (status >= 500 || truncated) this.deps.requestLog.warn(line, "request failed");
    else this.deps.requestLog.info(line, "request");
    metrics.active.end();
  }
}

/** The response header that carries a whole answer's price. */
export const COST_HEADER = "x-switchyard-cost-usd";

/**
 * A bounded word for how a request ended: "ok", "truncated" (failed after its first token),
 * "cancelled" (the client left), "shutdown" (cut when a drain ran out), else the failure's kind.
 */
/**
 * Counts a request refused before it was routed (no key, a malformed body): in
 * switchyard_requests_total like any other, so a flood of bad keys or bodies shows there.
 */
export function countRejected(metrics: IngressMetrics, api: MetricApi, f: Failure): void {
  metrics.requests.inc({
    api,
    model: "(unknown)",
    provider: "",
    tenant: "",
    status_class: statusClass(f.status),
    outcome: f.kind,
  });
}

function outcomeOf(
  status: number,
  truncated: boolean,
  error: Failure | undefined,
  shutdown: boolean,
): string {
  if ((status === 499 && shutdown) || error?.code === SHUTTING_DOWN) return "shutdown";
  // Redis, not an upstream, was away: an upstream outage must not be paged for it.
  if (error?.code === LIMITS_UNAVAILABLE) return "limits_unavailable";
  if (truncated) return "truncated";
  if (status === 499) return "cancelled";
  if (status < 400) return "ok";
  return error?.kind ?? "error";
}

function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}

function usageTokens(u: Usage): TokenUsage {
  return {
    prompt: u.promptTokens,
    completion: u.completionTokens,
    cachedPrompt: u.cachedPromptTokens ?? 0,
    cacheWritePrompt: u.cacheWritePromptTokens ?? 0,
    cacheWrite1hPrompt: u.cacheWrite1hPromptTokens ?? 0,
  };
}

const ROLE_NAMES: Record<Role, string> = {
  [Role.UNSPECIFIED]: "unspecified",
  [Role.SYSTEM]: "system",
  [Role.DEVELOPER]: "developer",
  [Role.USER]: "user",
  [Role.ASSISTANT]: "assistant",
  [Role.TOOL]: "tool",
};

/** The prompt as a tenant with `log_prompts` sees it logged: each message's role and text. */
function promptOf(params: ChatParams): Array<{ role: string; content: string }> {
  return params.messages.map((m) => {
    let content = "";
    for (const p of m.content) {
      content += p.part.case === "text" ? p.part.value : p.part.case ? `[${p.part.case}]` : "";
    }
    for (const call of m.toolCalls) content += `[tool call ${call.name}(${call.arguments})]`;
    return { role: ROLE_NAMES[m.role], content };
  });
}

export interface EmbedAnswer {
  result: EmbedResult;
  /** What is left of the caller's limits and what the answer cost, for the response headers. */
  headers: Record<string, string>;
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
  call: Cancellable,
  trace: TraceContext,
): Promise<EmbedAnswer> {
  const started = performance.now();
  const model = deps.config.models[params.model] ? params.model : "(unknown)";
  const tenant = caller.tenant;
  let status = 200;
  let result: EmbedResult | undefined;
  let error: Failure | undefined;
  let reservation: Reservation | undefined;
  let price: Price | undefined;
  let prompt = 0;
  const estimate = estimateEmbed(params);
  metrics.inflight[api].inc();
  metrics.active.begin();
  metrics.active.track(call);
  try {
    if (model === "(unknown)") throw modelNotFound(params.model);
    authorizeModel(caller, params.model);
    if (tenant) {
      reservation = await deps.limiter.admit(tenant, caller.keyHash, {
        tokens: estimate,
        usd: worstCaseCost(
          deps.config,
          params.model,
          { prompt: estimate, completion: 0 },
          { allowed: caller.models },
        ),
      });
    }
    const res = await deps.router.embed(
      {
        context: makeMessage(RequestContextSchema, {
          requestId,
          tenant,
          traceparent: formatTraceparent(trace),
        }),
        params,
      },
      { signal: call.signal, timeoutMs: deps.config.routing.timeouts.total_ms },
    );
    if (!res.result)
      throw new Failure({ status: 502, kind: "upstream_error", message: "empty answer" });
    result = res.result;
    price = answerPrice(deps.config, params.model, result, { allowed: caller.models });
    prompt = result.usage?.promptTokens || estimate;
    if (params.tokenInputs.length > 0 && !result.usage?.promptTokens) {
      // An upstream that reports no usage embedded exactly the tokens sent: the client hears so.
      result.usage = makeMessage(UsageSchema, { promptTokens: prompt, totalTokens: prompt });
    }
    const headers = reservation ? rateLimitHeaders(reservation.snapshot, api, deps.clock()) : {};
    if (price) {
      const cost = roundUsd(costUsd(price, { prompt, completion: 0 }));
      if (result.usage) result.usage.costUsd = cost;
      headers[COST_HEADER] = formatUsd(cost);
    }
    return { result, headers };
  } catch (err) {
    error = cutFailure(call.signal, 0) ?? routerFailure(err);
    status = call.signal.aborted && error.code !== SHUTTING_DOWN ? 499 : error.status;
    throw error;
  } finally {
    metrics.active.untrack(call);
    const cost = price ? roundUsd(costUsd(price, { prompt, completion: 0 })) : 0;
    if (reservation) void deps.limiter.settle(reservation, { tokens: prompt }, cost);
    const provider = result?.provider ?? "";
    if (prompt > 0) metrics.tokens.inc({ model, provider, tenant, direction: "input" }, prompt);
    if (cost > 0) metrics.cost.inc({ tenant, model }, cost);
    finishWhole(
      deps,
      metrics,
      { api, model, provider, tenant, status, error, started },
      { request_id: requestId, trace, tenant, api, endpoint: "embeddings", model: params.model },
      (line) => {
        line.upstream_model = result?.upstreamModel;
        line.attempts = result?.attempts ?? error?.attempts;
        line.inputs = embedInputCount(params);
        line.tokens_in = prompt;
        line.cost_usd = price ? cost : undefined;
      },
    );
  }
}

/**
 * One token count (Anthropic `POST /v1/messages/count_tokens`): the caller's key and model
 * allow-list hold, but no limit does. A count is not charged (no tokens, no spend), and Claude
 * Code sends a burst of them with every turn, which `rpm` or `concurrency` would turn into 429s
 * for the requests that matter. Writes its log line and metrics; throws a Failure.
 */
export async function runCountTokens(
  deps: IngressDeps,
  metrics: IngressMetrics,
  requestId: string,
  caller: Caller,
  params: ChatParams,
  hints: RoutingHints | undefined,
  deadlineMs: number | undefined,
  call: Cancellable,
  trace: TraceContext,
): Promise<TokenCount> {
  const api = "count_tokens";
  const started = performance.now();
  const { config } = deps;
  const model = config.models[params.model] ? params.model : "(unknown)";
  const tenant = caller.tenant;
  let status = 200;
  let result: TokenCount | undefined;
  let error: Failure | undefined;
  metrics.inflight[api].inc();
  metrics.active.begin();
  metrics.active.track(call);
  try {
    if (model === "(unknown)") throw modelNotFound(params.model);
    authorizeModel(caller, params.model);
    for (const fallback of hints?.hasFallbacks ? hints.fallbacks : []) {
      if (!config.models[fallback]) throw modelNotFound(fallback, "fallbacks");
      authorizeModel(caller, fallback, "fallbacks");
    }
    const res = await deps.router.countTokens(
      {
        context: requestContext(requestId, tenant, formatTraceparent(trace)),
        params,
        hints,
      },
      {
        signal: call.signal,
        timeoutMs: Math.min(config.routing.timeouts.total_ms, deadlineMs ?? Infinity),
      },
    );
    if (!res.result)
      throw new Failure({ status: 502, kind: "upstream_error", message: "empty answer" });
    result = res.result;
    return result;
  } catch (err) {
    error = cutFailure(call.signal, 0) ?? routerFailure(err);
    status = call.signal.aborted && error.code !== SHUTTING_DOWN ? 499 : error.status;
    throw error;
  } finally {
    metrics.active.untrack(call);
    const provider = result?.provider ?? "";
    finishWhole(
      deps,
      metrics,
      { api, model, provider, tenant, status, error, started },
      {
        request_id: requestId,
        trace,
        tenant,
        api: "anthropic",
        endpoint: "count_tokens",
        model: params.model,
      },
      (line) => {
        line.upstream_model = result?.upstreamModel;
        line.attempts = result?.attempts ?? error?.attempts;
        // What the upstream counted; nothing is charged for it.
        line.input_tokens = result?.inputTokens;
      },
    );
  }
}

/**
 * The metrics and the log line of a request answered whole (embeddings, a token count). The
 * line's fields come in the order every request line has them: who, what, then `more`'s, then
 * the outcome.
 */
function finishWhole(
  deps: IngressDeps,
  metrics: IngressMetrics,
  r: {
    api: MetricApi;
    model: string;
    provider: string;
    tenant: string;
    status: number;
    error: Failure | undefined;
    started: number;
  },
  who: {
    request_id: string;
    trace: TraceContext;
    tenant: string;
    api: ClientApi;
    endpoint: string;
    model: string;
  },
  more: (line: Record<string, unknown>) => void,
): void {
  const seconds = (performance.now() - r.started) / 1000;
  const outcome = outcomeOf(r.status, false, r.error, metrics.active.cut);
  metrics.inflight[r.api].dec();
  metrics.requests.inc({
    api: r.api,
    model: r.model,
    provider: r.provider,
    tenant: r.tenant,
    status_class: statusClass(r.status),
    outcome,
  });
  metrics.duration.observe({ api: r.api, model: r.model, stream: "false" }, seconds);
  const line: Record<string, unknown> = {
    request_id: who.request_id,
    trace_id: who.trace.traceId,
    span_id: who.trace.spanId,
    tenant: who.tenant || undefined,
    api: who.api,
    endpoint: who.endpoint,
    model: who.model,
    provider: r.provider || undefined,
  };
  more(line);
  line.status = r.status;
  line.outcome = outcome;
  line.latency_ms = round(seconds * 1000);
  line.error = r.error ? errorField(r.error) : undefined;
  if (r.status >= 500) deps.requestLog.warn(line, "request failed");
  else deps.requestLog.info(line, "request");
  metrics.active.end();
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** A router call's failure as the client API's error. */
function routerFailureOf(err: unknown): never {
  throw routerFailure(err);
}

/**
 * A router call's failure as its client may see it. A failure the router did not answer with
 * (its process away, the internal connection cut) says so without the transport's own words,
 * which name internal addresses ("connect ECONNREFUSED 10.0.3.7:8081"); the log line keeps them.
 */
function routerFailure(err: unknown): Failure {
  const f = Failure.from(err);
  if (err instanceof Failure || f.kind === "cancelled") return f;
  const ce = ConnectError.from(err);
  if (ce.code === Code.DeadlineExceeded || ce.findDetails(UpstreamErrorSchema).length > 0) return f;
  return new Failure(
    {
      status: f.status,
      kind: f.kind,
      retryable: f.retryable,
      message:
        ce.code === Code.Unavailable
          ? "the gateway could not reach its router"
          : "the gateway's call to its router failed",
    },
    { cause: ce },
  );
}

/** A log line's `error`: what the client was told, and what a hop said beneath it. */
function errorField(f: Failure): { kind: string; message: string; detail?: string } {
  const cause = f.cause;
  if (cause instanceof ConnectError)
    return { kind: f.kind, message: f.message, detail: cause.rawMessage };
  return { kind: f.kind, message: f.message };
}
