import type http from "node:http";
import http2 from "node:http2";
import type { Readable } from "node:stream";
import type { DescMessage, DescMethod, DescService, MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  codeToHttpStatus,
  endStreamToJson,
  errorToJsonBytes,
  parseTimeout,
} from "@connectrpc/connect/protocol-connect";
import { CallCancel, LazyHandlerContext } from "../handler-context.js";
import type { DualHandler } from "../http/dual-server.js";
import { timerDelay } from "../timers.js";
import { type Codec, codecFor, makeMessage } from "./codec.js";
import { forgetSentHeaders } from "./h2-request.js";
import {
  END_STREAM_FLAG,
  EnvelopeReader,
  envelope,
  headerPairs,
  headersOfPairs,
  STREAM_CONTENT_TYPE,
  UNARY_CONTENT_TYPE,
} from "./protocol.js";

type Res = http.ServerResponse | http2.Http2ServerResponse;
type RequestHeaders = http.IncomingHttpHeaders | http2.IncomingHttpHeaders;
/**
 * Where a call's answer goes: an HTTP/1.1 response, a response of node's HTTP/2 compatibility API,
 * or an HTTP/2 stream itself (the dual server hands the hop calls over before the compatibility
 * layer wraps them: see `DualHandler.stream`).
 */
type Sink = Res | http2.ServerHttp2Stream;
type AnyImpl = (req: unknown, ctx: HandlerContext) => unknown;

/** A service and its implementation, as the hop handler serves them. */
export interface HopService {
  readonly service: DescService;
  readonly impl: object;
}

/** Pairs a service with its implementation, type-checked. */
export function hopService<S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
): HopService {
  return { service, impl };
}

interface Route {
  method: DescMethod;
  input: Codec;
  output: Codec;
  fn: AnyImpl;
  url: string;
}

/**
 * Why a finished call's handler signal is aborted: the call is over, nothing failed. One shared
 * reason, because abort() without one builds a DOMException (with a stack) every call.
 */
const CALL_ENDED = new ConnectError("call ended", Code.Canceled);
const clientCancelled = () => new ConnectError("the client cancelled", Code.Canceled);

/** The longest deadline a caller may ask for (ms), as in connect's handlers. */
const MAX_TIMEOUT_MS = 0xffffffff;
/** Messages of a stream held for one write at most this big. */
const FLUSH_BYTES = 64 * 1024;
/** Request bodies are one small message; anything bigger than this is not ours. */
const MAX_REQUEST_BYTES = 64 * 1024 * 1024;

/**
 * Serves the Connect protocol's binary POST calls to `services` straight from node's request
 * and response — one loop per call that encodes each message the implementation yields and
 * writes what is ready in one go — and hands every other request (gRPC, gRPC-web, JSON,
 * compression, GET, unknown paths) to `fallback`, e.g. connectNodeAdapter with the same routes.
 * Works for HTTP/1.1 and HTTP/2 alike. Over HTTP/2 it takes its calls as bare streams
 * (`handler.stream`, which the dual server calls first): node's compatibility API would add a
 * request and a response object, and their listeners, to every call, ~2 KB of heap for as long as
 * a stream is open and a few per cent of a hop server's CPU.
 */
