import type http from "node:http";
import http2 from "node:http2";
import { CallAbort } from "../lib/abort.js";
import { CompletionBuilder } from "../lib/chat/aggregate.js";
import { Failure, modelNotFound, SHUTTING_DOWN } from "../lib/errors.js";
import { requestIdOf } from "../lib/ids.js";
import { timerDelay } from "../lib/timers.js";
import { childSpan, formatTraceparent, parseTraceparent, type TraceContext } from "../lib/trace.js";
import { adminUsage } from "./admin.js";
import { parseCountTokensRequest } from "./anthropic/parse-request.js";
import { authenticate, type Caller, presentedKey, visibleModels } from "./auth.js";
import { parseJson, parseRequest, readBody } from "./body.js";
import {
  anthropicCodec,
  type ChatCodec,
  openAICodec,
  responsesCodec,
  type StreamFramer,
} from "./codecs.js";
import {
  ChatExchange,
  countRejected,
  type IngressDeps,
  type IngressMetrics,
  type MetricApi,
  runCountTokens,
  runEmbed,
} from "./exchange.js";
import { routingHints, takeBodyFallbacks } from "./hints.js";
import { decorateLimitError } from "./limits/headers.js";
import { LimitExceeded } from "./limits/index.js";
import { parseEmbeddingsRequest, renderEmbeddings } from "./openai/embeddings.js";
import { renderModel, renderModelList } from "./openai/models.js";
import { answerAfterBody } from "./refused-body.js";

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

export interface RestDeps extends IngressDeps {
  metrics: IngressMetrics;
  /** Prometheus text of every registry this process serves. */
  renderMetrics(): Promise<{ contentType: string; body: string }>;
  /** Whether the router answers and config is loaded; false while draining. */
  ready(): Promise<boolean>;
}

