import type http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import { bodyWithheld } from "../lib/http/dual-server.js";

// A request refused before its body was read to its end (over server.max_body_bytes) is
// answered only once the rest of the body has come and been thrown away, up to a bound: a client
// still sending when the answer ends (and, on HTTP/1.1, the connection closes) sees a broken
// stream or pipe instead of the answer.

/**
 * How much more of a refused body is read, and for how long, before its connection or stream is
 * cut. Tests change them.
 */
export const drainBounds = { maxBytes: 16 * 1024 * 1024, maxMs: 2_000 };

/**
 * How long an HTTP/1.1 connection cut with its refused body still coming lingers once its answer
 * has gone, reading and throwing away what comes (see lingerThenClose). A client that reads as it
 * writes has the answer within a round trip; one that reads only once it has sent all it meant
 * to has whatever of its body fits in these. `maxMs` keeps a connection that never stops sending
 * from holding its socket (or a SIGTERM's drain, 30 s by default) for long; `quietMs` lets go of
 * one that has stopped sending but not closed; `maxBytes` is more than the kernel's buffers
 * between the two ends can hold (a Linux receive buffer grows to tcp_rmem's maximum, 6 MiB by
 * default, 32 MiB on hosts tuned for fast links), so what the client wrote before it could
 * see the answer does not use the linger up. Tests change them.
 */
export const lingerBounds = { maxMs: 5_000, quietMs: 1_000, maxBytes: 64 * 1024 * 1024 };

/**
 * On HTTP/2, an answer given before the request's body was read to its end (a refusal: over
 * max_body_bytes, undecodable, too slow) ends only once the rest of the body has come and been
 * thrown away. Ended at once, the stream leaves the client sending into a flow-control window
 * that never reopens: Node's HTTP/2 client (connect-node's) keeps the unsent rest in its
 * session's memory, and after about 10 MB of refused bodies (its default maxSessionMemory) fails
 * every new call on the connection with ENHANCE_YOUR_CALM. Reading the rest but ending first is
 * no better, and neither is a reset: only an answer that ends after the body does (measured with
 * Node 20's client). A body that goes on longer than drainBounds allows is cut: the
 * answer ends and the stream is reset with NO_ERROR, which frees what the server held of it.
 */
