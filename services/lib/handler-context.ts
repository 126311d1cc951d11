import { type ContextValues, createContextValues } from "@connectrpc/connect";
import { CallAbort } from "./abort.js";

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

/**
 * A call's cancellation, as the fabric's handlers and their callers see it: the signal the handler
 * gets, and a wait on the handler's work that ends when the call is aborted, so a handler that
 * ignores its signal cannot hold up whoever waits for it. Only the call itself aborts, so the
 * waiting side is told directly rather than through a listener on the signal (an EventTarget
 * registration per call).
 */
export class CallCancel {
  private readonly controller = new CallAbort();
  readonly signal = this.controller.signal;
  /** Rejects the current wait (see until). */
  private interrupt: ((reason: unknown) => void) | undefined;

  abort(reason: unknown): void {
    if (this.signal.aborted) return;
    this.controller.abort(reason);
    this.interrupt?.(reason);
  }

  /**
   * Tells `interrupt` the abort's reason when the call is aborted: for a caller that waits on
   * the handler its own way (LocalStream), instead of through until().
   */
  onAbort(interrupt: (reason: unknown) => void): void {
    this.interrupt = interrupt;
  }

  /** `work`, or its rejection with the abort's reason once the call is aborted. */
  until<T>(work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.signal.aborted) {
        work.catch(() => {});
        reject(this.signal.reason);
        return;
      }
      this.interrupt = reject;
      work.then(resolve, reject);
    });
  }
}
