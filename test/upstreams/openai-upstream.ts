/**
 * A fake OpenAI-compatible upstream for tests: a real `node:http` server on 127.0.0.1 (port 0)
 * that speaks the Chat Completions and Embeddings wire formats (JSON and SSE), in OpenAI's and in
 * Azure OpenAI's route styles, records every request and does what the test tells it to.
 *
 *   const upstream = await startOpenAIUpstream({ behavior: { kind: "answer", text: "Hi there" } });
 *   // providers: { local: { type: openai, base_url: upstream.url } }
 *   // providers: { azure: { type: azure-openai, base_url: upstream.origin, api_version: "2024-10-21" } }
 *   upstream.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "2" } });
 *   upstream.setBehavior((req) => (upstream.requests.length === 1 ? failOnce : answer));
 *   upstream.requests[0]?.body          // the parsed JSON the gateway sent
 *   upstream.requests[0]?.query         // e.g. { "api-version": "2024-10-21" }
 *   await upstream.requests[0]?.closed  // resolves when that request's connection ended
 *   await upstream.close();
 *
 * Routes, OpenAI style (under `url`, which ends in "/v1"):
 * - POST /v1/chat/completions — answers per the current behaviour; streams (SSE, ending with
 *   `data: [DONE]`) when the body has `stream: true`, and adds a usage chunk when it also has
 *   `stream_options.include_usage: true`, as OpenAI does.
 * - POST /v1/embeddings — with an "answer" behaviour, one `fakeEmbedding` per input (floats, or
 *   base64 when `encoding_format` is "base64") and usage counting words (token ids: one each);
 *   a token-id input is embedded as its JSON text, e.g. `fakeEmbedding("[1,2,3]")`.
 * - GET /v1/models — with an "answer" behaviour, an OpenAI model list of `models`; other
 *   behaviours apply here too (so probes can be made to fail).
 *
 * Routes, Azure OpenAI style (under `origin`), answered the Azure way: streams open with a
 * prompt-filter-results chunk (empty id and model, `created` 0) and choices carry
 * `content_filter_results`; the model named in answers is the deployment unless the behaviour
 * names one:
 * - POST /openai/deployments/{deployment}/chat/completions?api-version=V
 * - POST /openai/deployments/{deployment}/embeddings?api-version=V
 * - GET /openai/models?api-version=V
 *   A missing api-version is refused (400), and dated versions before 2024-09-01 refuse
 *   `stream_options` and `max_completion_tokens` (400), as Azure does.
 * On every chat route a `stop` list of more than 4 is refused with OpenAI's 400 (param "stop",
 * code "array_above_max_length"), before any behaviour applies; on every embeddings route so is
 * a `dimensions` over 3,072 (param "dimensions").
 * - POST /openai/v1/chat/completions, POST /openai/v1/embeddings, GET /openai/v1/models — the v1
 *   surface, no api-version, the deployment named by the body's `model`.
 * - anything else — 404 with an OpenAI error body.
 *
 * Behaviours:
 * - `answer`: a normal answer — `text` split into `chunks` content chunks, optional `toolCalls`
 *   whose arguments stream in `fragments` pieces; `cutAfterChunks` stops a stream after that
 *   many SSE events without `[DONE]` (`cutMode` "end" ends the HTTP response cleanly,
 *   "destroy" resets the connection).
 * - `error`: answers `status` with `body` (an object is sent as JSON; default an OpenAI error
 *   envelope) and `headers` (e.g. `retry-after`). `azureContentFilterError()` is Azure's body
 *   for a prompt its content filter blocked, `azureRateLimited()` Azure's whole 429.
 *   On Azure routes, `finishReason: "content_filter"` is Azure's output filter: the whole answer
 *   has no content, and the verdict in `content_filter_results` names what it stopped.
 * - `hang`: reads the request and never sends headers (for timeouts and cancellation).
 * - `raw`: writes `chunks` verbatim after the headers, then ends (or resets) the response; for
 *   malformed streams and mid-stream error events.
 */

