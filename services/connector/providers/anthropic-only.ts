import type { ChatParams } from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";
import type { Refuse } from "./openai-only.js";

/**
 * What only an Anthropic target can serve: remote MCP servers that Anthropic's API calls itself
 * (`mcp_servers`, from an Anthropic client), and a conversation holding the blocks of Anthropic's
 * own server tools and MCP connector (which no other upstream could continue from). Refused with
 * a 400 rather than dropped: the model would answer without the tools the client gave it, or
 * without the results it saw.
 */
export function refuseAnthropicOnly(params: ChatParams, refuse: Refuse): void {
  if (params.clientApi === "anthropic" && params.extraJson.includes('"mcp_servers"')) {
    const extras: unknown = JSON.parse(params.extraJson);
    if (typeof extras === "object" && extras !== null && "mcp_servers" in extras) {
      throw refuse("Anthropic's MCP connector (mcp_servers)", "mcp_servers");
    }
  }
  params.messages.forEach((message, i) => {
    const block = message.anthropicBlocks[0];
    if (block === undefined) return;
    const { type } = JSON.parse(block.json) as { type?: unknown };
    throw refuse(
      `Anthropic's ${String(type)} blocks in the conversation`,
      `messages[${i}].content`,
    );
  });
}

/** The 400 of a provider of type `type` for a feature it cannot serve, as adapters word it. */
export function refusal(target: { provider: string; model: string }, type: string): Refuse {
  return (feature, param) =>
    new Failure({
      status: 400,
      kind: "unsupported",
      param,
      provider: target.provider,
      message: `model '${target.model}' on provider '${target.provider}' (${type}) does not support ${feature}`,
    });
}