/** The ingress's REST routes: OpenAI-compatible API plus health and metrics. */
export function createRestHandler(deps: RestDeps) {
  const created = Math.floor(Date.now() / 1000);

  return async function handle(req: Req, res: Res): Promise<void> {
    const requestId = requestIdOf(headerValue(req, "x-request-id"));
    // Headers every answer carries, handed to writeHead with the rest: res.setHeader would give
    // the response a header table of its own (~0.8 KB), kept for as long as a stream is open.
    const base: Record<string, string> = { "x-request-id": requestId };
    const path = pathOf(req.url);
    const started = performance.now();
    let trace: TraceContext | undefined;
    try {
      if (path === "/healthz" || path === "/readyz" || path === "/metrics") {
        // HEAD as GET: load balancers check health so (Node leaves the body out).
        if (!isGet(req)) throw methodNotAllowed(req.method, "GET");
      }
      if (path === "/healthz") {
        return sendJson(res, 200, { status: "ok" }, base);
      }
      if (path === "/readyz") {
        const ok = await deps.ready();
        return sendJson(res, ok ? 200 : 503, { status: ok ? "ready" : "not ready" }, base);
      }
      if (path === "/metrics") {
        const m = await deps.renderMetrics();
        res.writeHead(200, { ...base, "content-type": m.contentType });
        res.end(m.body);
        return;
      }
      // The ingress's span of the caller's trace (or of a new one); answered on every response.
      trace = childSpan(parseTraceparent(headerValue(req, "traceparent")));
      base.traceparent = formatTraceparent(trace);
      if (path === "/v1/chat/completions" || path === "/chat/completions") {
        if (req.method !== "POST") throw methodNotAllowed(req.method, "POST");
        return await chat(openAICodec, req, res, requestId, trace, base);
      }
      if (path === "/v1/messages") {
        if (req.method !== "POST") throw methodNotAllowed(req.method, "POST");
        // Anthropic names every answer's id so (the SDK's `_request_id`); errors carry it too.
        base["request-id"] = requestId;
        return await chat(anthropicCodec, req, res, requestId, trace, base);
      }
      if (path === "/v1/responses" || path === "/responses") {
        if (req.method !== "POST") throw methodNotAllowed(req.method, "POST");
        return await chat(responsesCodec, req, res, requestId, trace, base);
      }
      if (path.startsWith("/v1/responses/") || path.startsWith("/responses/")) {
        // Retrieving, cancelling, deleting a response or listing its input items needs it stored.
        throw new Failure({
          status: 400,
          kind: "invalid_request",
          code: "unsupported_stateless",
          message:
            "Switchyard is stateless and stores no responses: they cannot be retrieved, cancelled or deleted. Send the whole conversation in 'input' with each POST /v1/responses.",
        });
      }
      if (path === COUNT_TOKENS_PATH) {
        if (req.method !== "POST") throw methodNotAllowed(req.method, "POST");
        base["request-id"] = requestId;
        return await countTokens(req, res, requestId, trace, base);
      }
      if (path === "/v1/embeddings" || path === "/embeddings") {
        if (req.method !== "POST") throw methodNotAllowed(req.method, "POST");
        return await embeddings(req, res, requestId, trace, base);
      }
      if (path === "/v1/models" || path === "/models") {
        if (!isGet(req)) throw methodNotAllowed(req.method, "GET");
        const caller = callerOf(req);
        return sendJson(
          res,
          200,
          renderModelList(visibleModels(deps.config, caller), created),
          base,
        );
      }
      if (path.startsWith("/v1/models/") || path.startsWith("/models/")) {
        if (!isGet(req)) throw methodNotAllowed(req.method, "GET");
        const caller = callerOf(req);
        const id = modelIdOf(path);
        // A model the key may not use is as unknown as the list shows it (OpenAI answers so too).
        if (id === undefined || !visibleModels(deps.config, caller).includes(id)) {
          throw modelNotFound(id ?? path, "model");
        }
        return sendJson(res, 200, renderModel(id, created), base);
      }
      if (path === "/admin/usage") {
        if (!isGet(req)) throw methodNotAllowed(req.method, "GET");
        const key = presentedKey(headerValue(req, "authorization"), headerValue(req, "x-api-key"));
        const query = new URLSearchParams((req.url ?? "").split("?", 2)[1] ?? "");
        return sendJson(res, 200, await adminUsage(deps, key, query), base);
      }
      throw new Failure({
        status: 404,
        kind: "not_found",
        code: "unknown_url",
        message: `Unknown request URL: ${req.method} ${path}. Please check the URL for typos.`,
      });
    } catch (err) {
      const f = toFailure(err, deps);
      const api = apiOfPath(path);
      // Requests refused before routing still get their log line (chat exchanges log their own).
      if (!(err instanceof RoutedFailure)) {
        if (api) countRejected(deps.metrics, api, f);
        deps.logger.info(
          {
            request_id: requestId,
            trace_id: trace?.traceId,
            api,
            method: req.method,
            path,
            status: f.status,
            outcome: f.kind,
            latency_ms: Math.round((performance.now() - started) * 100) / 100,
            error: f.message,
          },
          "request rejected",
        );
      }
      const codec =
        api === "anthropic" || api === "count_tokens"
          ? anthropicCodec
          : api === "responses"
            ? responsesCodec
            : openAICodec;
      sendError(req, res, f, codec, requestId, deps.clock(), base);
    }
  };

  /** The request's JSON body, held to `server.max_body_bytes`. */
  async function readJson(req: Req): Promise<unknown> {
    return parseJson(await readBody(req, deps.config.server.max_body_bytes));
  }

  function callerOf(req: Req): Caller {
    return authenticate(
      deps.config,
      presentedKey(headerValue(req, "authorization"), headerValue(req, "x-api-key")),
      deps.clock(),
    );
  }

  /**
   * Reads a chat request into its exchange. A helper, so that the frame of `chat`, which waits
   * for as long as the answer streams, never holds the request (see ChatExchange.params).
   */
  async function readChat<Echo>(
    codec: ChatCodec<Echo>,
    req: Req,
    requestId: string,
    trace: TraceContext,
  ): Promise<{ exchange: ChatExchange; echo: Echo }> {
    const caller = callerOf(req);
    const body = await readJson(req);
    const { params, echo } = parseRequest(codec.parse, body);
    if (codec.api === "anthropic") params.anthropicBeta = anthropicBetas(req);
    const routing = routingHints(
      (name) => headerValue(req, name),
      codec.api === "openai" ? takeBodyFallbacks(params) : undefined,
    );
    const exchange = new ChatExchange(
      deps,
      deps.metrics,
      codec.api,
      requestId,
      caller,
      params,
      trace,
    );
    exchange.hints = routing.hints;
    exchange.deadlineMs = routing.deadlineMs;
    return { exchange, echo };
  }

  /** A chat request in any client API's dialect: same auth, routing, limits and logging. */
  async function chat<Echo>(
    codec: ChatCodec<Echo>,
    req: Req,
    res: Res,
    requestId: string,
    trace: TraceContext,
    base: Record<string, string>,
  ): Promise<void> {
    const { exchange, echo } = await readChat(codec, req, requestId, trace);
    // A client that goes away cancels the router call, and through it the upstream request.
    const abort = new CallAbort();
    onClientGone(req, res, () => abort.abort());
    let first: Awaited<ReturnType<ChatExchange["open"]>>;
    try {
      first = await exchange.open(abort);
    } catch (err) {
      const f = exchange.failureOf(err);
      exchange.finish(exchange.clientLeft ? 499 : f.status, { error: f });
      throw new RoutedFailure(f);
    }
    if (exchange.params.stream) {
      return streamAnswer(
        codec.framer(exchange.params, requestId, echo),
        res,
        exchange,
        first,
        abort.signal,
        base,
      );
    }

    const builder = new CompletionBuilder();
    builder.add(first);
    try {
      for (let c = await exchange.next(); c; c = await exchange.next()) builder.add(c);
    } catch (err) {
      const f = exchange.failureOf(err);
      exchange.finish(exchange.clientLeft ? 499 : f.status, { error: f });
      throw new RoutedFailure(f);
    }
    let body: string;
    try {
      body = JSON.stringify(codec.renderWhole(builder.build(), exchange.params, echo));
    } catch (err) {
      const f = Failure.from(err);
      exchange.finish(f.status, { error: f });
      throw new RoutedFailure(f);
    }
    res.writeHead(200, {
      ...base,
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body)),
      ...exchange.routeHeaders(),
    });
    const settled = exchange.settleBeforeEnd();
    if (settled) await settled;
    res.end(body);
    exchange.finish(200);
  }

  async function embeddings(
    req: Req,
    res: Res,
    requestId: string,
    trace: TraceContext,
    base: Record<string, string>,
  ): Promise<void> {
    const caller = callerOf(req);
    const body = await readJson(req);
    const { params, encoding } = parseRequest(parseEmbeddingsRequest, body);
    const { result, headers } = await whole(req, res, (call) =>
      runEmbed(deps, deps.metrics, "openai", requestId, caller, params, call, trace),
    );
    sendJson(res, 200, renderEmbeddings(result, encoding), {
      ...base,
      ...headers,
      ...answeredBy(result),
    });
  }

  /**
   * Anthropic's token count (the SDK's `messages.countTokens()`, which Claude Code calls every
   * turn; the beta client adds `?beta=true`). Only a count from an upstream is answered: a model
   * none of whose targets can count gets the connector's `unsupported` 400, so the client falls
   * back on its own estimate. Not 200 with a guess (Claude Code trusts a 2xx count and would not
   * compact in time), and 400 rather than 404: the SDK raises BadRequestError with our message,
   * does not retry it, and a 404 would read as an unknown model or route.
   */
  async function countTokens(
    req: Req,
    res: Res,
    requestId: string,
    trace: TraceContext,
    base: Record<string, string>,
  ): Promise<void> {
    const caller = callerOf(req);
    const body = await readJson(req);
    const params = parseRequest(parseCountTokensRequest, body);
    params.anthropicBeta = anthropicBetas(req);
    const routing = routingHints((name) => headerValue(req, name));
    const count = await whole(req, res, (call) =>
      runCountTokens(
        deps,
        deps.metrics,
        requestId,
        caller,
        params,
        routing.hints,
        routing.deadlineMs,
        call,
        trace,
      ),
    );
    sendJson(
      res,
      200,
      { input_tokens: count.inputTokens },
      {
        ...base,
        ...answeredBy(count),
      },
    );
  }

  function streamAnswer(
    framer: StreamFramer,
    res: Res,
    exchange: ChatExchange,
    first: AnswerChunk,
    signal: AbortSignal,
    base: Record<string, string>,
  ): void {
    res.writeHead(200, {
      ...base,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      ...exchange.routeHeaders(),
    });
    if (!(res instanceof http2.Http2ServerResponse)) {
      // Node builds the head from ~40 concatenated strings and keeps it on the response for as
      // long as it is open (~1 KB per held stream); a head written out on its own is flattened
      // in place. Corked until the next tick, so it still leaves with the first frame.
      res.cork();
      res.flushHeaders();
      process.nextTick(uncork, res);
    }
    const frame = framer.render(first);
    const full = frame ? !write(res, frame) : false;
    // The request's handler ends here, and the first chunk with it; the writer sends the rest.
    new StreamWriter(res, exchange, framer, signal).start(full);
  }
}