import { createHash } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type HangBehavior,
  isRecord,
  type RawBehavior,
  sendBody,
  sendRaw,
  serveOnLoopback,
  splitInto,
  write,
} from "./wire.js";

export interface FakeToolCall {
  /** Default `call_<n>`. */
  id?: string;
  name: string;
  /** The arguments JSON text, sent byte for byte. */
  arguments: string;
  /** How many pieces the arguments stream in; default 3. */
  fragments?: number;
}

export interface AnswerBehavior {
  kind: "answer";
  /** Default "Hello from the fake upstream." */
  text?: string;
  /** How many content chunks the text streams in; default 3. */
  chunks?: number;
  toolCalls?: FakeToolCall[];
  /** Default "tool_calls" when there are tool calls, else "stop". */
  finishReason?: string;
  /** Default: prompt 10, completion = chunks of text + tool-call fragments. */
  usage?: { prompt_tokens: number; completion_tokens: number };
  /** Embeddings: answer without `usage`, as some OpenAI-compatible servers do. */
  noEmbeddingUsage?: boolean;
  /** The model the answer names; default the requested model. */
  model?: string;
  /** Delay before the response headers. */
  headersDelayMs?: number;
  /** Delay before every SSE event. */
  chunkDelayMs?: number;
  /** Stream only: delay between the role chunk and the first content chunk (the model thinking). */
  thinkMs?: number;
  /** Stream only: stop after this many SSE events, without `[DONE]`. */
  cutAfterChunks?: number;
  /** How a cut stream stops; default "end". */
  cutMode?: "end" | "destroy";
  /** Stream only: after this many SSE events, send nothing more until the client goes away. */
  stallAfterChunks?: number;
  /** Stream only: delay between `data: [DONE]` and the end of the HTTP body. */
  endDelayMs?: number;
}

export interface ErrorBehavior {
  kind: "error";
  status: number;
  /** An object is sent as JSON, a string as is; default an OpenAI error envelope. */
  body?: unknown;
  headers?: Record<string, string>;
}

export type UpstreamBehavior = AnswerBehavior | ErrorBehavior | HangBehavior | RawBehavior;

/** Which wire dialect a route speaks. */
export type RouteStyle = "openai" | "azure" | "azure-v1";

export interface RecordedRequest {
  method: string;
  /** Path and query, e.g. "/v1/chat/completions". */
  path: string;
  /** The query parameters, e.g. `{ "api-version": "2024-10-21" }`. */
  query: Record<string, string>;
  /** The route's dialect; undefined for an unknown route. */
  style?: RouteStyle;
  /** Azure dated routes: the deployment named in the path. */
  deployment?: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body; undefined when there was none or it was not JSON. */
  body: unknown;
  /** Resolves when the exchange is over: response finished or connection closed. */
  closed: Promise<void>;
  /** True once the client went away before the response was complete. */
  aborted: boolean;
}

export interface OpenAIUpstreamOptions {
  /** Default `{ kind: "answer" }`. */
  behavior?: UpstreamBehavior | BehaviorFn;
  /** Ids for GET /v1/models; default ["fake-model"]. */
  models?: string[];
}

export type BehaviorFn = (request: RecordedRequest) => UpstreamBehavior;

export interface OpenAIUpstream {
  /** Base URL ending in "/v1", for a `type: openai` provider's `base_url`. */
  url: string;
  /** "http://127.0.0.1:PORT", for a `type: azure-openai` provider's `base_url`. */
  origin: string;
  requests: RecordedRequest[];
  /** TCP connections accepted so far (to observe keep-alive reuse). */
  readonly connections: number;
  setBehavior(behavior: UpstreamBehavior | BehaviorFn): void;
  close(): Promise<void>;
}

