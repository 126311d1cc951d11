import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import {
  type ChatParams,
  type RequestContext,
  type UpstreamError,
  UpstreamErrorSchema,
} from "../../gen/switchyard/chat/v1/chat_pb.js";
import type {
  ChatRequest as ConnectorChatRequest,
  ChatResponse as ConnectorChatResponse,
} from "../../gen/switchyard/connector/v1/connector_pb.js";
import type { Target } from "../../gen/switchyard/health/v1/health_pb.js";
import {
  type ChatRequest,
  type ChatResponse,
  type CountTokensRequest,
  type CountTokensResponse,
  CountTokensResponseSchema,
  type EmbedRequest,
  type EmbedResponse,
  EmbedResponseSchema,
  type RouterService,
  type RoutingHints,
} from "../../gen/switchyard/router/v1/router_pb.js";
import { CallAbort } from "../lib/abort.js";
import { CompletionBuilder } from "../lib/chat/aggregate.js";
import {
  carriesAnswer,
  connectorChatRequest,
  newTarget,
  routerChatResponse,
} from "../lib/chat/messages.js";
import type { Config } from "../lib/config/types.js";
import type { ConnectorEndpoint, ConnectorPool } from "../lib/connector-pool.js";
import {
  Failure,
  isPauseKind,
  type PauseKind,
  pauseAskedFor,
  SHUTTING_DOWN,
  shuttingDown,
} from "../lib/errors.js";
import { makeMessage } from "../lib/hop/codec.js";
import { DONE } from "../lib/iteration.js";
import { type Logger, requestLogger } from "../lib/logger.js";
import { counter, observedGauge } from "../lib/metrics.js";
import { distinctTargets } from "../lib/targets.js";
import { timerDelay } from "../lib/timers.js";
import { nextHop } from "../lib/trace.js";
import type { CircuitBreakers } from "./circuit-breaker.js";
import type { HealthView } from "./health-view.js";
import { type PlanHints, type PlannedTarget, planTargets } from "./plan.js";
import { RetryBudget } from "./retry-budget.js";
import { createStrategies, type RequestParams, type Strategies } from "./strategies.js";

export interface RouterDeps {
  config: Config;
  connectors: ConnectorPool;
  health: HealthView;
  breakers: CircuitBreakers;
  logger: Logger;
  registry: Registry;
  /** Routing strategy state (rotations, latency, in-flight); made here when not given. */
  strategies?: Strategies;
  /** The attempts a shutdown cuts (see RouterDrain); made here when not given. */
  drain?: RouterDrain;
}

/** What stopped an attempt's call, when not its client or the call itself. */
type Timeout = "first_token" | "idle" | "total" | "shutdown";

/** The reason a RouterDrain aborts an attempt's connector call with. */
const CUT_BY_SHUTDOWN = new Error("the gateway is shutting down");

/**
 * The attempts under way, for a shutdown whose drain time ran out: cut() stops each one's
 * connector call (and so its upstream request), and the request ends with the shuttingDown
 * failure, counting the attempts it made. Its caller gets that as an answer to pass on, where a
 * call it cancelled itself would leave it nothing to tell its client (nor how many attempts it
 * took: a whole answer is held here until it ends). The attempts are held by their cancellation
 * (a Set entry each, no object of their own).
 */
export class RouterDrain {
  #cut = false;
  readonly #calls = new Set<CallAbort>();

  /** Whether cut() was called: no new attempt starts. */
  get cut(): boolean {
    return this.#cut;
  }