/** Anthropic's token count route; its SDK's beta client adds `?beta=true`, which changes nothing. */
const COUNT_TOKENS_PATH = "/v1/messages/count_tokens";

/**
 * Writes the rest of a streamed answer, to its end. A stream can stay open for minutes: each
 * chunk is asked for by a callback on the exchange's promise rather than in an async loop,
 * because a suspended async function keeps every variable of its frame (the last chunk and
 * frame sent among them), and the frames such a loop waits in cost ~1.3 KB per held stream.
 */
class StreamWriter {
  constructor(
    private readonly res: Res,
    private readonly exchange: ChatExchange,
    private readonly framer: StreamFramer,
    private readonly signal: AbortSignal,
  ) {}

  /** `full`: the first frame filled the socket's buffer, so the next waits for it to drain. */
  start(full: boolean): void {
    if (full)
      drained(this.res, this.signal, this.exchange.remainingMs()).then(this.#pull, this.#fail);
    else this.#pull();
  }

  readonly #pull = (): void => {
    this.exchange.next().then(this.#write, this.#fail);
  };

  readonly #end = (): void => {
    this.res.end(this.framer.finish());
    this.exchange.finish(200);
  };

  /** Writes a chunk and asks for the next (once the socket drained); ends the answer at its end. */
  readonly #write = (chunk: AnswerChunk | undefined): void => {
    try {
      if (!chunk) {
        const settled = this.exchange.settleBeforeEnd();
        if (settled) void settled.then(this.#end).catch(this.#fail);
        else this.#end();
        return;
      }
      const frame = this.framer.render(chunk);
      if (frame && !write(this.res, frame)) {
        drained(this.res, this.signal, this.exchange.remainingMs()).then(this.#pull, this.#fail);
      } else {
        this.#pull();
      }
    } catch (err) {
      this.#fail(err);
    }
  };

  readonly #fail = (err: unknown): void => {
    if (this.exchange.clientLeft) {
      this.exchange.finish(499);
      return;
    }
    // After the first token: an error event and no [DONE], so the answer cannot look complete
    // (a shutdown's cut too: see ActiveRequests).
    const f = this.exchange.failureOf(err);
    if (f instanceof ClientTooSlow) {
      // Nothing more can reach a client that does not read: the connection goes, with what
      // it had not taken of the answer.
      this.res.destroy();
      this.exchange.finish(f.status, { error: f, truncated: true });
      return;
    }
    try {
      this.res.end(this.framer.error(f));
    } catch {
      this.res.destroy();
    }
    this.exchange.finish(f.status, { error: f, truncated: true });
  };
}

