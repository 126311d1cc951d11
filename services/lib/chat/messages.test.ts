import { create, isMessage } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ChatChunkSchema,
  ChatParamsSchema,
  ChoiceDeltaSchema,
  ReasoningBlockSchema,
  RequestContextSchema,
  ToolCallDeltaSchema,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import {
  ChatRequestSchema as ConnectorChatRequestSchema,
  ChatResponseSchema as ConnectorChatResponseSchema,
} from "../../../gen/switchyard/connector/v1/connector_pb.js";
import { TargetSchema } from "../../../gen/switchyard/health/v1/health_pb.js";
import {
  ChatRequestSchema as RouterChatRequestSchema,
  ChatResponseSchema as RouterChatResponseSchema,
  RoutingHintsSchema,
} from "../../../gen/switchyard/router/v1/router_pb.js";
import {
  connectorChatRequest,
  connectorChatResponse,
  newChatChunk,
  newChoiceDelta,
  newTarget,
  newToolCallDelta,
  reasoningBlock,
  requestContext,
  routerChatRequest,
  routerChatResponse,
} from "./messages.js";

/** The same message, and the same own properties (toEqual alone overlooks undefined ones). */
function expectSame(ours: object, theirs: object): void {
  expect(ours).toStrictEqual(theirs);
  expect(Object.keys(ours).sort()).toEqual(Object.keys(theirs).sort());
}

describe("message literals", () => {
  it("are what create() makes", () => {
    expectSame(newChatChunk(), create(ChatChunkSchema));
    expectSame(newChoiceDelta(3), create(ChoiceDeltaSchema, { index: 3 }));
    expectSame(newToolCallDelta(2), create(ToolCallDeltaSchema, { index: 2 }));
    expectSame(
      reasoningBlock("hmm", "sig"),
      create(ReasoningBlockSchema, { text: "hmm", signature: "sig" }),
    );
    expectSame(
      reasoningBlock("", "", "enc"),
      create(ReasoningBlockSchema, { redactedData: "enc" }),
    );
    const chunk = newChatChunk();
    expectSame(connectorChatResponse(chunk), create(ConnectorChatResponseSchema, { chunk }));
    expectSame(routerChatResponse(chunk), create(RouterChatResponseSchema, { chunk }));
    expect(isMessage(routerChatResponse(chunk), RouterChatResponseSchema)).toBe(true);

    const context = requestContext("req_1", "acme", "00-abc-def-01");
    expectSame(
      context,
      create(RequestContextSchema, {
        requestId: "req_1",
        tenant: "acme",
        traceparent: "00-abc-def-01",
      }),
    );
    const target = newTarget("openai", "gpt-4o");
    expectSame(target, create(TargetSchema, { provider: "openai", model: "gpt-4o" }));
    const params = create(ChatParamsSchema, { model: "gpt-4o" });
    const hints = create(RoutingHintsSchema, { provider: "openai" });
    expectSame(
      routerChatRequest(context, params, hints),
      create(RouterChatRequestSchema, { context, params, hints }),
    );
    expectSame(
      routerChatRequest(context, params, undefined),
      create(RouterChatRequestSchema, { context, params }),
    );
    expectSame(
      connectorChatRequest(context, target, params, 250, 15_000),
      create(ConnectorChatRequestSchema, {
        context,
        target,
        params,
        holdMs: 250,
        firstTokenMs: 15_000,
      }),
    );
  });

  it("are new objects every time", () => {
    const a = newChoiceDelta(0);
    a.toolCalls.push(newToolCallDelta(0));
    expect(newChoiceDelta(0).toolCalls).toEqual([]);
    expect(newChatChunk()).not.toBe(newChatChunk());
  });
});
