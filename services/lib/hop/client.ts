import http2 from "node:http2";
import net from "node:net";
import type {
  DescMessage,
  DescMethodStreaming,
  DescMethodUnary,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";
import {
  codeFromHttpStatus,
  endStreamFromJson,
  errorFromJsonBytes,
} from "@connectrpc/connect/protocol-connect";
import { timerDelay } from "../timers.js";
import { type Codec, codecFor, makeMessage } from "./codec.js";
import { forgetSentHeaders, requestStream } from "./h2-request.js";
import {
  END_STREAM_FLAG,
  EnvelopeReader,
  headerPairs,
  headersOf,
  headersOfPairs,
  PROTOCOL_VERSION,
  STREAM_CONTENT_TYPE,
  UNARY_CONTENT_TYPE,
} from "./protocol.js";

/** What Headers accepts (the DOM `HeadersInit`, which this project's lib settings do not declare). */
type HeaderInit = ConstructorParameters<typeof Headers>[0];

export interface HopTransportOptions {
  /** The peer, e.g. http://10.0.0.7:7002 (cleartext HTTP/2, prior knowledge). */
  baseUrl: string;
  /** HTTP/2 connections kept to the peer; each call takes the one with the fewest open. */
  sessions?: number;
  /** A connection without open calls for this long is closed (ms; default 60 s). */
  idleTimeoutMs?: number;
}

/** Decoded messages a call buffers before it stops reading (HTTP/2 flow control then holds). */
const HIGH_WATER = 64;
const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR } = http2.constants;
/** Headers HTTP/2 forbids (RFC 9113 §8.2.2); a caller's Headers may still hold them. */
const CONNECTION_HEADERS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "host",
]);

/**
 * A Connect-protocol Transport for the fabric's own hops: binary messages over cleartext
 * HTTP/2 straight on node:http2. It speaks the protocol connect-node's servers speak (and the
 * lean server in ./server.ts), so either end can be swapped; what it leaves out — JSON,
 * compression, interceptors, client and bidi streaming — the fabric's hops do not use.
 *
 * Why not createConnectTransport: per message, connect-node passes each frame through a chain of
 * down-levelled async generators on both ends, ~60 µs of CPU per message per hop on this machine
 * (bench/hop.ts); here a chunk of bytes is split into envelopes and decoded in one loop.
 */
export function createHopTransport(options: HopTransportOptions): Transport {
  const url = new URL(options.baseUrl);
  const prefix = url.pathname.replace(/\/$/, "");
  const pool = new SessionPool(url, options.sessions ?? 1, options.idleTimeoutMs ?? 60_000);

  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: MessageInitShape<I>,
    ): Promise<UnaryResponse<I, O>> {
      const body = codecFor(method.input).encode(makeMessage(method.input, input));
      const call = new Call(pool, pathOf(prefix, method), UNARY_CONTENT_TYPE, header, timeoutMs);
      const { headers, body: bytes } = await call.unary(body, signal);
      const [h, trailer] = splitTrailers(headers);
      return {
        stream: false,
        service: method.parent,
        method,
        header: h,
        message: codecFor(method.output).decode(bytes),
        trailer,
      };
    },

    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
    ): Promise<StreamResponse<I, O>> {
      if (method.methodKind !== "server_streaming") {
        throw new ConnectError("the hop transport only calls server streams", Code.Unimplemented);
      }
      let request: MessageInitShape<I> | undefined;
      for await (const m of input) {
        request = m;
        break;
      }
      if (request === undefined) {
        throw new ConnectError("a server stream needs a request message", Code.InvalidArgument);
      }
      const body = codecFor(method.input).encodeEnvelope(0, makeMessage(method.input, request));
      const call = new Call(pool, pathOf(prefix, method), STREAM_CONTENT_TYPE, header, timeoutMs);
      await call.serverStream(body, signal, codecFor(method.output));
      return new HopStreamResponse(method, call);
    },
  };
}

/**
 * A server stream's response. A class, not an object literal with getters: V8 keeps such a
 * literal in dictionary mode (~0.5 KB), and connect's client holds the response for as long as
 * the stream is open.
 */
