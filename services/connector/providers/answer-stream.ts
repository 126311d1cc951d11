// A provider's chat answer as the connector reads it, chunk by chunk: what every provider that
// streams Server-Sent Events shares (reading the body, merging a read's chunks, the failures,
// leaving the body drained or destroyed). What a provider's events mean is its own (StreamEvents).

import type { ChatChunk } from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";
import { DONE } from "../../lib/iteration.js";
import { BodyReader } from "./body-reader.js";
import { type ChatCall, ReadBatch } from "./provider.js";
import { type SseEvent, SseParser } from "./sse.js";
import {
  drainBody,
  errorCode,
  failureFromError,
  malformedAnswer,
  type UpstreamResponse,
} from "./upstream-http.js";

/** How one provider reads the events of its streamed answer. */
export interface StreamEvents {
  /** One event's chunk, if it makes one. Throws a Failure for an error event. */
  push(event: SseEvent): ChatChunk | undefined;
  /**
   * An event said the answer is complete ([DONE], message_stop): nothing after it is read, and
   * the rest of the body is drained, so its connection goes back to the pool.
   */
  readonly complete: boolean;
  /**
   * After the last event (the answer complete, or the body ended whole): the last chunk, if any.
   * Throws a Failure when what came is not a whole answer.
   */
  finish(): ChatChunk | undefined;
}

/** What a provider's request brought: a body of events, or an answer to read whole. */
export type OpenedAnswer =
  | { response: UpstreamResponse; events: StreamEvents }
  | { response: UpstreamResponse; whole: () => Promise<ChatChunk[]> };

/** How long the rest of a body may take to arrive after its answer completed before it is dropped. */
const DRAIN_AFTER_COMPLETE_MS = 2000;
const DRAIN_LIMIT_BYTES = 64 * 1024;

/** The failure of a stream that stopped before its answer was whole. */
export function streamEndedEarly(
  provider: string,
  secrets: readonly string[],
  detail?: { cause: unknown; code: string },
): Failure {
  const message = `stream from provider ${provider} ended early`;
  return detail
    ? malformedAnswer(provider, secrets, `${message}: ${detail.code}`, detail.cause)
    : malformedAnswer(provider, secrets, message);
}

/**
 * One chat answer, read, parsed and translated as the caller asks for each chunk; the upstream
 * request is sent on the first ask (`open`). An iterator object rather than async generators:
 * an open stream waits here for every token, and suspended generators keep their frames (the
 * last event and chunk among them), one per layer, and the await chains between them.
 * One reader at a time, as with a generator.
 */
export class AnswerStream implements AsyncIterableIterator<ChatChunk> {
  readonly #provider: string;
  readonly #secrets: readonly string[];
  readonly #signal: AbortSignal;
  readonly #batch: ReadBatch;
  /** Sends the request; dropped once called, with whatever it holds (the call, the prompt). */
  #open: (() => Promise<OpenedAnswer>) | undefined;
  #response: UpstreamResponse | undefined;
  #events: StreamEvents | undefined;
  #parser: SseParser | undefined;
  #reader: BodyReader | undefined;
  /** Chunks read and not handed out yet. */
  readonly #ready: ChatChunk[] = [];
  /** A failure that comes after the chunks read before it. */
  #failure: Failure | undefined;
  /** Nothing more is read: the answer ended, failed, or its reader stopped. */
  #over = false;

