import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ChatChunkSchema,
  ReasoningBlockSchema,
  Role,
} from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { parseResponsesRequest, type ResponsesEcho } from "./parse-request.js";
import { decodeReasoningBlocks, encodeReasoningBlocks } from "./reasoning-content.js";
import { ResponseStreamRenderer } from "./render.js";

const signed = create(ReasoningBlockSchema, { text: "Why.", signature: "sig", blockIndex: 0 });
const redacted = create(ReasoningBlockSchema, { redactedData: "opaque", blockIndex: 1 });

describe("a reasoning item's encrypted_content", () => {
  it("carries the blocks whole, without their place (they go first in the turn)", () => {
    const content = encodeReasoningBlocks([signed, redacted]);
    expect(content).toMatch(/^sy1\.[A-Za-z0-9_-]+$/);
    expect(decodeReasoningBlocks(content)).toEqual([
      { text: "Why.", signature: "sig" },
      { redactedData: "opaque" },
    ]);
  });

  it.each([
    ["OpenAI's ciphertext", "gAAAAABoX1y2-something"],
    ["not base64 JSON", "sy1.!!!"],
    ["JSON that is not a list of blocks", `sy1.${Buffer.from('{"a":1}').toString("base64url")}`],
    ["an empty list", `sy1.${Buffer.from("[]").toString("base64url")}`],
    [
      "a block of another kind",
      `sy1.${Buffer.from('[{"type":"text","text":"x"}]').toString("base64url")}`,
    ],
    [
      "a thinking block without its signature",
      `sy1.${Buffer.from('[{"type":"thinking","thinking":"x"}]').toString("base64url")}`,
    ],
  ])("is not this gateway's when it is %s", (_, content) => {
    expect(decodeReasoningBlocks(content)).toBeUndefined();
  });
});

describe("parseResponsesRequest with reasoning items that carry blocks", () => {
  const content = encodeReasoningBlocks([signed, redacted]);
  const call = { type: "function_call", call_id: "c1", name: "f", arguments: "{}" };
  const output = { type: "function_call_output", call_id: "c1", output: "ok" };
  const parse = (input: unknown[]) => parseResponsesRequest({ model: "m", input }).params.messages;

  it("puts them on the assistant turn the reasoning item stands before", () => {
    const messages = parse([
      { role: "user", content: "hi" },
      { type: "reasoning", id: "rs_1", summary: [], encrypted_content: content },
      { role: "assistant", content: [{ type: "output_text", text: "Let me look." }] },
      call,
      output,
    ]);
    expect(messages.map((m) => m.role)).toEqual([Role.USER, Role.ASSISTANT, Role.TOOL]);
    expect(messages[1]?.toolCalls.map((c) => c.id)).toEqual(["c1"]);
    expect(messages[1]?.reasoningBlocks).toMatchObject([
      { text: "Why.", signature: "sig", redactedData: "" },
      { text: "", signature: "", redactedData: "opaque" },
    ]);
    expect(messages[1]?.reasoningBlocks.every((b) => b.blockIndex === undefined)).toBe(true);
  });

  it("also when the turn is only function calls", () => {
    const messages = parse([
      { role: "user", content: "hi" },
      { type: "reasoning", id: "rs_1", summary: [], encrypted_content: content },
      call,
      output,
    ]);
    expect(messages[1]?.role).toBe(Role.ASSISTANT);
    expect(messages[1]?.reasoningBlocks).toHaveLength(2);
  });

  it("drops them when no assistant turn follows, and ignores what it cannot read", () => {
    const messages = parse([
      { type: "reasoning", id: "rs_1", summary: [], encrypted_content: content },
      { role: "user", content: "hi" },
      { type: "reasoning", id: "rs_2", summary: [], encrypted_content: "gAAAAB-openai" },
      call,
      output,
      { type: "reasoning", id: "rs_3", summary: [], encrypted_content: content },
    ]);
    expect(messages.map((m) => m.role)).toEqual([Role.USER, Role.ASSISTANT, Role.TOOL]);
    expect(messages.every((m) => m.reasoningBlocks.length === 0)).toBe(true);
  });
});

describe("ResponseStreamRenderer with encrypted reasoning asked for", () => {
  const echo = (encrypted: boolean): ResponsesEcho =>
    parseResponsesRequest({
      model: "m",
      input: "hi",
      ...(encrypted ? { include: ["reasoning.encrypted_content"] } : {}),
    }).echo;
  const chunks = [
    create(ChatChunkSchema, {
      start: { id: "x", upstreamModel: "up" },
      choices: [{ index: 0, reasoningBlocks: [redacted] }],
    }),
    create(ChatChunkSchema, { choices: [{ index: 0, content: "Hi" }] }),
  ];
  interface Event {
    type: string;
    item?: unknown;
    response?: { output: unknown[] };
  }
  const events = (encrypted: boolean): Event[] => {
    const r = new ResponseStreamRenderer("m", echo(encrypted));
    const sse = chunks.map((c) => r.render(c)).join("") + r.finish();
    return sse
      .split("\n")
      .filter((line) => line.startsWith("data: "))
      .map((line) => JSON.parse(line.slice(6)) as Event);
  };

  it("gives a redacted block, which has no text, a reasoning item of its own", () => {
    const all = events(true);
    const done = all.find((e) => e.type === "response.output_item.done");
    expect(done?.item).toMatchObject({
      type: "reasoning",
      encrypted_content: encodeReasoningBlocks([redacted]),
    });
    const completed = all.find((e) => e.type === "response.completed");
    expect(completed?.response?.output[0]).toEqual(done?.item);
    expect(completed?.response?.output[1]).toMatchObject({ type: "message" });
  });

  it("renders nothing of the blocks without include", () => {
    const all = events(false);
    expect(all.find((e) => e.type === "response.completed")?.response?.output).toMatchObject([
      { type: "message", content: [{ type: "output_text", text: "Hi" }] },
    ]);
    expect(JSON.stringify(all)).not.toContain("encrypted_content");
  });
});
