import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ChatParamsSchema,
  ContentPartSchema,
  MessageSchema,
  Role,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { fromGeminiCountTokens } from "./from-response.js";
import { toGeminiCountTokensRequest } from "./to-request.js";

const TARGET = { provider: "google", model: "gemini-2.5-flash" };

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
    ...init,
  });

describe("toGeminiCountTokensRequest", () => {
  it("wraps the prompt in generateContentRequest, with the system instruction and tools, and no generationConfig", () => {
    const body = toGeminiCountTokensRequest(
      params({
        maxTokens: 50,
        temperature: 0.2,
        tools: [{ name: "lookup", parametersJson: '{"type":"object"}' }],
      }),
      TARGET,
    );
    expect(body).toEqual({
      generateContentRequest: {
        model: "models/gemini-2.5-flash",
        contents: [{ role: "user", parts: [{ text: "Hi" }] }],
        systemInstruction: { parts: [{ text: "Be brief." }] },
        tools: [
          {
            functionDeclarations: [{ name: "lookup", parametersJsonSchema: { type: "object" } }],
          },
        ],
      },
    });
  });
});

describe("fromGeminiCountTokens", () => {
  it("reads totalTokens", () => {
    const count = fromGeminiCountTokens(
      { totalTokens: 31, promptTokensDetails: [{ modality: "TEXT", tokenCount: 31 }] },
      TARGET,
    );
    expect(count?.inputTokens).toBe(31);
    expect(count?.provider).toBe("google");
    expect(count?.upstreamModel).toBe("gemini-2.5-flash");
  });

  it.each([
    ["no totalTokens", {}],
    ["a string", { totalTokens: "31" }],
    ["null", null],
  ])("makes up no count from %s", (_what, answer) => {
    expect(fromGeminiCountTokens(answer, TARGET)).toBeUndefined();
  });
});