class HopStreamResponse<I extends DescMessage, O extends DescMessage>
  implements StreamResponse<I, O>
{
  readonly stream = true;
  readonly service: DescMethodStreaming<I, O>["parent"];
  readonly message: AsyncIterable<MessageShape<O>>;

  constructor(
    readonly method: DescMethodStreaming<I, O>,
    private readonly call: Call,
  ) {
    this.service = method.parent;
    this.message = call as unknown as AsyncIterable<MessageShape<O>>;
  }

  get header(): Headers {
    return headersOfPairs(this.call.responseHeaders);
  }

  get trailer(): Headers {
    return this.call.trailer;
  }
}

function pathOf(prefix: string, method: { parent: { typeName: string }; name: string }): string {
  return `${prefix}/${method.parent.typeName}/${method.name}`;
}

// ---------------------------------------------------------------------------------------------
// Connections

interface PooledSession {
  h2: http2.ClientHttp2Session;
  /** Calls open on it. */
  active: number;
  lastUsed: number;
  /** Why the connection failed, for the calls that were on it. */
  error?: Error;
}

/** HTTP/2 connections to one peer, opened on demand, replaced when they close or go away. */
class SessionPool {
  private readonly slots: Array<PooledSession | undefined>;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly url: URL,
    size: number,
    private readonly idleTimeoutMs: number,
  ) {
    this.slots = new Array(Math.max(1, Math.floor(size))).fill(undefined);
  }

  /** The open connection with the fewest calls, opening one in an empty slot first. */
  acquire(): PooledSession {
    let best: PooledSession | undefined;
    for (let i = 0; i < this.slots.length; i++) {
      let s = this.slots[i];
      if (!s || s.h2.closed || s.h2.destroyed) {
        s = this.open(i);
      }
      if (!best || s.active < best.active) best = s;
      if (best.active === 0) break;
    }
    const chosen = best as PooledSession;
    if (chosen.active++ === 0) chosen.h2.ref();
    chosen.lastUsed = Date.now();
    return chosen;
  }

  release(s: PooledSession): void {
    if (--s.active === 0 && !s.h2.destroyed) s.h2.unref();
    s.lastUsed = Date.now();
  }

  /** A connection that can no longer take calls (refused one, or said GOAWAY) leaves the pool. */
  retire(s: PooledSession): void {
    const i = this.slots.indexOf(s);
    if (i !== -1) this.slots[i] = undefined;
  }

  private open(slot: number): PooledSession {
    const { hostname, port } = this.url;
    const host = hostname.startsWith("[") ? hostname.slice(1, -1) : hostname;
    const h2 = http2.connect(this.url.origin, {
      // Small messages both ways: Nagle would hold each one back for the peer's delayed ACK.
      createConnection: () => net.connect({ host, port: Number(port) || 80, noDelay: true }),
      // 10k open streams on one connection outgrow nghttp2's default 10 MB session budget.
      maxSessionMemory: 256,
    });
    const s: PooledSession = { h2, active: 0, lastUsed: Date.now() };
    h2.on("error", (err) => {
      s.error = err;
    });
    h2.once("goaway", () => this.retire(s));
    h2.once("close", () => this.retire(s));
    h2.unref();
    this.slots[slot] = s;
    this.sweep();
    return s;
  }

  /** Closes connections idle past the timeout, checking now and then rather than per call. */
  private sweep(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(
      () => {
        const now = Date.now();
        let open = 0;
        for (const s of this.slots) {
          if (!s) continue;
          if (s.active === 0 && now - s.lastUsed > this.idleTimeoutMs) {
            this.retire(s);
            s.h2.close();
          } else {
            open++;
          }
        }
        if (open === 0) {
          clearInterval(this.sweeper);
          this.sweeper = undefined;
        }
      },
      Math.max(1000, this.idleTimeoutMs / 2),
    );
    this.sweeper.unref();
  }
}

// ---------------------------------------------------------------------------------------------
// One call

