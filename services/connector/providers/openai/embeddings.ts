import {
  EmbeddingSchema,
  type EmbedParams,
  type EmbedResult,
  EmbedResultSchema,
  UsageSchema,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { makeMessage } from "../../../lib/hop/codec.js";
import { isRecord, parseObject } from "../json-object.js";
import { reportedModel } from "../model-name.js";
import { isCount } from "./from-response.js";
import type { OpenAIEmbeddingsRequest } from "./wire.js";

/** Fields the gateway owns; `extra_json` must not replace them. */
const RESERVED = new Set(["model", "input", "encoding_format"]);

/**
 * Builds the Embeddings request body for one attempt. Vectors are always asked for as floats:
 * the ingress re-encodes them if its client wanted base64. Fields of `extra_json` the gateway
 * does not own (e.g. Azure's `input_type`) pass through for the upstream to judge. Token ids go
 * in the shape the client sent them: one flat list, or a list of lists.
 */
export function toOpenAIEmbeddingsRequest(
  params: EmbedParams,
  model: string,
): OpenAIEmbeddingsRequest {
  const extras = parseObject(params.extraJson, "extra_json");
  // fromEntries defines own properties, so a "__proto__" key stays a plain field.
  const body = Object.fromEntries(
    Object.entries(extras).filter(([key]) => !RESERVED.has(key)),
  ) as OpenAIEmbeddingsRequest;
  body.model = model;
  body.input = wireInput(params);
  body.encoding_format = "float";
  if (params.dimensions !== undefined) body.dimensions = params.dimensions;
  if (params.user !== undefined) body.user = params.user;
  return body;
}

/** `input` as OpenAI takes it: the texts, or the token ids in the shape the client sent. */
function wireInput(params: EmbedParams): OpenAIEmbeddingsRequest["input"] {
  const [first] = params.tokenInputs;
  if (first === undefined) return [...params.inputs];
  if (params.flatTokenInput && params.tokenInputs.length === 1) return [...first.ids];
  return params.tokenInputs.map((list) => [...list.ids]);
}

export type EmbeddingsReading = { ok: true; result: EmbedResult } | { ok: false; problem: string };

/**
 * Reads an Embeddings answer for `inputs` inputs (texts or token lists). Every input must get exactly one vector; the
 * vectors come back ordered by index. `problem` says what was wrong with a malformed answer.
 */
export function fromOpenAIEmbeddings(
  answer: unknown,
  inputs: number,
  provider: string,
): EmbeddingsReading {
  if (!isRecord(answer)) return { ok: false, problem: "not an object" };
  if (!Array.isArray(answer.data)) return { ok: false, problem: "no data" };
  if (answer.data.length !== inputs) {
    return {
      ok: false,
      problem: `${answer.data.length} embeddings for ${inputs} inputs`,
    };
  }
  const vectors: Array<number[] | undefined> = new Array(inputs).fill(undefined);
  for (const [position, item] of answer.data.entries()) {
    if (!isRecord(item)) return { ok: false, problem: `data[${position}] is not an object` };
    const index = isCount(item.index) ? item.index : position;
    if (index >= inputs || vectors[index] !== undefined) {
      return { ok: false, problem: `data[${position}] has index ${index} out of place` };
    }
    const values = readVector(item.embedding);
    if (values === undefined) {
      return { ok: false, problem: `data[${position}].embedding is not a vector` };
    }
    vectors[index] = values;
  }
  const usage = isRecord(answer.usage) ? answer.usage : {};
  const promptTokens = isCount(usage.prompt_tokens) ? usage.prompt_tokens : 0;
  return {
    ok: true,
    result: makeMessage(EmbedResultSchema, {
      // As many distinct in-range indexes as inputs: every slot is filled.
      embeddings: vectors.map((values, index) =>
        makeMessage(EmbeddingSchema, { index, values: values ?? [] }),
      ),
      usage: makeMessage(UsageSchema, {
        promptTokens,
        totalTokens: isCount(usage.total_tokens) ? usage.total_tokens : promptTokens,
      }),
      upstreamModel: reportedModel(answer.model) ?? "",
      provider,
    }),
  };
}

/** Floats as sent, or base64 float32 from a server that ignored `encoding_format: "float"`. */
function readVector(value: unknown): number[] | undefined {
  if (Array.isArray(value)) {
    return value.every((v) => typeof v === "number" && Number.isFinite(v))
      ? (value as number[])
      : undefined;
  }
  if (typeof value !== "string") return undefined;
  const bytes = Buffer.from(value, "base64");
  if (bytes.length === 0 || bytes.length % 4 !== 0) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out: number[] = [];
  for (let offset = 0; offset < bytes.length; offset += 4) out.push(view.getFloat32(offset, true));
  return out;
}