export function createHopHandler(opts: {
  services: readonly HopService[];
  fallback: DualHandler;
  /**
   * As connect-node's option of that name: once it aborts, every call still open, and every call
   * that comes after, ends at once with its reason as the error (a server whose drain ran out).
   * The handler's signal aborts with it too, which stops what the call was doing.
   */
  shutdownSignal?: AbortSignal;
}): DualHandler {
  const shutdown = opts.shutdownSignal;
  /** Calls open now, for the shutdown to end; kept only when there is a shutdown to end them. */
  const open = shutdown ? new Set<ServerCall>() : undefined;
  shutdown?.addEventListener(
    "abort",
    () => {
      const reason = toConnectError(shutdown.reason);
      for (const call of [...(open ?? [])]) call.stop(reason);
    },
    { once: true },
  );
  const routes = new Map<string, Route>();
  for (const { service, impl } of opts.services) {
    for (const method of service.methods) {
      const fn = (impl as Record<string, AnyImpl | undefined>)[method.localName];
      if (!fn) continue; // unimplemented: the fallback answers with the right error
      if (method.methodKind !== "unary" && method.methodKind !== "server_streaming") continue;
      const path = `/${service.typeName}/${method.name}`;
      routes.set(path, {
        method,
        input: codecFor(method.input),
        output: codecFor(method.output),
        fn: fn.bind(impl),
        url: path,
      });
    }
  }

  /** The route of a call this handler serves itself, if it is one. */
  const routeOf = (
    method: string | undefined,
    path: string | undefined,
    headers: RequestHeaders,
  ): Route | undefined => {
    const route = method === "POST" ? routes.get(path ?? "") : undefined;
    if (!route) return undefined;
    const streaming = route.method.methodKind === "server_streaming";
    if (headers["content-type"] !== (streaming ? STREAM_CONTENT_TYPE : UNARY_CONTENT_TYPE)) {
      return undefined;
    }
    if (isCompressed(headers[streaming ? "connect-content-encoding" : "content-encoding"])) {
      return undefined;
    }
    return route;
  };

  const handler: DualHandler = (req, res) => {
    const route = routeOf(req.method, req.url, req.headers);
    if (route) serve(route, req.headers, req, res, open, shutdown);
    else opts.fallback(req, res);
  };
  handler.stream = (stream, headers) => {
    const route = routeOf(headers[":method"], headers[":path"], headers);
    if (route === undefined) return false;
    stream.on("error", ignoreError);
    serve(route, headers, stream, stream, open, shutdown);
    return true;
  };
  return handler;
}

/** Reads the call's one request message, then answers it. */
function serve(
  route: Route,
  headers: RequestHeaders,
  body: Readable,
  sink: Sink,
  open: Set<ServerCall> | undefined,
  shutdown: AbortSignal | undefined,
): void {
  readBody(body, (bytes) => {
    if (bytes === undefined) {
      refuse(sink);
      return;
    }
    const call = new ServerCall(route, headers, sink);
    if (shutdown?.aborted) call.stop(toConnectError(shutdown.reason));
    else if (open) call.track(open);
    if (route.method.methodKind === "server_streaming") {
      serveStream(route, call, sink, startStream(route, call, bytes));
    } else {
      void serveUnary(route, call, sink, bytes);
    }
  });
}

/**
 * Decodes a streaming call's request and starts its implementation: its iterator, or the error
 * that ends the call. The request's bytes and message stay in this frame, which ends here:
 * nothing that lasts as long as the stream (a prompt of tens of KB would stay for minutes)
 * holds them.
 */
function startStream(
  route: Route,
  call: ServerCall,
  body: Buffer,
): AsyncIterator<unknown> | ConnectError {
  try {
    if (call.stopped) throw call.stopped;
    const input = decodeRequest(route, body);
    return (route.fn(input, call.ctx) as AsyncIterable<unknown>)[Symbol.asyncIterator]();
  } catch (err) {
    return call.stopped ?? toConnectError(err);
  }
}

/** A call's one request message; bytes that are not one are the caller's error. */
function decodeRequest(route: Route, body: Buffer): unknown {
  const envelopes = new EnvelopeReader().push(body);
  const first = envelopes[0];
  if (envelopes.length !== 1 || !first || first.flags !== 0) {
    throw new ConnectError(
      "protocol error: expected exactly one request message",
      Code.InvalidArgument,
    );
  }
  return decodeMessage(route, first.data);
}

function decodeMessage(route: Route, bytes: Uint8Array): unknown {
  try {
    return route.input.decode(bytes);
  } catch (err) {
    throw new ConnectError(
      `could not decode the request message: ${(err as Error).message}`,
      Code.InvalidArgument,
    );
  }
}

/**
 * Drops a call whose body was too big or cut off: HTTP/2 resets its stream with an error code (a
 * bare destroy() sent the caller nothing it acted on, and it waited for ever), HTTP/1.1 closes
 * the connection.
 */
function refuse(sink: Sink): void {
  const stream = "respond" in sink ? sink : "stream" in sink ? sink.stream : undefined;
  if (stream) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  else sink.destroy();
}

