import {
  type EmbedParams,
  EmbedParamsSchema,
  type EmbedResult,
  TokenIdsSchema,
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

/**
 * OpenAI's caps on one Embeddings request (API reference, `input`): at most 2,048 inputs, texts
 * or token arrays, and 300,000 tokens summed over them. The token cap is held to token-array
 * inputs, whose tokens are known here; a text's tokens are the upstream's to count.
 */
export const MAX_INPUTS = 2048;
export const MAX_TOKENS_PER_REQUEST = 300_000;
/** Token ids and `dimensions` cross the fabric as uint32. */
const UINT32_MAX = 0xffff_ffff;
const MAX_TOKEN_ID = UINT32_MAX;

/** Why a token-array request is over OpenAI's caps, if it is. */
export function tokenLimitsProblem(inputs: number, tokens: number): string | undefined {
  if (inputs > MAX_INPUTS) {
    return `at most ${MAX_INPUTS} token arrays may be sent in one request, not ${inputs}`;
  }
  if (tokens > MAX_TOKENS_PER_REQUEST) {
    return `at most ${MAX_TOKENS_PER_REQUEST} tokens may be sent in one request, not ${tokens}`;
  }
  return undefined;
}

/** Why a list of texts is over OpenAI's cap on inputs, if it is. */
export function textLimitsProblem(inputs: number): string | undefined {
  return inputs > MAX_INPUTS
    ? `at most ${MAX_INPUTS} inputs may be sent in one request, not ${inputs}`
    : undefined;
}

/** Whether `v` is a token id this gateway can carry: an integer from 0 to 2^32 − 1. */
export function isTokenId(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= MAX_TOKEN_ID;
}

const SHAPES =
  "'input' must be a string, an array of strings, an array of token ids (integers) or an array of arrays of token ids";

/** What a value that is not a token id is, for the message (never the value: it is prompt). */
function notTokenId(v: unknown): string {
  if (typeof v !== "number")
    return Array.isArray(v) ? "an array" : `a ${v === null ? "null" : typeof v}`;
  if (!Number.isInteger(v)) return "not an integer";
  return v < 0 ? "negative" : `above ${MAX_TOKEN_ID}`;
}

/** One token list: non-empty, every element a token id; `at` names it in messages. */
function tokenList(list: readonly unknown[], at: string): number[] {
  if (list.length === 0) throw invalid(`'${at}' must not be an empty array of tokens`, "input");
  for (let i = 0; i < list.length; i++) {
    if (!isTokenId(list[i])) {
      throw invalid(
        `'${at}[${i}]' must be a token id (an integer from 0 to ${MAX_TOKEN_ID}); it is ${notTokenId(list[i])}`,
        "input",
      );
    }
  }
  return list as number[];
}

/**
 * `input` in any of OpenAI's four shapes into `params`: texts into `inputs`; token ids into
 * `token_inputs`, one list per input, with `flat_token_input` remembering a flat array.
 */
function parseInput(input: unknown, params: EmbedParams): void {
  if (typeof input === "string") {
    if (input === "") throw invalid("'input' must not contain empty strings", "input");
    params.inputs = [input];
    return;
  }
  if (!Array.isArray(input)) throw invalid(SHAPES, "input");
  if (input.length === 0) throw invalid("'input' must not be an empty array", "input");
  const first: unknown = input[0];
  if (typeof first === "string") {
    for (let i = 0; i < input.length; i++) {
      if (typeof input[i] !== "string") {
        throw invalid(`${SHAPES}; 'input[${i}]' is not a string like 'input[0]'`, "input");
      }
      if (input[i] === "") throw invalid("'input' must not contain empty strings", "input");
    }
    const problem = textLimitsProblem(input.length);
    if (problem) throw invalid(`'input': ${problem}`, "input");
    params.inputs = input as string[];
    return;
  }
  let lists: number[][];
  if (typeof first === "number") {
    lists = [tokenList(input, "input")];
    params.flatTokenInput = true;
  } else if (Array.isArray(first)) {
    lists = input.map((list: unknown, i) => {
      if (!Array.isArray(list)) {
        throw invalid(`${SHAPES}; 'input[${i}]' is not an array like 'input[0]'`, "input");
      }
      return tokenList(list, `input[${i}]`);
    });
  } else {
    throw invalid(SHAPES, "input");
  }
  let tokens = 0;
  for (const list of lists) tokens += list.length;
  const problem = tokenLimitsProblem(lists.length, tokens);
  if (problem) throw invalid(`'input': ${problem}`, "input");
  params.tokenInputs = lists.map((ids) => makeMessage(TokenIdsSchema, { ids }));
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
  const params = makeMessage(EmbedParamsSchema, { model: b.model });
  parseInput(b.input, params);
  if (b.dimensions !== undefined && b.dimensions !== null) {
    if (!Number.isInteger(b.dimensions) || (b.dimensions as number) < 1) {
      throw invalid("'dimensions' must be a positive integer", "dimensions");
    }
    if ((b.dimensions as number) > UINT32_MAX) {
      throw invalid(`'dimensions' must be at most ${UINT32_MAX}`, "dimensions");
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
