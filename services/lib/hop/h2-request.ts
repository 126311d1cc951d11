// ClientHttp2Session#request without Node 20's per-request deprecation wrappers.
//
// Every request() on Node 20 binds its connect callback with AsyncResource#bind, and that bind
// decorates the bound function with an `asyncResource` accessor built from two fresh
// util.deprecate() wrappers (DEP0172), each of which swaps a function's prototype: ~17 µs per
// request on the machines here, against ~0.2 µs for the binding itself. Node reads neither the
// accessor nor the wrappers; they exist only to warn code that reads `bound.asyncResource`.
// Each hop call makes one request, so a request through four processes paid it twice.
//
// For the duration of the (synchronous) request() call, AsyncResource#bind is replaced by one
// that binds the same way, to the same resource and async scope, without the accessor; the
// original is back before request() returns or throws.

import { AsyncResource } from "node:async_hooks";
import type http2 from "node:http2";

type Bind = AsyncResource["bind"];
const nodeBind: Bind = AsyncResource.prototype.bind;

/** AsyncResource#bind's behaviour: `fn` runs in the resource's async scope. */
function bindInScope(
  this: AsyncResource,
  fn: (...args: unknown[]) => unknown,
  thisArg?: unknown,
): (...args: unknown[]) => unknown {
  const resource = this;
  if (thisArg !== undefined) return (...args) => resource.runInAsyncScope(fn, thisArg, ...args);
  return function (this: unknown, ...args: unknown[]) {
    return resource.runInAsyncScope(fn, this, ...args);
  };
}

/** `session.request(headers, options)`, minus the deprecation wrappers (see above). */
export function requestStream(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  options: http2.ClientSessionRequestOptions,
): http2.ClientHttp2Stream {
  const prototype = AsyncResource.prototype as { bind: unknown };
  prototype.bind = bindInScope;
  try {
    return session.request(headers, options);
  } finally {
    prototype.bind = nodeBind;
  }
}

// node:http2 keeps the headers each stream sent, for the stream's life, to answer
// `stream.sentHeaders`: a null-prototype copy, which V8 keeps as a hash table (~450 bytes for a
// hop request's headers, ~250 for a response's). Node itself reads them only through that getter
// and the hops never do, so a held stream drops them once they are sent: about 0.7 KB less per
// held stream in the router, which both sends and answers a hop (bench/README.md). The property
// is node's own (a symbol named "sent-headers"); where it is missing this does nothing.
let sentHeadersKey: symbol | null | undefined;

/** Lets go of the copy of the headers `stream` sent (`stream.sentHeaders` is undefined after). */
export function forgetSentHeaders(stream: http2.Http2Stream): void {
  if (sentHeadersKey === undefined) {
    sentHeadersKey =
      Object.getOwnPropertySymbols(stream).find((s) => s.description === "sent-headers") ?? null;
  }
  if (sentHeadersKey !== null)
    (stream as unknown as Record<symbol, unknown>)[sentHeadersKey] = undefined;
}
