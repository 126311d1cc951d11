// Anthropic Messages API wire types (https://docs.anthropic.com/en/api/messages and
// https://docs.anthropic.com/en/docs/build-with-claude/streaming). Only what the adapter reads
// or writes is named; answers are read field by field with type checks, so these types describe
// the format rather than promise it.

/** The API version the adapter speaks (sent as `anthropic-version`). */
export const ANTHROPIC_VERSION = "2023-06-01";

/** A prompt-caching breakpoint (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching). */
export type AnthropicCacheControl = Record<string, unknown>;

export interface AnthropicTextBlockParam {
  type: "text";
  text: string;
  /** An earlier answer's citations, as Anthropic gave them. */
  citations?: unknown[];
  cache_control?: AnthropicCacheControl;
}

export interface AnthropicBase64Source {
  type: "base64";
  media_type: string;
  data: string;
}

export interface AnthropicUrlSource {
  type: "url";
  url: string;
}

export interface AnthropicImageBlockParam {
  type: "image";
  source: AnthropicBase64Source | AnthropicUrlSource;
  cache_control?: AnthropicCacheControl;
}

export interface AnthropicDocumentBlockParam {
  type: "document";
  source: AnthropicBase64Source;
  title?: string;
  context?: string;
  citations?: Record<string, unknown>;
  cache_control?: AnthropicCacheControl;
}

export interface AnthropicToolUseBlockParam {
  type: "tool_use";
  id: string;
  name: string;
  input: Record<string, unknown>;
  cache_control?: AnthropicCacheControl;
}

export type AnthropicToolResultContent =
  | AnthropicTextBlockParam
  | AnthropicImageBlockParam
  | AnthropicDocumentBlockParam;

export interface AnthropicToolResultBlockParam {
  type: "tool_result";
  tool_use_id: string;
  content: string | AnthropicToolResultContent[];
  is_error?: boolean;
  cache_control?: AnthropicCacheControl;
}

/**
 * A block only Anthropic's API has (server tool and MCP calls and results, compaction), as a
 * client sent it back: the gateway reads nothing in it.
 */
export interface AnthropicOwnBlockParam {
  type: string;
  [field: string]: unknown;
}

export type AnthropicContentBlockParam =
  | AnthropicOwnBlockParam
  | AnthropicThinkingBlock
  | AnthropicRedactedThinkingBlock
  | AnthropicTextBlockParam
  | AnthropicImageBlockParam
  | AnthropicDocumentBlockParam
  | AnthropicToolUseBlockParam
  | AnthropicToolResultBlockParam;

export interface AnthropicMessageParam {
  role: "user" | "assistant";
  content: string | AnthropicContentBlockParam[];
}

export interface AnthropicCustomTool {
  name: string;
  description?: string;
  input_schema: Record<string, unknown>;
  strict?: boolean;
  cache_control?: AnthropicCacheControl;
}

/**
 * A tool Anthropic defines (`web_search_20250305`, `bash_20250124`, `mcp_toolset`, …), as the
 * client sent it: the gateway reads nothing in it.
 */
export interface AnthropicDefinedTool {
  type: string;
  [field: string]: unknown;
}

export type AnthropicTool = AnthropicCustomTool | AnthropicDefinedTool;

export type AnthropicToolChoice =
  | { type: "auto"; disable_parallel_tool_use?: boolean }
  | { type: "any"; disable_parallel_tool_use?: boolean }
  | { type: "tool"; name: string; disable_parallel_tool_use?: boolean }
  | { type: "none" };

export interface AnthropicMessagesRequest {
  model: string;
  messages: AnthropicMessageParam[];
  max_tokens: number;
  system?: string | AnthropicTextBlockParam[];
  stop_sequences?: string[];
  temperature?: number;
  top_p?: number;
  top_k?: number;
  tools?: AnthropicTool[];
  tool_choice?: AnthropicToolChoice;
  metadata?: Record<string, unknown>;
  stream?: boolean;
  [field: string]: unknown;
}