/**
 * One request on an HTTP/2 stream, with the semantics connect-node gives a call: a deadline
 * (sent to the server, and enforced here as DeadlineExceeded), the caller's signal (cancels the
 * stream, surfaces as Canceled with the signal's reason), errors as ConnectError.
 *
 * A server stream's call is also the iterator of its messages. Its state is fields and its
 * handlers are methods (the stream's listeners are shared functions that find the call on the
 * stream): a dozen closures and their contexts per call came to ~1 KB, held as long as the
 * stream is open, in every process that calls another.
 */
class Call {
  /** The answer's headers, kept as pairs rather than as node's object (see headerPairs). */
  responseHeaders: readonly string[] = [];
  /** The end-of-stream metadata; an empty Headers (~0.4 KB) is made only when someone asks. */
  private trailers: Headers | undefined;
  private stream: http2.ClientHttp2Stream | undefined;
  private session: PooledSession | undefined;
  private timer: NodeJS.Timeout | undefined;
  private signal: AbortSignal | undefined;
  /** The call ended (successfully or not); nothing more may happen to it. */
  private settled = false;
  private failure: ConnectError | undefined;
  /** Until a server stream's headers are in, a failure rejects what `serverStream` returned. */
  private opening: { resolve: () => void; reject: (err: ConnectError) => void } | undefined;
  private onFailure: ((err: ConnectError) => void) | undefined;

  // A server stream's messages: decoded, queued until read, and who waits for the next one.
  private reader: EnvelopeReader | undefined;
  private output: Codec | undefined;
  private readonly queue: unknown[] = [];
  private head = 0;
  /** The server's end-of-stream arrived. */
  private ended = false;
  private waiter:
    | { resolve: (r: IteratorResult<unknown>) => void; reject: (e: unknown) => void }
    | undefined;

  constructor(
    private readonly pool: SessionPool,
    private readonly path: string,
    private readonly contentType: string,
    private readonly header: HeaderInit | undefined,
    private readonly timeoutMs: number | undefined,
  ) {}

  get trailer(): Headers {
    this.trailers ??= new Headers();
    return this.trailers;
  }

  private start(body: Buffer, signal: AbortSignal | undefined): http2.ClientHttp2Stream {
    if (signal?.aborted) throw abortError(signal);
    const headers: http2.OutgoingHttpHeaders = {
      ":method": "POST",
      ":path": this.path,
      "content-type": this.contentType,
      "connect-protocol-version": PROTOCOL_VERSION,
    };
    const timeoutMs =
      this.timeoutMs !== undefined && this.timeoutMs > 0 ? this.timeoutMs : undefined;
    if (timeoutMs !== undefined) headers["connect-timeout-ms"] = String(Math.ceil(timeoutMs));
    if (this.header !== undefined) {
      new Headers(this.header).forEach((value, key) => {
        if (!CONNECTION_HEADERS.has(key)) headers[key] = value;
      });
    }
    let stream: http2.ClientHttp2Stream | undefined;
    // A connection that just went away may refuse the request outright: one more on a fresh one.
    for (let attempt = 0; stream === undefined; attempt++) {
      const session = this.pool.acquire();
      try {
        stream = requestStream(session.h2, headers, { endStream: false });
        forgetSentHeaders(stream);
        this.session = session;
      } catch (err) {
        this.pool.release(session);
        this.pool.retire(session);
        if (attempt > 0) throw transportError(err, session);
      }
    }
    this.stream = stream;
    (stream as CallStream)[kCall] = this;
    if (timeoutMs !== undefined) this.timer = setTimeout(timeOut, timerDelay(timeoutMs), this);
    if (signal) {
      this.signal = signal;
      signal.addEventListener("abort", this, { once: true });
    }
    stream.on("error", onStreamError);
    stream.on("close", onStreamClose);
    stream.end(body);
    return stream;
  }

  /** The caller's signal aborted (the call is its listener: no closure per call). */
  handleEvent(): void {
    this.fail(abortError(this.signal));
  }

  onStreamError(err: Error): void {
    this.fail(transportError(err, this.session));
  }