export async function startOpenAIUpstream(
  options: OpenAIUpstreamOptions = {},
): Promise<OpenAIUpstream> {
  let behavior: UpstreamBehavior | BehaviorFn = options.behavior ?? { kind: "answer" };
  const models = options.models ?? ["fake-model"];
  const requests: RecordedRequest[] = [];
  let answers = 0;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let body: unknown;
    try {
      body = text === "" ? undefined : JSON.parse(text);
    } catch {
      body = undefined;
    }
    let markClosed = () => {};
    const url = new URL(req.url ?? "/", "http://fake");
    const record: RecordedRequest = {
      method: req.method ?? "",
      path: req.url ?? "",
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
      body,
      closed: new Promise<void>((resolve) => {
        markClosed = resolve;
      }),
      aborted: false,
    };
    res.on("close", () => {
      record.aborted = !res.writableFinished;
      markClosed();
    });
    requests.push(record);

    const route = routeOf(record.method, url);
    if (route === undefined) {
      const path = record.path.split("?")[0];
      sendBody(
        res,
        404,
        errorEnvelope(`no route ${record.method} ${path}`, "invalid_request_error"),
      );
      return;
    }
    record.style = route.style;
    if (route.deployment !== undefined) record.deployment = route.deployment;
    const refusal =
      azureRefusal(route, record.query, body) ??
      stopRefusal(route, body) ??
      dimensionsRefusal(route, body);
    if (refusal !== undefined) {
      sendBody(res, 400, refusal);
      return;
    }
    const current = typeof behavior === "function" ? behavior(record) : behavior;
    switch (current.kind) {
      case "hang":
        return;
      case "error": {
        const errorBody =
          current.body ?? errorEnvelope(`fake upstream error ${current.status}`, "server_error");
        sendBody(res, current.status, errorBody, current.headers);
        return;
      }
      case "raw":
        await sendRaw(res, current);
        return;
      case "answer": {
        if (current.headersDelayMs) await sleep(current.headersDelayMs);
        if (res.destroyed) return;
        const request = isRecord(body) ? body : {};
        if (route.kind === "models") {
          sendBody(res, 200, modelList(models, route.style));
          return;
        }
        const model =
          current.model ??
          route.deployment ??
          (typeof request.model === "string" ? request.model : "fake-model");
        if (route.kind === "embeddings") {
          sendBody(res, 200, embeddingsAnswer(current, request, model));
          return;
        }
        answers += 1;
        await answer(res, current, request, {
          id: `chatcmpl-fake${answers}`,
          model,
          azure: route.style !== "openai",
        });
        return;
      }
    }
  }

  const server = await serveOnLoopback(handle);
  return {
    url: `${server.origin}/v1`,
    origin: server.origin,
    requests,
    get connections() {
      return server.connections;
    },
    setBehavior(next) {
      behavior = next;
    },
    close: () => server.close(),
  };
}

interface Route {
  kind: "chat" | "embeddings" | "models";
  style: RouteStyle;
  deployment?: string;
}

function routeOf(method: string, url: URL): Route | undefined {
  const post = method === "POST";
  const get = method === "GET";
  const path = url.pathname;
  if (post && path === "/v1/chat/completions") return { kind: "chat", style: "openai" };
  if (post && path === "/v1/embeddings") return { kind: "embeddings", style: "openai" };
  if (get && path === "/v1/models") return { kind: "models", style: "openai" };
  if (post && path === "/openai/v1/chat/completions") return { kind: "chat", style: "azure-v1" };
  if (post && path === "/openai/v1/embeddings") return { kind: "embeddings", style: "azure-v1" };
  if (get && path === "/openai/v1/models") return { kind: "models", style: "azure-v1" };
  if (get && path === "/openai/models") return { kind: "models", style: "azure" };
  const deployment = /^\/openai\/deployments\/([^/]+)\/(chat\/completions|embeddings)$/.exec(path);
  if (post && deployment?.[1] !== undefined) {
    return {
      kind: deployment[2] === "embeddings" ? "embeddings" : "chat",
      style: "azure",
      deployment: decodeURIComponent(deployment[1]),
    };
  }
  return undefined;
}

/** First Azure API version whose request schema has `stream_options` and `max_completion_tokens`. */
const AZURE_STREAM_OPTIONS_SINCE = "2024-09-01";

