import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  type ChatParams,
  ChatParamsSchema,
  type ContentPart,
  ContentPartSchema,
  type Message,
  MessageSchema,
  ResponseFormat_Type,
  Role,
  ToolChoice_Mode,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { withThoughtSignature } from "../../../lib/chat/tool-call-ids.js";
import { Failure } from "../../../lib/errors.js";
import {
  FOREIGN_THOUGHT_SIGNATURE,
  geminiModelName,
  geminiModelPath,
  toGeminiRequest,
} from "./to-request.js";

const TARGET = { provider: "google", model: "gemini-2.5-flash" };

const text = (value: string): ContentPart =>
  create(ContentPartSchema, { part: { case: "text", value } });

const says = (role: Role, value: string): Message =>
  create(MessageSchema, { role, content: [text(value)], contentIsText: true });

const image = (url: string): ContentPart =>
  create(ContentPartSchema, { part: { case: "image", value: { url } } });

function request(init: Parameters<typeof create<typeof ChatParamsSchema>>[1]) {
  return toGeminiRequest(create(ChatParamsSchema, init), TARGET);
}

function failureOf(params: ChatParams): Failure {
  try {
    toGeminiRequest(params, TARGET);
  } catch (err) {
    expect(err).toBeInstanceOf(Failure);
    return err as Failure;
  }
  throw new Error("the translation succeeded");
}

