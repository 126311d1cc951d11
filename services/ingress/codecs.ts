import type {
  ChatChunk,
  ChatCompletion,
  ChatParams,
} from "../../gen/switchyard/chat/v1/chat_pb.js";
import type { Failure } from "../lib/errors.js";
import { anthropicError } from "./anthropic/errors.js";
import { parseMessagesRequest } from "./anthropic/parse-request.js";
import { MessageStreamRenderer, renderMessage } from "./anthropic/render.js";
import type { AnswerParams, ClientApi } from "./exchange.js";
import { openAIError } from "./openai/errors.js";
import { parseChatRequest } from "./openai/parse-request.js";
import { ChunkRenderer, renderCompletion } from "./openai/render.js";
import { parseResponsesRequest, type ResponsesEcho } from "./responses/parse-request.js";
import { ResponseStreamRenderer, renderResponse } from "./responses/render.js";

/** Frames one streamed answer as SSE in a client API's dialect. */
export interface StreamFramer {
  /** SSE text for a chunk ("" or undefined when the client is owed nothing for it). */
  render(chunk: ChatChunk): string | undefined;
  /** What closes a complete answer (e.g. a usage frame and `[DONE]`, or `message_stop`). */
  finish(): string;
  /** What ends an answer that failed after it began: never looks like a clean end. */
  error(f: Failure): string;
}

/**
 * One client API's chat dialect: request parsing, answer rendering, error envelope. `Echo` is
 * what an answer repeats of its request beyond ChatParams (the Responses API's settings).
 */
export interface ChatCodec<Echo = undefined> {
  readonly api: ClientApi;
  parse(body: unknown): { params: ChatParams; echo: Echo };
  renderWhole(c: ChatCompletion, params: AnswerParams, echo: Echo): unknown;
  framer(params: AnswerParams, requestId: string, echo: Echo): StreamFramer;
  error(
    f: Failure,
    requestId: string,
  ): { status: number; body: unknown; headers: Record<string, string> };
}

/** OpenAI Chat Completions (`POST /v1/chat/completions`). */
export const openAICodec: ChatCodec = {
  api: "openai",
  parse: (body) => ({ params: parseChatRequest(body), echo: undefined }),
  renderWhole: (c, params) => renderCompletion(c, params.model),
  framer(params) {
    const r = new ChunkRenderer({ includeUsage: params.includeUsage });
    return {
      render: (chunk) => r.render(chunk),
      finish: () => (r.finish() ?? "") + r.done(),
      error: (f) => r.error(f),
    };
  },
  error: (f) => openAIError(f),
};

/** Anthropic Messages (`POST /v1/messages`). */
export const anthropicCodec: ChatCodec = {
  api: "anthropic",
  parse: (body) => ({ params: parseMessagesRequest(body), echo: undefined }),
  renderWhole: (c, params) =>
    renderMessage(c, { publicModel: params.model, stopSequences: params.stop }),
  framer(params, requestId) {
    const r = new MessageStreamRenderer({ publicModel: params.model, stopSequences: params.stop });
    return {
      render: (chunk) => r.render(chunk),
      finish: () => r.finish(),
      error: (f) => r.error(f, requestId),
    };
  },
  error: (f, requestId) => anthropicError(f, requestId),
};

/** OpenAI Responses (`POST /v1/responses`), stateless: answered from the request alone. */
export const responsesCodec: ChatCodec<ResponsesEcho> = {
  api: "responses",
  parse: parseResponsesRequest,
  renderWhole: (c, params, echo) => renderResponse(c, params.model, echo),
  framer(params, _requestId, echo) {
    const r = new ResponseStreamRenderer(params.model, echo);
    return {
      render: (chunk) => r.render(chunk),
      finish: () => r.finish(),
      error: (f) => r.error(f),
    };
  },
  error: (f) => openAIError(f),
};
