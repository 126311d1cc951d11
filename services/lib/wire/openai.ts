// OpenAI Chat Completions wire types (https://platform.openai.com/docs/api-reference/chat),
// shared by the ingress (OpenAI as a client API) and the connector (OpenAI-compatible
// upstreams). Only what Switchyard reads or writes is named; everything else passes through.

export type OpenAIRole = "system" | "developer" | "user" | "assistant" | "tool" | "function";

export interface OpenAITextPart {
  type: "text";
  text: string;
}

export interface OpenAIImagePart {
  type: "image_url";
  image_url: { url: string; detail?: "auto" | "low" | "high" };
}

export interface OpenAIAudioPart {
  type: "input_audio";
  input_audio: { data: string; format: string };
}

export interface OpenAIFilePart {
  type: "file";
  file: { file_id?: string; filename?: string; file_data?: string };
}

export interface OpenAIRefusalPart {
  type: "refusal";
  refusal: string;
}

export type OpenAIContentPart =
  | OpenAITextPart
  | OpenAIImagePart
  | OpenAIAudioPart
  | OpenAIFilePart
  | OpenAIRefusalPart;

export interface OpenAIToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export interface OpenAIMessage {
  role: OpenAIRole;
  content?: string | OpenAIContentPart[] | null;
  name?: string;
  tool_calls?: OpenAIToolCall[];
  tool_call_id?: string;
  refusal?: string | null;
}

export interface OpenAITool {
  type: "function";
  function: {
    name: string;
    description?: string;
    parameters?: Record<string, unknown>;
    strict?: boolean | null;
  };
}

export type OpenAIToolChoice =
  | "none"
  | "auto"
  | "required"
  | { type: "function"; function: { name: string } };

export type OpenAIResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; json_schema: Record<string, unknown> };

export interface OpenAIChatRequest {
  model: string;
  messages: OpenAIMessage[];
  tools?: OpenAITool[];
  tool_choice?: OpenAIToolChoice;
  response_format?: OpenAIResponseFormat;
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
  max_completion_tokens?: number;
  stop?: string | string[];
  n?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  seed?: number;
  user?: string;
  parallel_tool_calls?: boolean;
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  [extra: string]: unknown;
}

export type OpenAIFinishReason =
  | "stop"
  | "length"
  | "tool_calls"
  | "content_filter"
  | "function_call";

export interface OpenAIUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens?: number; [k: string]: unknown };
  completion_tokens_details?: { reasoning_tokens?: number; [k: string]: unknown };
}

/**
 * A reasoning block an upstream wants back unchanged (Anthropic's signed thinking, or its
 * encrypted thinking), in LiteLLM's `thinking_blocks` convention for OpenAI-format messages.
 */
export type OpenAIThinkingBlock =
  | { type: "thinking"; thinking: string; signature: string }
  | { type: "redacted_thinking"; data: string };

export interface OpenAIChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  system_fingerprint?: string | null;
  choices: Array<{
    index: number;
    message: {
      role: "assistant";
      content: string | null;
      refusal?: string | null;
      tool_calls?: OpenAIToolCall[];
      /** Reasoning text some OpenAI-compatible servers return (vLLM, DeepSeek). */
      reasoning_content?: string;
      thinking_blocks?: OpenAIThinkingBlock[];
    };
    finish_reason: OpenAIFinishReason | string | null;
    logprobs?: unknown;
  }>;
  usage?: OpenAIUsage;
}

export interface OpenAIToolCallDelta {
  index: number;
  id?: string;
  type?: "function";
  function?: { name?: string; arguments?: string };
}

export interface OpenAIChatChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  system_fingerprint?: string | null;
  choices: Array<{
    index: number;
    delta: {
      role?: "assistant";
      content?: string | null;
      refusal?: string | null;
      reasoning_content?: string | null;
      tool_calls?: OpenAIToolCallDelta[];
      thinking_blocks?: OpenAIThinkingBlock[];
    };
    finish_reason: OpenAIFinishReason | string | null;
    logprobs?: unknown;
  }>;
  usage?: OpenAIUsage | null;
}

export interface OpenAIErrorBody {
  error: {
    message: string;
    type: string;
    param: string | null;
    code: string | null;
  };
}

export interface OpenAIModelList {
  object: "list";
  data: Array<{ id: string; object: "model"; created: number; owned_by: string }>;
}