/** `POST /v1/messages/count_tokens`: the prompt fields of a Messages request, nothing else. */
export interface AnthropicCountTokensRequest {
  model: string;
  messages: AnthropicMessageParam[];
  system?: string | AnthropicTextBlockParam[];
  tools?: AnthropicTool[];
  tool_choice?: AnthropicToolChoice;
  thinking?: unknown;
  mcp_servers?: unknown;
}

/** The answer of `POST /v1/messages/count_tokens`. */
export interface AnthropicCountTokensResponse {
  input_tokens: number;
}

export type AnthropicStopReason =
  | "end_turn"
  | "max_tokens"
  | "stop_sequence"
  | "tool_use"
  | "pause_turn"
  | "refusal"
  | "model_context_window_exceeded";

export interface AnthropicUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
  service_tier?: string | null;
  /** Requests made to server-side tools, e.g. `{ "web_search_requests": 1 }`. */
  server_tool_use?: Record<string, number> | null;
}

export interface AnthropicTextBlock {
  type: "text";
  text: string;
  citations?: unknown[] | null;
}

export interface AnthropicThinkingBlock {
  type: "thinking";
  thinking: string;
  signature: string;
}

export interface AnthropicRedactedThinkingBlock {
  type: "redacted_thinking";
  data: string;
}

export interface AnthropicToolUseBlock {
  type: "tool_use";
  id: string;
  name: string;
  input: Record<string, unknown>;
}

export type AnthropicContentBlock =
  | AnthropicTextBlock
  | AnthropicThinkingBlock
  | AnthropicRedactedThinkingBlock
  | AnthropicToolUseBlock;

/** A whole (non-streamed) answer, and the `message` of a `message_start` event. */
export interface AnthropicMessage {
  id: string;
  type: "message";
  role: "assistant";
  content: AnthropicContentBlock[];
  model: string;
  stop_reason: AnthropicStopReason | null;
  stop_sequence: string | null;
  /** The container code execution ran in (`{id, expires_at, skills}`); null when none. */
  container?: Record<string, unknown> | null;
  usage: AnthropicUsage;
}

export type AnthropicBlockDelta =
  | { type: "text_delta"; text: string }
  | { type: "input_json_delta"; partial_json: string }
  | { type: "thinking_delta"; thinking: string }
  | { type: "signature_delta"; signature: string }
  | { type: "citations_delta"; citation: unknown };

export interface AnthropicErrorDetail {
  /** e.g. "invalid_request_error", "rate_limit_error", "overloaded_error". */
  type: string;
  message: string;
}

/** The error body of a non-2xx answer, and the data of an `error` stream event. */
export interface AnthropicErrorBody {
  type: "error";
  error: AnthropicErrorDetail;
  request_id?: string;
}

/** The data of each named SSE event; `event:` always equals `type`. */
export type AnthropicStreamEvent =
  | { type: "message_start"; message: AnthropicMessage }
  | { type: "content_block_start"; index: number; content_block: AnthropicContentBlock }
  | { type: "content_block_delta"; index: number; delta: AnthropicBlockDelta }
  | { type: "content_block_stop"; index: number }
  | {
      type: "message_delta";
      delta: {
        stop_reason: AnthropicStopReason | null;
        stop_sequence: string | null;
        container?: Record<string, unknown> | null;
      };
      /** Cumulative for the whole answer, not an increment. */
      usage: AnthropicUsage;
    }
  | { type: "message_stop" }
  | { type: "ping" }
  | AnthropicErrorBody;

export interface AnthropicModelInfo {
  type: "model";
  id: string;
  display_name: string;
  created_at: string;
}

export interface AnthropicModelList {
  data: AnthropicModelInfo[];
  has_more: boolean;
  first_id: string | null;
  last_id: string | null;
}
