// Google AI Gemini API wire types (v1beta REST, camelCase JSON as the API reference documents it:
// https://ai.google.dev/api/generate-content, /api/embeddings, /api/models). Only the fields the
// adapter writes or reads are named. Response fields are optional throughout: the adapter reads
// every one with a type check.

// ---- Requests ----------------------------------------------------------------------------------

export interface GeminiBlob {
  mimeType: string;
  /** Base64 bytes. */
  data: string;
}

export interface GeminiFileData {
  /** Optional in the API: the upstream detects the type of a fetched URL when it is absent. */
  mimeType?: string;
  fileUri: string;
}

export interface GeminiFunctionCall {
  id?: string;
  name: string;
  args?: Record<string, unknown>;
}

export interface GeminiFunctionResponse {
  id?: string;
  name: string;
  /** By the reference's convention, `output` holds a result and `error` a failure. */
  response: Record<string, unknown>;
}

export interface GeminiPart {
  text?: string;
  /** The part is a thought summary, not answer text. */
  thought?: boolean;
  /** Opaque reasoning state the model wants back with the part it came on. */
  thoughtSignature?: string;
  inlineData?: GeminiBlob;
  fileData?: GeminiFileData;
  functionCall?: GeminiFunctionCall;
  functionResponse?: GeminiFunctionResponse;
}

export type GeminiRole = "user" | "model";

export interface GeminiContent {
  role?: GeminiRole;
  parts: GeminiPart[];
}

export interface GeminiFunctionDeclaration {
  name: string;
  description?: string;
  /** Plain JSON Schema (the API also has `parameters`, an OpenAPI subset the adapter never sends). */
  parametersJsonSchema?: Record<string, unknown>;
}

export interface GeminiTool {
  functionDeclarations: GeminiFunctionDeclaration[];
}

export type GeminiFunctionCallingMode = "AUTO" | "ANY" | "NONE" | "VALIDATED";

export interface GeminiToolConfig {
  functionCallingConfig: {
    mode: GeminiFunctionCallingMode;
    allowedFunctionNames?: string[];
  };
}

export interface GeminiThinkingConfig {
  includeThoughts?: boolean;
  thinkingBudget?: number;
  thinkingLevel?: string;
}

export interface GeminiGenerationConfig {
  stopSequences?: string[];
  responseMimeType?: string;
  /** Plain JSON Schema for the answer (the API also has `responseSchema`, an OpenAPI subset). */
  responseJsonSchema?: Record<string, unknown>;
  candidateCount?: number;
  maxOutputTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  thinkingConfig?: unknown;
  mediaResolution?: unknown;
}

export interface GeminiGenerateContentRequest {
  contents: GeminiContent[];
  systemInstruction?: GeminiContent;
  tools?: GeminiTool[];
  toolConfig?: GeminiToolConfig;
  generationConfig?: GeminiGenerationConfig;
  safetySettings?: unknown;
  /** `cachedContents/{id}`: a context cache made with the caching API. */
  cachedContent?: unknown;
}

/**
 * `models/{m}:countTokens`. The documented form that counts a system instruction and tools too
 * is the `generateContentRequest` wrapper (a bare `contents` counts only the contents).
 */
export interface GeminiCountTokensRequest {
  generateContentRequest: GeminiGenerateContentRequest & { model: string };
}

// ---- Responses ---------------------------------------------------------------------------------

export interface GeminiCandidate {
  content?: Partial<GeminiContent>;
  finishReason?: string;
  finishMessage?: string;
  /** proto3 JSON leaves out zero, so candidate 0 often has no `index`. */
  index?: number;
  safetyRatings?: unknown[];
}

export interface GeminiPromptFeedback {
  blockReason?: string;
  blockReasonMessage?: string;
  safetyRatings?: unknown[];
}

export interface GeminiUsageMetadata {
  /** Includes cached tokens when a cache was used. */
  promptTokenCount?: number;
  cachedContentTokenCount?: number;
  /** Answer tokens, without thoughts. */
  candidatesTokenCount?: number;
  toolUsePromptTokenCount?: number;
  thoughtsTokenCount?: number;
  totalTokenCount?: number;
}

/** A whole answer, or (streamed) one event of an answer: the same shape both ways. */
export interface GeminiGenerateContentResponse {
  candidates?: GeminiCandidate[];
  promptFeedback?: GeminiPromptFeedback;
  usageMetadata?: GeminiUsageMetadata;
  modelVersion?: string;
  responseId?: string;
  /** Sent in place of an answer (HTTP errors) or as a stream event (errors mid-stream). */
  error?: GeminiErrorBody;
}

/** Google's error envelope: `{"error": {"code", "message", "status", "details"}}`. */
export interface GeminiErrorBody {
  code?: number;
  message?: string;
  /** The google.rpc.Code name, e.g. "RESOURCE_EXHAUSTED". */
  status?: string;
  /** google.rpc detail messages, told apart by "@type" (RetryInfo, ErrorInfo, QuotaFailure, …). */
  details?: Array<Record<string, unknown>>;
}

// ---- Embeddings --------------------------------------------------------------------------------

export interface GeminiEmbedContentRequest {
  /** `models/{model}`: must name the same model as the URL. */
  model: string;
  content: GeminiContent;
  taskType?: string;
  title?: string;
  outputDimensionality?: number;
}

export interface GeminiBatchEmbedContentsRequest {
  requests: GeminiEmbedContentRequest[];
}

export interface GeminiBatchEmbedContentsResponse {
  embeddings?: Array<{ values?: number[] }>;
}

// ---- Models ------------------------------------------------------------------------------------

/** GET /v1beta/models/{model}. */
export interface GeminiModel {
  name: string;
  baseModelId?: string;
  version?: string;
  displayName?: string;
  description?: string;
  inputTokenLimit?: number;
  outputTokenLimit?: number;
  supportedGenerationMethods?: string[];
  thinking?: boolean;
}