/** What Azure's dated API answers 400 to before any behaviour applies; undefined if nothing. */
function azureRefusal(
  route: Route,
  query: Record<string, string>,
  body: unknown,
): Record<string, unknown> | undefined {
  if (route.style !== "azure") return undefined;
  const version = query["api-version"];
  if (version === undefined || version === "") {
    return {
      error: {
        code: "MissingApiVersionParameter",
        message: "The api-version query parameter (?api-version=) is required for all requests.",
      },
    };
  }
  if (route.kind !== "chat" || !isRecord(body)) return undefined;
  if (version.slice(0, 10) >= AZURE_STREAM_OPTIONS_SINCE) return undefined;
  for (const field of ["stream_options", "max_completion_tokens"]) {
    if (field in body) {
      return errorEnvelope(
        `Unrecognized request argument supplied: ${field}`,
        "invalid_request_error",
      );
    }
  }
  return undefined;
}

/** OpenAI's (and Azure's) most stop sequences a chat request may have. */
const MAX_STOP = 4;

/** OpenAI's 400 for a `stop` list longer than MAX_STOP, as its API words it. */
function stopRefusal(route: Route, body: unknown): Record<string, unknown> | undefined {
  if (route.kind !== "chat" || !isRecord(body) || !Array.isArray(body.stop)) return undefined;
  if (body.stop.length <= MAX_STOP) return undefined;
  return {
    error: {
      message: `Invalid 'stop': array too long. Expected an array with maximum length ${MAX_STOP}, but got an array with length ${body.stop.length} instead.`,
      type: "invalid_request_error",
      param: "stop",
      code: "array_above_max_length",
    },
  };
}

/** OpenAI's largest embedding (text-embedding-3-large); a fake asked for more refuses, as OpenAI does. */
const MAX_DIMENSIONS = 3072;

function dimensionsRefusal(route: Route, body: unknown): Record<string, unknown> | undefined {
  if (route.kind !== "embeddings" || !isRecord(body) || typeof body.dimensions !== "number")
    return undefined;
  if (body.dimensions <= MAX_DIMENSIONS) return undefined;
  return {
    error: {
      message: `Invalid value for 'dimensions' = ${body.dimensions}. Must be less than or equal to ${MAX_DIMENSIONS}.`,
      type: "invalid_request_error",
      param: "dimensions",
      code: null,
    },
  };
}

function modelList(models: readonly string[], style: RouteStyle): Record<string, unknown> {
  if (style === "azure") {
    return {
      object: "list",
      data: models.map((id) => ({
        id,
        object: "model",
        created_at: 1700000000,
        status: "succeeded",
        lifecycle_status: "generally-available",
      })),
    };
  }
  return {
    object: "list",
    data: models.map((id) => ({ id, object: "model", created: 1700000000, owned_by: "fake" })),
  };
}

/**
 * The fake's embedding of `text`: deterministic, derived from its SHA-256, with values that are
 * exact in float32 (so floats, base64 and protobuf all carry the same numbers).
 */
export function fakeEmbedding(text: string, dimensions = 8): number[] {
  const values: number[] = [];
  for (let block = 0; values.length < dimensions; block++) {
    const digest = createHash("sha256").update(`${block}:${text}`).digest();
    for (const byte of digest) {
      if (values.length === dimensions) break;
      values.push((byte - 128) / 128);
    }
  }
  return values;
}

