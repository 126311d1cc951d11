import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ChatParamsSchema,
  ContentPartSchema,
  MessageSchema,
  ResponseFormat_Type,
  Role,
  ToolChoice_Mode,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../../lib/errors.js";
import { fromAnthropicCountTokens } from "./from-response.js";
import { JSON_TOOL_NAME, toAnthropicCountTokensRequest } from "./to-request.js";

const says = (role: Role, value: string) =>
  create(MessageSchema, {
    role,
    content: [create(ContentPartSchema, { part: { case: "text", value } })],
    contentIsText: true,
  });

const params = (init: MessageInitShape<typeof ChatParamsSchema>) =>
  create(ChatParamsSchema, {
    model: "public",
    messages: [says(Role.SYSTEM, "Be brief."), says(Role.USER, "Hi")],
    clientApi: "anthropic",
    ...init,
  });

describe("toAnthropicCountTokensRequest", () => {
  it("keeps the prompt fields of the Messages request and leaves out max_tokens, stream and sampling", () => {
    const body = toAnthropicCountTokensRequest(
      params({
        maxTokens: 100,
        stream: true,
        temperature: 0.5,
        topP: 0.9,
        stop: ["END"],
        user: "u-1",
        tools: [{ name: "get_weather", parametersJson: '{"type":"object"}' }],
        toolChoice: { mode: ToolChoice_Mode.AUTO },
        extraJson: JSON.stringify({
          thinking: { type: "enabled", budget_tokens: 2048 },
          top_k: 5,
          metadata: { user_id: "u-1" },
          service_tier: "auto",
        }),
      }),
      "claude-x",
      "claude",
    );
    expect(body).toEqual({
      model: "claude-x",
      system: "Be brief.",
      messages: [{ role: "user", content: "Hi" }],
      tools: [{ name: "get_weather", input_schema: { type: "object" } }],
      tool_choice: { type: "auto" },
      thinking: { type: "enabled", budget_tokens: 2048 },
    });
  });

  it("counts with the thinking a reasoning_effort turns on, as the Messages request sends it", () => {
    const body = toAnthropicCountTokensRequest(
      params({ clientApi: "openai", extraJson: JSON.stringify({ reasoning_effort: "medium" }) }),
      "claude-x",
      "claude",
    );
    expect(body.thinking).toEqual({ type: "enabled", budget_tokens: 2048 });
    expect(body).not.toHaveProperty("reasoning_effort");
  });

  it("counts the tools Anthropic defines as sent, and leaves out a container", () => {
    const search = { type: "web_search_20250305", name: "web_search", max_uses: 1 };
    const body = toAnthropicCountTokensRequest(
      params({
        tools: [
          { name: "get_weather", parametersJson: '{"type":"object"}' },
          { name: "web_search", anthropicJson: JSON.stringify(search) },
        ],
        extraJson: JSON.stringify({ container: "container_1" }),
      }),
      "claude-x",
      "claude",
    );
    expect(body.tools).toEqual([{ name: "get_weather", input_schema: { type: "object" } }, search]);
    expect(body).not.toHaveProperty("container");
  });

  it("counts the tool that stands in for JSON mode, as the chat request would send it", () => {
    const body = toAnthropicCountTokensRequest(
      params({ responseFormat: { type: ResponseFormat_Type.JSON_OBJECT } }),
      "claude-x",
      "claude",
    );
    expect(body.tools?.map((t) => t.name)).toEqual([JSON_TOOL_NAME]);
  });

  it("refuses what Anthropic cannot take, as the chat translation does", () => {
    expect(() =>
      toAnthropicCountTokensRequest(params({ temperature: 1.5 }), "claude-x", "claude"),
    ).toThrow(Failure);
  });
});

describe("fromAnthropicCountTokens", () => {
  const target = { provider: "claude", model: "claude-x" };

  it("reads input_tokens and names the target", () => {
    const count = fromAnthropicCountTokens({ input_tokens: 1234 }, target);
    expect(count?.inputTokens).toBe(1234);
    expect(count?.provider).toBe("claude");
    expect(count?.upstreamModel).toBe("claude-x");
  });

  it.each([
    ["no input_tokens", {}],
    ["a string", { input_tokens: "12" }],
    ["a fraction", { input_tokens: 1.5 }],
    ["a negative number", { input_tokens: -1 }],
    ["not an object", [12]],
  ])("makes up no count from %s", (_what, answer) => {
    expect(fromAnthropicCountTokens(answer, target)).toBeUndefined();
  });
});
