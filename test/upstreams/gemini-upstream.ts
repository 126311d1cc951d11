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

export interface FakeFunctionCall {
  name: string;
  args: Record<string, unknown>;
  /** Gemini's public API usually sends none. */
  id?: string;
  thoughtSignature?: string;
}

export interface GeminiAnswerBehavior {
  kind: "answer";
  /** Default "Hello from the fake Gemini." */
  text?: string;
  /** How many pieces the text streams in; default 3. */
  chunks?: number;
  /** A thought summary, sent as one `thought: true` part before the text. */
  thoughts?: string;
  functionCalls?: FakeFunctionCall[];
  /** How many candidates; candidate i > 0 says the text with " #i" appended. Default 1. */
  candidates?: number;
  /**
   * Default "STOP". A safety reason (SAFETY, RECITATION, …: `WITHHELD_BY`) is sent as Google
   * does: streamed, the pieces already passed go out and a last event without content carries
   * the reason and the blocking rating; whole, the candidate has no content at all. A failed
   * call's reason (MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL) also comes on an event of its
   * own, after any text, without the call.
   */
  finishReason?: string;
  /** Answers a prompt blocked with this reason: promptFeedback and no candidates. */
  blockReason?: string;
  /** Default: prompt 10, candidates = text pieces + calls, thoughts 5 when there are thoughts. */
  usage?: {
    promptTokenCount: number;
    candidatesTokenCount: number;
    thoughtsTokenCount?: number;
    cachedContentTokenCount?: number;
  };
  /** Default "{model}-001". */
  modelVersion?: string;
  /** What `:countTokens` answers as `totalTokens`; default `fakeGeminiTokenCount(body)`. */
  totalTokens?: number;
  /** Default "fake-response-{n}". */
  responseId?: string;
  headersDelayMs?: number;
  /** Delay before every SSE event. */
  chunkDelayMs?: number;
  /** Stream only: stop after this many events, before the one that finishes. */
  cutAfterChunks?: number;
  /** Default "end". */
  cutMode?: "end" | "destroy";
}

export interface GeminiErrorBehavior {
  kind: "error";
  status: number;
  /** An object is sent as JSON, a string as is; default a Google error envelope. */
  body?: unknown;
  /** Adds a google.rpc.RetryInfo detail with this delay (e.g. "7s") to the default envelope. */
  retryDelay?: string;
  headers?: Record<string, string>;
}

export type GeminiHangBehavior = HangBehavior;

export type GeminiRawBehavior = RawBehavior;

export type GeminiBehavior =
  | GeminiAnswerBehavior
  | GeminiErrorBehavior
  | GeminiHangBehavior
  | GeminiRawBehavior;

export type GeminiAction =
  | "generateContent"
  | "streamGenerateContent"
  | "batchEmbedContents"
  | "countTokens"
  | "get"
  | "unknown";

export interface RecordedGeminiRequest {
  method: string;
  /** The path without the query, e.g. "/v1beta/models/gemini-2.5-flash:generateContent". */
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  /** The model named in the path, decoded (e.g. "gemini-2.5-flash"). */
  model: string;
  action: GeminiAction;
  /** The parsed JSON body; undefined when there was none or it was not JSON. */
  body: unknown;
  /** Resolves when the exchange is over: response finished or connection closed. */
  closed: Promise<void>;
  /** True once the client went away before the response was complete. */
  aborted: boolean;
}

export type GeminiBehaviorFn = (request: RecordedGeminiRequest) => GeminiBehavior;

export interface GeminiUpstreamOptions {
  /** Default `{ kind: "answer" }`. */
  behavior?: GeminiBehavior | GeminiBehaviorFn;
  /** When set, requests must send this key in `x-goog-api-key`. */
  apiKey?: string;
}

export interface GeminiUpstream {
  /** The API origin, for a provider's `base_url`. */
  url: string;
  requests: RecordedGeminiRequest[];
  /** TCP connections accepted so far (to observe keep-alive reuse). */
  readonly connections: number;
  setBehavior(behavior: GeminiBehavior | GeminiBehaviorFn): void;
  close(): Promise<void>;
}

const ROUTE = /^\/v1beta\/models\/([^/:]+)(?::([A-Za-z]+))?$/;

