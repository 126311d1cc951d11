import { create, isMessage } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ChatChunkSchema,
  ChoiceDeltaSchema,
  ToolCallDeltaSchema,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { ChatResponseSchema as ConnectorChatResponseSchema } from "../../../gen/switchyard/connector/v1/connector_pb.js";
import { ChatResponseSchema as RouterChatResponseSchema } from "../../../gen/switchyard/router/v1/router_pb.js";
import {
  connectorChatResponse,
  newChatChunk,
  newChoiceDelta,
  newToolCallDelta,
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
    const chunk = newChatChunk();
    expectSame(connectorChatResponse(chunk), create(ConnectorChatResponseSchema, { chunk }));
    expectSame(routerChatResponse(chunk), create(RouterChatResponseSchema, { chunk }));
    expect(isMessage(routerChatResponse(chunk), RouterChatResponseSchema)).toBe(true);
  });

  it("are new objects every time", () => {
    const a = newChoiceDelta(0);
    a.toolCalls.push(newToolCallDelta(0));
    expect(newChoiceDelta(0).toolCalls).toEqual([]);
    expect(newChatChunk()).not.toBe(newChatChunk());
  });
});
