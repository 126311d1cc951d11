import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { newUuid, requestIdOf } from "../ids.js";

/** A request handler that works for both HTTP/1.1 and HTTP/2 (Node's compatibility API). */
export type DualHandler = ((
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void) & {
  /**
   * Offered every HTTP/2 stream before node's compatibility API wraps it in a request and a
   * response; returns true for a stream it has taken, false to leave it to the handler.
   */
  stream?: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;
  /**
   * Whether a request that asks `Expect: 100-continue` is told to send its body. Without this,
   * every such request is (Node's default). One that is not gets the handler's answer at once,
   * and the handler must then not wait for its body: the client sends none until told to
   * (curl waits a second, then sends anyway). HTTP/1.1 closes the connection after such an
   * answer (Node does), as the client may still send the body.
   */
  continues?: (req: http.IncomingMessage | http2.Http2ServerRequest) => boolean;
};

/** Requests (HTTP/1.1 and HTTP/2) that asked `Expect: 100-continue` and were not told to go on. */
const withheld = new WeakSet<http.IncomingMessage | http2.Http2ServerRequest>();

/**
 * Whether a request's body will not come: it asked `Expect: 100-continue`, and the
 * handler's `continues` said no, so its client was never told to send it.
 */
export function bodyWithheld(req: http.IncomingMessage | http2.Http2ServerRequest): boolean {
  return withheld.has(req);
}

export interface DualServer {
  /** Resolves with the bound port once listening. */
  listen(port: number, host: string): Promise<number>;
  /**
   * Stops accepting connections; lets open requests finish until `graceMs`, then cuts them,
   * calling `onCut` first and waiting for it: it answers the requests still open (so what the
   * cut ends can tell it from a client leaving), and their answers leave on connections that
   * close behind them. Whatever is still open CUT_FLUSH_MS later is cut.
   */
  close(graceMs: number, onCut?: () => void | Promise<void>): Promise<void>;
  readonly server: net.Server;
}

// Every HTTP/2 connection opens with this preface (RFC 9113 §3.4); no HTTP/1 method starts with
// "PRI", so three bytes are enough to tell the protocols apart.
const H2_PREFACE_START = Buffer.from("PRI");

/**
 * Serves HTTP/1.1 and cleartext HTTP/2 (prior knowledge, as gRPC clients speak it) on one port.
 * Node's http2.createServer only accepts HTTP/1.1 on TLS (`allowHTTP1`), so the first bytes of
 * each connection pick the server that gets it.
 */
/**
 * Reads a new connection's first bytes, puts them back, and tells `to` which protocol it speaks.
 * The bytes read live in this function's own scope: closures made next to the connection's
 * long-lived listeners would share their scope with them, and keep the first read (a request's
 * head and body, up to 64 KB) for as long as the connection stays open.
 */
function handOver(socket: net.Socket, to: (isH2: boolean) => void): void {
  let head: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
    if (
      head.length < H2_PREFACE_START.length &&
      H2_PREFACE_START.subarray(0, head.length).equals(head)
    ) {
      return; // too few bytes to tell yet
    }
    socket.off("data", onData);
    socket.pause();
    socket.unshift(head);
    to(head.subarray(0, H2_PREFACE_START.length).equals(H2_PREFACE_START));
  };
  socket.on("data", onData);
}

/** How long a new connection may take to send the head of its first request (Node's default). */
const FIRST_HEAD_TIMEOUT_MS = 60_000;
/**
 * How long an HTTP/1.1 request may take to arrive whole, head and body. Longer than the REST
 * body's own limit (ingress/body.ts, 300 s), which answers first in the client API's format;
 * this one bounds every other body (GatewayService over HTTP/1.1).
 */
const REQUEST_TIMEOUT_MS = 330_000;
/** The status Node answers each client error with (its socketOnError); any other is 400. */
const CLIENT_ERROR_STATUS: Record<string, number> = {
  HPE_HEADER_OVERFLOW: 431,
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 413,
  ERR_HTTP_REQUEST_TIMEOUT: 408,
};

/** How long answers written by a shutdown's cut (close's onCut) have to leave before it cuts. */
const CUT_FLUSH_MS = 1_000;
/** How often Node checks HTTP/1.1 connections against those two limits (its default). */
const CHECK_INTERVAL_MS = 30_000;

