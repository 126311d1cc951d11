import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ChatParamsSchema,
  type ContentPart,
  ContentPartSchema,
  MessageSchema,
  ResponseFormat_Type,
  Role,
  ToolChoice_Mode,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../../lib/errors.js";
import { failureFromResponse } from "../upstream-http.js";
import { inClientTerms, toOpenAIRequest } from "./to-request.js";

const text = (value: string): ContentPart =>
  create(ContentPartSchema, { part: { case: "text", value } });

const userSays = (value: string) =>
  create(MessageSchema, { role: Role.USER, content: [text(value)], contentIsText: true });

describe("toOpenAIRequest", () => {
  it("sends the upstream model and only the fields the client set", () => {
    const params = create(ChatParamsSchema, { model: "public-alias", messages: [userSays("Hi")] });
    expect(toOpenAIRequest(params, "gpt-4o-mini")).toEqual({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Hi" }],
    });
  });

  it("always asks for usage when streaming", () => {
    const params = create(ChatParamsSchema, {
      messages: [userSays("Hi")],
      stream: true,
      includeUsage: false,
    });
    expect(toOpenAIRequest(params, "m")).toMatchObject({
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it("leaves stream_options out for a server that predates it", () => {
    const params = create(ChatParamsSchema, {
      messages: [userSays("Hi")],
      stream: true,
      extraJson: '{"stream_options":{"include_obfuscation":false}}',
    });
    const body = toOpenAIRequest(params, "m", { streamUsage: false });
    expect(body.stream).toBe(true);
    expect(body).not.toHaveProperty("stream_options");
  });

  it("translates a conversation with system, parts, tool calls and tool results", () => {
    const params = create(ChatParamsSchema, {
      messages: [
        create(MessageSchema, {
          role: Role.SYSTEM,
          content: [text("Be brief.")],
          contentIsText: true,
        }),
        create(MessageSchema, {
          role: Role.USER,
          name: "ada",
          content: [
            text("What is in this image?"),
            create(ContentPartSchema, {
              part: { case: "image", value: { url: "https://example.com/cat.png", detail: "low" } },
            }),
            create(ContentPartSchema, {
              part: { case: "audio", value: { data: "UklGRg==", format: "wav" } },
            }),
            create(ContentPartSchema, {
              part: { case: "file", value: { fileId: "file-abc", filename: "a.pdf" } },
            }),
          ],
        }),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          toolCalls: [{ id: "call_1", name: "lookup", arguments: '{"q":"cat"}' }],
        }),
        create(MessageSchema, {
          role: Role.TOOL,
          toolCallId: "call_1",
          content: [text("a cat")],
          contentIsText: true,
        }),
        create(MessageSchema, {
          role: Role.DEVELOPER,
          content: [text("Rule")],
          contentIsText: false,
        }),
      ],
    });
    expect(toOpenAIRequest(params, "m").messages).toEqual([
      { role: "system", content: "Be brief." },
      {
        role: "user",
        name: "ada",
        content: [
          { type: "text", text: "What is in this image?" },
          { type: "image_url", image_url: { url: "https://example.com/cat.png", detail: "low" } },
          { type: "input_audio", input_audio: { data: "UklGRg==", format: "wav" } },
          { type: "file", file: { file_id: "file-abc", filename: "a.pdf" } },
        ],
      },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_1",
            type: "function",
            function: { name: "lookup", arguments: '{"q":"cat"}' },
          },
        ],
      },
      { role: "tool", tool_call_id: "call_1", content: "a cat" },
      { role: "developer", content: [{ type: "text", text: "Rule" }] },
    ]);
  });

  it("moves tool results' images after the run of tool messages, and marks a failed tool's result", () => {
    // As an Anthropic client sends them: one result failed, one holds an image (a Read of a PNG).
    const image = create(ContentPartSchema, {
      part: { case: "image", value: { url: "data:image/png;base64,iVBORw0KGgo=" } },
    });
    const params = create(ChatParamsSchema, {
      messages: [
        userSays("Look at both"),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          toolCalls: [
            { id: "call_a", name: "run", arguments: "{}" },
            { id: "call_b", name: "read", arguments: "{}" },
          ],
        }),
        create(MessageSchema, {
          role: Role.TOOL,
          toolCallId: "call_a",
          content: [text("EACCES: permission denied")],
          contentIsText: true,
          isError: true,
        }),
        create(MessageSchema, {
          role: Role.TOOL,
          toolCallId: "call_b",
          content: [text("the file:"), image],
          contentIsText: false,
        }),
        userSays("Well?"),
      ],
    });
    expect(toOpenAIRequest(params, "m").messages?.slice(2)).toEqual([
      { role: "tool", tool_call_id: "call_a", content: "Error: EACCES: permission denied" },
      { role: "tool", tool_call_id: "call_b", content: [{ type: "text", text: "the file:" }] },
      {
        role: "user",
        content: [
          { type: "text", text: "Attached to the result of tool call call_b:" },
          { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
        ],
      },
      { role: "user", content: "Well?" },
    ]);
  });

  it("sends a Gemini call's id short, the same on the call and on its result", () => {
    // A conversation that began on Gemini carries its thought signature in the id (see
    // services/lib/chat/tool-call-ids.ts); OpenAI has refused ids over 40 characters.
    const id = `call_0_0__thought__${"A".repeat(400)}`;
    const params = create(ChatParamsSchema, {
      messages: [
        userSays("Weather?"),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          toolCalls: [{ id, name: "get_weather", arguments: "{}" }],
        }),
        create(MessageSchema, {
          role: Role.TOOL,
          toolCallId: id,
          content: [text("sunny")],
          contentIsText: true,
        }),
      ],
    });
    const [, assistant, tool] = toOpenAIRequest(params, "gpt-4o").messages as Array<{
      tool_calls?: Array<{ id: string }>;
      tool_call_id?: string;
    }>;
    const sent = assistant?.tool_calls?.[0]?.id;
    expect(sent).toMatch(/^call_0_0_[0-9a-f]{8}$/);
    expect(tool?.tool_call_id).toBe(sent);
  });

  it("passes tools, tool_choice, response_format, stop and sampling fields", () => {
    const params = create(ChatParamsSchema, {
      messages: [userSays("Weather?")],
      tools: [
        {
          name: "get_weather",
          description: "Current weather",
          parametersJson: '{"type":"object","properties":{"city":{"type":"string"}}}',
          strict: true,
        },
        { name: "noop" },
      ],
      toolChoice: { mode: ToolChoice_Mode.FUNCTION, functionName: "get_weather" },
      responseFormat: {
        type: ResponseFormat_Type.JSON_SCHEMA,
        jsonSchemaJson: '{"name":"w","schema":{"type":"object"},"strict":true}',
      },
      temperature: 0,
      topP: 0.9,
      maxTokens: 64,
      stop: ["\n\n"],
      n: 2,
      presencePenalty: 0.5,
      frequencyPenalty: -0.5,
      seed: 42n,
      user: "u-1",
      parallelToolCalls: false,
    });
    const body = toOpenAIRequest(params, "m");
    expect(body).toEqual({
      model: "m",
      messages: [{ role: "user", content: "Weather?" }],
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "Current weather",
            parameters: { type: "object", properties: { city: { type: "string" } } },
            strict: true,
          },
        },
        { type: "function", function: { name: "noop" } },
      ],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      response_format: {
        type: "json_schema",
        json_schema: { name: "w", schema: { type: "object" }, strict: true },
      },
      temperature: 0,
      top_p: 0.9,
      max_tokens: 64,
      stop: ["\n\n"],
      n: 2,
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      seed: 42,
      user: "u-1",
      parallel_tool_calls: false,
    });
  });

  it.each([
    [ToolChoice_Mode.NONE, "none"],
    [ToolChoice_Mode.AUTO, "auto"],
    [ToolChoice_Mode.REQUIRED, "required"],
  ])("maps tool choice mode %i to %s", (mode, expected) => {
    const params = create(ChatParamsSchema, { messages: [userSays("x")], toolChoice: { mode } });
    expect(toOpenAIRequest(params, "m").tool_choice).toBe(expected);
  });

  it("puts max_tokens where the upstream wants it", () => {
    const params = create(ChatParamsSchema, { messages: [userSays("x")], maxTokens: 5 });
    const body = toOpenAIRequest(params, "m", { maxTokensField: "max_completion_tokens" });
    expect(body.max_completion_tokens).toBe(5);
    expect(body.max_tokens).toBeUndefined();
  });

  it("elsewhere puts the limit under the name the client gave it", () => {
    const said = (maxCompletionTokens: boolean) =>
      toOpenAIRequest(
        create(ChatParamsSchema, { messages: [userSays("x")], maxTokens: 5, maxCompletionTokens }),
        "m",
      );
    expect(said(true)).toMatchObject({ max_completion_tokens: 5 });
    expect(said(true)).not.toHaveProperty("max_tokens");
    expect(said(false)).toMatchObject({ max_tokens: 5 });
    expect(said(false)).not.toHaveProperty("max_completion_tokens");
    // An API that knows one name only is sent that one.
    const azure = toOpenAIRequest(
      create(ChatParamsSchema, {
        messages: [userSays("x")],
        maxTokens: 5,
        maxCompletionTokens: true,
      }),
      "m",
      { maxTokensField: "max_tokens" },
    );
    expect(azure).toMatchObject({ max_tokens: 5 });
    expect(azure).not.toHaveProperty("max_completion_tokens");
  });

  it("merges extra fields without letting them replace model, messages or stream", () => {
    const params = create(ChatParamsSchema, {
      messages: [userSays("x")],
      stream: true,
      extraJson: JSON.stringify({
        model: "evil",
        messages: [],
        stream: false,
        stream_options: { include_usage: false, continuous_usage_stats: true },
        logit_bias: { "50256": -100 },
        reasoning_effort: "low",
      }),
    });
    expect(toOpenAIRequest(params, "m")).toEqual({
      model: "m",
      messages: [{ role: "user", content: "x" }],
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: true },
      logit_bias: { "50256": -100 },
      reasoning_effort: "low",
    });
  });

  it("sends an Anthropic client's own fields (top_k, thinking, service_tier, …) to no OpenAI upstream", () => {
    const params = create(ChatParamsSchema, {
      messages: [userSays("x")],
      user: "u-1",
      clientApi: "anthropic",
      extraJson: JSON.stringify({
        top_k: 5,
        thinking: { type: "enabled", budget_tokens: 1024 },
        metadata: { user_id: "u-1" },
        service_tier: "standard_only",
        cache_control: { type: "ephemeral" },
        speed: "fast",
      }),
    });
    // metadata.user_id is the canonical `user`, which OpenAI names so.
    expect(toOpenAIRequest(params, "m")).toEqual({
      model: "m",
      messages: [{ role: "user", content: "x" }],
      user: "u-1",
    });
  });

  it("drops stream_options from extras when not streaming", () => {
    const params = create(ChatParamsSchema, {
      messages: [userSays("x")],
      extraJson: '{"stream_options":{"include_usage":true}}',
    });
    expect(toOpenAIRequest(params, "m")).not.toHaveProperty("stream_options");
  });

  it("rejects tool parameters that are not a JSON object", () => {
    const params = create(ChatParamsSchema, {
      messages: [userSays("x")],
      tools: [{ name: "t", parametersJson: "{not json" }],
    });
    expect(() => toOpenAIRequest(params, "m")).toThrow(Failure);
    try {
      toOpenAIRequest(params, "m");
    } catch (err) {
      expect(err).toMatchObject({ status: 400, param: "tools[0].function.parameters" });
    }
  });
});