  constructor(
    provider: string,
    secrets: readonly string[],
    call: ChatCall,
    open: () => Promise<OpenedAnswer>,
  ) {
    this.#provider = provider;
    this.#secrets = secrets;
    this.#signal = call.signal;
    this.#batch = new ReadBatch(call.merge === true);
    this.#open = open;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<ChatChunk>> {
    const ready = this.#ready.shift();
    if (ready !== undefined) return Promise.resolve({ done: false, value: ready });
    const failure = this.#failure;
    if (failure !== undefined) {
      this.#failure = undefined;
      return Promise.reject(failure);
    }
    if (this.#over) return Promise.resolve(DONE);
    const reader = this.#reader;
    if (reader !== undefined) return reader.read().then(this.#onBytes, this.#onReadError);
    const open = this.#open;
    if (open === undefined) return Promise.reject(new Error("one reader at a time"));
    this.#open = undefined;
    return open().then(this.#onOpened);
  }

  /** The caller stopped reading: the upstream request is cancelled (or its body drained). */
  async return(): Promise<IteratorResult<ChatChunk>> {
    this.#ready.length = 0;
    this.#failure = undefined;
    this.#finish();
    return DONE;
  }

  readonly #onOpened = (
    opened: OpenedAnswer,
  ): IteratorResult<ChatChunk> | Promise<IteratorResult<ChatChunk>> => {
    this.#response = opened.response;
    if (this.#over) {
      // Stopped while the request was under way.
      this.#finish();
      return DONE;
    }
    if ("whole" in opened) {
      this.#over = true;
      return opened.whole().then(this.#onWhole, (err: unknown) => {
        this.#finish();
        throw err;
      });
    }
    this.#events = opened.events;
    this.#parser = new SseParser();
    this.#reader = new BodyReader(opened.response.body);
    return this.next();
  };

  readonly #onWhole = (chunks: ChatChunk[]): Promise<IteratorResult<ChatChunk>> => {
    this.#ready.push(...chunks);
    return this.next();
  };

  /** One network read: its events become chunks (merged, for a caller that merges them). */
  readonly #onBytes = (
    bytes: Buffer | undefined,
  ): IteratorResult<ChatChunk> | Promise<IteratorResult<ChatChunk>> => {
    const events = this.#events;
    const parser = this.#parser;
    if (this.#over || events === undefined || parser === undefined) return DONE;
    try {
      if (bytes === undefined) {
        // Half an event at the end means the body was cut, whatever came before.
        if (parser.end().truncated) throw streamEndedEarly(this.#provider, this.#secrets);
      } else {
        for (const event of parser.push(bytes)) {
          const chunk = events.push(event);
          const now = chunk && this.#batch.add(chunk);
          if (now !== undefined) this.#ready.push(now);
          if (events.complete) break;
        }
        const kept = this.#batch.take();
        if (kept !== undefined) this.#ready.push(kept);
      }
      if (bytes === undefined || events.complete) {
        const last = events.finish();
        if (last !== undefined) this.#ready.push(last);
        this.#finish();
      }
    } catch (err) {
      this.#finish();
      const failure =
        err instanceof Failure
          ? err
          : streamEndedEarly(this.#provider, this.#secrets, { cause: err, code: errorCode(err) });
      if (this.#ready.length === 0) throw failure;
      this.#failure = failure;
    }
    return this.next();
  };

  readonly #onReadError = (err: unknown): never | IteratorResult<ChatChunk> => {
    if (this.#over) return DONE;
    this.#finish();
    if (this.#signal.aborted) throw failureFromError(this.#provider, err, this.#signal);
    throw streamEndedEarly(this.#provider, this.#secrets, { cause: err, code: errorCode(err) });
  };

  /** Leaves the body: drained once the answer is complete, destroyed while it is not. */
  #finish(): void {
    this.#over = true;
    this.#reader?.release();
    this.#reader = undefined;
    const body = this.#response?.body;
    this.#response = undefined;
    if (body === undefined) return;
    if (this.#events?.complete) {
      // The end of the HTTP body may trail the last event by a packet; reading it keeps the
      // connection alive for the next request, where destroying would close it.
      drainBody(body, DRAIN_LIMIT_BYTES, DRAIN_AFTER_COMPLETE_MS);
    } else if (!body.readableEnded) {
      // The caller gave up early (or the stream failed): stop the upstream generating.
      // Nobody reads the body any more, so its abort error has no one to tell.
      body.on("error", () => {}).destroy();
    }
  }
}
