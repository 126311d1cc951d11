import { create, type MessageInitShape } from "@bufbuild/protobuf";
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
import { DEFAULT_MAX_TOKENS, JSON_TOOL_NAME, toAnthropicRequest } from "./to-request.js";

const text = (value: string): ContentPart =>
  create(ContentPartSchema, { part: { case: "text", value } });

const says = (role: Role, value: string) =>
  create(MessageSchema, { role, content: [text(value)], contentIsText: true });

const userSays = (value: string) => says(Role.USER, value);

const toolSays = (toolCallId: string, value: string) =>
  create(MessageSchema, { ...says(Role.TOOL, value), toolCallId });

function params(init: MessageInitShape<typeof ChatParamsSchema>) {
  return create(ChatParamsSchema, { messages: [userSays("Hi")], ...init });
}

const body = (init: MessageInitShape<typeof ChatParamsSchema>) =>
  toAnthropicRequest(params(init), "claude-x", "claude").body;

/** The Failure a translation throws. */
function refusal(init: MessageInitShape<typeof ChatParamsSchema>): Failure {
  try {
    toAnthropicRequest(params(init), "claude-x", "claude");
  } catch (err) {
    expect(err).toBeInstanceOf(Failure);
    return err as Failure;
  }
  throw new Error("the request was translated");
}

