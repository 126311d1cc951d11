// Anthropic Messages API wire types for what the ingress sends its clients
// (https://docs.anthropic.com/en/api/messages, .../build-with-claude/streaming,
// .../api/errors). Requests are read field by field from `unknown` in parse-request.ts, so only
// the answer side is typed here.

export type AnthropicStopReason =
  | "end_turn"
  | "max_tokens"
  | "stop_sequence"
  | "tool_use"
  | "pause_turn"
  | "refusal"
  | "model_context_window_exceeded"
  // An OpenAI-compatible upstream's word the canonical enum could not name (vLLM "abort"),
  // passed on rather than dressed up as a normal end.
  | (string & {});

export interface AnthropicUsage {
  /** Prompt tokens not read from the cache. */
  input_tokens: number;
  /** Present only when the upstream reported cache writes. */
  cache_creation_input_tokens?: number;
  /** Present only when the upstream reported cache reads. */
  cache_read_input_tokens?: number;
  /** The cache writes by lifetime; present with cache_creation_input_tokens. */
  cache_creation?: { ephemeral_5m_input_tokens: number; ephemeral_1h_input_tokens: number };
  output_tokens: number;
  output_tokens_details?: { thinking_tokens: number };
  /** Requests made to server-side tools, as the upstream counted them (`web_search_requests`). */
  server_tool_use?: Record<string, unknown>;
  /** The tier that served the request; not on `message_delta`. */
  service_tier?: string;
}

export interface AnthropicTextBlock {
  type: "text";
  text: string;
  /** The upstream's citations of this text, as it gave them; absent when none. */
  citations?: unknown[];
}

export interface AnthropicThinkingBlock {
  type: "thinking";
  thinking: string;
  /** Anthropic's signature over the text; "" for another upstream's reasoning. */
  signature: string;
}

export interface AnthropicRedactedThinkingBlock {
  type: "redacted_thinking";
  /** Encrypted reasoning, as Anthropic sent it. */
  data: string;
}

export interface AnthropicToolUseBlock {
  type: "tool_use";
  id: string;
  name: string;
  input: Record<string, unknown>;
}

/**
 * A block only Anthropic's API has (server_tool_use, web_search_tool_result, mcp_tool_use,
 * mcp_tool_result, …), passed on as an Anthropic upstream gave it.
 */
export interface AnthropicOwnBlock {
  type: string;
  [field: string]: unknown;
}

export type AnthropicContentBlock =
  | AnthropicTextBlock
  | AnthropicThinkingBlock
  | AnthropicRedactedThinkingBlock
  | AnthropicToolUseBlock
  | AnthropicOwnBlock;

/** A whole answer (non-streamed), and the `message` of `message_start` (with empty content). */
export interface AnthropicMessage {
  id: string;
  type: "message";
  role: "assistant";
  model: string;
  content: AnthropicContentBlock[];
  stop_reason: AnthropicStopReason | null;
  stop_sequence: string | null;
  /** The container Anthropic ran code execution in; absent when none was used. */
  container?: Record<string, unknown>;
  usage: AnthropicUsage;
}

export type AnthropicBlockDelta =
  | { type: "text_delta"; text: string }
  | { type: "thinking_delta"; thinking: string }
  | { type: "signature_delta"; signature: string }
  | { type: "input_json_delta"; partial_json: string }
  | { type: "citations_delta"; citation: unknown };

export type AnthropicErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "request_too_large"
  | "rate_limit_error"
  | "api_error"
  | "timeout_error"
  | "overloaded_error";

/** The body of an error answer, and the data of an `error` stream event. */
export interface AnthropicErrorBody {
  type: "error";
  error: { type: AnthropicErrorType; message: string };
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
        stop_reason: AnthropicStopReason;
        stop_sequence: string | null;
        container?: Record<string, unknown>;
      };
      /** Totals for the whole answer, not increments. */
      usage: AnthropicUsage;
    }
  | { type: "message_stop" }
  | AnthropicErrorBody;