export interface DualServerOptions {
  /**
   * How long a connection may take, from its start, to send its first request's head (HTTP/1.1)
   * or its whole preface (HTTP/2); one that does not is closed. A connection that sends nothing,
   * or a head a byte at a time, would otherwise hold a socket forever. Every later head on a
   * kept-alive HTTP/1.1 connection has as long, counted from its first byte.
   */
  firstHeadTimeoutMs?: number;
  /** See REQUEST_TIMEOUT_MS; HTTP/1.1 only. */
  requestTimeoutMs?: number;
  /** How often HTTP/1.1 connections are checked against those limits (tests shorten it). */
  checkIntervalMs?: number;
  /**
   * HTTP/2 streams one connection may have open at once, advertised in its SETTINGS
   * (MAX_CONCURRENT_STREAMS): clients queue their calls past it, and a stream sent before the
   * client had the settings is refused (REFUSED_STREAM, safe to send again). Unset: Node's
   * default, no bound, as the fabric's own hops need: one connection carries all of a router's calls.
   */
  maxConcurrentStreams?: number;
  /**
   * How long an HTTP/2 connection may go with no stream open before it is closed (GOAWAY, then
   * the socket: a client opens a new connection for its next call), as HTTP/1.1's keep-alive
   * timeout closes an idle HTTP/1.1 one and gRPC servers' MAX_CONNECTION_IDLE does. Pings do not
   * count: a connection is idle while it carries no call. Unset: never, as the fabric's own hops
   * need (a router keeps one connection to each connector however quiet it is).
   */
  h2IdleTimeoutMs?: number;
  /**
   * The largest head an HTTP/2 request may have, counted as HTTP/2 counts it (RFC 9113 §6.5.2:
   * each field's name and value, plus 32 bytes), advertised in the connection's SETTINGS
   * (MAX_HEADER_LIST_SIZE). Once the client has acknowledged it, Node resets a stream whose head
   * is larger (ENHANCE_YOUR_CALM) before any handler sees it; one sent before then gets a bare
   * 431, as HTTP/1.1's are. Unset: Node's defaults, nothing advertised.
   */
  maxHeaderListSize?: number;
  /**
   * How many fields an HTTP/2 request's head may have, pseudo-headers included; Node resets a
   * stream with more (ENHANCE_YOUR_CALM). Unset: Node's default, 128.
   */
  maxHeaderListPairs?: number;
}

/** An HTTP/2 head's size as HTTP/2 counts it: each field's name and value, plus 32 bytes. */
function headerListSize(rawHeaders: string[]): number {
  // Node decodes HTTP/2 field names and values one byte to a character, so lengths are octets.
  let size = 0;
  for (const field of rawHeaders) size += field.length;
  return size + (rawHeaders.length / 2) * 32;
}

/**
 * Answers a stream whose head is over `bound`: a bare 431, as HTTP/1.1's clientError does, or
 * to a gRPC call RESOURCE_EXHAUSTED, which is what grpc-js reports of Node's own reset (gRPC
 * clients read an HTTP status other than 200 as UNKNOWN).
 */
function refuseHead(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  bound: number,
): void {
  const sent = headers["x-request-id"];
  const id = requestIdOf(typeof sent === "string" ? sent : undefined);
  const type = headers["content-type"];
  const grpc = type === "application/grpc" || type?.startsWith("application/grpc+") === true;
  stream.respond(
    grpc
      ? {
          ":status": 200,
          "content-type": type,
          "grpc-status": "8",
          "grpc-message": `request headers over the ${bound} bytes this server takes`,
          "x-request-id": id,
        }
      : { ":status": 431, "x-request-id": id },
    { endStream: true },
  );
  // The answer is whole: a body still coming is not wanted (RFC 9113 §8.1).
  if (!stream.endAfterHeaders) stream.close(http2.constants.NGHTTP2_NO_ERROR);
}

/** Closes `session` once it has had no stream open for `idleMs` (from its start, or its last stream's end). */
function closeWhenIdle(session: http2.ServerHttp2Session, idleMs: number): void {
  let open = 0;
  const wait = () => setTimeout(() => session.close(), idleMs).unref();
  let idle: NodeJS.Timeout | undefined = wait();
  session.on("stream", (stream: http2.ServerHttp2Stream) => {
    open++;
    clearTimeout(idle);
    idle = undefined;
    stream.once("close", () => {
      if (--open === 0 && !session.closed) idle = wait();
    });
  });
  session.once("close", () => clearTimeout(idle));
}

