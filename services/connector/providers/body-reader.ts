import type { Readable } from "node:stream";

/**
 * Reads a response body a network read at a time, as `for await` over it does, without Node's
 * async iterator. An open stream waits in this read for every token the upstream sends; Node's
 * iterator is an async generator, whose suspended frame and await chain cost several times the
 * one pending promise a read here keeps. What becomes of the body when the reader is done with
 * it (drained or destroyed) is the caller's to say, after release().
 */
export class BodyReader {
  readonly #body: Readable;
  #resolve: ((bytes: Buffer | undefined) => void) | undefined;
  #reject: ((err: unknown) => void) | undefined;
  #ended = false;
  #error: unknown;

  constructor(body: Readable) {
    this.#body = body;
    // A body that ended or failed before this reader came will not say so again.
    if (body.errored) this.#error = body.errored;
    else if (body.readableEnded) this.#ended = true;
    else if (body.destroyed) this.#error = prematureClose();
    body.on("readable", this.#onReadable);
    body.on("end", this.#onEnd);
    body.on("error", this.#onError);
    body.on("close", this.#onClose);
  }

  /** The next bytes, or undefined at the body's end. Rejects with the body's error. */
  read(): Promise<Buffer | undefined> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    const bytes: Buffer | null = this.#body.read();
    if (bytes !== null) return Promise.resolve(bytes);
    if (this.#ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  /**
   * Stops listening to the body, so it can be drained (or destroyed) by someone else. A read
   * still pending ends as at the body's end: nothing would settle it any more, and whoever awaits
   * it (a server writing the answer, say) would wait for ever.
   */
  release(): void {
    const body = this.#body;
    body.off("readable", this.#onReadable);
    body.off("end", this.#onEnd);
    body.off("error", this.#onError);
    body.off("close", this.#onClose);
    const resolve = this.#resolve;
    this.#settled();
    resolve?.(undefined);
  }

  readonly #onReadable = (): void => {
    const resolve = this.#resolve;
    if (resolve === undefined) return;
    const bytes: Buffer | null = this.#body.read();
    // null: the end, which 'end' reports.
    if (bytes === null) return;
    this.#settled();
    resolve(bytes);
  };

  readonly #onEnd = (): void => {
    this.#ended = true;
    const resolve = this.#resolve;
    this.#settled();
    resolve?.(undefined);
  };

  readonly #onError = (err: unknown): void => {
    if (this.#error !== undefined) return;
    this.#error = err;
    const reject = this.#reject;
    this.#settled();
    reject?.(err);
  };

  /** Closed before its end and with no error of its own: cut short all the same. */
  readonly #onClose = (): void => {
    if (this.#ended || this.#error !== undefined) return;
    this.#onError(prematureClose());
  };

  #settled(): void {
    this.#resolve = undefined;
    this.#reject = undefined;
  }
}

/** What Node's own stream helpers call a body closed before its end. */
function prematureClose(): Error {
  return Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" });
}
