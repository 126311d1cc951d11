import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type ChatChunk,
  type ChatParams,
  ResponseFormat_Type,
  Role,
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
import { Failure } from "../lib/errors.js";
import { makeMessage } from "../lib/hop/codec.js";
import { newUuid } from "../lib/ids.js";
import { childSpan, formatTraceparent, parseTraceparent, type TraceContext } from "../lib/trace.js";
import { authenticate, type Caller, presentedKey, visibleModels } from "./auth.js";
import { ChatExchange, type IngressDeps, type IngressMetrics, runEmbed } from "./exchange.js";
import { routingHints } from "./hints.js";
import { connectErrorFor } from "./limits/headers.js";

/** GatewayService: the public typed API, same auth, routing and limits as the REST routes. */
export function createGatewayService(
  deps: IngressDeps & { metrics: IngressMetrics },
): ServiceImpl<typeof GatewayService> {
  function begin(ctx: HandlerContext): { requestId: string; caller: Caller; trace: TraceContext } {
    const requestId = ctx.requestHeader.get("x-request-id") || newUuid();
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
      throw Failure.from(err).toConnectError();
    }
  }

  function exchangeFor(
    ctx: HandlerContext,
    params: ChatParams | undefined,
    stream: boolean,
  ): ChatExchange {
    const { requestId, caller, trace } = begin(ctx);
    const checked = checkParams(params);
    checked.stream = stream;
    checked.clientApi = "grpc";
    let routing: ReturnType<typeof routingHints>;
    try {
      routing = routingHints((name) => ctx.requestHeader.get(name) ?? undefined);
    } catch (err) {
      throw Failure.from(err).toConnectError();
    }
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
    try {
      let chunk: ChatChunk | undefined = await exchange.open(ctx.signal);
      for (const [k, v] of Object.entries(exchange.routeHeaders())) ctx.responseHeader.set(k, v);
      while (chunk) {
        sent = true;
        yield makeMessage(ChatStreamResponseSchema, { chunk });
        chunk = await exchange.next();
      }
      exchange.finish(200);
    } catch (err) {
      const f = Failure.from(err);
      exchange.finish(ctx.signal.aborted ? 499 : f.status, { error: f, truncated: sent });
      throw connectErrorFor(f, deps.clock());
    } finally {
      // A client that goes away mid-stream ends the generator at its `yield`, past the catch.
      exchange.finish(499);
    }
  }

  async function chat(req: ChatRequest, ctx: HandlerContext): Promise<ChatResponse> {
    const exchange = exchangeFor(ctx, req.params, false);
    try {
      const builder = new CompletionBuilder();
      let c: ChatChunk | undefined = await exchange.open(ctx.signal);
      for (; c; c = await exchange.next()) builder.add(c);
      for (const [k, v] of Object.entries(exchange.routeHeaders())) ctx.responseHeader.set(k, v);
      exchange.finish(200);
      return makeMessage(ChatResponseSchema, { completion: builder.build() });
    } catch (err) {
      const f = Failure.from(err);
      exchange.finish(ctx.signal.aborted ? 499 : f.status, { error: f });
      throw connectErrorFor(f, deps.clock());
    }
  }

  async function embed(req: EmbedRequest, ctx: HandlerContext): Promise<EmbedResponse> {
    const { requestId, caller, trace } = begin(ctx);
    const params = req.params;
    if (!params?.model || params.inputs.length === 0) {
      throw new Failure({
        status: 400,
        kind: "invalid_request",
        param: "params",
        message: "'params.model' and at least one of 'params.inputs' are required",
      }).toConnectError();
    }
    try {
      const { result, headers } = await runEmbed(
        deps,
        deps.metrics,
        "grpc",
        requestId,
        caller,
        params,
        ctx.signal,
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

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

/**
 * The checks the REST parser makes, for requests that arrive already typed. Protobuf keeps what
 * a newer client's schema adds (an enum number, a oneof case this gateway was built without) as
 * an unknown value; the providers would drop it, so it is refused here rather than lost.
 */
function checkParams(params: ChatParams | undefined): ChatParams {
  const invalid = (message: string, param: string) =>
    new Failure({ status: 400, kind: "invalid_request", message, param }).toConnectError();
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
      if (part.part.case === undefined) {
        throw invalid(
          `'params.${at}.content[${j}]' holds no text, image, audio or file`,
          `${at}.content[${j}]`,
        );
      }
    }
  }
  const mode = params.toolChoice?.mode;
  if (mode !== undefined && (mode === ToolChoice_Mode.UNSPECIFIED || !(mode in ToolChoice_Mode))) {
    throw invalid(
      `'params.tool_choice.mode' ${mode} is not one of none, auto, required, function`,
      "tool_choice.mode",
    );
  }
  const format = params.responseFormat?.type;
  if (
    format !== undefined &&
    (format === ResponseFormat_Type.UNSPECIFIED || !(format in ResponseFormat_Type))
  ) {
    throw invalid(
      `'params.response_format.type' ${format} is not one of text, json_object, json_schema`,
      "response_format.type",
    );
  }
  return params;
}

/** A stream that fails on its first read with `err`. */
// biome-ignore lint/correctness/useYield: it only throws
async function* refused(err: unknown): AsyncGenerator<never> {
  throw err;
}
