import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ContentPartSchema, Role } from "../../gen/switchyard/chat/v1/chat_pb.js";
import {
  ChatRequestSchema,
  EmbedRequestSchema,
} from "../../gen/switchyard/gateway/v1/gateway_pb.js";
import { requestMessageProblem } from "./message-gate.js";

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

describe("requestMessageProblem", () => {
  it("finds nothing in a message whose strings are UTF-8, U+FFFD and all", () => {
    const bytes = toBinary(
      ChatRequestSchema,
      create(ChatRequestSchema, {
        params: { model: "m", messages: [user("héllo \ufffd 你好 🎉")] },
      }),
    );
    expect(requestMessageProblem(ChatRequestSchema, bytes)).toBeUndefined();
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
    const error = requestMessageProblem(ChatRequestSchema, withInvalidByte(init));
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toBe(
      `${path} is not valid UTF-8 (an invalid byte sequence starts at byte offset ${offset} of the field); proto3 string fields must be UTF-8`,
    );
  });

  it("names the first of several", () => {
    const bytes = withInvalidByte({ params: { model: "m@", messages: [user("@")] } });
    expect(requestMessageProblem(ChatRequestSchema, bytes)?.rawMessage).toMatch(/^params\.model /);
  });

  it("passes unknown fields, whatever their bytes", () => {
    const part = create(ContentPartSchema);
    part.$unknown = [{ no: 99, wireType: 2, data: Buffer.from([1, 0xff]) }];
    const unknown = toBinary(
      ChatRequestSchema,
      create(ChatRequestSchema, {
        params: { model: "m", messages: [{ role: Role.USER, content: [part] }] },
      }),
    );
    expect(requestMessageProblem(ChatRequestSchema, unknown)).toBeUndefined();
  });
});

describe("requestMessageProblem, of malformed protobuf", () => {
  const valid = Buffer.from(
    toBinary(
      ChatRequestSchema,
      create(ChatRequestSchema, { params: { model: "m", messages: [user("hello")] } }),
    ),
  );

  it.each([
    ["cut short", valid.subarray(0, valid.length - 2), "premature EOF"],
    ["a length past the end", Buffer.from([0x0a, 0x7f, 0x0a]), "premature EOF"],
    ["field number 0", Buffer.from([0x02, 0x00]), "illegal tag: field no 0 wire type 2"],
    ["wire type 7", Buffer.from([0x0f]), "illegal tag: field no 1 wire type 7"],
    ["an end group with no start", Buffer.from([0x9c, 0x06]), "cant skip wire type 4"],
    ["a message field sent as a varint", Buffer.from([0x08, 0x05]), "premature EOF"],
  ])("refuses %s with INVALID_ARGUMENT and protobuf-es's reason", (_what, bytes, reason) => {
    const error = requestMessageProblem(ChatRequestSchema, bytes);
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toBe(`the request message is not valid protobuf: ${reason}`);
  });

  it("passes what the walk doubts but protobuf-es parses: an unknown group", () => {
    // Field 99 as a group: start (wire type 3), a varint inside, end (wire type 4).
    const group = Buffer.from([0x9b, 0x06, 0x08, 0x01, 0x9c, 0x06]);
    expect(requestMessageProblem(ChatRequestSchema, Buffer.concat([valid, group]))).toBeUndefined();
  });

  it("passes packed lists, whole", () => {
    const bytes = toBinary(
      EmbedRequestSchema,
      create(EmbedRequestSchema, {
        params: { model: "m", tokenInputs: [{ ids: [1, 300, 70_000, 4_000_000_000] }] },
      }),
    );
    expect(requestMessageProblem(EmbedRequestSchema, bytes)).toBeUndefined();
    const cut = Buffer.from(bytes);
    // The last id's last byte, made a continuation byte: the packed list ends mid-varint.
    cut[cut.length - 1] = 0xff;
    expect(requestMessageProblem(EmbedRequestSchema, cut)?.code).toBe(Code.InvalidArgument);
  });
});