function embeddingsAnswer(
  behavior: AnswerBehavior,
  request: Record<string, unknown>,
  model: string,
): Record<string, unknown> {
  const input = request.input;
  // Token ids: a flat list is one input, a list of lists one per list; each is embedded as its
  // JSON text (so [1,2] and [[1,2]] get the same vector) and counts a token per id.
  const flat =
    Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === "number");
  const inputs =
    typeof input === "string"
      ? [input]
      : flat
        ? [JSON.stringify(input)]
        : Array.isArray(input)
          ? input.map((x) => (typeof x === "string" ? x : JSON.stringify(x)))
          : [];
  const dimensions =
    typeof request.dimensions === "number" && request.dimensions > 0 ? request.dimensions : 8;
  const base64 = request.encoding_format === "base64";
  const counted = flat
    ? (input as unknown[]).length
    : Array.isArray(input) && Array.isArray(input[0])
      ? input.reduce((n: number, x) => n + (Array.isArray(x) ? x.length : 0), 0)
      : inputs.reduce((n, text) => n + text.split(/\s+/).filter((w) => w).length, 0);
  const promptTokens = behavior.usage?.prompt_tokens ?? counted;
  return {
    object: "list",
    data: inputs.map((text, index) => {
      const values = fakeEmbedding(text, dimensions);
      return {
        object: "embedding",
        index,
        embedding: base64
          ? Buffer.from(new Float32Array(values).buffer).toString("base64")
          : values,
      };
    }),
    model,
    ...(!behavior.noEmbeddingUsage && {
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    }),
  };
}

/** Azure's verdict on a prompt or completion its filters passed. */
const AZURE_FILTER_PASSED = {
  hate: { filtered: false, severity: "safe" },
  self_harm: { filtered: false, severity: "safe" },
  sexual: { filtered: false, severity: "safe" },
  violence: { filtered: false, severity: "safe" },
};

/** Azure's verdict on a completion its filter stopped: violence rated medium. */
const AZURE_FILTER_STOPPED = {
  ...AZURE_FILTER_PASSED,
  violence: { filtered: true, severity: "medium" },
};

/**
 * Azure's 429 for a deployment over its rate limit: code "429" as a string, the wait in the
 * words and in both `retry-after` (seconds) and `retry-after-ms`.
 */
export function azureRateLimited(seconds = 6): ErrorBehavior {
  return {
    kind: "error",
    status: 429,
    body: {
      error: {
        code: "429",
        message: `Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after ${seconds} seconds.`,
      },
    },
    headers: { "retry-after": String(seconds), "retry-after-ms": String(seconds * 1000) },
  };
}

/** Azure's 400 body for a prompt its content filter blocked (`category` rated `severity`). */
export function azureContentFilterError(category = "violence", severity = "high") {
  return {
    error: {
      message:
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
      type: null,
      param: "prompt",
      code: "content_filter",
      status: 400,
      innererror: {
        code: "ResponsibleAIPolicyViolation",
        content_filter_result: {
          ...AZURE_FILTER_PASSED,
          [category]: { filtered: true, severity },
        },
      },
    },
  };
}

