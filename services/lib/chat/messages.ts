// The messages made for every request and every token of every answer, as object literals.
//
// A protobuf-es message is a plain object branded with `$typeName`; create(schema) builds it by
// walking the schema's fields through reflection. At two or three messages per upstream event
// that was ~5 % of one process's CPU (createZeroMessage and initMessage in `--cpu-prof` of the
// unary bench). A literal is the same object for a fraction of that. The types make every
// field that is always present required, and messages.test.ts checks each literal against
// create(), so a field added to the protos cannot be missed here.

import {
  type AnthropicBlock,
  type ChatChunk,
  type ChatParams,
  type ChoiceDelta,
  FinishReason,
  type ReasoningBlock,
  type RequestContext,
  Role,
  type ToolCallDelta,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import type {
  ChatRequest as ConnectorChatRequest,
  ChatResponse as ConnectorChatResponse,
} from "../../../gen/switchyard/connector/v1/connector_pb.js";
import type { Target } from "../../../gen/switchyard/health/v1/health_pb.js";
import type {
  ChatRequest as RouterChatRequest,
  ChatResponse as RouterChatResponse,
  RoutingHints,
} from "../../../gen/switchyard/router/v1/router_pb.js";

/** `create(ChatChunkSchema)`. */
export function newChatChunk(): ChatChunk {
  return { $typeName: "switchyard.chat.v1.ChatChunk", choices: [] };
}

/** `create(ChoiceDeltaSchema, { index })`. */
export function newChoiceDelta(index: number): ChoiceDelta {
  return {
    $typeName: "switchyard.chat.v1.ChoiceDelta",
    index,
    role: Role.UNSPECIFIED,
    toolCalls: [],
    finishReason: FinishReason.UNSPECIFIED,
    reasoningBlocks: [],
  };
}

/** `create(ReasoningBlockSchema, { text, signature, redactedData, blockIndex })`. */
export function reasoningBlock(
  text: string,
  signature: string,
  redactedData = "",
  blockIndex?: number,
): ReasoningBlock {
  const out: ReasoningBlock = {
    $typeName: "switchyard.chat.v1.ReasoningBlock",
    text,
    signature,
    redactedData,
  };
  if (blockIndex !== undefined) out.blockIndex = blockIndex;
  return out;
}

/** `create(AnthropicBlockSchema, { json, blockIndex })`. */
export function anthropicBlock(json: string, blockIndex?: number): AnthropicBlock {
  const out: AnthropicBlock = { $typeName: "switchyard.chat.v1.AnthropicBlock", json };
  if (blockIndex !== undefined) out.blockIndex = blockIndex;
  return out;
}

/** `create(ToolCallDeltaSchema, { index })`. */
export function newToolCallDelta(index: number): ToolCallDelta {
  return { $typeName: "switchyard.chat.v1.ToolCallDelta", index };
}

/** `create(connector.v1.ChatResponseSchema, { chunk })`. */
export function connectorChatResponse(chunk: ChatChunk): ConnectorChatResponse {
  return { $typeName: "switchyard.connector.v1.ChatResponse", chunk };
}

/** `create(router.v1.ChatResponseSchema, { chunk })`. */
export function routerChatResponse(chunk: ChatChunk): RouterChatResponse {
  return { $typeName: "switchyard.router.v1.ChatResponse", chunk };
}

/** `create(RequestContextSchema, { requestId, tenant, traceparent })`. */
export function requestContext(
  requestId: string,
  tenant: string,
  traceparent: string,
): RequestContext {
  return { $typeName: "switchyard.chat.v1.RequestContext", requestId, tenant, traceparent };
}

/** `create(TargetSchema, { provider, model })`. */
export function newTarget(provider: string, model: string): Target {
  return { $typeName: "switchyard.health.v1.Target", provider, model };
}

/** `create(router.v1.ChatRequestSchema, { context, params, hints })`. */
export function routerChatRequest(
  context: RequestContext,
  params: ChatParams,
  hints: RoutingHints | undefined,
): RouterChatRequest {
  const out: RouterChatRequest = { $typeName: "switchyard.router.v1.ChatRequest", context, params };
  if (hints !== undefined) out.hints = hints;
  return out;
}

/** `create(connector.v1.ChatRequestSchema, { context, target, params, holdMs })`. */
export function connectorChatRequest(
  context: RequestContext,
  target: Target,
  params: ChatParams,
  holdMs: number,
  firstTokenMs: number,
): ConnectorChatRequest {
  return {
    $typeName: "switchyard.connector.v1.ChatRequest",
    context,
    target,
    params,
    holdMs,
    firstTokenMs,
  };
}

/**
 * Whether a chunk carries any of the answer itself (text, reasoning, a refusal, a tool call, a
 * finish), rather than only who answers and the role, as Anthropic's `message_start` and
 * OpenAI's first chunk (`{"role":"assistant","content":""}`) do. Until one does, a client has
 * seen no token and the request may still go to another target.
 */
export function carriesAnswer(chunk: ChatChunk): boolean {
  for (const c of chunk.choices) {
    if (
      c.content ||
      c.reasoning ||
      c.refusal ||
      c.toolCalls.length > 0 ||
      c.reasoningBlocks.length > 0 ||
      c.anthropicBlock !== undefined ||
      c.citationsJson !== undefined ||
      c.finishReason !== FinishReason.UNSPECIFIED ||
      c.rawFinishReason
    ) {
      return true;
    }
  }
  return false;
}