type AnswerChunk = NonNullable<Awaited<ReturnType<ChatExchange["next"]>>>;

/** The beta features an Anthropic client names in `anthropic-beta` (comma-separated, repeatable). */
function anthropicBetas(req: Req): string[] {
  const raw = req.headers["anthropic-beta"];
  if (raw === undefined) return [];
  const names: string[] = [];
  for (const value of Array.isArray(raw) ? raw : [raw]) {
    for (const name of value.split(",")) {
      const trimmed = name.trim();
      if (trimmed !== "") names.push(trimmed);
    }
  }
  return names;
}

/**
 * Whether the answer closed before it was complete: the client went away, or the connection was
 * cut. Over HTTP/2 a client's RST_STREAM closes the response as if it had finished (Node's
 * compatibility API emits 'finish' first), so the request's `aborted` tells that case apart.
 */
/**
 * Calls `gone` when the client goes away before its answer is complete. The response of a
 * pipelined HTTP/1.1 request still queued behind an earlier one is not attached to the socket
 * yet and hears nothing of its close: for such a response the socket is watched as well.
 */
function onClientGone(req: Req, res: Res, gone: () => void): void {
  res.once("close", () => {
    if (clientLeft(req, res)) gone();
  });
  if (req instanceof http2.Http2ServerRequest || res.socket !== null) return;
  const socket = req.socket;
  const onSocketClose = () => {
    if (!res.writableFinished) gone();
  };
  socket.once("close", onSocketClose);
  res.once("close", () => socket.off("close", onSocketClose));
}