async function answer(
  res: ServerResponse,
  behavior: AnswerBehavior,
  request: Record<string, unknown>,
  { id, model, azure }: { id: string; model: string; azure: boolean },
): Promise<void> {
  const text = behavior.text ?? "Hello from the fake upstream.";
  const pieces = text === "" ? [] : splitInto(text, behavior.chunks ?? 3);
  const calls = (behavior.toolCalls ?? []).map((call, i) => ({
    id: call.id ?? `call_${i + 1}`,
    name: call.name,
    arguments: call.arguments,
    fragments: splitInto(call.arguments, call.fragments ?? 3),
  }));
  const created = Math.floor(Date.now() / 1000);
  // As OpenAI does when asked (`logprobs: true`): one entry per token, here per piece.
  const logprobOf = (piece: string, i: number) => ({
    token: piece,
    logprob: -(i + 1) / 10,
    bytes: [...Buffer.from(piece)],
    top_logprobs: [],
  });
  const wantsLogprobs = request.logprobs === true;
  const finishReason = behavior.finishReason ?? (calls.length > 0 ? "tool_calls" : "stop");
  const fragmentCount = calls.reduce((n, call) => n + call.fragments.length, 0);
  const promptTokens = behavior.usage?.prompt_tokens ?? 10;
  const completionTokens = behavior.usage?.completion_tokens ?? pieces.length + fragmentCount;
  const usage = {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0 },
  };

  // Azure's output filter: a whole answer it stopped comes without content, and the verdict
  // names the category it stopped.
  const filtered = azure && finishReason === "content_filter";
  const verdict = filtered ? AZURE_FILTER_STOPPED : AZURE_FILTER_PASSED;
  if (request.stream !== true) {
    const message: Record<string, unknown> = filtered
      ? { role: "assistant" }
      : {
          role: "assistant",
          content: text === "" && calls.length > 0 ? null : text,
          refusal: null,
        };
    if (calls.length > 0) {
      message.tool_calls = calls.map((call) => ({
        id: call.id,
        type: "function",
        function: { name: call.name, arguments: call.arguments },
      }));
    }
    const choice: Record<string, unknown> = {
      index: 0,
      message,
      logprobs: wantsLogprobs ? { content: pieces.map(logprobOf), refusal: null } : null,
      finish_reason: finishReason,
    };
    if (azure) choice.content_filter_results = verdict;
    sendBody(res, 200, {
      id,
      object: "chat.completion",
      created,
      model,
      system_fingerprint: "fp_fake",
      choices: [choice],
      usage,
      ...(azure && {
        prompt_filter_results: [{ prompt_index: 0, content_filter_results: AZURE_FILTER_PASSED }],
      }),
    });
    return;
  }

  const streamOptions = request.stream_options;
  const includeUsage = isRecord(streamOptions) && streamOptions.include_usage === true;
  const head = {
    id,
    object: "chat.completion.chunk",
    created,
    model,
    system_fingerprint: "fp_fake",
  };
  const events: unknown[] = [];
  if (azure) {
    events.push({
      choices: [],
      created: 0,
      id: "",
      model: "",
      object: "",
      prompt_filter_results: [{ prompt_index: 0, content_filter_results: AZURE_FILTER_PASSED }],
    });
  }
  const chunk = (
    delta: Record<string, unknown>,
    finish: string | null = null,
    logprobs: unknown = null,
  ) => ({
    ...head,
    choices: [
      {
        index: 0,
        delta,
        logprobs,
        finish_reason: finish,
        ...(azure && {
          content_filter_results: delta.role ? {} : finish === null ? AZURE_FILTER_PASSED : verdict,
        }),
      },
    ],
    ...(includeUsage && { usage: null }),
  });
  events.push(chunk({ role: "assistant", content: "", refusal: null }));
  for (const [i, piece] of pieces.entries()) {
    const logprobs = wantsLogprobs ? { content: [logprobOf(piece, i)], refusal: null } : null;
    events.push(chunk({ content: piece }, null, logprobs));
  }
  for (const [index, call] of calls.entries()) {
    events.push(
      chunk({
        tool_calls: [
          { index, id: call.id, type: "function", function: { name: call.name, arguments: "" } },
        ],
      }),
    );
    for (const fragment of call.fragments) {
      events.push(chunk({ tool_calls: [{ index, function: { arguments: fragment } }] }));
    }
  }
  events.push(chunk({}, finishReason));
  if (includeUsage) events.push({ ...head, choices: [], usage });

  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
  });
  res.flushHeaders();
  for (const [i, event] of events.entries()) {
    if (behavior.cutAfterChunks !== undefined && i >= behavior.cutAfterChunks) {
      if (behavior.cutMode === "destroy") res.destroy();
      else res.end();
      return;
    }
    if (behavior.stallAfterChunks !== undefined && i >= behavior.stallAfterChunks) {
      if (!res.destroyed) await new Promise((resolve) => res.once("close", resolve));
      return;
    }
    if (behavior.chunkDelayMs) await sleep(behavior.chunkDelayMs);
    if (i === 1 && behavior.thinkMs) await sleep(behavior.thinkMs);
    if (res.destroyed) return;
    await write(res, `data: ${JSON.stringify(event)}\n\n`);
  }
  if (behavior.endDelayMs) {
    await write(res, "data: [DONE]\n\n");
    await sleep(behavior.endDelayMs);
    res.end();
  } else {
    res.end("data: [DONE]\n\n");
  }
}

export function errorEnvelope(message: string, type: string, code: string | null = null) {
  return { error: { message, type, param: null, code } };
}