/**
 * Sends the response head. A bare HTTP/2 stream is answered as node's compatibility API answers
 * (waiting for trailers, then sending none): its last DATA frame then goes out before the end of
 * the stream, in a frame of its own. Ending the stream in the last DATA frame saves that frame,
 * but the stream then closes before node calls back the write of that DATA, and node 20 builds an
 * ERR_STREAM_DESTROYED error (with its stack) for every such late callback: that cost more than
 * the frame (bench/hop.ts, c=1).
 */
function sendHead(sink: Sink, status: number, headers: Record<string, string | string[]>): void {
  if ("respond" in sink) {
    headers[":status"] = String(status);
    sink.respond(headers, { waitForTrailers: true });
    forgetSentHeaders(sink);
    sink.once("wantTrailers", sendNoTrailers);
  } else {
    sink.writeHead(status, headers);
  }
}

function sendNoTrailers(this: http2.ServerHttp2Stream): void {
  if (!this.destroyed) this.sendTrailers({});
}

function isCompressed(encoding: string | string[] | undefined): boolean {
  return encoding !== undefined && encoding !== "identity";
}

/** Reads the request body; `done` is called once, with the body or (too big, failed) without. */
function readBody(req: Readable, done: (body: Buffer | undefined) => void): void {
  const chunks: Buffer[] = [];
  let bytes = 0;
  const finish = (body: Buffer | undefined) => {
    req.off("data", onData);
    req.off("end", onEnd);
    req.off("error", onError);
    done(body);
  };
  const onData = (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > MAX_REQUEST_BYTES) finish(undefined);
    else chunks.push(chunk);
  };
  const onEnd = () => finish(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
  const onError = () => finish(undefined);
  req.on("data", onData);
  req.on("end", onEnd);
  req.on("error", onError);
}

/**
 * A stream's errors (a reset from the caller, say) reach the call through its 'close'; as in
 * node's compatibility API, the stream itself gets a listener that ignores them, so that an
 * error after the body was read does not go unhandled.
 */
function ignoreError(): void {}

/** What a handler sees of its call (the shared, lazy parts: ../handler-context.ts). */
class CallContext extends LazyHandlerContext implements HandlerContext {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly url: string;
  readonly requestMethod = "POST";
  readonly protocolName = "connect";
  private requestHeaders: Headers | undefined;
  /** The request's headers, kept as pairs rather than as node's object (see headerPairs). */
  private readonly headers: readonly string[];

  constructor(
    route: Route,
    readonly signal: AbortSignal,
    headers: RequestHeaders,
    deadline: number | undefined,
  ) {
    super();
    this.service = route.method.parent;
    this.method = route.method;
    this.url = route.url;
    this.deadline = deadline;
    this.headers = headerPairs(headers);
  }

  get requestHeader(): Headers {
    this.requestHeaders ??= headersOfPairs(this.headers);
    return this.requestHeaders;
  }
}

/**
 * The state of one call on the server: its context, deadline and cancellation. Its callbacks are
 * methods and shared functions, not closures: an open stream holds the call as long as it lasts.
 */
class ServerCall {
  readonly cancel = new CallCancel();
  readonly ctx: CallContext;
  private timer: NodeJS.Timeout | undefined;
  /** Set when the call cannot go on: the deadline passed or the client went away. */
  stopped: ConnectError | undefined;
  /** The handler is done; a response closing after that stops nothing. */
  private ended = false;
  /** The open calls this one is among until it ends (see createHopHandler's shutdownSignal). */
  private open: Set<ServerCall> | undefined;

  constructor(route: Route, headers: RequestHeaders, res: Sink) {
    const timeout = parseTimeout(
      (headers["connect-timeout-ms"] as string | undefined) ?? null,
      MAX_TIMEOUT_MS,
    );
    if (timeout.error) this.stopped = timeout.error;
    const deadline = timeout.timeoutMs === undefined ? undefined : Date.now() + timeout.timeoutMs;
    if (timeout.timeoutMs !== undefined) {
      this.timer = setTimeout(timeOut, timerDelay(timeout.timeoutMs), this);
    }
    (res as CallResponse)[kCall] = this;
    res.once("close", onResponseClose);
    this.ctx = new CallContext(route, this.cancel.signal, headers, deadline);
  }

