// A cheaper AbortController for the per-call cancellation of the request path.
//
// Node 20 makes every AbortSignal as an EventTarget and then swaps its prototype
// (ObjectSetPrototypeOf in lib/internal/abort_controller.js), which V8 handles on a slow path:
// ~4 µs per signal on the machines here, where `new EventTarget()` costs ~0.12 µs, and adding and
// removing a listener costs ~2 µs on such a signal against ~0.5 µs on a plain EventTarget.
// A request through one process made four of them (the ingress's, one per in-process call, the
// router's attempt), ~20 µs of its ~190 µs of CPU (bench/README.md). Node 22 made signals
// cheaper; Node 20 is what runs here.
//
// The signal here is an EventTarget of its own class with AbortSignal's members. Everything the
// request path hands it to takes it as an AbortSignal: undici, node:http2, node:events and
// node:timers/promises all check `aborted` and listen with addEventListener. The one thing it is
// not is `instanceof AbortSignal`, and Node's AbortSignal.any() accepts it but never follows it:
// combine these signals with a listener of your own, not AbortSignal.any().

/** The event's default reason, as AbortController.abort() gives it. */
function abortError(): DOMException {
  return new DOMException("This operation was aborted", "AbortError");
}

class CallSignal extends EventTarget implements AbortSignal {
  aborted = false;
  // biome-ignore lint/suspicious/noExplicitAny: AbortSignal's own type for the reason.
  reason: any = undefined;
  onabort: ((this: AbortSignal, event: Event) => unknown) | null = null;

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  /** What AbortController.abort does: once, the reason, then the event to every listener. */
  fire(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason === undefined ? abortError() : reason;
    const event = new Event("abort");
    this.onabort?.call(this, event);
    this.dispatchEvent(event);
  }
}

/** An AbortController whose signal is cheap to make (see above). */
export class CallAbort {
  readonly #signal = new CallSignal();

  get signal(): AbortSignal {
    return this.#signal;
  }

  /** Aborts the signal with `reason` (default: an AbortError DOMException); later calls do nothing. */
  abort(reason?: unknown): void {
    this.#signal.fire(reason);
  }
}
