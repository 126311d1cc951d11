// OpenAI Embeddings wire types (https://platform.openai.com/docs/api-reference/embeddings), as
// sent to OpenAI-compatible upstreams. Chat Completions types live in services/lib/wire/openai.ts
// because the ingress speaks them too.

export interface OpenAIEmbeddingsRequest {
  model: string;
  /** Texts, one flat list of token ids (one input), or one list of token ids per input. */
  input: string[] | number[] | number[][];
  encoding_format: "float" | "base64";
  dimensions?: number;
  user?: string;
  [extra: string]: unknown;
}

export interface OpenAIEmbedding {
  object: "embedding";
  index: number;
  /** Floats, or little-endian float32 bytes in base64 when `encoding_format` was "base64". */
  embedding: number[] | string;
}

export interface OpenAIEmbeddingsResponse {
  object: "list";
  data: OpenAIEmbedding[];
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}