describe("toAnthropicRequest", () => {
  it("sends the upstream model, the default max_tokens and only what the client set", () => {
    const plan = toAnthropicRequest(params({ model: "public-alias" }), "claude-x", "claude");
    expect(plan).toEqual({
      body: {
        model: "claude-x",
        max_tokens: DEFAULT_MAX_TOKENS,
        messages: [{ role: "user", content: "Hi" }],
      },
      jsonTool: undefined,
    });
    expect(DEFAULT_MAX_TOKENS).toBe(4096);
  });

  it("streams when the client streams", () => {
    expect(body({ stream: true }).stream).toBe(true);
  });

  it("lifts one plain system prompt into a top-level string", () => {
    expect(body({ messages: [says(Role.SYSTEM, "Be brief."), userSays("Hi")] })).toMatchObject({
      system: "Be brief.",
      messages: [{ role: "user", content: "Hi" }],
    });
  });

  it("keeps several system and developer prompts as text blocks, wherever they stood", () => {
    const request = body({
      messages: [
        says(Role.SYSTEM, "Be brief."),
        userSays("Hi"),
        create(MessageSchema, { role: Role.DEVELOPER, content: [text("Rule 1"), text("Rule 2")] }),
      ],
    });
    expect(request.system).toEqual([
      { type: "text", text: "Be brief." },
      { type: "text", text: "Rule 1" },
      { type: "text", text: "Rule 2" },
    ]);
    expect(request.messages).toEqual([{ role: "user", content: "Hi" }]);
  });

  it("refuses an image in a system prompt", () => {
    const error = refusal({
      messages: [
        create(MessageSchema, {
          role: Role.SYSTEM,
          content: [{ part: { case: "image", value: { url: "https://x.test/a.png" } } }],
        }),
      ],
    });
    expect(error).toMatchObject({
      status: 400,
      kind: "unsupported",
      param: "messages[0].content[0]",
    });
    expect(error.message).toBe(
      "model 'claude-x' on provider 'claude' (anthropic) does not support image content in system messages",
    );
  });

  it("translates tool calls and results, merging turns so roles alternate", () => {
    const request = body({
      messages: [
        userSays("Weather in Paris and Rome?"),
        userSays("In celsius."),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          content: [text("Checking.")],
          contentIsText: true,
          toolCalls: [
            { id: "toolu_1", name: "get_weather", arguments: '{"city": "Paris"}' },
            { id: "toolu_2", name: "get_weather", arguments: '{"city":"Rome"}' },
            { id: "toolu_3", name: "now", arguments: "" },
          ],
        }),
        toolSays("toolu_1", "18°C"),
        create(MessageSchema, {
          role: Role.TOOL,
          toolCallId: "toolu_2",
          isError: true,
          content: [text("service down")],
        }),
        toolSays("toolu_3", "12:00"),
        userSays("Thanks"),
      ],
    });
    expect(request.messages).toEqual([
      {
        role: "user",
        content: [
          { type: "text", text: "Weather in Paris and Rome?" },
          { type: "text", text: "In celsius." },
        ],
      },
      {
        role: "assistant",
        content: [
          { type: "text", text: "Checking." },
          { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Paris" } },
          { type: "tool_use", id: "toolu_2", name: "get_weather", input: { city: "Rome" } },
          { type: "tool_use", id: "toolu_3", name: "now", input: {} },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "toolu_1", content: "18°C" },
          {
            type: "tool_result",
            tool_use_id: "toolu_2",
            content: [{ type: "text", text: "service down" }],
            is_error: true,
          },
          { type: "tool_result", tool_use_id: "toolu_3", content: "12:00" },
          { type: "text", text: "Thanks" },
        ],
      },
    ]);
  });

  it("replays earlier assistant answers, refusals included", () => {
    const request = body({
      messages: [
        userSays("Hi"),
        says(Role.ASSISTANT, "Hello!"),
        userSays("Do something bad"),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          content: [text("")],
          contentIsText: true,
          refusal: "I can't help with that.",
        }),
      ],
    });
    expect(request.messages).toEqual([
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello!" },
      { role: "user", content: "Do something bad" },
      { role: "assistant", content: [{ type: "text", text: "I can't help with that." }] },
    ]);
  });

  it("sends an assistant turn's signed and redacted thinking back first, and no unsigned reasoning", () => {
    const request = body({
      messages: [
        userSays("Weather in Paris?"),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          content: [text("Let me look.")],
          contentIsText: true,
          reasoningBlocks: [
            { text: "Need the weather tool.", signature: "sig_1" },
            { redactedData: "enc_1" },
            // Another upstream's reasoning: no signature Anthropic would accept.
            { text: "unsigned" },
          ],
          toolCalls: [{ id: "toolu_1", name: "weather", arguments: '{"city":"Paris"}' }],
        }),
        toolSays("toolu_1", "sunny"),
      ],
    });
    expect(request.messages[1]).toEqual({
      role: "assistant",
      content: [
        { type: "thinking", thinking: "Need the weather tool.", signature: "sig_1" },
        { type: "redacted_thinking", data: "enc_1" },
        { type: "text", text: "Let me look." },
        { type: "tool_use", id: "toolu_1", name: "weather", input: { city: "Paris" } },
      ],
    });
  });

  it("sends an assistant turn's numbered blocks in their order, Anthropic's own blocks whole", () => {
    const search = { type: "server_tool_use", id: "srvtoolu_1", name: "web_search", input: {} };
    const request = body({
      messages: [
        userSays("Weather in Paris?"),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          content: [
            create(ContentPartSchema, {
              part: { case: "text", value: "Let me look." },
              blockIndex: 1,
            }),
            create(ContentPartSchema, {
              part: { case: "text", value: "Now the tool." },
              blockIndex: 4,
            }),
          ],
          reasoningBlocks: [
            { text: "Search first.", signature: "sig_1", blockIndex: 0 },
            { text: "Then call.", signature: "sig_2", blockIndex: 3 },
          ],
          anthropicBlocks: [{ json: JSON.stringify(search), blockIndex: 2 }],
          toolCalls: [
            { id: "toolu_1", name: "weather", arguments: '{"city":"Paris"}', blockIndex: 5 },
          ],
        }),
        toolSays("toolu_1", "sunny"),
      ],
    });
    expect(request.messages[1]).toEqual({
      role: "assistant",
      content: [
        { type: "thinking", thinking: "Search first.", signature: "sig_1" },
        { type: "text", text: "Let me look." },
        search,
        { type: "thinking", thinking: "Then call.", signature: "sig_2" },
        { type: "text", text: "Now the tool." },
        { type: "tool_use", id: "toolu_1", name: "weather", input: { city: "Paris" } },
      ],
    });
  });

  it("puts each cache_control back on its block: system, text, image, tool, tool_use, tool_result", () => {
    const cc = '{"type":"ephemeral"}';
    const ttl = { type: "ephemeral", ttl: "1h" };
    const request = toAnthropicRequest(
      params({
        messages: [
          create(MessageSchema, {
            role: Role.SYSTEM,
            content: [{ part: { case: "text", value: "Rules." }, cacheControlJson: cc }],
          }),
          create(MessageSchema, {
            role: Role.USER,
            content: [
              {
                part: { case: "text", value: "Long context" },
                cacheControlJson: JSON.stringify(ttl),
              },
              {
                part: { case: "image", value: { url: "https://x.test/a.png" } },
                cacheControlJson: cc,
              },
            ],
          }),
          create(MessageSchema, {
            role: Role.ASSISTANT,
            toolCalls: [{ id: "t1", name: "f", arguments: "{}", cacheControlJson: cc }],
          }),
          create(MessageSchema, {
            ...toolSays("t1", "ok"),
            cacheControlJson: cc,
          }),
        ],
        tools: [{ name: "f", parametersJson: '{"type":"object"}', cacheControlJson: cc }],
      }),
      "claude-x",
      "claude",
    ).body;
    const ephemeral = { type: "ephemeral" };
    expect(request.system).toEqual([{ type: "text", text: "Rules.", cache_control: ephemeral }]);
    expect(request.tools?.[0]?.cache_control).toEqual(ephemeral);
    expect(request.messages).toEqual([
      {
        role: "user",
        content: [
          { type: "text", text: "Long context", cache_control: ttl },
          {
            type: "image",
            source: { type: "url", url: "https://x.test/a.png" },
            cache_control: ephemeral,
          },
        ],
      },
      {
        role: "assistant",
        content: [{ type: "tool_use", id: "t1", name: "f", input: {}, cache_control: ephemeral }],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "t1", content: "ok", cache_control: ephemeral },
        ],
      },
    ]);
  });

  it("refuses a cache_control that is not a JSON object (a gRPC client may send any text)", () => {
    const f = refusal({
      messages: [
        create(MessageSchema, {
          role: Role.USER,
          content: [{ part: { case: "text", value: "Hi" }, cacheControlJson: "ephemeral" }],
        }),
      ],
    });
    expect(f.status).toBe(400);
    expect(f.message).toBe("messages[0].content[0].cache_control must be a JSON object");
  });

  it("puts tool results first in a user turn, as Anthropic requires", () => {
    const request = body({
      messages: [userSays("Here you go"), toolSays("toolu_9", "42")],
    });
    expect(request.messages[0]?.content).toEqual([
      { type: "tool_result", tool_use_id: "toolu_9", content: "42" },
      { type: "text", text: "Here you go" },
    ]);
  });

  it("sends a Gemini call's id short, the same on the tool_use and its tool_result", () => {
    const id = `call_0_0__thought__${"Zm9v".repeat(100)}`;
    const request = body({
      messages: [
        userSays("Weather?"),
        { role: Role.ASSISTANT, toolCalls: [{ id, name: "get_weather", arguments: "{}" }] },
        toolSays(id, "sunny"),
      ],
    });
    const [, assistant, user] = request.messages;
    const use = (assistant?.content as Array<{ id?: string }> | undefined)?.[0];
    const result = (user?.content as Array<{ tool_use_id?: string }> | undefined)?.[0];
    expect(use?.id).toMatch(/^call_0_0_[0-9a-f]{8}$/);
    expect(result?.tool_use_id).toBe(use?.id);
  });

  it("refuses tool-call arguments that are not a JSON object, naming the message", () => {
    const error = refusal({
      messages: [
        userSays("x"),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          toolCalls: [{ id: "t", name: "f", arguments: "{oops" }],
        }),
      ],
    });
    expect(error).toMatchObject({
      status: 400,
      kind: "invalid_request",
      param: "messages[1].tool_calls[0].function.arguments",
    });
  });

  it("refuses a tool result without the call it answers", () => {
    expect(refusal({ messages: [says(Role.TOOL, "x")] })).toMatchObject({
      status: 400,
      param: "messages[0]",
    });
  });

  it("sends images as base64 or URL sources and PDFs as documents", () => {
    const request = body({
      messages: [
        create(MessageSchema, {
          role: Role.USER,
          content: [
            text("Compare"),
            {
              part: {
                case: "image",
                value: { url: "data:image/PNG;base64,iVBORw0K", detail: "low" },
              },
            },
            { part: { case: "image", value: { url: "https://example.com/cat.jpg" } } },
            {
              part: {
                case: "file",
                value: { filename: "a.pdf", fileData: "data:application/pdf;base64,JVBERi0x" },
              },
            },
            { part: { case: "file", value: { filename: "B.PDF", fileData: "JVBERi0y" } } },
          ],
        }),
      ],
    });
    expect(request.messages[0]?.content).toEqual([
      { type: "text", text: "Compare" },
      { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0K" } },
      { type: "image", source: { type: "url", url: "https://example.com/cat.jpg" } },
      {
        type: "document",
        source: { type: "base64", media_type: "application/pdf", data: "JVBERi0x" },
        title: "a.pdf",
      },
      {
        type: "document",
        source: { type: "base64", media_type: "application/pdf", data: "JVBERi0y" },
        title: "B.PDF",
      },
    ]);
  });

  it.each([
    [
      "audio input",
      { case: "audio", value: { data: "UklGRg==", format: "wav" } },
      "messages[0].content[0]",
    ],
    [
      "uploaded file ids",
      { case: "file", value: { fileId: "file-abc" } },
      "messages[0].content[0].file.file_id",
    ],
    [
      "files of type text/csv (only PDF)",
      { case: "file", value: { fileData: "data:text/csv;base64,YSxi" } },
      "messages[0].content[0].file",
    ],
  ] as const)("refuses %s", (feature, part, param) => {
    const error = refusal({
      messages: [create(MessageSchema, { role: Role.USER, content: [{ part }] })],
    });
    expect(error).toMatchObject({ status: 400, kind: "unsupported", param });
    expect(error.message).toBe(
      `model 'claude-x' on provider 'claude' (anthropic) does not support ${feature}`,
    );
  });

  it("refuses an image data: URL that is not base64", () => {
    const error = refusal({
      messages: [
        create(MessageSchema, {
          role: Role.USER,
          content: [{ part: { case: "image", value: { url: "data:image/png,rawbytes" } } }],
        }),
      ],
    });
    expect(error).toMatchObject({ status: 400, kind: "invalid_request" });
  });

  it("translates tools and every tool choice", () => {
    const tools = [
      {
        name: "get_weather",
        description: "Current weather",
        parametersJson: '{"type":"object","properties":{"city":{"type":"string"}}}',
        strict: true,
      },
      { name: "now", strict: false },
    ];
    expect(body({ tools }).tools).toEqual([
      {
        name: "get_weather",
        description: "Current weather",
        input_schema: { type: "object", properties: { city: { type: "string" } } },
        strict: true,
      },
      { name: "now", input_schema: { type: "object" } },
    ]);
    const choice = (mode: ToolChoice_Mode, functionName = "") =>
      body({ tools, toolChoice: { mode, functionName } }).tool_choice;
    expect(choice(ToolChoice_Mode.AUTO)).toEqual({ type: "auto" });
    expect(choice(ToolChoice_Mode.REQUIRED)).toEqual({ type: "any" });
    expect(choice(ToolChoice_Mode.NONE)).toEqual({ type: "none" });
    expect(choice(ToolChoice_Mode.FUNCTION, "now")).toEqual({ type: "tool", name: "now" });
    expect(body({ tools }).tool_choice).toBeUndefined();
  });

  it("sends tools Anthropic defines as the client wrote them, in their place among its own", () => {
    const search = {
      type: "web_search_20250305",
      name: "web_search",
      max_uses: 2,
      cache_control: { type: "ephemeral" },
    };
    const editor = { type: "text_editor_20250728", name: "str_replace_based_edit_tool" };
    const request = body({
      tools: [
        { name: "web_search", anthropicJson: JSON.stringify(search) },
        { name: "get_weather", parametersJson: '{"type":"object"}' },
        {
          name: "str_replace_based_edit_tool",
          anthropicJson: JSON.stringify(editor),
          cacheControlJson: '{"type":"ephemeral"}',
        },
      ],
      toolChoice: { mode: ToolChoice_Mode.FUNCTION, functionName: "web_search" },
    });
    expect(request.tools).toEqual([
      search,
      { name: "get_weather", input_schema: { type: "object" } },
      // A gRPC client's cache_control beside the definition lands on it, as on any tool.
      { ...editor, cache_control: { type: "ephemeral" } },
    ]);
    expect(request.tool_choice).toEqual({ type: "tool", name: "web_search" });
  });

  it("sends the citations of text blocks back in place: user, assistant, tool result", () => {
    const cite = [{ type: "char_location", cited_text: "x", document_index: 0 }];
    const cited = (value: string) =>
      create(ContentPartSchema, {
        part: { case: "text", value },
        citationsJson: JSON.stringify(cite),
      });
    const request = body({
      messages: [
        create(MessageSchema, { role: Role.USER, content: [cited("Quoted")] }),
        create(MessageSchema, {
          role: Role.ASSISTANT,
          content: [
            { ...cited("Said"), blockIndex: 0 },
            { ...text(" more"), blockIndex: 1 },
          ],
        }),
        create(MessageSchema, { role: Role.TOOL, toolCallId: "t1", content: [cited("Found")] }),
      ],
    });
    expect(request.messages).toEqual([
      { role: "user", content: [{ type: "text", text: "Quoted", citations: cite }] },
      {
        role: "assistant",
        content: [
          { type: "text", text: "Said", citations: cite },
          { type: "text", text: " more" },
        ],
      },
      {
        role: "user",
        content: [
          {
            type: "tool_result",
            tool_use_id: "t1",
            content: [{ type: "text", text: "Found", citations: cite }],
          },
        ],
      },
    ]);
  });

  it("sends a document's citations setting and context with it, and keeps its own fields", () => {
    const request = body({
      messages: [
        create(MessageSchema, {
          role: Role.USER,
          content: [
            {
              part: {
                case: "file",
                value: { fileData: "data:application/pdf;base64,JVBERi0=", filename: "Report" },
              },
              anthropicFieldsJson: JSON.stringify({
                citations: { enabled: true },
                context: "Q3",
                type: "not-a-document",
              }),
            },
          ],
        }),
      ],
    });
    expect(request.messages[0]?.content).toEqual([
      {
        type: "document",
        source: { type: "base64", media_type: "application/pdf", data: "JVBERi0=" },
        title: "Report",
        citations: { enabled: true },
        context: "Q3",
      },
    ]);
  });

  it("turns parallel_tool_calls false into disable_parallel_tool_use", () => {
    const tools = [{ name: "f" }];
    expect(body({ tools, parallelToolCalls: false }).tool_choice).toEqual({
      type: "auto",
      disable_parallel_tool_use: true,
    });
    expect(
      body({ tools, parallelToolCalls: false, toolChoice: { mode: ToolChoice_Mode.REQUIRED } })
        .tool_choice,
    ).toEqual({ type: "any", disable_parallel_tool_use: true });
    expect(body({ tools, parallelToolCalls: true }).tool_choice).toBeUndefined();
  });

  it("sends no tool_choice without tools", () => {
    expect(body({ toolChoice: { mode: ToolChoice_Mode.AUTO } })).not.toHaveProperty("tool_choice");
  });

  it("maps sampling fields, stop sequences and the end user", () => {
    expect(
      body({
        temperature: 0.7,
        topP: 0.9,
        maxTokens: 64,
        stop: ["\n\nHuman:"],
        n: 1,
        presencePenalty: 0,
        frequencyPenalty: 0,
        seed: 42n,
        user: "user-7",
      }),
    ).toEqual({
      model: "claude-x",
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 64,
      temperature: 0.7,
      top_p: 0.9,
      stop_sequences: ["\n\nHuman:"],
      metadata: { user_id: "user-7" },
    });
  });

  it.each([
    [{ temperature: 1.5 }, "temperature above 1", "temperature"],
    [{ n: 2 }, "n above 1", "n"],
    [{ presencePenalty: 0.5 }, "presence_penalty", "presence_penalty"],
    [{ frequencyPenalty: -1 }, "frequency_penalty", "frequency_penalty"],
  ] as const)("refuses %o", (init, feature, param) => {
    const error = refusal(init);
    expect(error).toMatchObject({ status: 400, kind: "unsupported", param, provider: "claude" });
    expect(error.message).toBe(
      `model 'claude-x' on provider 'claude' (anthropic) does not support ${feature}`,
    );
  });

  it("leaves out an OpenAI client's metadata and service_tier, which mean other things there", () => {
    const request = body({
      user: "u1",
      clientApi: "openai",
      extraJson: JSON.stringify({
        top_k: 40,
        metadata: { project: "x" },
        service_tier: "flex",
      }),
    });
    expect(request).toEqual({
      model: "claude-x",
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: DEFAULT_MAX_TOKENS,
      top_k: 40,
      metadata: { user_id: "u1" },
    });
  });

  it("passes the extra fields Anthropic knows and no others", () => {
    const request = body({
      user: "u1",
      clientApi: "anthropic",
      extraJson: JSON.stringify({
        top_k: 40,
        thinking: { type: "enabled", budget_tokens: 2048 },
        service_tier: "standard_only",
        metadata: { user_id: "overridden", trace: "t" },
        cache_control: { type: "ephemeral" },
        inference_geo: "us",
        speed: "fast",
        context_management: { edits: [{ type: "clear_tool_uses_20250919" }] },
        mcp_servers: [{ type: "url", url: "https://mcp.example.com", name: "x" }],
        container: "container_1",
        logit_bias: { "50256": -100 },
        model: "evil",
        messages: [],
        system: "evil",
        stream: true,
      }),
    });
    expect(request).toEqual({
      model: "claude-x",
      messages: [{ role: "user", content: "Hi" }],
      // The thinking budget comes on top of the default answer length.
      max_tokens: 2048 + DEFAULT_MAX_TOKENS,
      top_k: 40,
      thinking: { type: "enabled", budget_tokens: 2048 },
      service_tier: "standard_only",
      metadata: { user_id: "u1", trace: "t" },
      cache_control: { type: "ephemeral" },
      inference_geo: "us",
      speed: "fast",
      context_management: { edits: [{ type: "clear_tool_uses_20250919" }] },
      mcp_servers: [{ type: "url", url: "https://mcp.example.com", name: "x" }],
      container: "container_1",
    });
  });

  it("refuses extra_json that is not an object", () => {
    expect(refusal({ extraJson: "[1]" })).toMatchObject({ status: 400, param: "extra_json" });
  });

  describe("JSON mode", () => {
    it("forces a json_response tool for JSON_OBJECT", () => {
      const plan = toAnthropicRequest(
        params({ responseFormat: { type: ResponseFormat_Type.JSON_OBJECT } }),
        "claude-x",
        "claude",
      );
      expect(plan.jsonTool).toBe(JSON_TOOL_NAME);
      expect(plan.body.tools).toEqual([
        {
          name: "json_response",
          description: "Give your answer as this tool's input: a JSON object.",
          input_schema: { type: "object" },
        },
      ]);
      expect(plan.body.tool_choice).toEqual({ type: "tool", name: "json_response" });
    });

    it("uses the JSON schema as the tool's input schema", () => {
      const schema = { type: "object", properties: { name: { type: "string" } } };
      const plan = toAnthropicRequest(
        params({
          parallelToolCalls: false,
          responseFormat: {
            type: ResponseFormat_Type.JSON_SCHEMA,
            jsonSchemaJson: JSON.stringify({
              name: "person",
              description: "A person.",
              schema,
              strict: true,
            }),
          },
        }),
        "claude-x",
        "claude",
      );
      expect(plan.body.tools).toEqual([
        {
          name: "json_response",
          description: "Give your answer as this tool's input: a JSON object. A person.",
          input_schema: schema,
        },
      ]);
      expect(plan.body.tool_choice).toEqual({
        type: "tool",
        name: "json_response",
        disable_parallel_tool_use: true,
      });
    });

    it("lets the model choose between the client's tools and the answer", () => {
      const plan = toAnthropicRequest(
        params({
          tools: [{ name: "lookup" }],
          toolChoice: { mode: ToolChoice_Mode.AUTO },
          responseFormat: { type: ResponseFormat_Type.JSON_OBJECT },
        }),
        "claude-x",
        "claude",
      );
      expect(plan.body.tools?.map((t) => t.name)).toEqual(["lookup", "json_response"]);
      expect(plan.body.tool_choice).toEqual({ type: "any" });
      const none = body({
        tools: [{ name: "lookup" }],
        toolChoice: { mode: ToolChoice_Mode.NONE },
        responseFormat: { type: ResponseFormat_Type.JSON_OBJECT },
      });
      expect(none.tool_choice).toEqual({ type: "tool", name: "json_response" });
    });

    it.each([ToolChoice_Mode.REQUIRED, ToolChoice_Mode.FUNCTION])(
      "refuses JSON mode with a forced tool choice (mode %i)",
      (mode) => {
        const error = refusal({
          tools: [{ name: "lookup" }],
          toolChoice: { mode, functionName: "lookup" },
          responseFormat: { type: ResponseFormat_Type.JSON_OBJECT },
        });
        expect(error).toMatchObject({ status: 400, kind: "unsupported", param: "tool_choice" });
      },
    );

    it("refuses a schema whose root is not an object", () => {
      const error = refusal({
        responseFormat: {
          type: ResponseFormat_Type.JSON_SCHEMA,
          jsonSchemaJson: '{"name":"list","schema":{"type":"array"}}',
        },
      });
      expect(error).toMatchObject({
        status: 400,
        kind: "unsupported",
        param: "response_format.json_schema.schema",
      });
    });

    const personSchema = { type: "object", properties: { name: { type: "string" } } };
    const personFormat = {
      type: ResponseFormat_Type.JSON_SCHEMA,
      jsonSchemaJson: JSON.stringify({ name: "person", schema: personSchema, strict: true }),
    };

    it("sends an Anthropic client's structured output as Anthropic's own output_config", () => {
      const plan = toAnthropicRequest(
        params({
          clientApi: "anthropic",
          tools: [{ name: "lookup" }],
          toolChoice: { mode: ToolChoice_Mode.REQUIRED },
          responseFormat: personFormat,
          extraJson: JSON.stringify({ output_config: { effort: "low" } }),
        }),
        "claude-x",
        "claude",
      );
      expect(plan.jsonTool).toBeUndefined();
      expect(plan.body.output_config).toEqual({
        effort: "low",
        format: { type: "json_schema", schema: personSchema },
      });
      // The client's tools and forced choice stand as sent: Anthropic serves both together.
      expect(plan.body.tools?.map((t) => t.name)).toEqual(["lookup"]);
      expect(plan.body.tool_choice).toEqual({ type: "any" });
    });

    it("uses output_config, not a forced tool, when thinking is on", () => {
      const plan = toAnthropicRequest(
        params({
          responseFormat: personFormat,
          extraJson: JSON.stringify({ thinking: { type: "enabled", budget_tokens: 1024 } }),
        }),
        "claude-x",
        "claude",
      );
      expect(plan.jsonTool).toBeUndefined();
      expect(plan.body).not.toHaveProperty("tool_choice");
      expect(plan.body.output_config).toEqual({
        format: { type: "json_schema", schema: personSchema },
      });
      // JSON without a schema has no such form: refused rather than sent for Anthropic's 400.
      expect(
        refusal({
          responseFormat: { type: ResponseFormat_Type.JSON_OBJECT },
          extraJson: JSON.stringify({ thinking: { type: "adaptive" } }),
        }),
      ).toMatchObject({ status: 400, kind: "unsupported", param: "response_format" });
    });

    it("leaves a TEXT response format alone", () => {
      const plan = toAnthropicRequest(
        params({ responseFormat: { type: ResponseFormat_Type.TEXT } }),
        "claude-x",
        "claude",
      );
      expect(plan.jsonTool).toBeUndefined();
      expect(plan.body).not.toHaveProperty("tools");
    });
  });

  describe("reasoning_effort", () => {
    const effort = (value: unknown, init: MessageInitShape<typeof ChatParamsSchema> = {}) =>
      body({ ...init, extraJson: JSON.stringify({ reasoning_effort: value }) });

    it.each([
      ["minimal", 1024],
      ["low", 1024],
      ["medium", 2048],
      ["high", 4096],
      ["xhigh", 8192],
      ["max", 16384],
    ])(
      "turns thinking on for %s with a budget of %i, above the default answer length",
      (value, budget) => {
        const request = effort(value);
        expect(request.thinking).toEqual({ type: "enabled", budget_tokens: budget });
        expect(request.max_tokens).toBe(budget + DEFAULT_MAX_TOKENS);
        expect(request).not.toHaveProperty("reasoning_effort");
      },
    );

    it("turns nothing on for none or null", () => {
      for (const value of ["none", null]) {
        const request = effort(value);
        expect(request).not.toHaveProperty("thinking");
        expect(request.max_tokens).toBe(DEFAULT_MAX_TOKENS);
      }
    });

    it("refuses an effort OpenAI does not know, naming the client's field", () => {
      for (const value of ["extreme", "", 3]) {
        expect(refusal({ extraJson: JSON.stringify({ reasoning_effort: value }) })).toMatchObject({
          status: 400,
          kind: "invalid_request",
          code: "invalid_value",
          param: "reasoning_effort",
        });
      }
      const responses = refusal({
        clientApi: "responses",
        extraJson: JSON.stringify({ reasoning_effort: "extreme" }),
      });
      expect(responses.param).toBe("reasoning.effort");
      expect(responses.message).toContain("'extreme'");
    });

    it("yields to a thinking of the client's own, which goes as sent", () => {
      for (const thinking of [{ type: "disabled" }, { type: "enabled", budget_tokens: 3000 }]) {
        const request = body({
          extraJson: JSON.stringify({ reasoning_effort: "high", thinking }),
          maxTokens: 2000,
          temperature: 0.2,
        });
        expect(request.thinking).toEqual(thinking);
      }
    });

    it("keeps the budget within half of the client's max_tokens, and stays off at 1,024 or less", () => {
      expect(effort("high", { maxTokens: 10000 }).thinking).toEqual({
        type: "enabled",
        budget_tokens: 4096,
      });
      expect(effort("high", { maxTokens: 5000 })).toMatchObject({
        max_tokens: 5000,
        thinking: { type: "enabled", budget_tokens: 2500 },
      });
      expect(effort("low", { maxTokens: 1025 })).toMatchObject({
        max_tokens: 1025,
        thinking: { type: "enabled", budget_tokens: 1024 },
      });
      const small = effort("low", { maxTokens: 1024 });
      expect(small).not.toHaveProperty("thinking");
      expect(small.max_tokens).toBe(1024);
    });

    it("stays off when the request holds what thinking cannot go with", () => {
      const weather = { name: "weather", parametersJson: '{"type":"object"}' };
      const cases: Array<MessageInitShape<typeof ChatParamsSchema>> = [
        { temperature: 0.3 },
        { topP: 0.9 },
        { tools: [weather], toolChoice: { mode: ToolChoice_Mode.REQUIRED } },
        {
          tools: [weather],
          toolChoice: { mode: ToolChoice_Mode.FUNCTION, functionName: "weather" },
        },
        { responseFormat: { type: ResponseFormat_Type.JSON_OBJECT } },
      ];
      for (const init of cases) expect(effort("medium", init)).not.toHaveProperty("thinking");
      const topK = body({ extraJson: JSON.stringify({ reasoning_effort: "medium", top_k: 5 }) });
      expect(topK).not.toHaveProperty("thinking");
      // What thinking does take: temperature 1, top_p from 0.95, a tool choice that forces nothing.
      for (const init of [
        { temperature: 1 },
        { topP: 0.95 },
        { tools: [weather], toolChoice: { mode: ToolChoice_Mode.AUTO } },
      ]) {
        expect(effort("medium", init).thinking).toEqual({ type: "enabled", budget_tokens: 2048 });
      }
    });

    it("serves json_schema through output_config when it turns thinking on", () => {
      const plan = toAnthropicRequest(
        params({
          responseFormat: {
            type: ResponseFormat_Type.JSON_SCHEMA,
            jsonSchemaJson: JSON.stringify({ name: "p", schema: { type: "object" } }),
          },
          extraJson: JSON.stringify({ reasoning_effort: "low" }),
        }),
        "claude-x",
        "claude",
      );
      expect(plan.body.thinking).toEqual({ type: "enabled", budget_tokens: 1024 });
      expect(plan.jsonTool).toBeUndefined();
      expect(plan.body.output_config).toEqual({
        format: { type: "json_schema", schema: { type: "object" } },
      });
    });

    const toolTurn = (reasoningBlocks: Array<{ text: string; signature: string }>) => [
      userSays("Weather in Paris?"),
      create(MessageSchema, {
        role: Role.ASSISTANT,
        reasoningBlocks,
        toolCalls: [{ id: "toolu_1", name: "weather", arguments: '{"city":"Paris"}' }],
      }),
      toolSays("toolu_1", "sunny"),
    ];

    it("stays off in a tool loop whose last call came without its thinking", () => {
      expect(effort("high", { messages: toolTurn([]) })).not.toHaveProperty("thinking");
      expect(
        effort("high", { messages: toolTurn([{ text: "Look.", signature: "s" }]) }),
      ).toMatchObject({
        thinking: { type: "enabled", budget_tokens: 4096 },
      });
      // A client's own thinking goes as sent all the same: its 400 is Anthropic's to give.
      const own = body({
        messages: toolTurn([]),
        extraJson: JSON.stringify({ thinking: { type: "enabled", budget_tokens: 1024 } }),
      });
      expect(own.thinking).toEqual({ type: "enabled", budget_tokens: 1024 });
    });
  });
});