  onStreamClose(): void {
    if (this.settled) return;
    const code = this.stream?.rstCode;
    if (code === NGHTTP2_REFUSED_STREAM) {
      this.fail(new ConnectError("the peer refused the stream", Code.Unavailable));
    } else if (code !== undefined && code !== NGHTTP2_NO_ERROR) {
      this.fail(new ConnectError(`the peer reset the stream (code ${code})`, Code.Unavailable));
    } else {
      this.fail(transportError(this.session?.error, this.session));
    }
  }

  /** Ends the call with an error: cancels the stream, and tells whoever waits. */
  fail(err: ConnectError): void {
    if (this.settled) return;
    this.failure = err;
    this.finish();
    if (this.stream && !this.stream.closed) this.stream.close(NGHTTP2_CANCEL);
    if (this.opening) {
      const { reject } = this.opening;
      this.opening = undefined;
      reject(err);
    } else if (this.reader) {
      this.settleWaiter();
    } else {
      this.onFailure?.(err);
    }
  }

  private finish(): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.signal?.removeEventListener("abort", this);
    if (this.session) this.pool.release(this.session);
  }

  /** Sends a unary request; resolves with the answer's headers and body, or rejects. */
  unary(body: Uint8Array, signal: AbortSignal | undefined) {
    return new Promise<{ headers: http2.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      this.onFailure = reject;
      const stream = this.start(Buffer.from(body.buffer, body.byteOffset, body.byteLength), signal);
      const chunks: Buffer[] = [];
      let headers: http2.IncomingHttpHeaders = {};
      stream.on("response", (h) => {
        headers = h;
      });
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () => {
        if (this.settled) return;
        const status = Number(headers[":status"]);
        const type = String(headers["content-type"] ?? "");
        const bytes = Buffer.concat(chunks);
        if (status === 200 && type === UNARY_CONTENT_TYPE) {
          this.finish();
          resolve({ headers, body: bytes });
          return;
        }
        const fromStatus =
          status === 200
            ? new ConnectError(`unsupported content type ${type}`, Code.Internal)
            : new ConnectError(`HTTP ${status}`, codeFromHttpStatus(status));
        const err =
          status !== 200 && type.startsWith("application/json")
            ? errorFromJsonBytes(bytes, headersOf(headers), fromStatus)
            : fromStatus;
        this.fail(err);
      });
    });
  }

  /**
   * Sends a server-streaming request; resolves once the answer's headers are in. The messages
   * are then read from the call itself (an AsyncIterator).
   */
  serverStream(body: Buffer, signal: AbortSignal | undefined, output: Codec): Promise<void> {
    return new Promise((resolve, reject) => {
      this.opening = { resolve, reject };
      this.output = output;
      this.reader = new EnvelopeReader();
      const stream = this.start(body, signal);
      stream.on("response", onStreamResponse);
      stream.on("data", onStreamData);
      stream.on("end", onStreamEnd);
    });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<unknown>> {
    if (this.head < this.queue.length) return Promise.resolve({ done: false, value: this.take() });
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** A consumer that stops early cancels the call. */
  return(): Promise<IteratorResult<unknown>> {
    if (!this.settled) this.fail(new ConnectError("the caller stopped reading", Code.Canceled));
    return Promise.resolve({ done: true, value: undefined });
  }

  private take(): unknown {
    const queue = this.queue;
    const m = queue[this.head];
    queue[this.head++] = undefined;
    if (this.head === queue.length) {
      queue.length = 0;
      this.head = 0;
    }
    const stream = this.stream;
    if (stream?.isPaused() && queue.length - this.head < HIGH_WATER / 2) stream.resume();
    return m;
  }

  /** Hands whoever waits the next message, the failure, or the end, once there is one. */
  private settleWaiter(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.head < this.queue.length) {
      this.waiter = undefined;
      w.resolve({ done: false, value: this.take() });
    } else if (this.failure) {
      this.waiter = undefined;
      w.reject(this.failure);
    } else if (this.ended) {
      this.waiter = undefined;
      w.resolve({ done: true, value: undefined });
    }
  }

  onStreamResponse(headers: http2.IncomingHttpHeaders): void {
    this.responseHeaders = headerPairs(headers);
    const status = Number(headers[":status"]);
    const type = String(headers["content-type"] ?? "");
    if (status !== 200) {
      this.fail(new ConnectError(`HTTP ${status}`, codeFromHttpStatus(status), headersOf(headers)));
      return;
    }
    if (type !== STREAM_CONTENT_TYPE) {
      this.fail(new ConnectError(`unsupported content type ${type}`, Code.Internal));
      return;
    }
    // From here on a failure reaches whoever reads, after the messages that came before it.
    const opening = this.opening;
    this.opening = undefined;
    opening?.resolve();
  }

  onStreamData(chunk: Buffer): void {
    if (this.settled || !this.reader || !this.output) return;
    try {
      for (const e of this.reader.push(chunk)) {
        if (this.ended) {
          throw new ConnectError(
            "protocol error: received extra message after EndStreamResponse",
            Code.InvalidArgument,
          );
        }
        if (e.flags & END_STREAM_FLAG) {
          this.ended = true;
          // The usual end, `{}`: no error, no trailers (the parser builds an error per call).
          if (e.data.length === 2 && e.data[0] === 0x7b && e.data[1] === 0x7d) continue;
          const end = endStreamFromJson(e.data);
          if (end.error) {
            const pairs = this.responseHeaders;
            for (let i = 0; i < pairs.length; i += 2) {
              end.error.metadata.append(pairs[i] as string, pairs[i + 1] as string);
            }
            throw end.error;
          }
          this.trailers = end.metadata;
          continue;
        }
        this.queue.push(this.output.decode(e.data));
      }
    } catch (err) {
      this.fail(ConnectError.from(err));
      return;
    }
    if (this.queue.length - this.head >= HIGH_WATER) this.stream?.pause();
    this.settleWaiter();
  }

  onStreamEnd(): void {
    if (this.settled) return;
    if (!this.ended) {
      // Cut short: the peer (or its connection) went away before it could finish the call.
      this.fail(
        new ConnectError("the peer ended the stream before the call finished", Code.Unavailable),
      );
      return;
    }
    this.finish();
    this.settleWaiter();
  }
}

