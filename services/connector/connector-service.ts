import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import type { ChatChunk, RequestContext } from "../../gen/switchyard/chat/v1/chat_pb.js";
import {
  type ChatRequest,
  type ChatResponse,
  type ConnectorService,
  type CountTokensRequest,
  type CountTokensResponse,
  CountTokensResponseSchema,
  type EmbedRequest,
  type EmbedResponse,
  EmbedResponseSchema,
  type ProbeRequest,
  type ProbeResponse,
  ProbeResponseSchema,
} from "../../gen/switchyard/connector/v1/connector_pb.js";
import type { Target } from "../../gen/switchyard/health/v1/health_pb.js";
import { CompletionBuilder } from "../lib/chat/aggregate.js";
import { carriesAnswer, connectorChatResponse } from "../lib/chat/messages.js";
import { Failure, SHUTTING_DOWN, shuttingDown } from "../lib/errors.js";
import { makeMessage } from "../lib/hop/codec.js";
import { DONE } from "../lib/iteration.js";
import { type Logger, requestLogger } from "../lib/logger.js";
import { counter, gauge, histogram } from "../lib/metrics.js";
import { nextHop } from "../lib/trace.js";
import type { OutcomeReporter } from "./outcomes.js";
import type { ChatCall, Provider } from "./providers/provider.js";

export interface ConnectorDeps {
  providers: ReadonlyMap<string, Provider>;
  logger: Logger;
  registry: Registry;
  /** Passive health reports; absent = none. */
  outcomes?: OutcomeReporter;
  /** Calls in flight on this connector, for its announcements. */
  load?: { inflight: number };
}

/**
 * How much sooner than first_token_ms a caller's cancel may reach the connector and still be
 * its first-token timeout: the router's clock started a hop earlier than the connector's.
 */
const FIRST_TOKEN_SLACK_MS = 100;

/** The most characters of answer merged into one message for a caller that holds the answer. */
const MAX_MERGED_CHARS = 256 * 1024;

/**
 * What a connector whose drain ran out ends its open calls with (the reason its server's
 * shutdownSignal aborts with, see ConnectorBuild.cutting): the gateway is shutting down, which
 * the router tells apart from a failure of the target, and from a connector it lost.
 */
export const CUT_BY_SHUTDOWN = shuttingDown(0).toConnectError();

/** Whether a call's signal was aborted by its connector's shutdown (CUT_BY_SHUTDOWN). */
function cutByShutdown(signal: AbortSignal): boolean {
  return signal.aborted && signal.reason === CUT_BY_SHUTDOWN;
}

