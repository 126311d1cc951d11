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
// The signal here is a class of its own with AbortSignal's members, its 'abort' listeners in a
// plain list. Everything the request path hands it to takes it as an AbortSignal: undici,
// node:http2, node:events and node:timers/promises all check `aborted` and listen with
// addEventListener. It is not `instanceof AbortSignal` (nor an EventTarget), and Node's
// AbortSignal.any() accepts it but never follows it: combine these signals with a listener of
// your own, not AbortSignal.any().
//
// It first extended EventTarget. Node's EventTarget keeps two Maps per target, and the request
// path holds four signals per open stream: the Maps' tables alone were 1.3 KB of a stream's
// ~33 KB of heap (a heap snapshot of 1,000 held streams, bench/mem-probe.ts --snap).

/** The event's default reason, as AbortController.abort() gives it. */
function abortError(): DOMException {
  return new DOMException("This operation was aborted", "AbortError");
}

type Listener = ((event: Event) => unknown) | { handleEvent(event: Event): unknown };

/** EventTarget's listener options (`capture` and `passive` mean nothing here). */
interface ListenerOptions {
  once?: boolean;
  signal?: AbortSignal;
  capture?: boolean;
  passive?: boolean;
}

/** One added listener; `removed` stops it even during a dispatch already under way. */
interface Entry {
  listener: Listener;
  once: boolean;
  removed: boolean;
}

class CallSignal implements AbortSignal {
  aborted = false;
  // biome-ignore lint/suspicious/noExplicitAny: AbortSignal's own type for the reason.
  reason: any = undefined;
  onabort: ((this: AbortSignal, event: Event) => unknown) | null = null;
  /**
   * The listeners. Adding or removing one replaces the list with a new one of exactly its size: a
   * list grown by push() has room for 16 or more (~150 bytes), and a stream holds a few signals,
   * each with a listener or two, for as long as it is open.
   */
  #entries: readonly Entry[] | undefined;

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  /**
   * As EventTarget adds one: a listener already added is not added again, one added with an
   * aborted `signal` option not at all, and the `signal` option removes it later. A signal
   * fires only 'abort', so listeners for other events are never called and not kept.
   */
  addEventListener(
    type: string,
    listener: Listener | null,
    options?: boolean | ListenerOptions,
  ): void {
    if (type !== "abort" || listener === null || this.aborted) return;
    const entries = this.#entries;
    if (entries?.some((e) => e.listener === listener)) return;
    const opts = typeof options === "object" ? options : undefined;
    if (opts?.signal?.aborted) return;
    const entry: Entry = { listener, once: opts?.once === true, removed: false };
    this.#entries = entries === undefined ? [entry] : entries.concat(entry);
    opts?.signal?.addEventListener("abort", () => this.removeEventListener(type, listener), {
      once: true,
    });
  }

  removeEventListener(type: string, listener: Listener | null): void {
    const entries = this.#entries;
    if (type !== "abort" || entries === undefined) return;
    const at = entries.findIndex((e) => e.listener === listener);
    if (at < 0) return;
    (entries[at] as Entry).removed = true;
    this.#entries =
      entries.length === 1 ? undefined : entries.slice(0, at).concat(entries.slice(at + 1));
  }

  /** Dispatches an 'abort' event to the listeners (an event of another type reaches none). */
  dispatchEvent(event: Event): boolean {
    if (event.type !== "abort") return true;
    const entries = this.#entries;
    if (entries === undefined) return true;
    // The list is never changed in place (see #entries): this is the list as the event began.
    for (const entry of entries) {
      if (entry.removed) continue;
      if (entry.once) this.removeEventListener("abort", entry.listener);
      call(entry.listener, this, event);
    }
    return true;
  }

  /** What AbortController.abort does: once, the reason, then the event to every listener. */
  fire(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason === undefined ? abortError() : reason;
    const event = new Event("abort");
    if (this.onabort) call(this.onabort, this, event);
    this.dispatchEvent(event);
    this.#entries = undefined; // an aborted signal fires no more
  }
}

/**
 * Calls a listener as EventTarget does: a function with the signal as `this`, an object through
 * its handleEvent. What a listener throws goes where EventTarget sends it, to uncaughtException,
 * after the other listeners have run.
 */
function call(listener: Listener, target: CallSignal, event: Event): void {
  try {
    if (typeof listener === "function") listener.call(target, event);
    else listener.handleEvent(event);
  } catch (err) {
    process.nextTick(() => {
      throw err;
    });
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