export async function startGeminiUpstream(
  options: GeminiUpstreamOptions = {},
): Promise<GeminiUpstream> {
  let behavior: GeminiBehavior | GeminiBehaviorFn = options.behavior ?? { kind: "answer" };
  const requests: RecordedGeminiRequest[] = [];
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
    const url = new URL(req.url ?? "/", "http://fake");
    const route = ROUTE.exec(url.pathname);
    const method = req.method ?? "";
    let markClosed = () => {};
    const record: RecordedGeminiRequest = {
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
      model: route?.[1] === undefined ? "" : decodeURIComponent(route[1]),
      action: actionOf(method, route?.[2]),
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

    if (record.action === "unknown") {
      sendBody(res, 404, googleErrorEnvelope(404, `no route ${method} ${url.pathname}`));
      return;
    }
    if (options.apiKey !== undefined) {
      const key = req.headers["x-goog-api-key"];
      if (key === undefined) {
        sendBody(
          res,
          403,
          googleErrorEnvelope(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
          ),
        );
        return;
      }
      if (key !== options.apiKey) {
        sendBody(
          res,
          400,
          googleErrorEnvelope(400, "API key not valid. Please pass a valid API key.", [
            {
              "@type": "type.googleapis.com/google.rpc.ErrorInfo",
              reason: "API_KEY_INVALID",
              domain: "googleapis.com",
              metadata: { service: "generativelanguage.googleapis.com" },
            },
          ]),
        );
        return;
      }
    }

    const current = typeof behavior === "function" ? behavior(record) : behavior;
    switch (current.kind) {
      case "hang":
        return;
      case "error": {
        const details =
          current.retryDelay === undefined
            ? undefined
            : [
                {
                  "@type": "type.googleapis.com/google.rpc.RetryInfo",
                  retryDelay: current.retryDelay,
                },
              ];
        const errorBody =
          current.body ??
          googleErrorEnvelope(current.status, `fake upstream error ${current.status}`, details);
        sendBody(res, current.status, errorBody, current.headers);
        return;
      }
      case "raw":
        await sendRaw(res, current);
        return;
      case "answer":
        if (current.headersDelayMs) await sleep(current.headersDelayMs);
        if (res.destroyed) return;
        if (record.action === "get") {
          sendBody(res, 200, modelResource(record.model));
          return;
        }
        if (record.action === "countTokens") {
          const problem = countTokensProblem(body);
          if (problem !== undefined) {
            sendBody(res, 400, googleErrorEnvelope(400, problem));
            return;
          }
          const total = current.totalTokens ?? fakeGeminiTokenCount(body);
          sendBody(res, 200, {
            totalTokens: total,
            promptTokensDetails: [{ modality: "TEXT", tokenCount: total }],
          });
          return;
        }
        if (record.action === "batchEmbedContents") {
          const count = (body as { requests?: unknown[] } | undefined)?.requests?.length ?? 0;
          if (count > MAX_EMBED_BATCH) {
            // What the API answers (and the limit it holds every batch to).
            sendBody(res, 400, {
              error: {
                code: 400,
                message: `* BatchEmbedContentsRequest.requests: at most ${MAX_EMBED_BATCH} requests can be in one batch\n`,
                status: "INVALID_ARGUMENT",
              },
            });
            return;
          }
          sendBody(res, 200, embeddings(body));
          return;
        }
        answers += 1;
        await answer(res, current, record, `fake-response-${answers}`);
        return;
    }
  }

  const server = await serveOnLoopback(handle);
  return {
    url: server.origin,
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

/** The fake's stand-in for a tokenizer: a quarter of the counted request's JSON length. */
export function fakeGeminiTokenCount(body: unknown): number {
  const counted = isRecord(body) ? (body.generateContentRequest ?? body.contents) : undefined;
  return Math.ceil(JSON.stringify(counted ?? null).length / 4);
}

/**
 * What Google answers a countTokens body it cannot read: CountTokensRequest has `contents` and
 * `generateContentRequest` only (a system instruction or tools go inside the latter).
 */
function countTokensProblem(body: unknown): string | undefined {
  if (!isRecord(body)) return "Invalid JSON payload received.";
  for (const key of Object.keys(body)) {
    if (key !== "contents" && key !== "generateContentRequest") {
      return `Invalid JSON payload received. Unknown name "${key}": Cannot find field.`;
    }
  }
  const inner = body.generateContentRequest;
  if (inner !== undefined && (!isRecord(inner) || typeof inner.model !== "string")) {
    return "* CountTokensRequest.generate_content_request.model: model is required";
  }
  return undefined;
}

function actionOf(method: string, verb: string | undefined): GeminiAction {
  if (method === "GET" && verb === undefined) return "get";
  if (method !== "POST") return "unknown";
  switch (verb) {
    case "generateContent":
    case "streamGenerateContent":
    case "batchEmbedContents":
    case "countTokens":
      return verb;
    default:
      return "unknown";
  }
}

type Part = Record<string, unknown>;

/** The events of one answer: each a GenerateContentResponse; the last one finishes. */
export function answerEvents(
  behavior: GeminiAnswerBehavior,
  model: string,
  id: string,
): Array<Record<string, unknown>> {
  const head = {
    modelVersion: behavior.modelVersion ?? `${model}-001`,
    responseId: behavior.responseId ?? id,
  };
  if (behavior.blockReason !== undefined) {
    return [
      {
        promptFeedback: {
          blockReason: behavior.blockReason,
          safetyRatings: [
            { category: "HARM_CATEGORY_DANGEROUS_CONTENT", probability: "HIGH", blocked: true },
          ],
        },
        usageMetadata: { promptTokenCount: 10, totalTokenCount: 10 },
        ...head,
      },
    ];
  }
  const text = behavior.text ?? "Hello from the fake Gemini.";
  const pieces = text === "" ? [] : splitInto(text, behavior.chunks ?? 3);
  const calls = behavior.functionCalls ?? [];
  const candidates = behavior.candidates ?? 1;
  const prompt = behavior.usage?.promptTokenCount ?? 10;
  const thoughts =
    behavior.usage?.thoughtsTokenCount ?? (behavior.thoughts === undefined ? undefined : 5);
  const completion = behavior.usage?.candidatesTokenCount ?? pieces.length + calls.length;
  const cached = behavior.usage?.cachedContentTokenCount;
  const finishReason = behavior.finishReason ?? "STOP";
  const withheld = WITHHELD_BY.has(finishReason);
  // The call Gemini could not make is not sent either; its reason comes alone, as a filter's.
  const alone = withheld || FAILED_CALL.has(finishReason);

  // Each step is the parts every candidate says in one event.
  const steps: Array<(candidate: number) => Part[]> = [];
  if (behavior.thoughts !== undefined) {
    const thought = behavior.thoughts;
    steps.push(() => [{ text: thought, thought: true }]);
  }
  pieces.forEach((piece, i) => {
    steps.push((c) => [{ text: c > 0 && i === pieces.length - 1 ? `${piece} #${c}` : piece }]);
  });
  for (const call of calls) {
    steps.push(() => {
      const part: Part = {
        functionCall: {
          ...(call.id !== undefined && { id: call.id }),
          name: call.name,
          args: call.args,
        },
      };
      if (call.thoughtSignature !== undefined) part.thoughtSignature = call.thoughtSignature;
      return [part];
    });
  }
  if (steps.length === 0 && !alone) steps.push(() => [{ text: "" }]);
  // What the filter stopped is never sent: the reason comes on an event of its own.
  if (alone) steps.push(() => []);

  const thoughtSteps = behavior.thoughts === undefined ? 0 : 1;
  return steps.map((step, i) => {
    const last = i === steps.length - 1;
    // Like the real API: the prompt's counts (cached part included) in every event, thoughts once
    // they are done, the answer's count at the end.
    const thoughtsSoFar = i >= thoughtSteps || last ? thoughts : undefined;
    const answered = last ? completion : undefined;
    return {
      candidates: Array.from({ length: candidates }, (_, c) => {
        const parts = step(c);
        return {
          ...(parts.length > 0 && { content: { parts, role: "model" } }),
          ...(last && { finishReason }),
          // proto3 JSON leaves out a zero index, as the real API does.
          ...(c > 0 && { index: c }),
          ...(last && withheld && { safetyRatings: BLOCKING_RATINGS }),
        };
      }),
      usageMetadata: {
        promptTokenCount: prompt,
        ...(answered !== undefined && { candidatesTokenCount: answered }),
        totalTokenCount: prompt + (answered ?? 0) + (thoughtsSoFar ?? 0),
        ...(cached !== undefined && { cachedContentTokenCount: cached }),
        promptTokensDetails: [{ modality: "TEXT", tokenCount: prompt }],
        ...(cached !== undefined && {
          cacheTokensDetails: [{ modality: "TEXT", tokenCount: cached }],
        }),
        ...(thoughtsSoFar !== undefined && { thoughtsTokenCount: thoughtsSoFar }),
      },
      ...head,
    };
  });
}

/**
 * Finish reasons of Google's content filters, which withhold what they stopped ("content is empty
 * if content filters block the output", Candidate.FinishReason).
 */
export const WITHHELD_BY: ReadonlySet<string> = new Set([
  "SAFETY",
  "RECITATION",
  "BLOCKLIST",
  "PROHIBITED_CONTENT",
  "SPII",
]);

/** Finish reasons of a function call the model got wrong, which Gemini does not send. */
export const FAILED_CALL: ReadonlySet<string> = new Set([
  "MALFORMED_FUNCTION_CALL",
  "UNEXPECTED_TOOL_CALL",
]);

/** The safety ratings of a candidate the filter stopped. */
const BLOCKING_RATINGS = [
  { category: "HARM_CATEGORY_SEXUALLY_EXPLICIT", probability: "NEGLIGIBLE" },
  { category: "HARM_CATEGORY_HATE_SPEECH", probability: "NEGLIGIBLE" },
  { category: "HARM_CATEGORY_HARASSMENT", probability: "NEGLIGIBLE" },
  { category: "HARM_CATEGORY_DANGEROUS_CONTENT", probability: "MEDIUM", blocked: true },
];

/** The events of an answer folded into the one response generateContent sends. */
export function wholeResponse(events: Array<Record<string, unknown>>): Record<string, unknown> {
  const last = events.at(-1) ?? {};
  if (!Array.isArray(last.candidates)) return last;
  const candidates = (last.candidates as Array<Record<string, unknown>>).map((candidate, c) => {
    const parts: Part[] = [];
    for (const event of events) {
      const content = (event.candidates as Array<Record<string, unknown>>)[c]?.content as
        | { parts: Part[] }
        | undefined;
      for (const part of content?.parts ?? []) {
        const previous = parts.at(-1);
        // The whole answer holds the text in one part, as the API sends it.
        if (
          typeof part.text === "string" &&
          typeof previous?.text === "string" &&
          previous.thought === part.thought
        ) {
          previous.text += part.text;
        } else {
          parts.push({ ...part });
        }
      }
    }
    // A candidate the filter stopped has no content in the whole answer either.
    if (WITHHELD_BY.has(String(candidate.finishReason)) || parts.length === 0) return candidate;
    return { ...candidate, content: { parts, role: "model" } };
  });
  return { ...last, candidates };
}

async function answer(
  res: ServerResponse,
  behavior: GeminiAnswerBehavior,
  record: RecordedGeminiRequest,
  id: string,
): Promise<void> {
  const events = answerEvents(behavior, record.model, id);
  if (record.action === "generateContent") {
    sendBody(res, 200, wholeResponse(events));
    return;
  }
  if (record.query.alt !== "sse") {
    sendBody(res, 200, events);
    return;
  }
  res.writeHead(200, {
    "content-type": "text/event-stream",
    "content-disposition": "attachment",
  });
  res.flushHeaders();
  for (const [i, event] of events.entries()) {
    if (behavior.cutAfterChunks !== undefined && i >= behavior.cutAfterChunks) {
      if (behavior.cutMode === "destroy") res.destroy();
      else res.end();
      return;
    }
    if (behavior.chunkDelayMs) await sleep(behavior.chunkDelayMs);
    if (res.destroyed) return;
    // The real API ends its lines with CRLF.
    await write(res, `data: ${JSON.stringify(event)}\r\n\r\n`);
  }
  res.end();
}

/** batchEmbedContents takes at most this many requests in one call. */
const MAX_EMBED_BATCH = 100;

function embeddings(body: unknown): Record<string, unknown> {
  const requests =
    typeof body === "object" &&
    body !== null &&
    Array.isArray((body as { requests?: unknown }).requests)
      ? ((body as { requests: unknown[] }).requests as Array<Record<string, unknown>>)
      : [];
  return {
    embeddings: requests.map((request) => {
      const content = request.content as { parts?: Array<{ text?: string }> } | undefined;
      const text = content?.parts?.map((p) => p.text ?? "").join("") ?? "";
      const size =
        typeof request.outputDimensionality === "number" ? request.outputDimensionality : 4;
      return { values: fakeVector(text, size) };
    }),
  };
}

/** A vector that depends on the text, so tests can tell which input it belongs to. */
export function fakeVector(text: string, size: number): number[] {
  return Array.from({ length: size }, (_, i) => (text.length * (i + 1)) / 64);
}

function modelResource(model: string): Record<string, unknown> {
  return {
    name: `models/${model}`,
    version: "001",
    displayName: model,
    description: "A fake Gemini model.",
    inputTokenLimit: 1048576,
    outputTokenLimit: 65536,
    supportedGenerationMethods: ["generateContent", "countTokens", "createCachedContent"],
    temperature: 1,
    topP: 0.95,
    topK: 64,
    maxTemperature: 2,
    thinking: true,
  };
}

const STATUS_NAMES: Record<number, string> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  409: "ABORTED",
  429: "RESOURCE_EXHAUSTED",
  499: "CANCELLED",
  500: "INTERNAL",
  501: "NOT_IMPLEMENTED",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED",
};

/** Google's error envelope, `{"error": {"code", "message", "status", "details"?}}`. */
export function googleErrorEnvelope(code: number, message: string, details?: unknown[]) {
  return {
    error: {
      code,
      message,
      status: STATUS_NAMES[code] ?? "UNKNOWN",
      ...(details !== undefined && { details }),
    },
  };
}
