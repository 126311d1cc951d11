import type {
  DescMessage,
  DescMethodStreaming,
  DescMethodUnary,
  DescService,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import {
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import { CallCancel, LazyHandlerContext } from "./handler-context.js";
import { makeMessage } from "./hop/codec.js";
import { DONE } from "./iteration.js";
import { timerDelay } from "./timers.js";

/** What Headers accepts (the DOM `HeadersInit`, which this project's lib settings do not declare). */
type HeaderInit = ConstructorParameters<typeof Headers>[0];

type AnyImpl = (req: unknown, ctx: HandlerContext) => unknown;
type AnyMethod = DescMethodUnary<DescMessage, DescMessage> | DescMethodStreaming;

/**
 * A Connect client of a service implementation in this process, for one-process mode: the
 * handler is called directly with the request message — no serialization, no protocol framing,
 * and none of a Transport's per-call wrapping (connect's generic client runs every message
 * through two async generators of its own) — while the seam keeps its meaning: errors arrive as
 * ConnectError, a deadline aborts the handler's signal with DeadlineExceeded, the caller's signal
 * aborts it too, and so does a consumer that stops reading a stream (`return()`, which connect's
 * own clients do not offer). Messages are shared, not copied: neither side may keep mutating one
 * after handing it over. Unary and server-streaming methods only: the fabric has no others.
 */
export function createLocalClient<S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
): Client<S> {
  const client: Record<string, unknown> = {};
  for (const method of service.methods as readonly AnyMethod[]) {
    const fn = (impl as Record<string, AnyImpl | undefined>)[method.localName]?.bind(impl);
    const missing = () =>
      new ConnectError(`${service.typeName}.${method.name} is not implemented`, Code.Unimplemented);
    if (method.methodKind === "unary") {
      client[method.localName] = (input: MessageInitShape<DescMessage>, options?: CallOptions) =>
        callUnary(service, method, fn, missing, input, options);
    } else if (method.methodKind === "server_streaming") {
      client[method.localName] = (input: MessageInitShape<DescMessage>, options?: CallOptions) =>
        callServerStream(service, method, fn, missing, input, options);
    } else {
      client[method.localName] = () => {
        throw new ConnectError(
          `${service.typeName}.${method.name}: only unary and server-streaming methods are served in process`,
          Code.Unimplemented,
        );
      };
    }
  }
  return client as Client<S>;
}

async function callUnary(
  service: DescService,
  method: DescMethodUnary<DescMessage, DescMessage>,
  fn: AnyImpl | undefined,
  missing: () => ConnectError,
  input: MessageInitShape<DescMessage>,
  options: CallOptions | undefined,
): Promise<MessageShape<DescMessage>> {
  const call = new LocalCall(service, method, options);
  let completed = false;
  try {
    if (!fn) throw missing();
    const out = await call.cancel.until(
      Promise.resolve(fn(makeMessage(method.input, input), call) as MessageInitShape<DescMessage>),
    );
    completed = true;
    options?.onHeader?.(call.responseHeader);
    options?.onTrailer?.(call.responseTrailer);
    return makeMessage(method.output, out);
  } catch (err) {
    throw call.error(err);
  } finally {
    call.finish(completed);
  }
}

function callServerStream(
  service: DescService,
  method: DescMethodStreaming,
  fn: AnyImpl | undefined,
  missing: () => ConnectError,
  input: MessageInitShape<DescMessage>,
  options: CallOptions | undefined,
): AsyncIterable<MessageShape<DescMessage>> {
  // The call starts now, as a remote call would (its deadline runs from here); the handler runs
  // when the first message is asked for.
  const call = new LocalCall(service, method, options);
  return new LocalStream(call, method, fn, missing, input, options);
}

/**
 * A server stream's messages as the caller reads them. A class rather than an iterator object
 * with closures, and a read is a promise settled by its methods rather than an async method: an
 * open stream holds this (and, in one process, one per hop) for as long as it lasts, and a
 * suspended async frame, with the wait on the handler that CallCancel.until adds, cost ~0.9 KB
 * per waiting read where this costs ~0.3.
 */
class LocalStream implements AsyncIterableIterator<MessageShape<DescMessage>> {
  private source: AsyncIterator<unknown> | undefined;
  private over = false;
  /**
   * The request, until the handler has it: the stream lasts as long as the answer, and a request
   * (a prompt of tens of KB, say) is the handler's to keep or let go.
   */
  private input: MessageInitShape<DescMessage> | undefined;
  /** The read under way (one at a time), and how to settle it. */
  private reading: Promise<IteratorResult<MessageShape<DescMessage>>> | undefined;
  private resolveRead: ((r: IteratorResult<MessageShape<DescMessage>>) => void) | undefined;
  private rejectRead: ((err: unknown) => void) | undefined;

  constructor(
    private readonly call: LocalCall,
    private readonly method: DescMethodStreaming,
    private readonly fn: AnyImpl | undefined,
    private readonly missing: () => ConnectError,
    input: MessageInitShape<DescMessage>,
    private readonly options: CallOptions | undefined,
  ) {
    this.input = input;
    // An abort ends the read under way at once: a handler that ignores its signal cannot hold
    // up the caller.
    call.cancel.onAbort(this.failRead);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<MessageShape<DescMessage>>> {
    if (this.over) return Promise.resolve(DONE);
    // Reads queue behind the one under way, as an async generator's do.
    if (this.reading !== undefined) {
      const again = () => this.next();
      return this.reading.then(again, again);
    }
    const call = this.call;
    let work: Promise<IteratorResult<unknown>>;
    try {
      if (this.source === undefined) {
        if (!this.fn) throw this.missing();
        this.source = this.start(this.fn);
        this.options?.onHeader?.(call.responseHeader);
      }
      if (call.signal.aborted) throw call.signal.reason;
      work = this.source.next();
    } catch (err) {
      return Promise.reject(this.fail(err));
    }
    const reading = new Promise<IteratorResult<MessageShape<DescMessage>>>((resolve, reject) => {
      this.resolveRead = resolve;
      this.rejectRead = reject;
    });
    this.reading = reading;
    work.then(this.onMessage, this.failRead);
    return reading;
  }

  /** The handler's next message (or its end) settles the read under way, if it still waits. */
  private readonly onMessage = (r: IteratorResult<unknown>): void => {
    const resolve = this.resolveRead;
    if (resolve === undefined) return;
    this.settled();
    try {
      if (r.done) {
        this.end(true);
        this.options?.onTrailer?.(this.call.responseTrailer);
        resolve(DONE);
        return;
      }
      resolve({
        done: false,
        value: makeMessage(this.method.output, r.value as MessageInitShape<DescMessage>),
      });
    } catch (err) {
      this.rejectNow(err);
    }
  };

  /** The handler failed, or the call was aborted: the read under way fails, and the call ends. */
  private readonly failRead = (err: unknown): void => {
    if (this.rejectRead === undefined) return;
    this.rejectNow(err);
  };

  private rejectNow(err: unknown): void {
    const reject = this.rejectRead;
    this.settled();
    const error = this.fail(err);
    reject?.(error);
  }

  private settled(): void {
    this.reading = undefined;
    this.resolveRead = undefined;
    this.rejectRead = undefined;
  }

  /** The error the caller sees; the call ends with it. */
  private fail(err: unknown): ConnectError {
    const error = this.call.error(err);
    this.end(false);
    return error;
  }

  /** Hands the request to the handler (in a frame of its own, which ends here). */
  private start(fn: AnyImpl): AsyncIterator<unknown> {
    const input = this.input ?? {};
    this.input = undefined;
    const messages = fn(makeMessage(this.method.input, input), this.call) as AsyncIterable<unknown>;
    return messages[Symbol.asyncIterator]();
  }

  async return(): Promise<IteratorResult<MessageShape<DescMessage>>> {
    this.end(false);
    return DONE;
  }

  private end(completed: boolean): void {
    if (this.over) return;
    this.over = true;
    this.call.finish(completed);
    // A handler that did not complete is stopped; its own error (if any) has no one to tell.
    if (!completed) void this.source?.return?.()?.catch(() => {});
  }
}

/** Why a finished call's handler signal is aborted (the call is over, nothing failed). */
const CALL_ENDED = new ConnectError("call ended", Code.Canceled);

/**
 * One call: the handler's context and what the caller's side needs (deadline, cancellation,
 * the end of the call). A class rather than an object literal with getters and closures: V8
 * keeps such a literal in dictionary mode (~0.8 KB each), and with its closures it came to
 * ~1.3 KB per call, held as long as a stream is open — twice per stream in one process.
 */
class LocalCall extends LazyHandlerContext implements HandlerContext {
  readonly signal: AbortSignal;
  readonly requestMethod = "POST";
  readonly protocolName = "in-process";
  readonly url: string;
  /** The handler's signal, and what ends the caller's wait on the handler when it aborts. */
  readonly cancel = new CallCancel();
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly callerSignal: AbortSignal | undefined;
  private readonly header: HeaderInit | undefined;
  // Built only when someone looks at it: most calls never do.
  private requestHeaders: Headers | undefined;

  constructor(
    readonly service: DescService,
    readonly method: HandlerContext["method"],
    options: CallOptions | undefined,
  ) {
    super();
    this.url = urlOf(service, method);
    this.signal = this.cancel.signal;
    const timeoutMs = options?.timeoutMs;
    this.header = options?.headers;
    this.contextValues = options?.contextValues;
    if (timeoutMs !== undefined) {
      this.deadline = Date.now() + timeoutMs;
      this.timer = setTimeout(timeOut, timerDelay(timeoutMs), this);
    }
    this.callerSignal = options?.signal;
    if (this.callerSignal?.aborted) this.handleEvent();
    else this.callerSignal?.addEventListener("abort", this, { once: true });
  }

  /** The caller's signal aborted (the call is its listener: an object, not a closure). */
  handleEvent(): void {
    this.cancel.abort(ConnectError.from(this.callerSignal?.reason ?? "cancelled", Code.Canceled));
  }

  get requestHeader(): Headers {
    this.requestHeaders ??= new Headers(this.header);
    return this.requestHeaders;
  }

  /** The error the caller sees: the abort reason when the call was aborted. */
  error(err: unknown): ConnectError {
    if (this.signal.aborted && this.signal.reason !== CALL_ENDED) {
      return ConnectError.from(this.signal.reason);
    }
    return ConnectError.from(err);
  }

  /**
   * The call is over. A handler that did not complete (the consumer stopped early, or it
   * failed) has its signal aborted, so whatever it still holds is released; one that returned
   * has nothing left to stop, and an abort (an event dispatch) would only cost time.
   */
  finish(completed: boolean): void {
    clearTimeout(this.timer);
    this.callerSignal?.removeEventListener("abort", this);
    if (!completed) this.cancel.abort(CALL_ENDED);
  }
}

function timeOut(call: LocalCall): void {
  call.cancel.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
}

/** Each method's URL, built once: a template per call would be a string held per open stream. */
const urls = new WeakMap<object, string>();

function urlOf(service: DescService, method: HandlerContext["method"]): string {
  let url = urls.get(method);
  if (url === undefined) {
    url = `in-process:///${service.typeName}/${method.name}`;
    urls.set(method, url);
  }
  return url;
}