  /** Every response closes, most after the handler is done: only a call still running stops. */
  onResponseClose(): void {
    // The error (a stack trace to capture) is made only for a call the client really left.
    if (!this.ended && !this.cancel.signal.aborted) this.stop(clientCancelled());
  }

  track(open: Set<ServerCall>): void {
    this.open = open;
    open.add(this);
  }

  stop(reason: ConnectError): void {
    if (this.ended || this.stopped || this.cancel.signal.aborted) return;
    this.stopped = reason;
    this.cancel.abort(reason);
  }

  /**
   * The call is over: timers off. A handler that did not complete (it failed, or was stopped)
   * has its signal aborted, so whatever it still holds is released; one that returned has
   * nothing left to stop, and an abort (an event dispatch to every listener) would only cost
   * time. The in-process client (local-client.ts) does the same.
   */
  end(completed: boolean): void {
    this.ended = true;
    clearTimeout(this.timer);
    this.open?.delete(this);
    if (!completed) this.cancel.abort(CALL_ENDED);
  }

  /** Response headers as node takes them, the content type first. */
  head(contentType: string, trailersAsHeaders: boolean): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = { "content-type": contentType };
    this.ctx.responseHeaders?.forEach((v, k) => {
      out[k] = v;
    });
    if (trailersAsHeaders) {
      this.ctx.responseTrailers?.forEach((v, k) => {
        out[`trailer-${k}`] = v;
      });
    }
    return out;
  }

  get trailer(): Headers {
    return this.ctx.responseTrailers ?? new Headers();
  }
}

/** A call's response points back at the call, so its listeners can be shared functions. */
const kCall = Symbol("hop server call");
type CallResponse = Sink & { [kCall]: ServerCall };

function onResponseClose(this: CallResponse): void {
  this[kCall].onResponseClose();
}
function timeOut(call: ServerCall): void {
  call.stop(new ConnectError("the operation timed out", Code.DeadlineExceeded));
}