describe("toGeminiRequest", () => {
  it("gives each call back the thought signature its id carries, where Gemini put it", () => {
    // Gemini signs the first call of a parallel step only; the answer's ids carry it.
    const signature = "CiwBVKhc7nFq0dD1nMi8mRvdNXCPb0VAvn/mzJHzqX7ytV3Eaa0v0KAmjTE0jQ==";
    const signed = withThoughtSignature("call_0_0", signature);
    const body = request({
      messages: [
        says(Role.USER, "Weather and time?"),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          toolCalls: [
            { id: signed, name: "get_weather", arguments: "{}" },
            { id: "call_0_1", name: "get_time", arguments: "{}" },
          ],
        }),
        create(MessageSchema, {
          role: Role.TOOL,
          toolCallId: signed,
          content: [text("sunny")],
          contentIsText: true,
        }),
        create(MessageSchema, {
          role: Role.TOOL,
          toolCallId: "call_0_1",
          content: [text("noon")],
          contentIsText: true,
        }),
      ],
    });
    expect(body.contents[1]).toEqual({
      role: "model",
      parts: [
        { functionCall: { name: "get_weather", args: {} }, thoughtSignature: signature },
        { functionCall: { name: "get_time", args: {} } },
      ],
    });
    // The results still find their calls' names by the full ids.
    expect(body.contents[2]?.parts.map((p) => p.functionResponse?.name)).toEqual([
      "get_weather",
      "get_time",
    ]);
  });

  it("sends the contents and nothing the client did not set", () => {
    expect(request({ model: "alias", messages: [says(Role.USER, "Hi")], stream: true })).toEqual({
      contents: [{ role: "user", parts: [{ text: "Hi" }] }],
    });
  });

  it("translates a tool-using conversation: system prompt, roles, calls and their results", () => {
    const body = request({
      messages: [
        says(Role.SYSTEM, "Be brief."),
        says(Role.USER, "Weather and time in Paris?"),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          content: [text("Let me look.")],
          toolCalls: [
            { id: "call_w", name: "get_weather", arguments: '{"location":"Paris"}' },
            { id: "call_t", name: "get_time", arguments: "" },
          ],
        }),
        create(MessageSchema, {
          role: Role.TOOL,
          toolCallId: "call_w",
          content: [text('{"temp": 21, "sky": "clear"}')],
          contentIsText: true,
        }),
        create(MessageSchema, {
          role: Role.TOOL,
          toolCallId: "call_t",
          content: [text("14:05")],
          contentIsText: true,
        }),
        says(Role.DEVELOPER, "Answer in French."),
        says(Role.USER, "Thanks!"),
      ],
    });
    expect(body.systemInstruction).toEqual({
      parts: [{ text: "Be brief." }, { text: "Answer in French." }],
    });
    expect(body.contents).toEqual([
      { role: "user", parts: [{ text: "Weather and time in Paris?" }] },
      {
        role: "model",
        parts: [
          { text: "Let me look." },
          {
            functionCall: { name: "get_weather", args: { location: "Paris" } },
            thoughtSignature: FOREIGN_THOUGHT_SIGNATURE,
          },
          { functionCall: { name: "get_time", args: {} } },
        ],
      },
      // Tool results and the user's next words make one user turn, so turns alternate.
      {
        role: "user",
        parts: [
          { functionResponse: { name: "get_weather", response: { temp: 21, sky: "clear" } } },
          { functionResponse: { name: "get_time", response: { output: "14:05" } } },
          { text: "Thanks!" },
        ],
      },
    ]);
  });

  it("marks a failed tool result as an error, as the API reference's convention says", () => {
    const body = request({
      messages: [
        create(MessageSchema, {
          role: Role.ASSISTANT,
          toolCalls: [{ id: "c1", name: "fetch", arguments: "{}" }],
        }),
        create(MessageSchema, {
          role: Role.TOOL,
          toolCallId: "c1",
          isError: true,
          content: [text("connection refused")],
        }),
      ],
    });
    expect(body.contents[1]?.parts[0]).toEqual({
      functionResponse: { name: "fetch", response: { error: "connection refused" } },
    });
  });

  it("refuses a tool result that answers no earlier call, naming the field", () => {
    const error = failureOf(
      create(ChatParamsSchema, {
        messages: [
          says(Role.USER, "x"),
          create(MessageSchema, { role: Role.TOOL, toolCallId: "ghost", content: [text("1")] }),
        ],
      }),
    );
    expect(error).toMatchObject({
      status: 400,
      kind: "invalid_request",
      param: "messages[1].tool_call_id",
    });
    expect(error.message).toContain("'ghost'");
  });

  it("refuses tool-call arguments that are not a JSON object", () => {
    const error = failureOf(
      create(ChatParamsSchema, {
        messages: [
          create(MessageSchema, {
            role: Role.ASSISTANT,
            toolCalls: [{ id: "c", name: "f", arguments: "[1,2]" }],
          }),
        ],
      }),
    );
    expect(error).toMatchObject({
      status: 400,
      param: "messages[0].tool_calls[0].function.arguments",
    });
  });

  it("sends images, audio and files as inline data or fetchable URLs", () => {
    const body = request({
      messages: [
        create(MessageSchema, {
          role: Role.USER,
          content: [
            text("What is this?"),
            image("data:image/png;base64,iVBORw0KGgo="),
            image("https://example.com/photos/cat.JPG?size=large"),
            image("https://example.com/render?id=7"),
            create(ContentPartSchema, {
              part: { case: "audio", value: { data: "UklGRg==", format: "wav" } },
            }),
            create(ContentPartSchema, {
              part: {
                case: "file",
                value: { filename: "a.pdf", fileData: "data:application/pdf;base64,JVBERi0=" },
              },
            }),
            create(ContentPartSchema, {
              part: { case: "file", value: { filename: "notes.txt", fileData: "aGk=" } },
            }),
            image("data:text/plain,hello%20there"),
          ],
        }),
      ],
    });
    expect(body.contents[0]?.parts).toEqual([
      { text: "What is this?" },
      { inlineData: { mimeType: "image/png", data: "iVBORw0KGgo=" } },
      {
        fileData: {
          fileUri: "https://example.com/photos/cat.JPG?size=large",
          mimeType: "image/jpeg",
        },
      },
      { fileData: { fileUri: "https://example.com/render?id=7" } },
      { inlineData: { mimeType: "audio/wav", data: "UklGRg==" } },
      { inlineData: { mimeType: "application/pdf", data: "JVBERi0=" } },
      { inlineData: { mimeType: "text/plain", data: "aGk=" } },
      {
        inlineData: { mimeType: "text/plain", data: Buffer.from("hello there").toString("base64") },
      },
    ]);
  });

  it.each([
    ["a plain http image URL", image("http://example.com/cat.png"), "image URLs other than https:"],
    [
      "a file id",
      create(ContentPartSchema, { part: { case: "file", value: { fileId: "file-abc" } } }),
      "file ids",
    ],
  ])("refuses %s as unsupported", (_, part, feature) => {
    const error = failureOf(
      create(ChatParamsSchema, {
        messages: [create(MessageSchema, { role: Role.USER, content: [part] })],
      }),
    );
    expect(error).toMatchObject({ status: 400, kind: "unsupported" });
    expect(error.message).toContain(
      `model 'gemini-2.5-flash' on provider 'google' (gemini) does not support ${feature}`,
    );
  });

  it("refuses raw file bytes whose type the filename does not tell", () => {
    const error = failureOf(
      create(ChatParamsSchema, {
        messages: [
          create(MessageSchema, {
            role: Role.USER,
            content: [
              create(ContentPartSchema, {
                part: { case: "file", value: { filename: "blob.bin", fileData: "AAAA" } },
              }),
            ],
          }),
        ],
      }),
    );
    expect(error).toMatchObject({
      kind: "invalid_request",
      param: "messages[0].content[0].file.file_data",
    });
  });

  it("maps sampling settings into generationConfig", () => {
    const body = request({
      messages: [says(Role.USER, "Hi")],
      temperature: 0.2,
      topP: 0.9,
      maxTokens: 256,
      stop: ["END"],
      n: 2,
      presencePenalty: 0.5,
      frequencyPenalty: -0.5,
      seed: 42n,
      user: "u-1",
      responseFormat: { type: ResponseFormat_Type.JSON_OBJECT },
    });
    expect(body.generationConfig).toEqual({
      temperature: 0.2,
      topP: 0.9,
      maxOutputTokens: 256,
      stopSequences: ["END"],
      candidateCount: 2,
      presencePenalty: 0.5,
      frequencyPenalty: -0.5,
      seed: 42,
      responseMimeType: "application/json",
    });
  });

  it("passes a JSON schema as plain JSON Schema", () => {
    const schema = {
      type: "object",
      properties: { name: { type: "string" }, tags: { type: "array", items: { type: "string" } } },
      required: ["name"],
      additionalProperties: false,
    };
    const body = request({
      messages: [says(Role.USER, "Hi")],
      responseFormat: {
        type: ResponseFormat_Type.JSON_SCHEMA,
        jsonSchemaJson: JSON.stringify({ name: "person", schema, strict: true }),
      },
    });
    expect(body.generationConfig).toEqual({
      responseMimeType: "application/json",
      responseJsonSchema: schema,
    });
  });

  it("declares tools with their JSON Schema and maps every tool choice", () => {
    const parameters = { type: "object", properties: { q: { type: "string" } } };
    const tools = [
      { name: "search", description: "Search the web", parametersJson: JSON.stringify(parameters) },
      { name: "now", parametersJson: "" },
    ];
    const body = request({ messages: [says(Role.USER, "Hi")], tools });
    expect(body.tools).toEqual([
      {
        functionDeclarations: [
          { name: "search", description: "Search the web", parametersJsonSchema: parameters },
          { name: "now" },
        ],
      },
    ]);
    expect(body.toolConfig).toBeUndefined();

    const choice = (mode: ToolChoice_Mode, functionName = "") =>
      request({ messages: [says(Role.USER, "Hi")], tools, toolChoice: { mode, functionName } })
        .toolConfig;
    expect(choice(ToolChoice_Mode.AUTO)).toEqual({ functionCallingConfig: { mode: "AUTO" } });
    expect(choice(ToolChoice_Mode.REQUIRED)).toEqual({ functionCallingConfig: { mode: "ANY" } });
    expect(choice(ToolChoice_Mode.NONE)).toEqual({ functionCallingConfig: { mode: "NONE" } });
    expect(choice(ToolChoice_Mode.FUNCTION, "now")).toEqual({
      functionCallingConfig: { mode: "ANY", allowedFunctionNames: ["now"] },
    });
  });

  it("takes a client's ban on parallel tool calls, which Gemini has no field for, without refusing", () => {
    const body = request({
      messages: [says(Role.USER, "Hi")],
      tools: [{ name: "f", parametersJson: "" }],
      parallelToolCalls: false,
    });
    // Kept on the answer instead (from-response.test.ts): nothing of it goes to Gemini.
    expect(Object.keys(body).sort()).toEqual(["contents", "tools"]);
  });

  it("refuses what only Anthropic serves, naming it: its tools, its container, document citations", () => {
    const ask = { messages: [says(Role.USER, "Hi")], clientApi: "anthropic" };
    const tool = failureOf(
      create(ChatParamsSchema, {
        ...ask,
        tools: [
          { name: "f", parametersJson: "" },
          {
            name: "web_search",
            anthropicJson: '{"type":"web_search_20250305","name":"web_search"}',
          },
        ],
      }),
    );
    expect(tool).toMatchObject({ kind: "unsupported", param: "tools[1]" });
    expect(tool.message).toBe(
      "model 'gemini-2.5-flash' on provider 'google' (gemini) does not support Anthropic's web_search_20250305 tool (tools[1])",
    );
    const container = failureOf(
      create(ChatParamsSchema, { ...ask, extraJson: '{"container":"container_1"}' }),
    );
    expect(container).toMatchObject({ kind: "unsupported", param: "container" });
    const cited = failureOf(
      create(ChatParamsSchema, {
        ...ask,
        messages: [
          create(MessageSchema, {
            role: Role.USER,
            content: [
              {
                part: { case: "file", value: { fileData: "data:application/pdf;base64,JVBE" } },
                anthropicFieldsJson: '{"citations":{"enabled":true}}',
              },
            ],
          }),
        ],
      }),
    );
    expect(cited).toMatchObject({ kind: "unsupported", param: "messages[0].content[0]" });
    // A text's citations and a document's context alone are left out, as before.
    const quoted = create(MessageSchema, {
      role: Role.USER,
      content: [{ part: { case: "text", value: "Hi" }, citationsJson: '[{"type":"x"}]' }],
    });
    expect(request({ ...ask, messages: [quoted] }).contents).toEqual([
      { role: "user", parts: [{ text: "Hi" }] },
    ]);
  });

  it("passes the extra fields the Gemini API names and ignores other dialects'", () => {
    const body = request({
      messages: [says(Role.USER, "Hi")],
      extraJson: JSON.stringify({
        top_k: 40,
        safetySettings: [{ category: "HARM_CATEGORY_HARASSMENT", threshold: "BLOCK_NONE" }],
        cached_content: "cachedContents/abc123",
        logit_bias: { "50256": -100 },
      }),
    });
    expect(body.generationConfig).toEqual({ topK: 40 });
    expect(body.safetySettings).toEqual([
      { category: "HARM_CATEGORY_HARASSMENT", threshold: "BLOCK_NONE" },
    ]);
    expect(body.cachedContent).toBe("cachedContents/abc123");
    expect(body).not.toHaveProperty("logit_bias");
  });

  it("translates Anthropic thinking into a thinking budget with thoughts shown", () => {
    const thinking = (value: unknown) =>
      request({ messages: [says(Role.USER, "Hi")], extraJson: JSON.stringify({ thinking: value }) })
        .generationConfig;
    expect(thinking({ type: "enabled", budget_tokens: 2048 })).toEqual({
      thinkingConfig: { includeThoughts: true, thinkingBudget: 2048 },
    });
    expect(thinking({ type: "disabled" })).toBeUndefined();
    // Gemini's own spelling wins.
    expect(
      request({
        messages: [says(Role.USER, "Hi")],
        extraJson: JSON.stringify({
          thinking: { type: "enabled", budget_tokens: 10 },
          thinkingConfig: { thinkingLevel: "low" },
        }),
      }).generationConfig,
    ).toEqual({ thinkingConfig: { thinkingLevel: "low" } });
  });

  it("translates OpenAI reasoning_effort as Google's OpenAI endpoint does, by model generation", () => {
    const config = (effort: unknown, model: string, more: Record<string, unknown> = {}) =>
      toGeminiRequest(
        create(ChatParamsSchema, {
          messages: [says(Role.USER, "Hi")],
          extraJson: JSON.stringify({ reasoning_effort: effort, ...more }),
        }),
        { provider: "gemini", model },
      ).generationConfig;
    expect(config("none", "gemini-2.5-flash")).toEqual({ thinkingConfig: { thinkingBudget: 0 } });
    expect(config("low", "gemini-2.5-pro")).toEqual({ thinkingConfig: { thinkingBudget: 1024 } });
    expect(config("medium", "gemini-2.5-flash")).toEqual({
      thinkingConfig: { thinkingBudget: 8192 },
    });
    expect(config("high", "gemini-2.5-flash")).toEqual({
      thinkingConfig: { thinkingBudget: 24576 },
    });
    // Gemini 3 takes a level, never together with a budget.
    expect(config("high", "gemini-3-pro-preview")).toEqual({
      thinkingConfig: { thinkingLevel: "high" },
    });
    expect(config("none", "gemini-3-flash")).toEqual({
      thinkingConfig: { thinkingLevel: "minimal" },
    });
    // A word with no budget, and a prototype key, are left out; the client's own config wins.
    expect(config("constructor", "gemini-2.5-flash")).toBeUndefined();
    expect(
      config("high", "gemini-2.5-flash", { thinking_config: { includeThoughts: true } }),
    ).toEqual({ thinkingConfig: { includeThoughts: true } });
  });

  it("refuses non-text system prompts and malformed extra_json", () => {
    expect(
      failureOf(
        create(ChatParamsSchema, {
          messages: [
            create(MessageSchema, {
              role: Role.SYSTEM,
              content: [image("data:image/png;base64,AA==")],
            }),
          ],
        }),
      ),
    ).toMatchObject({ kind: "unsupported", param: "messages[0].content[0]" });
    expect(
      failureOf(create(ChatParamsSchema, { messages: [says(Role.USER, "x")], extraJson: "[1]" })),
    ).toMatchObject({ kind: "invalid_request", param: "extra_json" });
  });

  it("drops empty text rather than sending parts Gemini rejects", () => {
    const body = request({
      messages: [
        says(Role.USER, "Hi"),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          content: [text("")],
          toolCalls: [{ id: "c", name: "f", arguments: "{}" }],
        }),
      ],
    });
    expect(body.contents[1]?.parts).toEqual([
      { functionCall: { name: "f", args: {} }, thoughtSignature: FOREIGN_THOUGHT_SIGNATURE },
    ]);
  });
});

describe("gemini model names", () => {
  it("names models the way the API does, and encodes them in paths", () => {
    expect(geminiModelName("gemini-2.5-flash")).toBe("models/gemini-2.5-flash");
    expect(geminiModelName("models/gemini-2.5-flash")).toBe("models/gemini-2.5-flash");
    expect(geminiModelPath("gemini-2.5-flash")).toBe("models/gemini-2.5-flash");
    expect(geminiModelPath("models/gemini-2.5-flash")).toBe("models/gemini-2.5-flash");
    expect(geminiModelPath("tunedModels/my-model-7")).toBe("tunedModels/my-model-7");
    // A name can never add a path segment or a method of its own.
    expect(geminiModelPath("x/y:streamGenerateContent")).toBe(
      "models/x%2Fy%3AstreamGenerateContent",
    );
  });
});
