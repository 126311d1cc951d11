import type { ConnectError, HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type ChatChunk,
  type ChatParams,
  type EmbedParams,
  ResponseFormat_Type,
  Role,
  type Tool,
  ToolChoice_Mode,
} from "../../gen/switchyard/chat/v1/chat_pb.js";
import {
  type ChatRequest,
  type ChatResponse,
  ChatResponseSchema,
  type ChatStreamRequest,
  type ChatStreamResponse,
  ChatStreamResponseSchema,
  type EmbedRequest,
  type EmbedResponse,
  EmbedResponseSchema,
  type GatewayService,
  ListModelsResponseSchema,
  ModelSchema,
} from "../../gen/switchyard/gateway/v1/gateway_pb.js";
import { CompletionBuilder } from "../lib/chat/aggregate.js";
import { tokenInputCount } from "../lib/embed-inputs.js";
import { Failure } from "../lib/errors.js";
import { makeMessage } from "../lib/hop/codec.js";
import { requestIdOf } from "../lib/ids.js";
import { childSpan, formatTraceparent, parseTraceparent, type TraceContext } from "../lib/trace.js";
import { authenticate, type Caller, presentedKey, visibleModels } from "./auth.js";
import {
  type Cancellable,
  ChatExchange,
  countRejected,
  type IngressDeps,
  type IngressMetrics,
  runEmbed,
} from "./exchange.js";
import { routingHints } from "./hints.js";
import { connectErrorFor } from "./limits/headers.js";
import { textLimitsProblem, tokenLimitsProblem } from "./openai/embeddings.js";
import { KNOWN_FIELDS, MAX_STOP, NAME_PATTERN } from "./openai/parse-request.js";