function toConnectError(err: unknown): ConnectError {
  return err instanceof ConnectError
    ? err
    : new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

async function serveUnary(route: Route, call: ServerCall, res: Sink, body: Buffer): Promise<void> {
  let status = 200;
  let out: Uint8Array;
  let headers: Record<string, string | string[]>;
  let completed = false;
  try {
    if (call.stopped) throw call.stopped;
    const input = decodeMessage(route, body);
    const answer = await call.cancel.until(Promise.resolve(route.fn(input, call.ctx)));
    completed = true;
    out = route.output.encode(
      makeMessage(route.method.output, answer as MessageInitShape<DescMessage>),
    );
    headers = call.head(UNARY_CONTENT_TYPE, true);
  } catch (err) {
    const error = call.stopped ?? toConnectError(err);
    status = codeToHttpStatus(error.code);
    out = errorToJsonBytes(error, undefined);
    headers = call.head("application/json", true);
    error.metadata.forEach((v, k) => {
      headers[k] = v;
    });
  } finally {
    call.end(completed);
  }
  if (res.destroyed || res.writableEnded) return;
  headers["content-length"] = String(out.byteLength);
  sendHead(res, status, headers);
  res.end(out);
}

/**
 * Runs a server-streaming implementation and writes each message as it comes. Messages yielded
 * in the same turn of the event loop (a whole answer the upstream sent in one read, say) go out
 * in one write; a slow reader holds the implementation back (backpressure) instead of queueing.
 */
function serveStream(
  route: Route,
  call: ServerCall,
  res: Sink,
  started: AsyncIterator<unknown> | ConnectError,
): void {
  if (started instanceof ConnectError) {
    call.end(false);
    new StreamServer(route, call, res, undefined).finish(started);
    return;
  }
  new StreamServer(route, call, res, started).pull();
}

/**
 * One served stream: asks the implementation for each message by a callback on its promise,
 * rather than in an async loop, because an open stream waits here for minutes and a suspended
 * async frame keeps every register in it (the last message among them) with its await chain.
 */
class StreamServer {
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #headSent = false;
  #flushing: NodeJS.Immediate | undefined;
  /** The reader has not taken what was written yet: the next message waits for 'drain'. */
  #waitingDrain = false;
  /** A message has been asked for and has not come yet. */
  #reading = false;
  #over = false;

  constructor(
    private readonly route: Route,
    private readonly call: ServerCall,
    private readonly res: Sink,
    private readonly messages: AsyncIterator<unknown> | undefined,
  ) {
    // A stopped call (deadline, client gone) ends the stream at once, whatever the
    // implementation is doing.
    if (messages) call.cancel.onAbort(this.#onStop);
  }

  /** Asks the implementation for its next message. */
  pull(): void {
    const messages = this.messages;
    if (this.#over || this.#reading || messages === undefined) return;
    this.#reading = true;
    let read: Promise<IteratorResult<unknown>>;
    try {
      read = messages.next();
    } catch (err) {
      read = Promise.reject(err);
    }
    read.then(this.#onMessage, this.#onError);
  }

  readonly #onMessage = (r: IteratorResult<unknown>): void => {
    this.#reading = false;
    if (this.#over) return;
    if (r.done) {
      this.#end(undefined);
      return;
    }
    try {
      const message = this.route.output.encodeEnvelope(
        0,
        makeMessage(this.route.method.output, r.value as MessageInitShape<DescMessage>),
      );
      this.#pending.push(message);
      this.#pendingBytes += message.length;
      // A burst goes out at the end of the turn, or once it is big enough to hand over now
      // (and to find out whether the reader keeps up).
      if (this.#pendingBytes >= FLUSH_BYTES) {
        if (this.#flushing) clearImmediate(this.#flushing);
        this.#flush();
      } else {
        this.#flushing ??= setImmediate(this.#flush);
      }
    } catch (err) {
      this.#end(this.call.stopped ?? toConnectError(err));
      return;
    }
    if (!this.#waitingDrain) this.pull();
  };

  readonly #onError = (err: unknown): void => {
    this.#reading = false;
    if (this.#over) return;
    this.#end(this.call.stopped ?? toConnectError(err));
  };

  readonly #onStop = (reason: unknown): void => {
    if (this.#over) return;
    this.#end(this.call.stopped ?? toConnectError(reason));
  };

  readonly #flush = (): void => {
    this.#flushing = undefined;
    const res = this.res;
    if (this.#pending.length === 0 || res.destroyed) return;
    if (!this.#headSent) {
      this.#headSent = true;
      sendHead(res, 200, this.call.head(STREAM_CONTENT_TYPE, false));
    }
    const pending = this.#pending;
    const data = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending);
    this.#pending = [];
    this.#pendingBytes = 0;
    if (!(res as http.ServerResponse).write(data) && !this.#waitingDrain && !this.#over) {
      this.#waitingDrain = true;
      res.on("drain", this.#onDrain);
      res.on("close", this.#onDrain);
    }
  };

  readonly #onDrain = (): void => {
    this.res.off("drain", this.#onDrain);
    this.res.off("close", this.#onDrain);
    this.#waitingDrain = false;
    this.pull();
  };

  /** The implementation ended (error undefined) or the call failed or was stopped. */
  #end(error: ConnectError | undefined): void {
    this.#over = true;
    if (error !== undefined) {
      // A handler still running (it ignored its signal, or we stopped reading) is told to end.
      void this.messages?.return?.()?.catch(() => {});
    }
    this.call.end(error === undefined);
    this.finish(error);
  }

  /** Writes what is pending and the end of the stream, with its error if any. */
  finish(error: ConnectError | undefined): void {
    this.#over = true;
    if (this.#flushing) clearImmediate(this.#flushing);
    this.#flushing = undefined;
    const res = this.res;
    if (res.destroyed || res.writableEnded) return;
    const end = JSON.stringify(endStreamToJson(this.call.trailer, error, undefined));
    this.#pending.push(envelope(END_STREAM_FLAG, Buffer.from(end)));
    this.#flush();
    res.end();
  }
}