/** A call's stream points back at the call, so its listeners can be shared functions. */
const kCall = Symbol("hop call");
type CallStream = http2.ClientHttp2Stream & { [kCall]: Call };

function onStreamError(this: CallStream, err: Error): void {
  this[kCall].onStreamError(err);
}
function onStreamClose(this: CallStream): void {
  this[kCall].onStreamClose();
}
function onStreamResponse(this: CallStream, headers: http2.IncomingHttpHeaders): void {
  this[kCall].onStreamResponse(headers);
}
function onStreamData(this: CallStream, chunk: Buffer): void {
  this[kCall].onStreamData(chunk);
}
function onStreamEnd(this: CallStream): void {
  this[kCall].onStreamEnd();
}
function timeOut(call: Call): void {
  call.fail(new ConnectError("the operation timed out", Code.DeadlineExceeded));
}

function abortError(signal: AbortSignal | undefined): ConnectError {
  const reason: unknown = signal?.reason ?? new Error("This operation was aborted");
  return ConnectError.from(reason, Code.Canceled);
}

/**
 * A call that failed below the protocol: the peer could not be reached, or its connection
 * went away under the call. Both say the peer is unavailable, not that the call was wrong.
 */
function transportError(err: unknown, session: PooledSession | undefined): ConnectError {
  if (err instanceof ConnectError) return err;
  // A stream cancelled because its connection failed names that failure as its cause.
  const cause = (err instanceof Error && err.cause) || session?.error || err;
  const message = cause instanceof Error ? cause.message : "the connection to the peer closed";
  return new ConnectError(message, Code.Unavailable, undefined, undefined, cause);
}

/** Unary answers carry trailers as `trailer-` headers. */
function splitTrailers(raw: http2.IncomingHttpHeaders): [Headers, Headers] {
  const header = new Headers();
  const trailer = new Headers();
  for (const [k, v] of Object.entries(raw)) {
    if (k.startsWith(":") || v === undefined) continue;
    const target = k.startsWith("trailer-") ? trailer : header;
    const name = k.startsWith("trailer-") ? k.slice(8) : k;
    for (const x of Array.isArray(v) ? v : [v]) target.append(name, x);
  }
  return [header, trailer];
}
