import {
  type EmbedParams,
  EmbedParamsSchema,
  type EmbedResult,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";
import { makeMessage } from "../../lib/hop/codec.js";

// OpenAI Embeddings (https://platform.openai.com/docs/api-reference/embeddings).

export interface OpenAIEmbeddingsResponse {
  object: "list";
  data: Array<{ object: "embedding"; index: number; embedding: number[] | string }>;
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}

const KNOWN = new Set(["model", "input", "dimensions", "encoding_format", "user"]);

function invalid(message: string, param: string): Failure {
  return new Failure({ status: 400, kind: "invalid_request", message, param });
}

/** Validates an Embeddings request body; `encoding` is what the client wants the vectors as. */
export function parseEmbeddingsRequest(body: unknown): {
  params: EmbedParams;
  encoding: "float" | "base64";
} {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalid("The request body must be a JSON object", "");
  }
  const b = body as Record<string, unknown>;
  if (typeof b.model !== "string" || b.model === "")
    throw invalid("'model' is a required property", "model");
  const input = b.input;
  let inputs: string[];
  if (typeof input === "string") inputs = [input];
  else if (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === "string")) {
    inputs = input as string[];
  } else if (
    Array.isArray(input) &&
    input.length > 0 &&
    input.every((x) => typeof x === "number" || Array.isArray(x))
  ) {
    throw new Failure({
      status: 400,
      kind: "unsupported",
      param: "input",
      message: "Token-array inputs are not supported by this gateway; send the text as strings",
    });
  } else {
    throw invalid("'input' must be a non-empty string or a non-empty array of strings", "input");
  }
  if (inputs.some((s) => s === ""))
    throw invalid("'input' must not contain empty strings", "input");
  const params = makeMessage(EmbedParamsSchema, { model: b.model, inputs });
  if (b.dimensions !== undefined && b.dimensions !== null) {
    if (!Number.isInteger(b.dimensions) || (b.dimensions as number) < 1) {
      throw invalid("'dimensions' must be a positive integer", "dimensions");
    }
    params.dimensions = b.dimensions as number;
  }
  const format = b.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") {
    throw invalid(
      `Invalid value for 'encoding_format': '${String(format)}'; use 'float' or 'base64'`,
      "encoding_format",
    );
  }
  if (b.user !== undefined && b.user !== null) {
    if (typeof b.user !== "string") throw invalid("'user' must be a string", "user");
    params.user = b.user;
  }
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(b)) if (!KNOWN.has(k)) extra[k] = v;
  if (Object.keys(extra).length > 0) params.extraJson = JSON.stringify(extra);
  return { params, encoding: format };
}

/** The OpenAI list response; base64 is little-endian float32, as OpenAI encodes it. */
export function renderEmbeddings(
  r: EmbedResult,
  encoding: "float" | "base64",
): OpenAIEmbeddingsResponse {
  const prompt = r.usage?.promptTokens ?? 0;
  return {
    object: "list",
    data: r.embeddings.map((e) => ({
      object: "embedding",
      index: e.index,
      embedding:
        encoding === "base64"
          ? Buffer.from(new Float32Array(e.values).buffer).toString("base64")
          : e.values,
    })),
    model: r.upstreamModel,
    usage: { prompt_tokens: prompt, total_tokens: r.usage?.totalTokens || prompt },
  };
}
