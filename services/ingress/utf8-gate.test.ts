import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ContentPartSchema, Role } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { ChatRequestSchema } from "../../gen/switchyard/gateway/v1/gateway_pb.js";
import { invalidUtf8Field } from "./utf8-gate.js";

/** A ChatRequest's bytes with every "@" of its strings replaced by 0xff (never UTF-8). */
function withInvalidByte(init: Parameters<typeof create<typeof ChatRequestSchema>>[1]): Buffer {
  const bytes = Buffer.from(toBinary(ChatRequestSchema, create(ChatRequestSchema, init)));
  for (let i = bytes.indexOf("@"); i !== -1; i = bytes.indexOf("@", i + 1)) bytes[i] = 0xff;
  return bytes;
}

const user = (text: string) => ({
  role: Role.USER,
  content: [{ part: { case: "text" as const, value: text } }],
});

describe("invalidUtf8Field", () => {
  it("finds nothing in a message whose strings are UTF-8, U+FFFD and all", () => {
    const bytes = toBinary(
      ChatRequestSchema,
      create(ChatRequestSchema, {
        params: { model: "m", messages: [user("héllo \ufffd 你好 🎉")] },
      }),
    );
    expect(invalidUtf8Field(ChatRequestSchema, bytes)).toBeUndefined();
  });

  it.each([
    [
      "a text part, by its place in the lists",
      { params: { model: "m", messages: [user("fine"), user("fine"), user("no@")] } },
      "params.messages[2].content[0].text",
      2,
    ],
    [
      "a repeated string",
      { params: { model: "m", messages: [user("fine")], stop: ["a", "b", "@"] } },
      "params.stop[2]",
      0,
    ],
    [
      "an optional string",
      {
        params: {
          model: "m",
          messages: [{ role: Role.TOOL, toolCallId: "call_@", content: [] }],
        },
      },
      "params.messages[0].tool_call_id",
      5,
    ],
    ["a top-level string", { params: { model: "gpt@" } }, "params.model", 3],
    [
      "a long string (a length of two bytes), after a field numbered past 15 (a tag of two)",
      { params: { model: "m", extraJson: "{}", anthropicBeta: ["a", `${"x".repeat(200)}@`] } },
      "params.anthropic_beta[1]",
      200,
    ],
  ])("names %s", (_what, init, path, offset) => {
    const error = invalidUtf8Field(ChatRequestSchema, withInvalidByte(init));
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toBe(
      `${path} is not valid UTF-8 (an invalid byte sequence starts at byte offset ${offset} of the field); proto3 string fields must be UTF-8`,
    );
  });

  it("names the first of several", () => {
    const bytes = withInvalidByte({ params: { model: "m@", messages: [user("@")] } });
    expect(invalidUtf8Field(ChatRequestSchema, bytes)?.rawMessage).toMatch(/^params\.model /);
  });

  it("leaves malformed protobuf and unknown fields to the parse that follows", () => {
    const bytes = withInvalidByte({ params: { model: "m", messages: [user("@")] } });
    expect(
      invalidUtf8Field(ChatRequestSchema, bytes.subarray(0, bytes.length - 2)),
    ).toBeUndefined();
    const part = create(ContentPartSchema);
    part.$unknown = [{ no: 99, wireType: 2, data: Buffer.from([1, 0xff]) }];
    const unknown = toBinary(
      ChatRequestSchema,
      create(ChatRequestSchema, {
        params: { model: "m", messages: [{ role: Role.USER, content: [part] }] },
      }),
    );
    expect(invalidUtf8Field(ChatRequestSchema, unknown)).toBeUndefined();
  });
});