function clientLeft(req: Req, res: Res): boolean {
  if (!res.writableFinished) return true;
  return req instanceof http2.Http2ServerRequest && req.aborted;
}

function uncork(res: http.ServerResponse): void {
  res.uncork();
}

function write(res: Res, text: string): boolean {
  // Both response types have write(string); TypeScript cannot call the union of their overloads.
  return (res as http.ServerResponse).write(text);
}

/**
 * Resolves when the response can take more (its buffer drained); rejects when the client goes
 * away, or with a ClientTooSlow when it has not read by the request's deadline (`withinMs`).
 */
function drained(res: Res, signal: AbortSignal, withinMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const clear = () => {
      res.off("drain", done);
      signal.removeEventListener("abort", fail);
      clearTimeout(timer);
    };
    const done = () => {
      clear();
      resolve();
    };
    const fail = () => {
      clear();
      reject(new Error("client went away"));
    };
    const timer = setTimeout(() => {
      clear();
      reject(new ClientTooSlow(withinMs));
    }, timerDelay(withinMs));
    res.once("drain", done);
    signal.addEventListener("abort", fail, { once: true });
  });
}

/** A client that stopped reading its answer and was still not reading at the deadline. */
class ClientTooSlow extends Failure {
  constructor(ms: number) {
    super({
      status: 504,
      kind: "timeout",
      code: "timeout",
      message: `the client did not read the answer within the request's deadline (${Math.round(ms)} ms left)`,
    });
  }
}

/** A failure whose request already has its log line from the ChatExchange. */
class RoutedFailure extends Error {
  constructor(readonly failure: Failure) {
    super(failure.message);
  }
}

function toFailure(err: unknown, deps: IngressDeps): Failure {
  if (err instanceof RoutedFailure) return err.failure;
  if (err instanceof Failure) return err;
  // Anything else is our bug: log it with its stack, answer without internals.
  deps.logger.error({ err }, "unhandled error in ingress");
  return new Failure({ status: 500, kind: "upstream_error", message: "internal gateway error" });
}

function sendError(
  req: Req,
  res: Res,
  f: Failure,
  codec: Pick<ChatCodec<unknown>, "api" | "error">,
  requestId: string,
  now: number,
  base: Record<string, string>,
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const e = codec.error(f, requestId);
  if (f instanceof LimitExceeded) decorateLimitError(e, f, codec.api, now);
  if (f instanceof MethodNotAllowed) e.headers.allow = f.allow;
  // After failed attempts the client can tell a retried failure from a first one.
  if (f.attempts > 0) e.headers["x-switchyard-attempts"] = String(f.attempts);
  // The official OpenAI and Anthropic SDKs retry a 5xx twice more unless told otherwise. Once the
  // gateway has made its attempts (routing.retries, across targets and fallbacks) theirs would
  // only multiply them; a shutdown's 503 is worth sending again, to a replica that is not
  // stopping.
  if (f.code === SHUTTING_DOWN) e.headers["x-should-retry"] = "true";
  else if (f.status >= 500 && f.attempts > 0) e.headers["x-should-retry"] = "false";
  const unread = f.status === 413 || f.status === 408;
  // An HTTP/1.1 body we stopped reading cannot be skipped on a kept-alive connection; and a
  // gateway shutting down takes no next request.
  if ((unread || f.code === SHUTTING_DOWN) && !(res instanceof http2.Http2ServerResponse)) {
    e.headers.connection = "close";
    // A body refused for its size is still coming: the answer waits for it (a body too slow
    // to arrive is not waited for any longer).
    if (f.status === 413) answerAfterBody(req as http.IncomingMessage, res);
  }
  // On HTTP/2 the answer's end waits for the rest of the body (refused-body.ts, endAfterBody).
  sendJson(res, e.status, e.body, { ...base, ...e.headers });
}