/** Runs single attempts against upstreams; all retry and routing decisions are the router's. */
export function createConnectorService(deps: ConnectorDeps): ServiceImpl<typeof ConnectorService> {
  const upstreamRequests = counter(
    deps.registry,
    "switchyard_connector_upstream_requests_total",
    "Calls to upstream providers, by outcome: ok, or the error class (rate_limited, timeout, upstream_unavailable, upstream_error, auth, invalid_request, cancelled, …), or shutdown for a call a drain cut",
    ["provider", "target", "outcome"],
  );
  const firstChunk = histogram(
    deps.registry,
    "switchyard_connector_upstream_first_chunk_seconds",
    "Time from sending an upstream request to its first chunk",
    ["provider", "target"],
  );
  const duration = histogram(
    deps.registry,
    "switchyard_connector_upstream_duration_seconds",
    "Time from sending an upstream request to its last chunk, for calls that completed",
    ["provider", "target"],
  );
  const inflight = gauge(
    deps.registry,
    "switchyard_connector_inflight_requests",
    "Upstream calls in flight",
    ["provider"],
  );

  /**
   * One line per failed upstream call, with the request's ids. A caller that went away is not a
   * failure; an upstream refusing the request itself (400-class) is the client's, logged at info.
   */
  function logFailure(
    context: RequestContext,
    target: { provider: string; model: string },
    f: Failure,
  ): void {
    if (f.kind === "cancelled" || f.code === SHUTTING_DOWN) return;
    const line = {
      provider: target.provider,
      target: target.model,
      kind: f.kind,
      upstream_status: f.upstreamStatus || undefined,
      error: f.message,
    };
    const log = requestLogger(deps.logger, context);
    if (f.retryable || f.status >= 500) log.warn(line, "upstream call failed");
    else log.info(line, "upstream call failed");
  }

  function providerFor(name: string): Provider {
    const provider = deps.providers.get(name);
    if (!provider) {
      // The router and connector read the same config; a mismatch is a deployment fault.
      throw new Failure({
        status: 502,
        kind: "upstream_error",
        retryable: true,
        message: `this connector does not serve provider '${name}'`,
      });
    }
    return provider;
  }

  function chat(req: ChatRequest, ctx: HandlerContext): AsyncIterableIterator<ChatResponse> {
    const { target, params } = req;
    if (!target || !params) throw missingTargetOrParams();
    // The request goes to the provider in the call, which hands it over once it has sent it
    // (takeParams): the relay lasts as long as the answer streams.
    const call: ChatCall = {
      provider: target.provider,
      model: target.model,
      params,
      // The upstream request is this hop's span of the caller's trace.
      context: nextHop(req.context),
      signal: ctx.signal,
      // A caller that holds the whole answer gets the chunks after the first merged (hold_ms).
      merge: req.holdMs > 0,
    };
    return new Relay(call, req.holdMs, req.firstTokenMs, ctx);
  }

  /**
   * One upstream call's answer as the router reads it, with the call's metrics and outcome.
   * After the first chunk, a caller that holds the whole answer (holdMs > 0) gets the chunks
   * merged, one message per holdMs. An iterator object rather than an async generator: a held
   * stream waits here for every chunk, and a suspended generator keeps its frame (the last chunk
   * among it) and its await chain for as long as the stream lasts.
   */
  class Relay implements AsyncIterableIterator<ChatResponse> {
    readonly #call: ChatCall;
    readonly #holdMs: number;
    /** The caller's first_token_ms (0: unknown): see #cancelled. */
    readonly #firstTokenMs: number;
    readonly #ctx: HandlerContext;
    #chunks: AsyncIterator<ChatChunk> | undefined;
    #started = 0;
    #first = true;
    /** A chunk carrying some of the answer has come (see carriesAnswer). */
    #answering = false;
    /** Chunks merged since the last message (holdMs > 0). */
    #held: CompletionBuilder | undefined;
    #sentAt = 0;
    /** The call ended (completed, failed or stopped) and is counted. */
    #over = false;

    constructor(call: ChatCall, holdMs: number, firstTokenMs: number, ctx: HandlerContext) {
      this.#call = call;
      this.#holdMs = holdMs;
      this.#firstTokenMs = firstTokenMs;
      this.#ctx = ctx;
    }

    [Symbol.asyncIterator](): this {
      return this;
    }

    next(): Promise<IteratorResult<ChatResponse>> {
      if (this.#over) return Promise.resolve(DONE);
      let read: Promise<IteratorResult<ChatChunk>>;
      try {
        let chunks = this.#chunks;
        if (chunks === undefined) {
          // The upstream request starts with the first read, as a generator's body would.
          this.#started = performance.now();
          inflight.inc({ provider: this.#call.provider });
          if (deps.load) deps.load.inflight++;
          // A caller that goes away may never read (nor return) again, e.g. while its write of
          // the last message waits on a full connection: the call is over then all the same.
          this.#ctx.signal.addEventListener("abort", this.#onAbort, { once: true });
          chunks = providerFor(this.#call.provider).chat(this.#call)[Symbol.asyncIterator]();
          this.#chunks = chunks;
        }
        read = chunks.next();
      } catch (err) {
        read = Promise.reject(err);
      }
      return read.then(this.#onChunk, this.#onError);
    }

    readonly #onAbort = (): void => {
      if (!this.#over) this.#fail(this.#cancelled());
    };

    /**
     * What a read still pending when the call ended gets: the end, unless a shutdown cut the
     * call. connect-node then writes what the implementation ends with, and an end would pass
     * the cut answer off as a complete one (the hop server has answered the cut already).
     */
    #afterEnd(): IteratorResult<ChatResponse> {
      if (cutByShutdown(this.#ctx.signal)) throw CUT_BY_SHUTDOWN;
      return DONE;
    }

    /**
     * Why the caller cancelled. A cancel about first_token_ms after the call began, with no chunk
     * yet, is the router's first-token timeout: the target did not answer, which passive health
     * and the metrics must hear of (a plain cancellation says nothing about a target).
     */
    #cancelled(): Failure {
      if (cutByShutdown(this.#ctx.signal)) return shuttingDown(0);
      const ms = this.#firstTokenMs;
      if (
        ms > 0 &&
        this.#first &&
        this.#started > 0 &&
        performance.now() - this.#started >= ms - FIRST_TOKEN_SLACK_MS
      ) {
        const { provider } = this.#call;
        return new Failure({
          status: 504,
          kind: "timeout",
          retryable: true,
          provider,
          message: `provider ${provider} sent no first token within ${ms} ms`,
        });
      }
      return new Failure({ status: 499, kind: "cancelled", message: "cancelled" });
    }

    /** The reader stopped: the provider stops reading (and cancels its upstream request). */
    async return(): Promise<IteratorResult<ChatResponse>> {
      if (this.#over) return DONE;
      if (this.#started === 0) {
        // Never read: no upstream request was made, and there is nothing to count.
        this.#over = true;
        return DONE;
      }
      this.#fail(this.#cancelled());
      return DONE;
    }

    readonly #onChunk = (
      r: IteratorResult<ChatChunk>,
    ): IteratorResult<ChatResponse> | Promise<IteratorResult<ChatResponse>> => {
      if (this.#over) return this.#afterEnd();
      try {
        const call = this.#call;
        if (r.done) {
          const held = this.#held;
          this.#held = undefined;
          const last = held && connectorChatResponse(held.chunk());
          this.#end();
          upstreamRequests.inc({ provider: call.provider, target: call.model, outcome: "ok" });
          duration.observe(
            { provider: call.provider, target: call.model },
            (performance.now() - this.#started) / 1000,
          );
          return last ? { done: false, value: last } : DONE;
        }
        const chunk = r.value;
        if (!this.#answering && carriesAnswer(chunk)) {
          // The upstream's time to its first token (an opening event, such as Anthropic's
          // message_start, comes before it and says nothing of how fast the target answers).
          this.#answering = true;
          const ms = performance.now() - this.#started;
          deps.outcomes?.success(call.provider, call.model, ms);
          firstChunk.observe({ provider: call.provider, target: call.model }, ms / 1000);
        }
        if (this.#first) {
          this.#first = false;
          // Carried to the ingress, which tells the gateway's own time apart by it (the router
          // adds the wait for the first token when this chunk is only the opening).
          if (chunk.start) chunk.start.upstreamMs = performance.now() - this.#started;
        } else if (this.#holdMs > 0) {
          this.#held ??= new CompletionBuilder();
          this.#held.add(chunk);
          // Merged for at most hold_ms, and never past MAX_MERGED_CHARS: an upstream that
          // sends fast would otherwise pile up a huge message before the window ends.
          if (
            performance.now() - this.#sentAt < this.#holdMs &&
            this.#held.chars < MAX_MERGED_CHARS
          ) {
            return this.next();
          }
          const merged = this.#held.chunk();
          this.#held = undefined;
          this.#sentAt = performance.now();
          return { done: false, value: connectorChatResponse(merged) };
        }
        this.#sentAt = performance.now();
        return { done: false, value: connectorChatResponse(chunk) };
      } catch (err) {
        throw this.#fail(err);
      }
    };

    readonly #onError = (err: unknown): never | IteratorResult<ChatResponse> => {
      if (this.#over) return this.#afterEnd();
      // The provider's stream failed: it has ended, with nothing to stop.
      this.#chunks = undefined;
      throw this.#fail(err);
    };

    /** Counts and logs a failed call, stops the provider's stream, and says what the caller sees. */
    #fail(err: unknown): Error {
      const call = this.#call;
      const f = this.#ctx.signal.aborted ? this.#cancelled() : Failure.from(err);
      const chunks = this.#chunks;
      this.#end();
      // Nobody reads the provider's stream any more; its own error has no one to tell.
      void chunks?.return?.()?.catch(() => {});
      upstreamRequests.inc({ provider: call.provider, target: call.model, outcome: outcomeOf(f) });
      deps.outcomes?.failure(call.provider, call.model, f);
      logFailure(call.context, call, f);
      return f.toConnectError();
    }

    #end(): void {
      this.#over = true;
      this.#chunks = undefined;
      if (this.#started === 0) return;
      this.#ctx.signal.removeEventListener("abort", this.#onAbort);
      inflight.dec({ provider: this.#call.provider });
      if (deps.load) deps.load.inflight--;
    }
  }

  async function probe(req: ProbeRequest, ctx: HandlerContext): Promise<ProbeResponse> {
    const target = req.target;
    if (!target)
      return makeMessage(ProbeResponseSchema, {
        ok: false,
        error: new Failure({
          status: 400,
          kind: "invalid_request",
          message: "target is required",
        }).toProto(),
      });
    const started = performance.now();
    try {
      await providerFor(target.provider).probe(target.model, ctx.signal);
      return makeMessage(ProbeResponseSchema, {
        ok: true,
        latencyMs: Math.round(performance.now() - started),
      });
    } catch (err) {
      // Not an answer about the target: the prober keeps what it knew, and asks another.
      if (cutByShutdown(ctx.signal)) throw CUT_BY_SHUTDOWN;
      return makeMessage(ProbeResponseSchema, {
        ok: false,
        latencyMs: Math.round(performance.now() - started),
        error: Failure.from(err).toProto(),
      });
    }
  }

  async function embed(req: EmbedRequest, ctx: HandlerContext): Promise<EmbedResponse> {
    const { target, params } = req;
    if (!target || !params) throw missingTargetOrParams();
    const result = await unaryCall(target, req.context, ctx, (provider, call) => {
      if (!provider.embed) {
        throw new Failure({
          status: 400,
          kind: "unsupported",
          param: "model",
          message: `provider ${target.provider} (type ${provider.config.type}) does not offer embeddings`,
        });
      }
      return provider.embed({ ...call, params });
    });
    return makeMessage(EmbedResponseSchema, { result });
  }

  async function countTokens(
    req: CountTokensRequest,
    ctx: HandlerContext,
  ): Promise<CountTokensResponse> {
    const { target, params } = req;
    if (!target || !params) throw missingTargetOrParams();
    let provider: Provider;
    try {
      provider = providerFor(target.provider);
    } catch (err) {
      throw Failure.from(err).toConnectError();
    }
    if (!provider.countTokens) {
      // No upstream call is made, so none is counted: the router passes over such a target.
      throw new Failure({
        status: 400,
        kind: "unsupported",
        param: "model",
        provider: target.provider,
        message: `provider ${target.provider} (type ${provider.config.type}) cannot count tokens`,
      }).toConnectError();
    }
    const count = provider.countTokens;
    const result = await unaryCall(target, req.context, ctx, (p, call) =>
      count.call(p, { ...call, params }),
    );
    return makeMessage(CountTokensResponseSchema, { result });
  }

  /**
   * One unary upstream call (embeddings, a token count), counted in flight and by outcome, its
   * failure logged; rejects with the ConnectError the router reads.
   */
  async function unaryCall<T>(
    target: Target,
    requestContext: RequestContext | undefined,
    ctx: HandlerContext,
    run: (
      provider: Provider,
      call: { provider: string; model: string; context: RequestContext; signal: AbortSignal },
    ) => Promise<T>,
  ): Promise<T> {
    const context = nextHop(requestContext);
    inflight.inc({ provider: target.provider });
    try {
      const result = await run(providerFor(target.provider), {
        provider: target.provider,
        model: target.model,
        context,
        signal: ctx.signal,
      });
      upstreamRequests.inc({ provider: target.provider, target: target.model, outcome: "ok" });
      return result;
    } catch (err) {
      const f = cutByShutdown(ctx.signal)
        ? shuttingDown(0)
        : ctx.signal.aborted
          ? new Failure({ status: 499, kind: "cancelled", message: "cancelled" })
          : Failure.from(err);
      upstreamRequests.inc({
        provider: target.provider,
        target: target.model,
        outcome: outcomeOf(f),
      });
      logFailure(context, target, f);
      throw f.toConnectError();
    } finally {
      inflight.dec({ provider: target.provider });
    }
  }

  return { chat, embed, countTokens, probe };
}

/** An upstream call's outcome label: its failure's kind, or "shutdown" for a call a drain cut. */
function outcomeOf(f: Failure): string {
  return f.code === SHUTTING_DOWN ? "shutdown" : f.kind;
}

function missingTargetOrParams() {
  return new Failure({
    status: 400,
    kind: "invalid_request",
    message: "target and params are required",
  }).toConnectError();
}