export function endAfterBody(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void {
  const end = res.end as (...args: unknown[]) => http2.Http2ServerResponse;
  res.end = function (this: http2.Http2ServerResponse, ...args: unknown[]) {
    const stream = res.stream;
    // A request without a body (a GET: END_STREAM on its headers) is not `complete` until its
    // empty body is read, which no handler does: it has nothing to wait for either.
    if (req.complete || stream.readableEnded || stream.endAfterHeaders) {
      return end.apply(this, args);
    }
    // Its client asked `Expect: 100-continue` and was not told to continue: it sends no body.
    // The answer is complete, so the stream is reset with NO_ERROR at once (RFC 9113 §8.1), and
    // whatever the server held of it goes now rather than after drainBounds.maxMs.
    if (bodyWithheld(req)) {
      end.apply(this, args);
      if (!stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
      return this;
    }
    let drained = 0;
    let ended = false;
    const finish = (cut: boolean) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      stream.off("data", onData);
      end.apply(res, args);
      if (cut && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    };
    const onData = (chunk: Buffer) => {
      drained += chunk.length;
      if (drained > drainBounds.maxBytes) finish(true);
    };
    const timer = setTimeout(() => finish(true), drainBounds.maxMs);
    // Straight from the HTTP/2 stream: the request object in front of it only passes data on
    // to a reader, and its reader (connect-node's) gave up on the body. Its listener would
    // queue the rest there and pause the stream; the body goes nowhere now.
    stream.removeAllListeners("data");
    stream.on("data", onData);
    stream.once("end", () => finish(false));
    stream.once("close", () => {
      ended = true;
      clearTimeout(timer);
    });
    stream.resume();
    return this;
  } as typeof res.end;
}

/**
 * On HTTP/1.1, an answer given before the request's body has arrived (a refusal: over
 * max_body_bytes) is held back while the rest of the body is read and thrown away, then sent
 * with `Connection: close`. Sent at once, with the connection closed behind it, it met a client
 * still sending its body as a broken pipe (EPIPE), not as the answer. Whatever writes the
 * answer (connect-node, REST) writes as always: its head and body wait in the corked socket, its
 * end() until the body has come (Node's end() uncorks the socket). A body that goes on
 * longer than drainBounds allows is cut: the answer is sent, and the connection lingers
 * behind it (lingerThenClose). A body whose client was told not to send it (bodyWithheld) is not
 * waited for.
 */
export function answerAfterBody(req: http.IncomingMessage, res: http.ServerResponse): void {
  res.shouldKeepAlive = false;
  const socket = res.socket;
  // Arrived whole (read or not), or not coming: nothing to wait for. A pipelined answer not yet
  // on the socket is sent after the answers before it, which read the body first. A request
  // destroyed cannot be read on (see keepBodyOnReturn): its connection closes after the answer.
  if (req.complete || bodyWithheld(req) || req.destroyed || socket === null || socket.destroyed) {
    return;
  }
  socket.cork();
  const end = res.end as (...args: unknown[]) => http.ServerResponse;
  let ended: unknown[] | undefined;
  let held = true;
  res.end = function (this: http.ServerResponse, ...args: unknown[]) {
    if (!held) return end.apply(this, args);
    ended = args;
    return this;
  } as typeof res.end;
  let drained = 0;
  const release = (cut: boolean) => {
    if (!held) return;
    held = false;
    clearTimeout(timer);
    req.off("data", onData);
    res.end = end as typeof res.end;
    if (cut) {
      // Nothing more is read until the answer has gone: the client's sending waits in TCP's
      // window meanwhile. Node ends a `Connection: close` answer's connection with
      // destroySoon() (its resOnFinish), which would close it under a client still sending.
      req.pause();
      socket.destroySoon = () => lingerThenClose(req, socket);
    }
    socket.uncork();
    if (ended) end.apply(res, ended);
  };
  const onData = (chunk: Buffer) => {
    drained += chunk.length;
    if (drained > drainBounds.maxBytes) release(true);
  };
  const timer = setTimeout(() => release(true), drainBounds.maxMs);
  // The reader that refused the body (connect-node's iterator, REST's readBody) gave up on it:
  // its listeners would keep what comes, or hold the stream to their own pace.
  req.removeAllListeners("data");
  req.removeAllListeners("readable");
  req.on("data", onData);
  req.once("end", () => release(false));
  socket.once("close", () => release(false));
  req.resume();
}

/**
 * Ends a connection whose answer has gone while its refused body is still coming, as nginx's
 * and Apache's lingering close do: the answer is followed by a FIN, what comes is read and
 * thrown away, and the socket is destroyed once the client closes its side or its body has all
 * come, or at lingerBounds. Destroyed at once, with the client's bytes unread or still coming,
 * it had the kernel send a reset, and a client still writing then met ECONNRESET or EPIPE on its
 * write (Node destroys the socket) before it read the answer already in its socket.
 */
function lingerThenClose(req: http.IncomingMessage, socket: net.Socket): void {
  if (socket.destroyed || socket.writableEnded) return;
  socket.end();
  const { maxMs, quietMs, maxBytes } = lingerBounds;
  const close = () => socket.destroy();
  const total = setTimeout(close, maxMs);
  const quiet = setTimeout(close, quietMs);
  let discarded = 0;
  req.on("data", (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > maxBytes) close();
    else quiet.refresh();
  });
  req.once("end", close);
  socket.once("end", close);
  socket.once("close", () => {
    clearTimeout(total);
    clearTimeout(quiet);
  });
  req.resume();
}

/**
 * Has a reader that iterates an HTTP/1.1 request (connect-node's) leave it as it is when it stops
 * early, rather than destroy it: Node's async iterator of a stream destroys the stream on
 * return(), and a request destroyed before its body has come leaves its connection paused with
 * the rest unread, where answerAfterBody could not read it. Set as the request's own iterator
 * (one module-level function, nothing made per request).
 */
export function keepBodyOnReturn(req: http.IncomingMessage): void {
  (req as { [Symbol.asyncIterator]: unknown })[Symbol.asyncIterator] = iterateKeepingBody;
}

function iterateKeepingBody(this: http.IncomingMessage): AsyncIterator<unknown> {
  return this.iterator({ destroyOnReturn: false });
}