/**
 * Runs a call answered whole (embeddings, a token count), cancelled when its client leaves; a
 * failure is the client's answer, already logged by `run`.
 */
async function whole<T>(req: Req, res: Res, run: (call: CallAbort) => Promise<T>): Promise<T> {
  const abort = new CallAbort();
  onClientGone(req, res, () => abort.abort());
  try {
    return await run(abort);
  } catch (err) {
    throw new RoutedFailure(Failure.from(err));
  }
}

/** The headers that say who answered (SPEC §4). */
function answeredBy(r: { provider: string; upstreamModel: string; attempts: number }) {
  return {
    "x-switchyard-provider": r.provider,
    "x-switchyard-model": r.upstreamModel,
    "x-switchyard-attempts": String(r.attempts),
  };
}

/** The client API a path belongs to; undefined for routes that are none (health, unknown). */
function apiOfPath(path: string): MetricApi | undefined {
  if (path === "/v1/messages") return "anthropic";
  if (
    path === "/v1/responses" ||
    path === "/responses" ||
    path.startsWith("/v1/responses/") ||
    path.startsWith("/responses/")
  ) {
    return "responses";
  }
  if (path === COUNT_TOKENS_PATH) return "count_tokens";
  if (
    path === "/v1/chat/completions" ||
    path === "/chat/completions" ||
    path === "/v1/embeddings" ||
    path === "/embeddings" ||
    path === "/v1/models" ||
    path === "/models" ||
    path.startsWith("/v1/models/") ||
    path.startsWith("/models/")
  ) {
    return "openai";
  }
  return undefined;
}

/** The model id in `/v1/models/{id}` (percent-decoded: SDKs encode a `/` in a name). */
function modelIdOf(path: string): string | undefined {
  const raw = path.slice(path.indexOf("/models/") + "/models/".length);
  try {
    const id = decodeURIComponent(raw);
    return id === "" ? undefined : id;
  } catch {
    return undefined;
  }
}

function sendJson(
  res: Res,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(text)),
  });
  res.end(text);
}

function methodNotAllowed(method: string | undefined, allowed: "GET" | "POST"): Failure {
  return new MethodNotAllowed(method, allowed);
}

/** A 405, which names what the route takes in `Allow` (RFC 9110 §15.5.6). */
class MethodNotAllowed extends Failure {
  readonly allow: string;

  constructor(method: string | undefined, allowed: "GET" | "POST") {
    super({
      status: 405,
      kind: "invalid_request",
      code: "method_not_allowed",
      message: `Method ${method} is not allowed here; use ${allowed}`,
    });
    this.allow = allowed === "GET" ? "GET, HEAD" : "POST";
  }
}

/** GET, or HEAD, which is GET without the body (Node leaves it out). */
function isGet(req: Req): boolean {
  return req.method === "GET" || req.method === "HEAD";
}

/**
 * The path of a request target, without its query. The absolute form
 * (`POST http://host/v1/chat/completions`), which a server must accept (RFC 9112 §3.2.2), is
 * reduced to its path.
 */
function pathOf(url: string | undefined): string {
  let target = url ?? "/";
  if (!target.startsWith("/")) {
    try {
      target = new URL(target).pathname;
    } catch {
      // Not a URL either: routed as it is, to a 404.
    }
  }
  return target.split("?", 1)[0] ?? "/";
}

export function headerValue(req: Req, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}
