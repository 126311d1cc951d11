import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type ChatChunk,
  ChatParamsSchema,
  ContentPartSchema,
  MessageSchema,
  RequestContextSchema,
  Role,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { createMockProvider } from "./index.js";

const mock = createMockProvider("demo", { type: "mock", first_token_ms: 0, token_interval_ms: 0 });

const prompt = () =>
  create(ChatParamsSchema, {
    model: "demo",
    messages: [
      create(MessageSchema, {
        role: Role.USER,
        content: [
          create(ContentPartSchema, { part: { case: "text", value: "count these four words" } }),
        ],
      }),
    ],
  });

const context = create(RequestContextSchema, { requestId: "req-c" });

describe("mock countTokens", () => {
  it("counts the prompt as the mock's own answer to it reports its usage", async () => {
    const count = await mock.countTokens?.({
      provider: "demo",
      model: "mock-model",
      params: prompt(),
      context,
      signal: AbortSignal.timeout(5000),
    });
    let usage: ChatChunk["usage"];
    for await (const chunk of mock.chat({
      provider: "demo",
      model: "mock-model",
      params: prompt(),
      context,
      signal: AbortSignal.timeout(5000),
    })) {
      usage = chunk.usage ?? usage;
    }
    expect(count?.inputTokens).toBe(4);
    expect(count?.inputTokens).toBe(usage?.promptTokens);
    expect(count?.upstreamModel).toBe("mock-model");
  });
});
