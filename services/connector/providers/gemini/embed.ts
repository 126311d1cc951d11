import {
  EmbeddingSchema,
  type EmbedParams,
  type EmbedResult,
  EmbedResultSchema,
  UsageSchema,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../../lib/errors.js";
import { makeMessage } from "../../../lib/hop/codec.js";
import { isRecord, parseObject } from "../json-object.js";
import { records } from "./from-response.js";
import { geminiModelName } from "./to-request.js";
import type { GeminiBatchEmbedContentsRequest, GeminiEmbedContentRequest } from "./wire.js";

/** The most inputs one batchEmbedContents call takes (the API answers 400 above it). */
export const EMBED_BATCH = 100;
/** Batches of one request sent at once: a list of 2,048 inputs takes 21. */
export const EMBED_BATCHES_AT_ONCE = 4;

/**
 * One batchEmbedContents body for all inputs, in order. From `extra_json` only the
 * EmbedContentRequest fields the API reference names are passed: `taskType` (or `task_type`) and
 * `title`; other keys (e.g. OpenAI `encoding_format`, which the ingress applies itself) are ignored.
 */
export function toGeminiEmbedRequest(
  params: EmbedParams,
  model: string,
): GeminiBatchEmbedContentsRequest {
  const extras = parseObject(params.extraJson, "extra_json");
  const taskType = extras.taskType ?? extras.task_type;
  const title = extras.title;
  return {
    requests: params.inputs.map((text) => {
      const request: GeminiEmbedContentRequest = {
        model: geminiModelName(model),
        content: { parts: [{ text }] },
      };
      if (typeof taskType === "string") request.taskType = taskType;
      if (typeof title === "string") request.title = title;
      if (params.dimensions !== undefined) request.outputDimensionality = params.dimensions;
      return request;
    }),
  };
}

/**
 * The embeddings, one per input in input order. batchEmbedContents reports no token counts, so
 * usage stays at zero rather than being guessed. Throws a `Failure` (502) when the answer does not
 * hold exactly one vector per input.
 */
export function fromGeminiEmbedResponse(
  response: unknown,
  options: { provider: string; model: string; inputs: number },
): EmbedResult {
  const malformed = (why: string) =>
    new Failure({
      status: 502,
      kind: "upstream_error",
      retryable: true,
      provider: options.provider,
      message: `embeddings from provider ${options.provider} were malformed: ${why}`,
    });
  if (!isRecord(response) || !Array.isArray(response.embeddings)) {
    throw malformed("no embeddings");
  }
  const embeddings = records(response.embeddings);
  if (embeddings.length !== options.inputs || response.embeddings.length !== options.inputs) {
    throw malformed(`${response.embeddings.length} vectors for ${options.inputs} inputs`);
  }
  return makeMessage(EmbedResultSchema, {
    embeddings: embeddings.map((embedding, index) => {
      const values = embedding.values;
      if (!Array.isArray(values) || !values.every((v) => typeof v === "number")) {
        throw malformed(`embeddings[${index}].values is not a list of numbers`);
      }
      return makeMessage(EmbeddingSchema, { index, values });
    }),
    usage: makeMessage(UsageSchema, { promptTokens: 0, completionTokens: 0, totalTokens: 0 }),
    // The answer does not name a model version; the one asked for is the one that answered.
    upstreamModel: options.model,
    provider: options.provider,
  });
}

/** The answers to consecutive batches of one request's inputs, as one answer in input order. */
export function joinEmbedResults(parts: readonly EmbedResult[]): EmbedResult {
  const [first] = parts;
  if (first === undefined) throw new Error("no batches to join");
  let index = 0;
  const embeddings = parts.flatMap((part) =>
    part.embeddings.map((e) => makeMessage(EmbeddingSchema, { index: index++, values: e.values })),
  );
  return makeMessage(EmbedResultSchema, { ...first, embeddings });
}
