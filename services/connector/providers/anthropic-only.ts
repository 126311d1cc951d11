import type { ChatParams } from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";
import type { Refuse } from "./openai-only.js";

/** An Anthropic client's request fields that only Anthropic's API can serve. */
const ANTHROPIC_ONLY_FIELDS: ReadonlyArray<[field: string, feature: string]> = [
  ["mcp_servers", "Anthropic's MCP connector (mcp_servers)"],
  ["container", "Anthropic's code execution container (container)"],
];

/**
 * What only an Anthropic target can serve: tools Anthropic defines (its server tools such as
 * `web_search_20250305`, which it runs itself, and the client tools its models are trained on,
 * such as `bash_20250124`), remote MCP servers that Anthropic's API calls itself (`mcp_servers`)
 * and the container its code runs in (`container`), from an Anthropic client or a gRPC client's
 * `extra_json`; a document whose
 * citations are enabled; and a conversation holding the blocks of Anthropic's own server tools
 * and MCP connector (which no other upstream could continue from). Refused with a 400 rather
 * than dropped: the model would answer without the tools the client gave it, or without the
 * results it saw.
 */
export function refuseAnthropicOnly(params: ChatParams, refuse: Refuse): void {
  params.tools.forEach((tool, i) => {
    if (tool.anthropicJson === "") return;
    throw refuse(`Anthropic's ${typeOf(tool.anthropicJson)} tool (tools[${i}])`, `tools[${i}]`);
  });
  // An OpenAI client's unknown fields go upstream as its own; an Anthropic client's are
  // Anthropic's, and a gRPC client's `extra_json` speaks either dialect.
  if (
    (params.clientApi === "anthropic" || params.clientApi === "grpc") &&
    ANTHROPIC_ONLY_FIELDS.some(([field]) => params.extraJson.includes(`"${field}"`))
  ) {
    const extras = JSON.parse(params.extraJson) as Record<string, unknown>;
    for (const [field, feature] of ANTHROPIC_ONLY_FIELDS) {
      if (extras[field] !== undefined) throw refuse(feature, field);
    }
  }
  params.messages.forEach((message, i) => {
    message.content.forEach((part, j) => {
      if (!part.anthropicFieldsJson.includes('"citations"')) return;
      const { citations } = JSON.parse(part.anthropicFieldsJson) as {
        citations?: { enabled?: unknown };
      };
      if (citations?.enabled === true) {
        throw refuse("citations of a document (citations.enabled)", `messages[${i}].content[${j}]`);
      }
    });
    const block = message.anthropicBlocks[0];
    if (block === undefined) return;
    throw refuse(
      `Anthropic's ${typeOf(block.json)} blocks in the conversation`,
      `messages[${i}].content`,
    );
  });
}

/** The `type` of a block or tool carried as Anthropic's JSON, for a refusal to name. */
function typeOf(json: string): string {
  try {
    const { type } = JSON.parse(json) as { type?: unknown };
    return typeof type === "string" ? type : "unknown";
  } catch {
    return "unknown";
  }
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