describe("inClientTerms", () => {
  const refused = (body: unknown) =>
    failureFromResponse("oa", 400, {}, JSON.stringify(body), { model: "gpt-up" });
  const openAIs = refused({
    error: {
      message:
        "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length 5 instead.",
      type: "invalid_request_error",
      param: "stop",
      code: "array_above_max_length",
    },
  });

  it("names an Anthropic client's stop_sequences where the upstream named `stop`, keeping its words", () => {
    expect(inClientTerms(openAIs, "anthropic")).toMatchObject({
      status: 400,
      kind: "invalid_request",
      retryable: false,
      param: "stop_sequences",
      code: "array_above_max_length",
      provider: "oa",
      message:
        "provider oa rejected stop_sequences, sent to it as OpenAI's `stop` (400): Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length 5 instead.",
    });
  });

  it("reads Azure's older words, which name no param", () => {
    const azures = refused({
      error: {
        message:
          "'$.stop' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        type: "invalid_request_error",
        param: null,
        code: null,
      },
    });
    expect(inClientTerms(azures, "anthropic")).toMatchObject({ param: "stop_sequences" });
  });

  it("leaves other clients' refusals, and other refusals, as they are", () => {
    expect(inClientTerms(openAIs, "openai")).toBe(openAIs);
    expect(inClientTerms(openAIs, "grpc")).toBe(openAIs);
    const other = refused({ error: { message: "Invalid 'temperature'", param: "temperature" } });
    expect(inClientTerms(other, "anthropic")).toBe(other);
  });
});
