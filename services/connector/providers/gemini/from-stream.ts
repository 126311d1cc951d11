import { type ChatChunk, ChatChunkSchema } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../../lib/errors.js";
import { makeMessage } from "../../../lib/hop/codec.js";
import {
  type ChoiceState,
  candidateDelta,
  checkAnswer,
  isEmptyDelta,
  records,
  type TranslateOptions,
  toStart,
  toUsage,
} from "./from-response.js";

/**
 * The translation of one streamGenerateContent answer, event by event. Every SSE event is a whole
 * GenerateContentResponse holding the next piece of each candidate; function calls arrive whole.
 * Gemini ends a stream by ending the HTTP body (there is no `[DONE]`), so `end()` is what tells a
 * complete answer from a cut one: every candidate must have said why it stopped.
 */
export class GeminiStream {
  readonly #options: TranslateOptions;
  readonly #choices = new Map<number, ChoiceState>();
  #first = true;

  constructor(options: TranslateOptions) {
    this.#options = options;
  }

  /**
   * One parsed event as one canonical chunk (the first carries `start`), or undefined when the
   * event holds nothing for the client. Throws a `Failure` for an error event or a blocked prompt.
   * `usageMetadata` is cumulative in every event, so each chunk's usage is "so far".
   */
  push(event: unknown): ChatChunk | undefined {
    const response = checkAnswer(event, this.#options, "stream");
    const chunk = makeMessage(ChatChunkSchema);
    if (this.#first) chunk.start = toStart(response, this.#options);
    records(response.candidates).forEach((candidate, i) => {
      const delta = candidateDelta(candidate, i, this.#choices, this.#options);
      if (!isEmptyDelta(delta)) chunk.choices.push(delta);
    });
    const usage = toUsage(response.usageMetadata);
    if (usage !== undefined) chunk.usage = usage;
    if (!this.#first && chunk.choices.length === 0 && chunk.usage === undefined) return undefined;
    this.#first = false;
    return chunk;
  }

  /** The body ended: throws unless every candidate seen had finished. */
  end(): void {
    const choices = [...this.#choices.values()];
    if (choices.length === 0 || choices.some((choice) => !choice.finished)) {
      throw new Failure({
        status: 502,
        kind: "upstream_error",
        // Nothing may have reached the client yet; the router decides whether a retry is safe.
        retryable: true,
        provider: this.#options.provider,
        message: `stream from provider ${this.#options.provider} ended early`,
      });
    }
  }
}
