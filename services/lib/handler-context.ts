import { type ContextValues, createContextValues } from "@connectrpc/connect";

/**
 * What the fabric's own handler contexts share (the in-process client's, local-client.ts, and
 * the hop server's, hop/server.ts): the deadline, and context values and response headers made
 * only when someone asks (most calls never do). A class, not an object literal with getters: V8
 * keeps such a literal in dictionary mode, ~0.8 KB per call, held for as long as a stream is open.
 */
export abstract class LazyHandlerContext {
  /** Epoch ms when the call times out; undefined = no deadline. */
  protected deadline: number | undefined;
  protected contextValues: ContextValues | undefined;
  /** The response headers and trailers, if a handler set any. */
  responseHeaders: Headers | undefined;
  responseTrailers: Headers | undefined;

  timeoutMs(): number | undefined {
    return this.deadline === undefined ? undefined : this.deadline - Date.now();
  }

  get values(): ContextValues {
    this.contextValues ??= createContextValues();
    return this.contextValues;
  }

  get responseHeader(): Headers {
    this.responseHeaders ??= new Headers();
    return this.responseHeaders;
  }

  get responseTrailer(): Headers {
    this.responseTrailers ??= new Headers();
    return this.responseTrailers;
  }
}