/** GatewayService: the public typed API, same auth, routing and limits as the REST routes. */
export function createGatewayService(
  deps: IngressDeps & { metrics: IngressMetrics },
): ServiceImpl<typeof GatewayService> {
  function begin(ctx: HandlerContext): { requestId: string; caller: Caller; trace: TraceContext } {
    const requestId = requestIdOf(ctx.requestHeader.get("x-request-id"));
    ctx.responseHeader.set("x-request-id", requestId);
    const trace = childSpan(parseTraceparent(ctx.requestHeader.get("traceparent")));
    ctx.responseHeader.set("traceparent", formatTraceparent(trace));
    try {
      const key = presentedKey(
        ctx.requestHeader.get("authorization") ?? undefined,
        ctx.requestHeader.get("x-api-key") ?? undefined,
      );
      return { requestId, caller: authenticate(deps.config, key, deps.clock()), trace };
    } catch (err) {
      throw rejected(ctx, requestId, trace, err);
    }
  }

  /**
   * A call refused before it reached the router (auth, validation) gets the line REST gives
   * such a request; calls that were routed log their own (ChatExchange.finish).
   */
  function rejected(
    ctx: HandlerContext,
    requestId: string,
    trace: TraceContext,
    err: unknown,
  ): ConnectError {
    const f = Failure.from(err);
    countRejected(deps.metrics, "grpc", f);
    deps.logger.info(
      {
        request_id: requestId,
        trace_id: trace.traceId,
        api: "grpc",
        method: ctx.requestMethod,
        path: `/${ctx.service.typeName}/${ctx.method.name}`,
        status: f.status,
        outcome: f.kind,
        error: f.message,
      },
      "request rejected",
    );
    return f.toConnectError();
  }

  function exchangeFor(
    ctx: HandlerContext,
    params: ChatParams | undefined,
    stream: boolean,
  ): ChatExchange {
    const { requestId, caller, trace } = begin(ctx);
    let checked: ChatParams;
    let routing: ReturnType<typeof routingHints>;
    try {
      checked = checkParams(params);
      routing = routingHints((name) => ctx.requestHeader.get(name) ?? undefined);
    } catch (err) {
      throw rejected(ctx, requestId, trace, err);
    }
    checked.stream = stream;
    checked.clientApi = "grpc";
    const exchange = new ChatExchange(
      deps,
      deps.metrics,
      "grpc",
      requestId,
      caller,
      checked,
      trace,
    );
    exchange.hints = routing.hints;
    // gRPC clients set their deadline as grpc-timeout / connect-timeout-ms.
    exchange.deadlineMs = minDefined(routing.deadlineMs, ctx.timeoutMs());
    return exchange;
  }

  /**
   * Not a generator itself: the generator that streams the answer stays suspended for as long as
   * the stream is open, and would keep its `req` parameter (the prompt) all that time. A request
   * that is refused fails on the first read, as a generator's would.
   */
  function chatStream(
    req: ChatStreamRequest,
    ctx: HandlerContext,
  ): AsyncGenerator<ChatStreamResponse> {
    let exchange: ChatExchange;
    try {
      exchange = exchangeFor(ctx, req.params, true);
    } catch (err) {
      return refused(err);
    }
    return streamChat(exchange, ctx);
  }

  async function* streamChat(
    exchange: ChatExchange,
    ctx: HandlerContext,
  ): AsyncGenerator<ChatStreamResponse> {
    let sent = false;
    // connect-node may never resume a generator it left at a `yield` whose write does not
    // complete (the client gone while its socket was full): the exchange ends on the abort then.
    // A shutdown's cut is answered instead (below), on a connection that is still there.
    const onAbort = () => {
      if (exchange.clientLeft) exchange.finish(499);
    };
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    try {
      let chunk: ChatChunk | undefined = await exchange.open(cancellable(ctx));
      for (const [k, v] of Object.entries(exchange.routeHeaders())) ctx.responseHeader.set(k, v);
      while (chunk) {
        sent = true;
        yield makeMessage(ChatStreamResponseSchema, { chunk });
        chunk = await exchange.next();
      }
      // Before the stream's end reaches the client (see ChatExchange.settleBeforeEnd).
      const settled = exchange.settleBeforeEnd();
      if (settled) await settled;
      exchange.finish(200);
    } catch (err) {
      const f = exchange.failureOf(err);
      // A client that left is no failure of the answer's.
      const left = exchange.clientLeft;
      exchange.finish(left ? 499 : f.status, { error: f, truncated: sent && !left });
      throw connectErrorFor(f, deps.clock());
    } finally {
      ctx.signal.removeEventListener("abort", onAbort);
      // A client that goes away mid-stream ends the generator at its `yield`, past the catch.
      exchange.finish(499);
    }
  }

  async function chat(req: ChatRequest, ctx: HandlerContext): Promise<ChatResponse> {
    const exchange = exchangeFor(ctx, req.params, false);
    try {
      const builder = new CompletionBuilder();
      let c: ChatChunk | undefined = await exchange.open(cancellable(ctx));
      for (; c; c = await exchange.next()) builder.add(c);
      for (const [k, v] of Object.entries(exchange.routeHeaders())) ctx.responseHeader.set(k, v);
      const settled = exchange.settleBeforeEnd();
      if (settled) await settled;
      exchange.finish(200);
      return makeMessage(ChatResponseSchema, { completion: builder.build() });
    } catch (err) {
      const f = exchange.failureOf(err);
      exchange.finish(exchange.clientLeft ? 499 : f.status, { error: f });
      throw connectErrorFor(f, deps.clock());
    }
  }

  async function embed(req: EmbedRequest, ctx: HandlerContext): Promise<EmbedResponse> {
    const { requestId, caller, trace } = begin(ctx);
    const params = req.params;
    const problem = embedProblem(params);
    if (problem || !params) throw rejected(ctx, requestId, trace, problem);
    try {
      const { result, headers } = await runEmbed(
        deps,
        deps.metrics,
        "grpc",
        requestId,
        caller,
        params,
        cancellable(ctx),
        trace,
      );
      for (const [k, v] of Object.entries(headers)) ctx.responseHeader.set(k, v);
      return makeMessage(EmbedResponseSchema, { result });
    } catch (err) {
      throw connectErrorFor(Failure.from(err), deps.clock());
    }
  }

  function listModels(_req: unknown, ctx: HandlerContext) {
    const { caller } = begin(ctx);
    return makeMessage(ListModelsResponseSchema, {
      models: visibleModels(deps.config, caller).map((id) =>
        makeMessage(ModelSchema, { id, ownedBy: "switchyard" }),
      ),
    });
  }

  return { chatStream, chat, embed, listModels };
}

/**
 * A call's context as what cancels it. connect's contexts are its HandlerContextController
 * (createHandlerContext), whose abort() aborts `signal`: a shutdown's cut reaches the call so.
 * One without it (a test's own context) is not reached by the cut; its connection is.
 */
function cancellable(ctx: HandlerContext): Cancellable {
  const c = ctx as HandlerContext & Partial<Cancellable>;
  if (typeof c.abort === "function") return c as HandlerContext & Cancellable;
  return { signal: ctx.signal, abort() {} };
}