export function createDualServer(handler: DualHandler, opts: DualServerOptions = {}): DualServer {
  const firstHeadTimeoutMs = opts.firstHeadTimeoutMs ?? FIRST_HEAD_TIMEOUT_MS;
  /** A new connection's deadline for its first request's head, until it has one. */
  const awaitingHead = new WeakMap<net.Socket, NodeJS.Timeout>();
  const headArrived = (socket: net.Socket) => {
    const timer = awaitingHead.get(socket);
    if (timer === undefined) return;
    clearTimeout(timer);
    awaitingHead.delete(socket);
  };
  // http.Server tracks idle keep-alive connections only for sockets it accepted itself, so the
  // sockets handed to it here are tracked by hand: in-flight requests per socket.
  // Weak: a request's 'close' can come after its socket's own, which forgets the socket.
  const h1Busy = new WeakMap<net.Socket, number>();
  let closing = false;
  const h1Options: http.ServerOptions = {
    keepAliveTimeout: 65_000,
    headersTimeout: firstHeadTimeoutMs,
    requestTimeout: opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
    connectionsCheckingInterval: opts.checkIntervalMs ?? CHECK_INTERVAL_MS,
  };
  const onH1Request = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    headArrived(socket);
    h1Busy.set(socket, (h1Busy.get(socket) ?? 0) + 1);
    if (closing) res.shouldKeepAlive = false;
    res.once("close", () => {
      const left = (h1Busy.get(socket) ?? 1) - 1;
      h1Busy.set(socket, left);
      if (closing && left === 0) socket.destroySoon();
    });
    handler(req, res);
  };
  const h1 = http.createServer(h1Options, onH1Request);
  // Node keeps a request's first 1,000 header fields and drops the rest without a word: an
  // `Authorization` after them read as no key. The head's 16 KB (maxHeaderSize, a 431 past it)
  // bounds how many there can be; every one of them reaches the handler.
  h1.maxHeadersCount = 0;
  // An Expect this server does not understand gets 417 without its body being read, as Node
  // answers it, but on a connection that then closes: Node would keep it open, and read the
  // body, which the client may or may not send, as the start of its next request.
  h1.on("checkExpectation", (req: http.IncomingMessage, res: http.ServerResponse) => {
    headArrived(req.socket);
    res.shouldKeepAlive = false;
    const sent = req.headers["x-request-id"];
    res.writeHead(417, {
      "content-type": "text/plain",
      "x-request-id": requestIdOf(typeof sent === "string" ? sent : undefined),
    });
    res.end("Only Expect: 100-continue is understood here\n");
  });
  // What Node answers a request it cannot parse (400), whose head is too large (431) or that
  // does not arrive in time (408), with the `x-request-id` every answer carries: the one the
  // request's answer already has (a body too slow to arrive), else a new one.
  h1.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => {
    // Node's own test (socketOnError): only if no answer on the connection has begun, or the
    // bytes written would corrupt it. `_httpMessage` is the response in flight on the socket.
    const current = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (socket.writable && !current?.headersSent) {
      const status = CLIENT_ERROR_STATUS[err.code ?? ""] ?? 400;
      const id = current?.getHeader("x-request-id");
      socket.write(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nx-request-id: ${typeof id === "string" ? id : newUuid()}\r\n\r\n`,
      );
    }
    socket.destroy(err);
  });
  // Node holds connections to headersTimeout and requestTimeout (a 408, then close) only once
  // its server is listening, and this one never listens itself: it is told so, which starts the
  // checks for the connections handed to it. Without them a kept-alive connection could trickle
  // its next request's head, or a GatewayService body, forever. close() stops the checks.
  h1.emit("listening");
  const settings: http2.Settings = {};
  if (opts.maxConcurrentStreams !== undefined)
    settings.maxConcurrentStreams = opts.maxConcurrentStreams;
  if (opts.maxHeaderListSize !== undefined) settings.maxHeaderListSize = opts.maxHeaderListSize;
  const h2 = http2.createServer(
    {
      settings,
      ...(opts.maxHeaderListPairs === undefined
        ? {}
        : { maxHeaderListPairs: opts.maxHeaderListPairs }),
    },
    handler,
  );
  const continues = handler.continues;
  if (continues) {
    // Listening for it, a server answers `Expect: 100-continue` itself: Node then emits this
    // instead of 'request', and sends no 100 Continue unless told to.
    h1.on("checkContinue", (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (continues(req)) res.writeContinue();
      else withheld.add(req);
      onH1Request(req, res);
    });
    h2.on("checkContinue", (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
      if (continues(req)) res.writeContinue();
      else withheld.add(req);
      handler(req, res);
    });
  }
  const take = handler.stream;
  const headBound = opts.maxHeaderListSize;
  if (take || headBound !== undefined) {
    // Node's compatibility API is the server's 'stream' listener, added for the request handler:
    // streams the handler takes never reach it.
    const compat = h2.listeners("stream") as Array<(...args: unknown[]) => void>;
    const offer = (
      stream: http2.ServerHttp2Stream,
      headers: http2.IncomingHttpHeaders,
      flags: number,
      rawHeaders: string[],
    ) => {
      // Node holds heads to the bound only once the client has acknowledged it; a stream sent
      // before then (a new connection's first calls) is held to it here.
      if (headBound !== undefined && headerListSize(rawHeaders) > headBound)
        return refuseHead(stream, headers, headBound);
      if (take?.(stream, headers)) return;
      for (const listener of compat) listener.call(h2, stream, headers, flags, rawHeaders);
    };
    h2.removeAllListeners("stream");
    h2.on("stream", offer);
  }
  const sessions = new Set<http2.ServerHttp2Session>();
  /** The socket being handed to the HTTP/2 server, whose session it opens at once. */
  let handingOver: net.Socket | undefined;
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    // Its first-head deadline holds until the client's preface is whole (its SETTINGS frame):
    // "PRI" alone, then nothing, would otherwise hold the socket for good.
    const socket = handingOver;
    if (socket) session.once("remoteSettings", () => headArrived(socket));
    if (opts.h2IdleTimeoutMs !== undefined) closeWhenIdle(session, opts.h2IdleTimeoutMs);
  });
  const sockets = new Set<net.Socket>();
  const h2Sockets = new WeakSet<net.Socket>();
  const isH2Socket = (socket: net.Socket) => h2Sockets.has(socket);

  // noDelay: without it Nagle holds small writes back for the peer's delayed ACK (~40 ms a hop).
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      h1Busy.delete(socket);
      headArrived(socket);
    });
    // An idle connection must not keep a draining server alive, nor leak on errors.
    socket.on("error", () => socket.destroy());
    awaitingHead.set(socket, setTimeout(() => socket.destroy(), firstHeadTimeoutMs).unref());
    handOver(socket, (isH2) => {
      if (isH2) {
        h2Sockets.add(socket);
        handingOver = socket;
        h2.emit("connection", socket);
        handingOver = undefined;
      } else h1.emit("connection", socket);
      // The HTTP/1 parser reads through the stream API; HTTP/2 reads the native handle and must
      // not have the stream flowing under it.
      if (!isH2) socket.resume();
    });
  });

  return {
    server,
    listen(port, host) {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          const addr = server.address();
          resolve(typeof addr === "object" && addr ? addr.port : port);
        });
      });
    },
    async close(graceMs, onCut) {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Stops its connection checks; it holds no listening socket of its own to close.
      h1.close();
      // Idle keep-alive sockets (and ones that never sent a byte) close now; busy ones after
      // their last response; HTTP/2 sessions finish their open streams and send GOAWAY.
      for (const socket of sockets)
        if (!h1Busy.get(socket) && !isH2Socket(socket)) socket.destroy();
      for (const s of sessions) s.close();
      let over = false;
      let flush: NodeJS.Timeout | undefined;
      const cut = () => {
        for (const s of sessions) s.destroy();
        for (const s of sockets) s.destroy();
      };
      const deadline = setTimeout(() => {
        void Promise.resolve()
          .then(onCut)
          .catch(() => {})
          .then(() => {
            // Answered HTTP/1.1 connections close after their answer (see onH1Request), and
            // HTTP/2 sessions once their last stream ends (closed above).
            if (!over) flush = setTimeout(cut, CUT_FLUSH_MS);
          });
      }, graceMs);
      await closed;
      over = true;
      clearTimeout(deadline);
      clearTimeout(flush);
    },
  };
}
