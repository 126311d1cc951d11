import type {
  ChatChunk,
  ChatParams,
  EmbedParams,
  EmbedResult,
  RequestContext,
  TokenCount,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { CompletionBuilder } from "../../lib/chat/aggregate.js";
import type { ProviderConfig } from "../../lib/config/types.js";

/** One attempt of one chat request against one upstream model. */
export interface ChatCall {
  /** The configured provider name (the key under `providers:`). */
  provider: string;
  /** The model name the upstream knows. */
  model: string;
  /**
   * The request, until the provider takes it (takeParams) to build its upstream request; it is
   * undefined after that.
   */
  params: ChatParams | undefined;
  context: RequestContext;
  /** Aborted when the client goes away or a deadline passes; must cancel the upstream request. */
  signal: AbortSignal;
  /**
   * The caller merges the answer's chunks (a client that is not streaming): after the first,
   * an adapter may yield the chunks one network read brings as one (see ReadBatch).
   */
  merge?: boolean;
}

/** One embeddings attempt against one upstream model. */
export interface EmbedCall {
  provider: string;
  model: string;
  params: EmbedParams;
  context: RequestContext;
  signal: AbortSignal;
}

/** One token-count attempt against one upstream model: the prompt of `params` is counted. */
export interface CountTokensCall {
  provider: string;
  model: string;
  params: ChatParams;
  context: RequestContext;
  signal: AbortSignal;
}

/**
 * An upstream account: credentials, a connection pool and the translations between the
 * canonical chat model and the provider's wire format.
 *
 * `chat` throws a `Failure` (services/lib/errors.ts) if the upstream refuses the request before
 * it produces anything; once it has yielded a chunk, a later failure is also a `Failure` but the
 * router will not retry it. The first chunk carries `start` (id, created, upstream model,
 * provider). Adapters yield canonical chunks, never SSE text.
 */
export interface Provider {
  readonly name: string;
  readonly config: ProviderConfig;
  chat(call: ChatCall): AsyncIterable<ChatChunk>;
  /**
   * Embeddings, for providers that have them (an optional capability: without it the connector
   * answers 400 naming the provider). Resolves with `upstreamModel` and `provider` set.
   */
  embed?(call: EmbedCall): Promise<EmbedResult>;
  /**
   * The input tokens of a chat request's prompt, for providers that can count them (an optional
   * capability: without it the connector answers 400 `unsupported`, never a made-up number).
   * Resolves with `inputTokens`, `upstreamModel` and `provider` set.
   */
  countTokens?(call: CountTokensCall): Promise<TokenCount>;
  /** A cheap check that the upstream answers for `model`; throws a `Failure` if not. */
  probe(model: string, signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
  /** What an operator should know about this provider's settings; logged once at start. */
  readonly caveats?: readonly string[];
}

/**
 * Takes a call's parameters out of it, to build the upstream request from. A provider's chat
 * stream (a generator, or an iterator object) lasts as long as its answer streams, and V8 keeps
 * every variable and parameter of a suspended generator's frame, in use or not: parameters held
 * by the call, or by a variable of the generator, would keep the prompt (tens of KB, more with
 * long contexts) for the minutes a stream can last. So a provider takes them in a helper that
 * builds and sends the request and returns once it is sent, and reads what it needs later
 * (`stream`) before that.
 */
export function takeParams(call: ChatCall): ChatParams {
  const params = call.params;
  if (params === undefined) throw new Error("the call's parameters were already taken");
  call.params = undefined;
  return params;
}

export type ProviderFactory = (name: string, config: ProviderConfig) => Provider;

/**
 * The chunks of one network read, merged into one for a caller that merges them anyway
 * (`ChatCall.merge`). A held answer then costs one generator step and one message through the
 * connector per read instead of one per upstream event. The first chunk always goes alone, so the
 * router's first-token clock reads the upstream's time, not the end of the read.
 */
export class ReadBatch {
  private builder: CompletionBuilder | undefined;
  private first = true;

  constructor(private readonly merge: boolean) {}

  /** The chunk to yield now, or undefined when it is kept for the end of the read. */
  add(chunk: ChatChunk): ChatChunk | undefined {
    if (!this.merge || this.first) {
      this.first = false;
      return chunk;
    }
    this.builder ??= new CompletionBuilder();
    this.builder.add(chunk);
    return undefined;
  }

  /** At the end of a read (and of the answer): what was kept, as one chunk. */
  take(): ChatChunk | undefined {
    const kept = this.builder;
    this.builder = undefined;
    return kept?.chunk();
  }
}