  add(call: CallAbort): void {
    if (this.#cut) call.abort(CUT_BY_SHUTDOWN);
    else this.#calls.add(call);
  }

  delete(call: CallAbort): void {
    this.#calls.delete(call);
  }

  cutAll(): void {
    this.#cut = true;
    for (const call of this.#calls) call.abort(CUT_BY_SHUTDOWN);
    this.#calls.clear();
  }
}

/** Whether an attempt's call was stopped by RouterDrain.cutAll. */
function cutByShutdown(signal: AbortSignal): boolean {
  return signal.reason === CUT_BY_SHUTDOWN;
}

/**
 * Drives attempts for one request: picks targets in plan order, retries retryable failures
 * before the first chunk (never after), and passes chunks through unchanged once one target
 * has answered.
 */
export function createRouterService(deps: RouterDeps): ServiceImpl<typeof RouterService> {
  const { config, connectors, health, breakers } = deps;
  const strategies = deps.strategies ?? createStrategies({ health });
  const drain = deps.drain ?? new RouterDrain();
  /** When this router began; see JOIN_WAIT_MS. */
  const startedAt = Date.now();
  const { retries, backoff, timeouts } = config.routing;
  const attemptsTotal = counter(
    deps.registry,
    "switchyard_router_attempts_total",
    "Attempts against targets, by outcome",
    ["model", "provider", "target", "outcome"],
  );
  const targets = distinctTargets(config);
  // Each tenant's `models`, by tenant name (the ingress names the tenant in the request's
  // context): a fallback, configured or context-window, must be one of them too.
  const allowLists = new Map<string, ReadonlySet<string>>();
  for (const [tenant, t] of Object.entries(config.tenants ?? {})) {
    if (t.models) allowLists.set(tenant, new Set(t.models));
  }
  observedGauge(
    deps.registry,
    "switchyard_router_circuit_state",
    "Local circuit breaker per target: 0 closed, 1 open, 2 half-open (or open with its cooldown over: the next call is a trial)",
    ["provider", "target"],
    (g) => {
      for (const t of targets) {
        const state = breakers.stateValue(t.provider, t.model);
        // An open breaker whose cooldown has passed lets the next call through as a trial.
        const value = state === 1 && !breakers.isOpen(t.provider, t.model) ? 2 : state;
        g.set({ provider: t.provider, target: t.model }, value);
      }
    },
  );
  const fallbacks = counter(
    deps.registry,
    "switchyard_router_fallbacks_total",
    "Requests answered by another model than the one asked for (a fallback or a bigger context window)",
    ["model", "fallback"],
  );
  const retriesRefused = counter(
    deps.registry,
    "switchyard_router_retries_refused_total",
    "Retries not made because the retry budget was spent",
    ["model"],
  );
  const retryBudget = new RetryBudget(
    config.routing.retry_budget.ratio,
    config.routing.retry_budget.min_per_second,
  );
  const usable = (t: TargetRef) =>
    !health.isDown(t.provider, t.model) &&
    !breakers.isOpen(t.provider, t.model) &&
    health.pausedMs(t.provider, t.model) === 0;

  /**
   * The pause in force for a target: one it asked this router for (its breaker keeps it), or one
   * it asked another router for (shared health), whichever ends later. Both are honoured alike.
   */
  function pauseOf(t: TargetRef): Pause | undefined {
    const { provider, model } = t;
    const own = breakers.pausedMs(provider, model);
    const shared = health.pausedMs(provider, model);
    if (own === 0 && shared === 0) return undefined;
    const kind =
      own >= shared ? breakers.pauseKind(provider, model) : health.pauseKind(provider, model);
    return { ms: Math.max(own, shared), kind: kind ?? "rate_limited" };
  }
  const paused = (t: TargetRef) => pauseOf(t) !== undefined;

  /** `counted`: the attempt is already in attemptsTotal (as "ok", at its first chunk). */
  function noteFailure(p: PlannedTarget, f: Failure, counted = false) {
    const { provider, model } = p.target;
    const paused = f.retryAfterMs > 0 && isPauseKind(f.kind) ? f.kind : undefined;
    // A 429 that says when to come back is throttling, not failing: 429s in a row, each waited
    // out, must not add up to a trip of `cooldown_ms`. A 503 is the upstream failing to serve,
    // Retry-After or not (Azure's "server busy", Anthropic's 529): a target that keeps answering
    // it trips, as on any other 5xx.
    if (paused !== "rate_limited") {
      if (f.retryable) breakers.onFailure(provider, model);
      // A refusal of the request itself (400-class) shows the target is up and answering.
      else breakers.onSuccess(provider, model);
    }
    // The target asked for a pause: honoured here as well as in shared health.
    if (paused) breakers.pauseFor(provider, model, f.retryAfterMs, paused);
    if (counted) return;
    attemptsTotal.inc({
      model: p.model,
      provider: p.target.provider,
      target: p.target.model,
      outcome: f.kind,
    });
  }

  /**
   * The attempt loop both RPCs share: targets in plan order, backoff between attempts, at most
   * `routing.retries` extra attempts, and only RetryableFailures move on to the next target.
   * Resolves with what the first attempt to answer opened. It is an async function, not a
   * generator, so its state (the plan, the candidates, the counts) is let go once an attempt has
   * answered rather than kept for the life of a stream: V8 keeps every variable of a suspended
   * generator's frame, and a stream may be held for minutes.
   */
  async function openWithRetries<T>(
    model: string,
    request: Unsent<RequestParams>,
    hints: PlanHints,
    ctx: HandlerContext,
    context: RequestContext,
    openOne: (p: PlannedTarget, attempt: number, deadline: Deadline) => Promise<T>,
    seenModels: ReadonlySet<string> = new Set([model]),
    /** The request's deadline, when this is a context-window fallback: it does not start over. */
    given?: Deadline,
  ): Promise<T> {
    const deadline = given ?? requestDeadline(ctx);
    const plan = planFor(model, hints, request);
    const maxAttempts = retries + 1;
    if (connectors.size === 0 && Date.now() - startedAt < JOIN_GRACE_MS) {
      // Just started, and no connector has announced itself yet (they do every 2 s): wait for
      // one rather than spend the attempts on "no connector is available".
      await connectors.whenAny(Math.max(0, Math.min(JOIN_WAIT_MS, deadline.at - Date.now())));
    }
    let last: Failure | undefined;
    /** Targets that cannot serve this kind of call (PassedOver), and why the first could not. */
    const passedOver = new Set<PlannedTarget>();
    let unsupported: Failure | undefined;
    let attempt = 0;
    let connectorRetries = 0;
    retryBudget.onRequest();
    try {
      for (const p of candidates(plan, breakers, paused, passedOver)) {
        for (;;) {
          attempt++;
          if (attempt > 1) {
            if (!retryBudget.tryRetry()) {
              retriesRefused.inc({ model });
              requestLogger(deps.logger, context).warn(
                { model, attempt },
                "retry budget spent: returning the last failure instead of retrying",
              );
              throw (last ?? noTarget()).toConnectError();
            }
            await sleepBackoff(attempt, backoff.base_ms, backoff.max_ms, ctx.signal);
          }
          if (ctx.signal.aborted) throw new ConnectError("client cancelled", Code.Canceled);
          if (drain.cut) {
            attempt--; // not made
            throw shuttingDown(0).toConnectError();
          }
          try {
            return await openOne(p, attempt, deadline);
          } catch (err) {
            if (err instanceof ContextWindowExceeded) {
              // A bigger window is the only fix: go to the model configured for that, once.
              const bigger = config.models[p.model]?.context_window_fallbacks[0];
              if (
                !bigger ||
                seenModels.has(bigger) ||
                (hints.allowed && !hints.allowed.has(bigger))
              )
                throw err.failure.toConnectError();
              requestLogger(deps.logger, context).info(
                { model: p.model, fallback: bigger },
                "context window exceeded; falling back",
              );
              // The fallback's attempts are numbered on from this model's, so an answer it
              // gives reports every upstream call the request made; awaited, so that a failure
              // it throws gets this model's attempts added below, as its answer does.
              const before = attempt;
              return await openWithRetries(
                bigger,
                request,
                { ...hints, fallbacks: [] },
                ctx,
                context,
                (q, n, d) => openOne(q, before + n, d),
                new Set([...seenModels, bigger]),
                deadline,
              );
            }
            if (err instanceof PassedOver) {
              // Not an attempt: the target was never asked. The next one is tried as this was.
              passedOver.add(p);
              unsupported ??= err.failure;
              attempt--;
              break;
            }
            if (!(err instanceof RetryableFailure)) throw err;
            last = laterFailure(last, err.failure);
            // A connector that did not answer says nothing about the target: try the same
            // target through another connector, outside the target retry budget.
            if (err.connectorDown && connectorRetries < MAX_CONNECTOR_RETRIES) {
              connectorRetries++;
              attempt--;
              continue;
            }
          }
          break;
        }
        if (attempt >= maxAttempts) break; // before the next pull, which could claim a trial
      }
      throw (last ?? unsupported ?? pausedFailure(plan, pauseOf) ?? noTarget()).toConnectError();
    } catch (err) {
      // The ingress logs how many attempts a failed request made; a context-window fallback's
      // failure (the recursion above) counted its own attempts, and this adds the ones before.
      throw countAttempts(err, attempt);
    }
  }

  /** When the request must be answered: `total_ms` from now, or the caller's deadline if sooner. */
  function requestDeadline(ctx: HandlerContext): Deadline {
    const clientMs = ctx.timeoutMs() ?? Number.POSITIVE_INFINITY;
    return {
      // Our own timer fires a little before the caller's deadline, so the client hears which
      // timeout it was rather than a bare "deadline exceeded".
      at: Date.now() + Math.min(timeouts.total_ms, clientMs - DEADLINE_MARGIN_MS),
      ms: Math.min(timeouts.total_ms, clientMs),
    };
  }

  /** The request's targets in the order to try them (a helper: see Unsent). */
  function planFor(
    model: string,
    hints: PlanHints,
    request: Unsent<RequestParams>,
  ): PlannedTarget[] {
    try {
      return planTargets(config, model, { ...hints, request: request.params }, usable, strategies);
    } catch (err) {
      throw Failure.from(err).toConnectError();
    }
  }

  function chat(req: ChatRequest, ctx: HandlerContext): AsyncIterableIterator<ChatResponse> {
    if (!req.params) throw new ConnectError("params are required", Code.InvalidArgument);
    const context = nextHop(req.context);
    return new ChatAnswer(
      new Unsent(req.params),
      context,
      planHints(req.hints, allowLists.get(context.tenant)),
      ctx,
    );
  }

  /**
   * A chat's chunks as the RPC hands them on: attempts until one answers (openWithRetries), then
   * that attempt's chunks to the end. An iterator object rather than an async generator: a
   * suspended generator's frame keeps every register, the last chunk handed on included, for as
   * long as the stream waits for its next one; this keeps only its fields.
   */
  class ChatAnswer implements AsyncIterableIterator<ChatResponse> {
    readonly #request: Unsent<ChatParams>;
    readonly #context: RequestContext;
    readonly #hints: PlanHints;
    readonly #ctx: HandlerContext;
    #attempt: ChatAttempt | undefined;
    /** Returned, or failed: every later next() is done. */
    #over = false;

    constructor(
      request: Unsent<ChatParams>,
      context: RequestContext,
      hints: PlanHints,
      ctx: HandlerContext,
    ) {
      this.#request = request;
      this.#context = context;
      this.#hints = hints;
      this.#ctx = ctx;
    }

    [Symbol.asyncIterator](): this {
      return this;
    }

    next(): Promise<IteratorResult<ChatResponse>> {
      // Once a target answers, its attempt answers every read (and ends itself: see ChatAttempt).
      if (this.#attempt !== undefined) return this.#attempt.next();
      if (this.#over) return Promise.resolve(DONE);
      return this.#firstRead();
    }

    async #firstRead(): Promise<IteratorResult<ChatResponse>> {
      let attempt: ChatAttempt;
      try {
        attempt = await this.#open();
      } catch (err) {
        this.#over = true;
        throw err;
      }
      // Returned while the attempts ran: the one that answered is not read.
      if (this.#over) {
        attempt.stop();
        return DONE;
      }
      this.#attempt = attempt;
      return attempt.next();
    }

    /** The consumer stopped reading (a cancelled call): the attempt under way is stopped. */
    async return(): Promise<IteratorResult<ChatResponse>> {
      this.#over = true;
      this.#attempt?.stop();
      return DONE;
    }

    #open(): Promise<ChatAttempt> {
      const request = this.#request;
      const context = this.#context;
      const signal = this.#ctx.signal;
      return openWithRetries(
        request.model,
        request,
        this.#hints,
        this.#ctx,
        context,
        async (p, attempt, deadline) => {
          const a = new ChatAttempt(p, attempt, context, deadline, signal);
          await a.open(request);
          return a;
        },
      );
    }
  }

  async function embed(req: EmbedRequest, ctx: HandlerContext): Promise<EmbedResponse> {
    const params = req.params;
    if (!params) throw new ConnectError("params are required", Code.InvalidArgument);
    // A target that cannot embed these inputs (a provider without embeddings, such as
    // Anthropic, or token ids to Gemini) is passed over for one that can, as token counts are;
    // when none can, its refusal is the answer.
    return unaryWithRetries(params, req, ctx, true, (c, call, opts) =>
      c.client.embed({ ...call, params }, opts).then((res) => {
        if (res.result) res.result.attempts = call.attempt;
        return makeMessage(EmbedResponseSchema, { result: res.result });
      }),
    );
  }

  /**
   * The input tokens of a chat request's prompt, from the first target whose provider can count
   * them: a target whose provider cannot (the connector answers `unsupported`) is passed over, and
   * when none can, that failure is the answer. Never a number of the router's own.
   */
  async function countTokens(
    req: CountTokensRequest,
    ctx: HandlerContext,
  ): Promise<CountTokensResponse> {
    const params = req.params;
    if (!params) throw new ConnectError("params are required", Code.InvalidArgument);
    return unaryWithRetries(params, req, ctx, true, (c, call, opts) =>
      c.client.countTokens({ ...call, params }, opts).then((res) => {
        if (res.result) res.result.attempts = call.attempt;
        return makeMessage(CountTokensResponseSchema, { result: res.result });
      }),
    );
  }

  /**
   * A call answered whole and at once (embeddings, a token count) through the attempt loop:
   * nothing to let go of early. `send` makes one attempt's connector call.
   */
  function unaryWithRetries<T>(
    params: RequestParams,
    req: { context?: RequestContext | undefined; hints?: RoutingHints | undefined },
    ctx: HandlerContext,
    passOverUnsupported: boolean,
    send: (
      connector: ConnectorEndpoint,
      call: { context: RequestContext; target: Target; attempt: number },
      opts: { signal: AbortSignal; timeoutMs: number },
    ) => Promise<T>,
  ): Promise<T> {
    const context = nextHop(req.context);
    return openWithRetries(
      params.model,
      new Unsent(params),
      planHints(req.hints, allowLists.get(context.tenant)),
      ctx,
      context,
      (p, attempt, deadline) =>
        attemptUnary(
          params.model,
          context,
          p,
          attempt,
          deadline,
          ctx.signal,
          passOverUnsupported,
          (c, opts) =>
            send(
              c,
              { context, target: newTarget(p.target.provider, p.target.model), attempt },
              opts,
            ),
        ),
    );
  }

  /**
   * One attempt of a unary call (embeddings, a token count); the same failure rules as a chat
   * attempt before its first chunk. `passOverUnsupported`: a target that answers `unsupported`
   * is passed over (PassedOver) instead of ending the request.
   */
  async function attemptUnary<T>(
    requested: string,
    context: RequestContext,
    p: PlannedTarget,
    attempt: number,
    deadline: Deadline,
    clientSignal: AbortSignal,
    passOverUnsupported: boolean,
    call: (
      connector: ConnectorEndpoint,
      opts: { signal: AbortSignal; timeoutMs: number },
    ) => Promise<T>,
  ): Promise<T> {
    const { provider, model } = p.target;
    const connector = pickConnector();
    // A unary answer arrives whole: its first token is the answer, so first_token_ms bounds it.
    // (Combined by hand: AbortSignal.any does not follow the fabric's own signals, lib/abort.ts.)
    const abort = new CallAbort();
    let attemptTimedOut = false;
    const attemptTimer = setTimeout(() => {
      attemptTimedOut = true;
      abort.abort(new Error("first_token timeout"));
    }, timeouts.first_token_ms);
    const onClientAbort = () => abort.abort(clientSignal.reason);
    if (clientSignal.aborted) onClientAbort();
    else clientSignal.addEventListener("abort", onClientAbort, { once: true });
    drain.add(abort);
    connector.inflight++;
    const release = strategies.inflight.begin(provider, model);
    const started = performance.now();
    try {
      const answer = await call(connector, {
        signal: abort.signal,
        timeoutMs: Math.max(1, deadline.at - Date.now()),
      });
      strategies.latency.observe(provider, model, performance.now() - started);
      settleSuccess(p, requested);
      return answer;
    } catch (err) {
      if (passOverUnsupported && !clientSignal.aborted && !attemptTimedOut) {
        const f = Failure.from(err);
        if (f.kind === "unsupported") {
          // Says nothing about the target's health: a half-open trial it claimed is given back.
          breakers.onAbandon(provider, model);
          throw new PassedOver(f);
        }
      }
      const timedOut: Timeout | undefined = cutByShutdown(abort.signal)
        ? "shutdown"
        : Date.now() >= deadline.at
          ? "total"
          : attemptTimedOut
            ? "first_token"
            : undefined;
      // A target too slow to answer at all is at least that slow, for least-latency.
      if (timedOut === "first_token") {
        strategies.latency.observe(provider, model, timeouts.first_token_ms);
      }
      throw settleFailure(
        err,
        p,
        connector,
        clientSignal,
        timedOut,
        deadline,
        false,
        context,
        attempt,
      );
    } finally {
      drain.delete(abort);
      connector.inflight--;
      release();
      clearTimeout(attemptTimer);
      clientSignal.removeEventListener("abort", onClientAbort);
    }
  }

  function pickConnector(): ConnectorEndpoint {
    const connector = connectors.pick();
    if (!connector) {
      throw new RetryableFailure(
        new Failure({
          status: 503,
          kind: "upstream_unavailable",
          retryable: true,
          message: "no connector is available",
        }),
      );
    }
    return connector;
  }

  function settleSuccess(p: PlannedTarget, requested: string): void {
    breakers.onSuccess(p.target.provider, p.target.model);
    attemptsTotal.inc({
      model: p.model,
      provider: p.target.provider,
      target: p.target.model,
      outcome: "ok",
    });
    if (p.model !== requested) fallbacks.inc({ model: requested, fallback: p.model });
  }

  /**
   * What a failed attempt means: cancellation ends the request, a retryable failure before the
   * first chunk moves on (RetryableFailure), anything else ends the request with its error.
   */
  function settleFailure(
    err: unknown,
    p: PlannedTarget,
    connector: ConnectorEndpoint,
    clientSignal: AbortSignal,
    timedOut: Timeout | undefined,
    deadline: Deadline,
    sentFirst: boolean,
    context: RequestContext,
    attempt: number,
  ): Error {
    const { provider, model } = p.target;
    if (clientSignal.aborted) {
      breakers.onAbandon(provider, model);
      return new ConnectError("client cancelled", Code.Canceled);
    }
    if (timedOut === "shutdown") {
      // Nothing the target did: its call was stopped, as a cancelled one is.
      breakers.onAbandon(provider, model);
      return shuttingDown(0).toConnectError();
    }
    let f = timedOut ? timeoutFailure(timedOut, p, timeouts, deadline.ms) : Failure.from(err);
    if (f.code === SHUTTING_DOWN) {
      // The connector's drain ran out under the call: nothing the target did, nor a connector
      // lost. Before the first chunk another connector takes the call, outside the target retry
      // budget; after it, the client hears that a shutdown cut its answer.
      if (sentFirst) return shuttingDown(0).toConnectError();
      connectors.suspect(connector.id);
      requestLogger(deps.logger, context).info(
        { connector: connector.id, provider, target: model, attempt },
        "connector shutting down; trying another",
      );
      return new RetryableFailure(shuttingDown(0), true);
    }
    if (f.kind === "cancelled" || (f.kind === "upstream_unavailable" && f.provider === "")) {
      // The connector itself did not answer, or its connection went away under the call (no
      // provider named the error): not the target's fault. Avoid that connector for a while;
      // the next attempt goes through another. The transport's words name the connector's
      // internal address, so they go to this log line and the client hears what happened.
      connectors.suspect(connector.id);
      // One that said it is leaving was only tried for want of another: its refusal is expected.
      const level = connectors.isLeaving(connector.id) ? "debug" : "warn";
      requestLogger(deps.logger, context)[level](
        { connector: connector.id, provider, target: model, attempt, error: f.message },
        "connector did not answer",
      );
      f = new Failure({
        status: 503,
        kind: "upstream_unavailable",
        retryable: true,
        message: sentFirst
          ? "the gateway lost its connection to the provider connector mid-answer"
          : "the gateway could not reach a provider connector",
      });
      // Mid-stream the client has tokens and no retry can follow; the target answered and was
      // counted so (settleSuccess), and losing the connector under it is no failure of its own:
      // charging its breaker would let a connector rollout open the circuit of healthy targets.
      return sentFirst ? f.toConnectError() : new RetryableFailure(f, true);
    }
    // A stream that fails after its first chunk was counted as an answer then (settleSuccess);
    // the breaker still hears of the failure, and the ingress counts the truncated stream.
    noteFailure(p, f, sentFirst);
    if (!sentFirst && isContextWindowExceeded(f)) return new ContextWindowExceeded(f);
    // After the first chunk the client has tokens: no retry can be honest now.
    if (sentFirst || !f.retryable || timedOut === "total") return f.toConnectError();
    // Once per failover, not per token: worth a line at info, with the request's ids.
    requestLogger(deps.logger, context).info(
      { provider, target: model, attempt, kind: f.kind, error: f.message },
      "attempt failed; trying the next target",
    );
    return new RetryableFailure(f);
  }

  /**
   * One chat attempt, in two phases. open() starts the call and reads up to the first chunk (for
   * a client that is not streaming, the whole answer); it throws RetryableFailure when the attempt
   * failed in a way another target may fix, and any other error ends the request. next() then
   * hands on that chunk and the rest of the stream. Between the two the retry loop ends
   * (openWithRetries), so a held stream keeps only this object: its timers, its connector and the
   * call's iterator.
   */
  class ChatAttempt {
    readonly #p: PlannedTarget;
    readonly #attempt: number;
    readonly #context: RequestContext;
    readonly #deadline: Deadline;
    readonly #clientSignal: AbortSignal;
    readonly #connector: ConnectorEndpoint;
    readonly #abort = new CallAbort();
    readonly #release: () => void;
    #timedOut: Timeout | undefined;
    readonly #totalTimer: NodeJS.Timeout;
    #stepTimer: NodeJS.Timeout | undefined;
    /** performance.now() of the last message (or of the reader's last ask); 0 until the first. */
    #lastChunkAt = 0;
    /**
     * Whether a read of the call is pending. A reader that stops asking (its client reads slowly,
     * and the answer waits for room) leaves the call quiet through no fault of the upstream's,
     * so idle time counts only while the attempt waits on the call.
     */
    #reading = true;
    #idleLimit = timeouts.idle_ms;
    #calls: AsyncIterator<ConnectorChatResponse> | undefined;
    /**
     * What open() read and next() hands on first, in order: for a streaming client, the chunks
     * before the first that carries the answer (who answers, the role) and that one; for a held
     * answer, the whole of it. Empty once handed on.
     */
    #ready: ChatResponse[] = [];
    /** The call's stream has ended (or failed): nothing to cancel. */
    #ended = false;
    #closed = false;

    constructor(
      p: PlannedTarget,
      attempt: number,
      context: RequestContext,
      deadline: Deadline,
      clientSignal: AbortSignal,
    ) {
      this.#p = p;
      this.#attempt = attempt;
      this.#context = context;
      this.#deadline = deadline;
      this.#clientSignal = clientSignal;
      this.#connector = pickConnector();
      clientSignal.addEventListener("abort", this.#onClientAbort, { once: true });
      this.#totalTimer = setTimeout(
        () => this.#fire("total"),
        Math.max(0, deadline.at - Date.now()),
      );
      this.#connector.inflight++;
      this.#release = strategies.inflight.begin(p.target.provider, p.target.model);
      drain.add(this.#abort);
    }

    readonly #onClientAbort = () => this.#abort.abort(this.#clientSignal.reason);

    #fire(kind: Timeout): void {
      this.#timedOut ??= kind; // the first timer to fire names the timeout
      this.#abort.abort(new Error(`${kind} timeout`));
    }

    /**
     * One step timer per attempt: first_token until the first message, then idle. A message only
     * notes its time; the timer, when it fires, re-arms for what is left of the idle window.
     */
    readonly #onStep = () => {
      if (this.#lastChunkAt === 0) return this.#fire("first_token");
      if (!this.#reading) {
        this.#stepTimer = setTimeout(this.#onStep, this.#idleLimit);
        return;
      }
      const quiet = performance.now() - this.#lastChunkAt;
      if (quiet >= this.#idleLimit) return this.#fire("idle");
      this.#stepTimer = setTimeout(this.#onStep, this.#idleLimit - quiet);
    };

    async open(request: Unsent<ChatParams>): Promise<void> {
      const { provider, model } = this.#p.target;
      // A client that is not streaming sees nothing until the answer is complete, so the whole
      // answer is held here and the attempt stays retryable until its last chunk. The connector
      // merges what follows the first chunk (hold_ms), so a long answer crosses the hop in a few
      // messages; the gap between them may then exceed the upstream's own by up to hold_ms.
      const held = request.params.stream ? undefined : new CompletionBuilder();
      const holdMs = held ? Math.min(MAX_HOLD_MS, Math.floor(timeouts.idle_ms / 4)) : 0;
      this.#idleLimit = timerDelay(timeouts.idle_ms + holdMs);
      this.#stepTimer = setTimeout(this.#onStep, Math.max(0, timeouts.first_token_ms));
      const started = performance.now();
      let firstAt = 0;
      // Until a chunk carries some of the answer the client has seen nothing, and an upstream
      // that fails now (Anthropic's overloaded_error after message_start) is still retried.
      let carried = false;
      try {
        const calls = this.#connector.client
          .chat(
            upstreamRequest(
              this.#context,
              newTarget(provider, model),
              request,
              holdMs,
              timerDelay(timeouts.first_token_ms),
            ),
            {
              signal: this.#abort.signal,
              timeoutMs: Math.max(1, this.#deadline.at - Date.now()),
            },
          )
          [Symbol.asyncIterator]();
        this.#calls = calls;
        for (let r = await calls.next(); !r.done; r = await calls.next()) {
          const chunk = r.value.chunk;
          if (this.#lastChunkAt === 0) {
            firstAt = this.#lastChunkAt = performance.now();
            clearTimeout(this.#stepTimer);
            this.#stepTimer = setTimeout(this.#onStep, this.#idleLimit);
            if (chunk?.start) chunk.start.attempts = this.#attempt;
          } else {
            this.#lastChunkAt = performance.now();
          }
          if (!chunk) continue;
          if (!carried && carriesAnswer(chunk)) {
            carried = true;
            // least-latency ranks by time to the first token: an opening event (message_start,
            // the role chunk) comes at once from a target that then thinks for seconds.
            strategies.latency.observe(provider, model, this.#lastChunkAt - started);
          }
          if (!held) {
            this.#ready.push(routerChatResponse(chunk));
            if (!carried) continue;
            // The opening (who answers, the role) waited here for the first token: that wait is
            // the upstream's time too (ChatStart.upstream_ms), not the gateway's.
            const start = this.#ready[0]?.chunk?.start;
            if (this.#ready.length > 1 && start?.upstreamMs !== undefined) {
              start.upstreamMs += performance.now() - firstAt;
            }
            settleSuccess(this.#p, request.model);
            // No other attempt can follow now.
            request.commit();
            this.#reading = false;
            return;
          }
          held.add(chunk);
          if (held.chars > MAX_HELD_ANSWER_CHARS) {
            // A whole answer is held in memory until it ends: an upstream that does not stop
            // (or sends far more than any model writes) must not take the process with it.
            throw new Failure({
              status: 502,
              kind: "upstream_error",
              provider,
              message: `provider ${provider} sent an answer of more than ${MAX_HELD_ANSWER_CHARS} characters, more than a whole (non-streamed) answer may hold; ask for it streamed`,
            });
          }
        }
        this.#ended = true;
        // A streamed answer left the loop once it carried some of the answer. One that ends here,
        // or a held one with nothing in it, is an upstream fault, and retryable.
        if (!held || !carried) {
          throw new Failure({
            status: 502,
            kind: "upstream_error",
            retryable: true,
            provider,
            message: `provider ${provider} returned an empty answer`,
          });
        }
        const whole = held.chunk();
        // The rest of the answer was the upstream's time too: the ingress tells its own
        // overhead apart by it (ChatStart.upstream_ms).
        const start = whole.start;
        if (start?.upstreamMs !== undefined) start.upstreamMs += performance.now() - firstAt;
        settleSuccess(this.#p, request.model);
        request.commit();
        this.#ready.push(routerChatResponse(whole));
        this.#close();
      } catch (err) {
        this.#ended = true;
        this.#close();
        throw this.#failure(err, false);
      }
    }

    /**
     * The next chunk for the client: the one open() read, then the rest of the stream; done at
     * its end, and for every read after the attempt ended. Rejects with what ends the request.
     * A promise chained on the call's, not a generator or an async method, so that a held
     * stream keeps nothing of a chunk handed on, nor a suspended frame (see ChatAnswer).
     */
    next(): Promise<IteratorResult<ChatResponse>> {
      const ready = this.#ready.shift();
      if (ready !== undefined) return Promise.resolve({ done: false, value: ready });
      const calls = this.#calls;
      if (this.#closed || calls === undefined) return Promise.resolve(DONE);
      let read: Promise<IteratorResult<ConnectorChatResponse>>;
      // The idle window starts again from the ask: before it, the reader was the one waiting.
      this.#reading = true;
      this.#lastChunkAt = performance.now();
      try {
        read = calls.next();
      } catch (err) {
        read = Promise.reject(err);
      }
      return read.then(this.#onCall, this.#onCallError);
    }

    readonly #onCall = (
      r: IteratorResult<ConnectorChatResponse>,
    ): IteratorResult<ChatResponse> | Promise<IteratorResult<ChatResponse>> => {
      if (r.done) {
        this.#ended = true;
        this.#close();
        return DONE;
      }
      this.#reading = false;
      this.#lastChunkAt = performance.now();
      const chunk = r.value.chunk;
      if (chunk) return { done: false, value: routerChatResponse(chunk) };
      return this.next();
    };

    /** The call failed (or was cancelled): the attempt ends, with the error the client sees. */
    readonly #onCallError = (err: unknown): never => {
      this.#ended = true;
      const stopped = this.#closed;
      this.#close();
      // Stopped by our own consumer: not the target's failure, and no one to tell.
      if (stopped) throw new ConnectError("the answer is no longer read", Code.Canceled);
      throw this.#failure(err, true);
    };

    /** The client stopped reading: the call is cancelled, and the attempt ends. */
    stop(): void {
      if (this.#closed) return;
      this.#close();
      if (!this.#ended) this.#abort.abort(new Error("the answer is no longer read"));
    }

    #failure(err: unknown, sentFirst: boolean): Error {
      if (cutByShutdown(this.#abort.signal)) this.#timedOut = "shutdown";
      // Connect's own deadline (the same instant as our total timer) may fire first.
      if (!this.#timedOut && Date.now() >= this.#deadline.at) this.#timedOut = "total";
      const p = this.#p;
      // A target too slow to answer at all is at least that slow, for least-latency.
      if (this.#timedOut === "first_token") {
        strategies.latency.observe(p.target.provider, p.target.model, timeouts.first_token_ms);
      }
      return settleFailure(
        err,
        p,
        this.#connector,
        this.#clientSignal,
        this.#timedOut,
        this.#deadline,
        sentFirst,
        this.#context,
        this.#attempt,
      );
    }

    /** Ends what the attempt holds: timers, counts, the client listener (once). */
    #close(): void {
      if (this.#closed) return;
      this.#closed = true;
      this.#connector.inflight--;
      this.#release();
      clearTimeout(this.#stepTimer);
      clearTimeout(this.#totalTimer);
      this.#clientSignal.removeEventListener("abort", this.#onClientAbort);
      drain.delete(this.#abort);
      this.#calls = undefined;
    }
  }

  return { chat, embed, countTokens };
}

/**
 * `totalMs`: the limit the whole request had, `routing.timeouts.total_ms` or the client's own
 * deadline when shorter.
 */
function timeoutFailure(
  kind: Exclude<Timeout, "shutdown">,
  p: PlannedTarget,
  t: Config["routing"]["timeouts"],
  totalMs: number,
): Failure {
  const ms = kind === "first_token" ? t.first_token_ms : kind === "idle" ? t.idle_ms : totalMs;
  const what =
    kind === "first_token"
      ? "no first token"
      : kind === "idle"
        ? "no token"
        : "request not finished";
  return new Failure({
    status: 504,
    kind: "timeout",
    retryable: kind !== "total",
    provider: p.target.provider,
    message: `provider ${p.target.provider} timed out: ${what} within ${ms} ms`,
  });
}

/** Exponential backoff with jitter (half of it random); a Retry-After pauses its target instead. */
async function sleepBackoff(
  attempt: number,
  baseMs: number,
  maxMs: number,
  signal: AbortSignal,
): Promise<void> {
  const exp = Math.min(maxMs, baseMs * 2 ** (attempt - 2));
  const jittered = exp / 2 + Math.random() * (exp / 2);
  // Retry-After is about the target that sent it; the next attempt goes to another target.
  const ms = Math.min(maxMs, jittered);
  if (ms <= 0 || signal.aborted) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Targets in plan order that are not in a Retry-After pause (`paused`: this router's or shared
 * health's) and whose breaker lets a call through (claiming a half-open trial only when the target
 * is reached). If every breaker refuses, the first planned target that is not paused is the last
 * resort: a target that said when to come back is not called before then (see pausedFailure).
 */
function* candidates(
  plan: PlannedTarget[],
  breakers: CircuitBreakers,
  paused: (t: TargetRef) => boolean,
  passedOver: ReadonlySet<PlannedTarget>,
): Generator<PlannedTarget> {
  // Passes over the plan repeat while the caller wants more attempts, so a model with a single
  // target still gets its retries; a pass in which every breaker refuses (or every target was
  // passed over) ends it.
  for (let pass = 0; ; pass++) {
    let any = false;
    for (const p of plan) {
      if (passedOver.has(p) || paused(p.target)) continue;
      if (!breakers.tryAcquire(p.target.provider, p.target.model)) continue;
      any = true;
      yield p;
    }
    if (any) continue;
    if (pass === 0) {
      const lastResort = plan.find((p) => !passedOver.has(p) && !paused(p.target));
      if (lastResort) yield lastResort;
    }
    return;
  }
}

/** How much earlier than its caller's deadline the router times a request out. */
const DEADLINE_MARGIN_MS = 20;

/** When a request must be finished, and the limit in ms that set it (for the message). */
interface Deadline {
  at: number;
  ms: number;
}

/** Marks a failure that happened before the first chunk and that another target may fix. */
class RetryableFailure extends Error {
  constructor(
    readonly failure: Failure,
    /** The connector, not the target, failed: the same target may be tried elsewhere. */
    readonly connectorDown = false,
  ) {
    super(failure.message);
  }
}

/**
 * The target's provider cannot serve this kind of call (a token count from an OpenAI-style API):
 * the target is passed over without counting as an attempt, for one whose provider can.
 */
class PassedOver extends Error {
  constructor(readonly failure: Failure) {
    super(failure.message);
  }
}

/** The request does not fit the target's context window; only a bigger model can help. */
class ContextWindowExceeded extends Error {
  constructor(readonly failure: Failure) {
    super(failure.message);
  }
}

/**
 * Context-window errors as upstreams word them: OpenAI's code, and the messages Anthropic
 * ("prompt is too long"), Gemini ("exceeds the maximum number of tokens") and OpenAI-compatible
 * servers (vLLM's "maximum context length") send with a 400.
 */
export function isContextWindowExceeded(f: Failure): boolean {
  if (f.status !== 400) return false;
  if (f.code === "context_length_exceeded") return true;
  return /context length|context window|prompt is too long|maximum number of tokens|too many tokens/i.test(
    f.message,
  );
}

/**
 * A request's parameters for as long as an attempt may still need them. Once the client has its
 * first chunk no other attempt can follow, and the parameters, prompt and all (tens of KB, more
 * with long contexts), are let go rather than kept for the rest of a stream that may last
 * minutes. The attempt generators hold this instead of the parameters, because V8 keeps every
 * variable and parameter of a suspended generator's frame, in use or not.
 */
class Unsent<P extends RequestParams> {
  #params: P | undefined;
  readonly model: string;

  constructor(params: P) {
    this.#params = params;
    this.model = params.model;
  }

  get params(): P {
    if (this.#params === undefined) throw new Error("the request was already committed");
    return this.#params;
  }

  /** Lets go of the parameters: the request is answered by the attempt under way. */
  commit(): void {
    this.#params = undefined;
  }
}

/**
 * The most characters a held (non-streamed) answer may reach: 16× the longest answers models
 * write (128k tokens ≈ 512k characters), and far below what would strain the process.
 */
const MAX_HELD_ANSWER_CHARS = 8 * 1024 * 1024;

/**
 * A router that has just started knows the connectors only as they announce themselves: for
 * this long after its start, a request that finds none waits up to JOIN_WAIT_MS for one.
 */
const JOIN_GRACE_MS = 10_000;
const JOIN_WAIT_MS = 3_000;

/**
 * The connector's request for one attempt (a helper, so that the attempt's frame does not keep
 * the parameters: see Unsent). Upstreams are always asked to stream, also for a client that is
 * not: then a target that stalls is caught by first_token_ms / idle_ms, while a long answer that
 * keeps producing tokens is not cut off.
 */
function upstreamRequest(
  context: RequestContext,
  target: Target,
  request: Unsent<ChatParams>,
  holdMs: number,
  firstTokenMs: number,
): ConnectorChatRequest {
  const params = request.params;
  // A shallow copy is still a ChatParams (it keeps `$typeName`): makeMessage() would walk every field.
  return connectorChatRequest(
    context,
    target,
    params.stream ? params : { ...params, stream: true },
    holdMs,
    firstTokenMs,
  );
}

/** The per-request overrides a client sent, and its tenant's allow-list, as the planner takes them. */
function planHints(
  h: RoutingHints | undefined,
  allowed: ReadonlySet<string> | undefined,
): PlanHints {
  return { provider: h?.provider, fallbacks: h?.hasFallbacks ? h.fallbacks : undefined, allowed };
}

/**
 * The failure to answer with after another attempt failed: its own, except that when targets
 * keep asking for pauses of one kind (429s, or 503s), the client hears the soonest any of them
 * said it could answer again.
 */
function laterFailure(last: Failure | undefined, next: Failure): Failure {
  if (
    last !== undefined &&
    last.kind === next.kind &&
    pauseAskedFor(last.kind, last.retryAfterMs) > 0 &&
    (next.retryAfterMs === 0 || last.retryAfterMs < next.retryAfterMs)
  ) {
    return last;
  }
  return next;
}

/** Adds `attempts` to the count a router failure carries to the ingress (its UpstreamError). */
function countAttempts(err: unknown, attempts: number): unknown {
  if (!(err instanceof ConnectError)) return err;
  for (const d of err.details) {
    if ("desc" in d && d.desc === UpstreamErrorSchema)
      (d.value as UpstreamError).attempts += attempts;
  }
  return err;
}

/** A target as the breakers and shared health name it. */
type TargetRef = { provider: string; model: string };

/** A Retry-After pause in force: how much longer it lasts, and what asked for it. */
interface Pause {
  ms: number;
  kind: PauseKind;
}

/**
 * The answer when every target is in a Retry-After pause (`pauseOf`: this router's or shared
 * health's) and none was called, as the target whose pause ends soonest would answer: a 429 if
 * it was rate limiting, a 503 if it was busy (a 429 would tell the client that it went over a
 * rate limit), with what is left of that pause as Retry-After. Undefined if one is not paused.
 */
function pausedFailure(
  plan: PlannedTarget[],
  pauseOf: (t: TargetRef) => Pause | undefined,
): Failure | undefined {
  let soonest: { provider: string; pause: Pause } | undefined;
  for (const p of plan) {
    const pause = pauseOf(p.target);
    if (pause === undefined) return undefined;
    if (soonest === undefined || pause.ms < soonest.pause.ms) {
      soonest = { provider: p.target.provider, pause };
    }
  }
  if (!soonest) return undefined;
  const { provider } = soonest;
  const soonestMs = soonest.pause.ms;
  const retryAfterMs = Math.ceil(soonestMs);
  const pause = `it asked for a pause that ends in ${Math.ceil(soonestMs / 1000)} s`;
  if (soonest.pause.kind === "upstream_unavailable") {
    return new Failure({
      status: 503,
      kind: "upstream_unavailable",
      retryAfterMs,
      provider,
      message: `provider ${provider} is unavailable: ${pause}`,
    });
  }
  return new Failure({
    status: 429,
    kind: "rate_limited",
    retryAfterMs,
    provider,
    message: `provider ${provider} is rate limiting the gateway: ${pause}`,
  });
}

function noTarget(): Failure {
  return new Failure({
    status: 503,
    kind: "upstream_unavailable",
    message: "no target could be tried",
  });
}

/**
 * The longest the connector merges chunks of a held answer before sending them on (hold_ms is a
 * quarter of idle_ms up to this): a few messages a second for a long answer, and an idle timeout
 * at most this much later than configured.
 */
const MAX_HOLD_MS = 250;

/** Connectors that may fail to answer within one request before it gives up on them. */
const MAX_CONNECTOR_RETRIES = 3;