/** What the REST route would refuse in an embeddings request (openai/embeddings.ts), if anything. */
function embedProblem(params: EmbedParams | undefined): Failure | undefined {
  const invalid = (message: string, param: string) =>
    new Failure({ status: 400, kind: "invalid_request", param, message });
  const tokenLists = params?.tokenInputs ?? [];
  if (!params?.model || (params.inputs.length === 0 && tokenLists.length === 0)) {
    return invalid(
      "'params.model' and at least one of 'params.inputs' or 'params.token_inputs' are required",
      "params",
    );
  }
  if (params.inputs.length > 0 && tokenLists.length > 0) {
    return invalid("set 'params.inputs' or 'params.token_inputs', not both", "token_inputs");
  }
  if (params.inputs.some((s) => s === "")) {
    return invalid("'params.inputs' must not contain empty strings", "inputs");
  }
  const tooManyTexts = textLimitsProblem(params.inputs.length);
  if (tooManyTexts) return invalid(`'params.inputs': ${tooManyTexts}`, "inputs");
  if (params.flatTokenInput && tokenLists.length !== 1) {
    return invalid(
      "'params.flat_token_input' needs exactly one list in 'params.token_inputs'",
      "flat_token_input",
    );
  }
  const empty = tokenLists.findIndex((list) => list.ids.length === 0);
  if (empty >= 0) {
    return invalid(`'params.token_inputs[${empty}].ids' must not be empty`, "token_inputs");
  }
  const overLimits = tokenLimitsProblem(tokenLists.length, tokenInputCount(params));
  if (overLimits) return invalid(`'params.token_inputs': ${overLimits}`, "token_inputs");
  if (params.dimensions === 0)
    return invalid("'params.dimensions' must be at least 1", "dimensions");
  try {
    checkJsonObject(params.extraJson, "extra_json", invalid);
  } catch (err) {
    return err as Failure;
  }
  return undefined;
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

/**
 * The checks the REST parser makes, for requests that arrive already typed: what each field may
 * hold (ranges, names, JSON text that must be an object) and what the others then require (a
 * tool message names its call, a forced tool is one of the tools). Protobuf also keeps what a
 * newer client's schema adds (an enum number, a oneof case this gateway was built without) as
 * an unknown value; the providers would drop it, so it is refused here rather than lost.
 */
function checkParams(params: ChatParams | undefined): ChatParams {
  const invalid = (message: string, param: string) =>
    new Failure({ status: 400, kind: "invalid_request", message, param });
  if (!params) throw invalid("'params' is required", "params");
  if (!params.model) throw invalid("'params.model' is required", "model");
  if (params.messages.length === 0)
    throw invalid("'params.messages' must not be empty", "messages");
  for (const [i, m] of params.messages.entries()) {
    const at = `messages[${i}]`;
    if (m.role === Role.UNSPECIFIED) throw invalid(`'params.${at}.role' is required`, `${at}.role`);
    if (!(m.role in Role)) {
      throw invalid(`'params.${at}.role' ${m.role} is not a known role`, `${at}.role`);
    }
    for (const [j, part] of m.content.entries()) {
      const partAt = `${at}.content[${j}]`;
      if (part.part.case === undefined) {
        throw invalid(`'params.${partAt}' holds no text, image, audio or file`, partAt);
      }
      if (part.citationsJson !== "") {
        checkJsonArray(part.citationsJson, `${partAt}.citations_json`, invalid);
      }
      checkJsonObject(part.anthropicFieldsJson, `${partAt}.anthropic_fields_json`, invalid);
    }
    if (m.role === Role.TOOL && !m.toolCallId) {
      throw invalid(
        `'params.${at}.tool_call_id' is required for a tool message`,
        `${at}.tool_call_id`,
      );
    }
    // An assistant message may be empty: an Anthropic-style prefill, or one that only calls tools.
    if (m.content.length === 0 && m.role !== Role.ASSISTANT) {
      throw invalid(`'params.${at}.content' must not be empty`, `${at}.content`);
    }
    for (const [k, call] of m.toolCalls.entries()) {
      const callAt = `${at}.tool_calls[${k}]`;
      if (!call.id) throw invalid(`'params.${callAt}.id' is required`, `${callAt}.id`);
      if (!call.name) throw invalid(`'params.${callAt}.name' is required`, `${callAt}.name`);
    }
  }
  for (const [i, tool] of params.tools.entries()) {
    const at = `tools[${i}]`;
    if (tool.anthropicJson !== "") {
      checkAnthropicTool(tool, at, invalid);
      continue;
    }
    if (!NAME_PATTERN.test(tool.name)) {
      throw invalid(
        `'params.${at}.name' must match the pattern '${NAME_PATTERN.source}'`,
        `${at}.name`,
      );
    }
    checkJsonObject(tool.parametersJson, `${at}.parameters_json`, invalid);
  }
  const choice = params.toolChoice;
  if (choice !== undefined) {
    const mode = choice.mode;
    if (mode === ToolChoice_Mode.UNSPECIFIED || !(mode in ToolChoice_Mode)) {
      throw invalid(
        `'params.tool_choice.mode' ${mode} is not one of none, auto, required, function`,
        "tool_choice.mode",
      );
    }
    if (mode === ToolChoice_Mode.REQUIRED || mode === ToolChoice_Mode.FUNCTION) {
      if (params.tools.length === 0) {
        throw invalid("'params.tool_choice' needs 'params.tools'", "tool_choice");
      }
    }
    if (
      mode === ToolChoice_Mode.FUNCTION &&
      !params.tools.some((t) => t.name === choice.functionName)
    ) {
      throw invalid(
        "'params.tool_choice.function_name' must name one of 'params.tools'",
        "tool_choice.function_name",
      );
    }
  }
  const format = params.responseFormat;
  if (format !== undefined) {
    if (format.type === ResponseFormat_Type.UNSPECIFIED || !(format.type in ResponseFormat_Type)) {
      throw invalid(
        `'params.response_format.type' ${format.type} is not one of text, json_object, json_schema`,
        "response_format.type",
      );
    }
    if (format.type === ResponseFormat_Type.JSON_SCHEMA) {
      if (format.jsonSchemaJson === "") {
        throw invalid(
          "'params.response_format.json_schema_json' is required for json_schema",
          "response_format.json_schema_json",
        );
      }
      checkJsonObject(format.jsonSchemaJson, "response_format.json_schema_json", invalid);
    }
  }
  checkRange(params.temperature, "temperature", 0, 2, invalid);
  checkRange(params.topP, "top_p", 0, 1, invalid);
  checkRange(params.presencePenalty, "presence_penalty", -2, 2, invalid);
  checkRange(params.frequencyPenalty, "frequency_penalty", -2, 2, invalid);
  if (params.maxTokens === 0) throw invalid("'params.max_tokens' must be at least 1", "max_tokens");
  if (params.n === 0) throw invalid("'params.n' must be at least 1", "n");
  if (params.stop.length > MAX_STOP) {
    throw invalid(`'params.stop' holds at most ${MAX_STOP} sequences`, "stop");
  }
  const extras = checkJsonObject(params.extraJson, "extra_json", invalid);
  // A field ChatParams names goes there, checked as above: in extra_json it would pass every
  // check (a temperature of 5, a second tools list) and reach the upstream as it was.
  for (const key of Object.keys(extras)) {
    if (KNOWN_FIELDS.has(key)) {
      throw invalid(
        `'params.extra_json' may not set '${key}': it is a field of ChatParams`,
        "extra_json",
      );
    }
  }
  return params;
}

type Invalid = (message: string, param: string) => Error;

function checkRange(
  value: number | undefined,
  name: string,
  min: number,
  max: number,
  invalid: Invalid,
): void {
  // NaN fails both comparisons the other way round, so it is refused too.
  if (value !== undefined && !(value >= min && value <= max)) {
    throw invalid(`'params.${name}' must be a number between ${min} and ${max}`, name);
  }
}

/**
 * A tool Anthropic defines, sent whole as `anthropic_json`: an object with a `type` of its own
 * (not `custom`: a custom tool is a function), named as `name` says (a toolset names none).
 * The rest is Anthropic's to judge.
 */
function checkAnthropicTool(tool: Tool, at: string, invalid: Invalid): void {
  const json = checkJsonObject(tool.anthropicJson, `${at}.anthropic_json`, invalid);
  if (typeof json.type !== "string" || json.type === "" || json.type === "custom") {
    throw invalid(
      `'params.${at}.anthropic_json' needs the 'type' of a tool Anthropic defines, e.g. "web_search_20250305"`,
      `${at}.anthropic_json`,
    );
  }
  const name = json.name ?? "";
  if (name !== tool.name) {
    throw invalid(
      `'params.${at}.name' must be the name in 'params.${at}.anthropic_json' (empty when it has none)`,
      `${at}.name`,
    );
  }
  if (tool.parametersJson !== "" || tool.description !== undefined) {
    throw invalid(
      `'params.${at}' is an Anthropic-defined tool: its definition is 'anthropic_json' alone, without 'parameters_json' or 'description'`,
      at,
    );
  }
}

/** JSON text carried in a string field that must hold an array. */
function checkJsonArray(text: string, param: string, invalid: Invalid): void {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (!Array.isArray(value)) throw invalid(`'params.${param}' must be a JSON array`, param);
}

/** JSON text carried in a string field: empty, or an object (what providers are sent). */
function checkJsonObject(text: string, param: string, invalid: Invalid): Record<string, unknown> {
  if (text === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalid(`'params.${param}' must be a JSON object`, param);
  }
  return value as Record<string, unknown>;
}

/** A stream that fails on its first read with `err`. */
// biome-ignore lint/correctness/useYield: it only throws
async function* refused(err: unknown): AsyncGenerator<never> {
  throw err;
}
