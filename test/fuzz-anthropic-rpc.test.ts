import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Pool } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatParamsSchema, Role, ToolChoice_Mode } from "../gen/switchyard/chat/v1/chat_pb.js";
import { ChatRequestSchema } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import {
  DEEP_ARRAY,
  DEEP_ARRAY_TEXT,
  type Json,
  type Path,
  pathsOf,
  stringify,
  WRONG_VALUES,
} from "./helpers/json-paths.js";
import {
  type AnthropicUpstream,
  signThinking,
  startAnthropicUpstream,
} from "./upstreams/anthropic-upstream.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// Mutation fuzzing of bad input on Anthropic's Messages routes and on GatewayService's Chat over
// Connect (JSON and binary) and gRPC: from a few valid requests, every field replaced by values of
// every other kind, deleted, joined by an unknown sibling, and whole bodies broken. Every answer
// must come, and be a 2xx or a 4xx in the API's own error format: the fake upstreams always
// answer well, so a 5xx, or a gRPC INTERNAL or UNKNOWN, is the gateway's own fault. The same
// mutations go to an Anthropic target, an OpenAI one and the mock, whose translations differ.

const PER_REQUEST_MS = 10_000;
/** Stands for a 10,000-deep array, spliced in as text (JSON.stringify would recurse that deep). */

/** The values every field is replaced with, each named as the failure message names it. */
const VALUES: ReadonlyArray<[name: string, value: unknown]> = [
  ...WRONG_VALUES,
  ["[null]", [null]],
  ["3-deep object", { a: { b: { c: { d: 1 } } } }],
  ["10,000-deep array", DEEP_ARRAY],
];

interface Mutation {
  /** What was done, e.g. `messages.0.content = null`: enough to reproduce it. */
  name: string;
  body: string;
  contentType?: string;
}

/** A copy of `root` with what `path` names passed to `edit` as (its parent, its key). */
function edited(
  root: Json,
  path: Path,
  edit: (parent: Record<string, unknown> | unknown[], key: string | number) => void,
): Json {
  const copy = structuredClone(root);
  let parent = copy as Record<string | number, unknown>;
  for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, unknown>;
  edit(parent, path.at(-1) as string | number);
  return copy;
}

/** Each field replaced by each value, each field deleted, an unknown field beside each. */
function fieldMutations(valid: Json): Mutation[] {
  const out: Mutation[] = [];
  const paths = pathsOf(valid);
  for (const path of paths) {
    const at = path.join(".");
    for (const [name, value] of VALUES) {
      const body = edited(valid, path, (parent, key) => {
        (parent as Record<string | number, unknown>)[key] = value;
      });
      out.push({ name: `${at} = ${name}`, body: stringify(body) });
    }
    const deleted = edited(valid, path, (parent, key) => {
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key];
    });
    out.push({ name: `${at} deleted`, body: stringify(deleted) });
  }
  const objects: Path[] = [[], ...paths];
  for (const path of objects) {
    let target: unknown = valid;
    for (const key of path) target = (target as Record<string | number, unknown>)[key];
    if (target === null || typeof target !== "object" || Array.isArray(target)) continue;
    const body = structuredClone(valid);
    let parent = body as Record<string | number, unknown>;
    for (const key of path) parent = parent[key] as Record<string | number, unknown>;
    parent.zz_unknown_field = 1;
    out.push({ name: `unknown field at '${path.join(".")}'`, body: stringify(body) });
  }
  return out;
}

/** The whole body broken: not JSON, JSON of another kind, cut short, nested deep, mislabelled. */
function bodyMutations(valid: Json): Mutation[] {
  const text = JSON.stringify(valid);
  const out: Mutation[] = [
    { name: "empty body", body: "" },
    { name: "not JSON", body: "this is not json" },
    { name: "JSON null", body: "null" },
    { name: "JSON array", body: "[]" },
    { name: "JSON number", body: "42" },
    { name: "JSON string", body: '"hello"' },
    { name: "JSON true", body: "true" },
    { name: "10,000 [", body: "[".repeat(10_000) },
    { name: "10,000-deep array", body: DEEP_ARRAY_TEXT },
    { name: "10,000-deep object", body: `${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}` },
    { name: "two JSON values", body: `${text}${text}` },
    { name: "trailing comma", body: `${text.slice(0, -1)},}` },
    { name: "NUL byte", body: "\u0000" },
    { name: "BOM then body", body: `\ufeff${text}` },
    { name: "content-type text/plain", body: text, contentType: "text/plain" },
    { name: "content-type form", body: text, contentType: "application/x-www-form-urlencoded" },
    { name: "no content-type", body: text, contentType: "" },
  ];
  for (const cut of [1, 2, 10, Math.floor(text.length / 2), text.length - 2, text.length - 1]) {
    out.push({ name: `truncated to ${cut} chars`, body: text.slice(0, cut) });
  }
  return out;
}

/** A deterministic PRNG (mulberry32), so that every run sends the same bytes. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// --- The valid requests the mutations start from -------------------------------------------

const THOUGHT = "Paris is in France.";
/** A 1×1 transparent PNG. */
const PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

const SIMPLE: Json = {
  model: "claude",
  max_tokens: 64,
  system: "You are terse.",
  messages: [{ role: "user", content: "Hello" }],
  temperature: 0.5,
  top_p: 0.9,
  top_k: 5,
  stop_sequences: ["END"],
  metadata: { user_id: "u-1" },
};

/** Streaming, with system blocks, an image, thinking, a tool call and its result. */
const RICH: Json = {
  model: "claude",
  max_tokens: 2048,
  stream: true,
  system: [{ type: "text", text: "You use tools.", cache_control: { type: "ephemeral" } }],
  thinking: { type: "enabled", budget_tokens: 1024 },
  tools: [
    {
      name: "get_weather",
      description: "Weather of a city",
      input_schema: { type: "object", properties: { city: { type: "string" } } },
    },
  ],
  tool_choice: { type: "auto" },
  messages: [
    {
      role: "user",
      content: [
        { type: "text", text: "What is the weather in the capital of France?" },
        { type: "image", source: { type: "base64", media_type: "image/png", data: PNG } },
      ],
    },
    {
      role: "assistant",
      content: [
        { type: "thinking", thinking: THOUGHT, signature: signThinking(THOUGHT) },
        { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Paris" } },
      ],
    },
    {
      role: "user",
      content: [
        {
          type: "tool_result",
          tool_use_id: "toolu_1",
          content: [{ type: "text", text: "Sunny" }],
          is_error: false,
        },
      ],
    },
  ],
};

const COUNT: Json = {
  model: "claude",
  system: [{ type: "text", text: "You count." }],
  tools: [{ name: "lookup", input_schema: { type: "object" } }],
  messages: [
    { role: "user", content: [{ type: "text", text: "How many tokens?" }] },
    { role: "assistant", content: "Some." },
    { role: "user", content: "Thanks" },
  ],
};

/** GatewayService.Chat's request in Connect's JSON: messages of every role, a tool, its call. */
const CONNECT_CHAT: Json = {
  params: {
    model: "claude",
    messages: [
      { role: "ROLE_SYSTEM", content: [{ text: "You use tools." }] },
      { role: "ROLE_USER", content: [{ text: "Weather in Paris?" }] },
      {
        role: "ROLE_ASSISTANT",
        toolCalls: [{ id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' }],
      },
      { role: "ROLE_TOOL", toolCallId: "call_1", content: [{ text: "Sunny" }] },
    ],
    tools: [
      {
        name: "get_weather",
        description: "Weather of a city",
        parametersJson: '{"type":"object","properties":{"city":{"type":"string"}}}',
      },
    ],
    toolChoice: { mode: "MODE_AUTO" },
    temperature: 0.5,
    maxTokens: 64,
    stop: ["END"],
    extraJson: '{"top_k":5}',
  },
};

/** The same request in binary protobuf, for the byte-level mutations. */
const CHAT_PROTO = toBinary(
  ChatRequestSchema,
  create(ChatRequestSchema, {
    params: create(ChatParamsSchema, {
      model: "claude",
      messages: [
        { role: Role.USER, content: [{ part: { case: "text", value: "Weather in Paris?" } }] },
        {
          role: Role.ASSISTANT,
          toolCalls: [{ id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' }],
        },
        {
          role: Role.TOOL,
          toolCallId: "call_1",
          content: [{ part: { case: "text", value: "Sun" } }],
        },
      ],
      tools: [{ name: "get_weather", parametersJson: '{"type":"object"}' }],
      toolChoice: { mode: ToolChoice_Mode.AUTO },
      maxTokens: 64,
    }),
  }),
);

/** Byte-level mutations of CHAT_PROTO: cut short, bytes flipped, random bytes. Seeded. */
function protoMutations(): Array<{ name: string; bytes: Uint8Array }> {
  const random = prng(20261129);
  const int = (n: number) => Math.floor(random() * n);
  const out: Array<{ name: string; bytes: Uint8Array }> = [];
  for (let i = 0; i < 16; i++) {
    const cut = 1 + int(CHAT_PROTO.length - 1);
    out.push({ name: `truncated to ${cut} bytes`, bytes: CHAT_PROTO.slice(0, cut) });
  }
  for (let i = 0; i < 16; i++) {
    const bytes = CHAT_PROTO.slice();
    const at = int(bytes.length);
    const value = int(256);
    bytes[at] = value;
    out.push({ name: `byte ${at} set to ${value}`, bytes });
  }
  for (let i = 0; i < 16; i++) {
    const bytes = new Uint8Array(1 + int(200));
    for (let j = 0; j < bytes.length; j++) bytes[j] = int(256);
    out.push({ name: `random bytes #${i} (${bytes.length})`, bytes });
  }
  // Well-formed tags with lengths that run past the end, and a group's wire types.
  out.push({ name: "length past the end", bytes: Uint8Array.of(0x0a, 0x7f, 0x0a) });
  out.push({ name: "start group", bytes: Uint8Array.of(0x0b, 0x0c) });
  out.push({ name: "wire type 7", bytes: Uint8Array.of(0x0f) });
  out.push({ name: "11-byte varint", bytes: Uint8Array.of(0x08, ...Array(10).fill(0xff), 0x01) });
  return out;
}

// --- The checks every answer gets -----------------------------------------------------------

/** Connect's HTTP status for each of its error codes (connectrpc.com/docs/protocol). */
const CONNECT_STATUS: Record<string, number> = {
  canceled: 499,
  unknown: 500,
  invalid_argument: 400,
  deadline_exceeded: 504,
  not_found: 404,
  already_exists: 409,
  permission_denied: 403,
  resource_exhausted: 429,
  failed_precondition: 400,
  aborted: 409,
  out_of_range: 400,
  unimplemented: 501,
  internal: 500,
  unavailable: 503,
  data_loss: 500,
  unauthenticated: 401,
};
/** gRPC status codes the client's input must never cause: UNKNOWN, INTERNAL, DATA_LOSS. */
const GATEWAY_FAULTS = new Set(["2", "13", "15"]);

function anthropicProblem(status: number, text: string, streamed: boolean): string | undefined {
  if (status >= 200 && status < 300) {
    // A stream's failure comes after its 200, as an error event: the upstreams never fail.
    if (!streamed) return undefined;
    const whole = text.includes("event: message_stop") && !text.includes("event: error");
    return whole ? undefined : `a stream that did not end well: ${text.slice(-300)}`;
  }
  if (status < 400 || status >= 500) return `status ${status}: ${text.slice(0, 300)}`;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return `status ${status} with a body that is not JSON: ${text.slice(0, 300)}`;
  }
  const b = body as { type?: unknown; error?: { type?: unknown; message?: unknown } };
  if (b.type !== "error" || typeof b.error?.type !== "string" || !b.error.message) {
    return `status ${status} without Anthropic's error envelope: ${text.slice(0, 300)}`;
  }
  return undefined;
}

function connectProblem(status: number, text: string): string | undefined {
  if (status === 200) return undefined;
  let body: { code?: unknown; message?: unknown };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    return `status ${status} with a body that is not JSON: ${text.slice(0, 300)}`;
  }
  const code = typeof body.code === "string" ? body.code : "";
  if (CONNECT_STATUS[code] !== status || typeof body.message !== "string") {
    return `status ${status} without a matching Connect error: ${text.slice(0, 300)}`;
  }
  if (status >= 500) return `status ${status}: ${text.slice(0, 300)}`;
  return undefined;
}

// --- The gateway, and how requests reach it -------------------------------------------------

let upstream: AnthropicUpstream;
let openai: OpenAIUpstream;
let gw: RunningFabric;
let pool: Pool;

beforeAll(async () => {
  upstream = await startAnthropicUpstream({ behavior: { kind: "answer", thinking: "Hm." } });
  openai = await startOpenAIUpstream();
  gw = await startOneProcess(
    testConfig(`
providers:
  an: { type: anthropic, base_url: "${upstream.url}", api_key: an-key }
  oa: { type: openai, base_url: "${openai.url}", api_key: sk-oa }
  mk: { type: mock, first_token_ms: 0, token_interval_ms: 0, tokens: 3 }
models:
  claude: { targets: [{ provider: an, model: claude-up }] }
  gpt: { targets: [{ provider: oa, model: gpt-up }] }
  demo: { targets: [{ provider: mk, model: echo }] }
routing: { retries: 0 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
  pool = new Pool(gw.url, {
    connections: 4,
    headersTimeout: PER_REQUEST_MS,
    bodyTimeout: PER_REQUEST_MS,
  });
});

afterAll(async () => {
  await pool?.close();
  await gw?.stop();
  await Promise.all([upstream?.close(), openai?.close()]);
});

async function post(
  path: string,
  body: string | Uint8Array,
  contentType: string,
): Promise<{ status: number; text: string; type: string }> {
  const res = await pool.request({
    method: "POST",
    path,
    body,
    headers: contentType === "" ? {} : { "content-type": contentType },
    signal: AbortSignal.timeout(PER_REQUEST_MS),
  });
  const type = res.headers["content-type"];
  return {
    status: res.statusCode,
    text: await res.body.text(),
    type: typeof type === "string" ? type : "",
  };
}

/** Runs `check` on every item, four at a time; returns every failure, named. */
async function eachOf<T extends { name: string }>(
  items: readonly T[],
  check: (item: T) => Promise<string | undefined>,
): Promise<string[]> {
  const failures: string[] = [];
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) {
      const item = items[i] as T;
      let problem: string | undefined;
      try {
        problem = await check(item);
      } catch (err) {
        problem = `no answer: ${(err as Error).message}`;
      }
      if (problem !== undefined) failures.push(`${item.name}: ${problem}`);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return failures;
}

function mutationsOf(valid: Json): Mutation[] {
  return [...fieldMutations(valid), ...bodyMutations(valid)];
}

/** `body` asking for `model` instead (at `model`, or at `params.model`). */
function forModel(body: Json, model: string): Json {
  const copy = structuredClone(body) as Record<string, Json>;
  const params = copy.params as Record<string, Json> | undefined;
  if (params) params.model = model;
  else copy.model = model;
  return copy;
}

const TARGETS = ["claude", "gpt", "demo"];

/** A gRPC frame: flags, length, message. */
function framed(message: Uint8Array, flags = 0, length = message.length): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame[0] = flags;
  frame.writeUInt32BE(length, 1);
  frame.set(message, 5);
  return frame;
}

/** Bodies whose gRPC framing is broken, around a valid message. */
const FRAME_MUTATIONS: ReadonlyArray<{ name: string; body: Buffer }> = [
  { name: "empty body", body: Buffer.alloc(0) },
  { name: "3 bytes of a frame header", body: framed(CHAT_PROTO).subarray(0, 3) },
  { name: "a frame longer than its message", body: framed(CHAT_PROTO, 0, CHAT_PROTO.length + 9) },
  { name: "a frame shorter than its message", body: framed(CHAT_PROTO, 0, 10) },
  { name: "a frame of 4 GB", body: framed(CHAT_PROTO, 0, 0xffffffff) },
  { name: "compressed flag, no grpc-encoding", body: framed(CHAT_PROTO, 1) },
  { name: "unknown flags", body: framed(CHAT_PROTO, 0x7e) },
  { name: "an empty message", body: framed(new Uint8Array(0)) },
  { name: "two messages", body: Buffer.concat([framed(CHAT_PROTO), framed(CHAT_PROTO)]) },
];

/** One gRPC call over a raw HTTP/2 stream: its grpc-status (from headers or trailers). */
function grpcCall(session: http2.ClientHttp2Session, message: Uint8Array, raw = false) {
  return new Promise<string>((resolve, reject) => {
    const frame = raw ? message : framed(message);
    const stream = session.request({
      ":method": "POST",
      ":path": "/switchyard.gateway.v1.GatewayService/Chat",
      "content-type": "application/grpc",
      te: "trailers",
    });
    let status: string | undefined;
    const take = (h: http2.IncomingHttpHeaders) => {
      const s = h["grpc-status"];
      if (typeof s === "string") status = s;
    };
    stream.setTimeout(PER_REQUEST_MS, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.on("response", (h) => {
      if (h[":status"] !== 200) reject(new Error(`HTTP status ${h[":status"]}`));
      take(h);
    });
    stream.on("trailers", take);
    stream.on("error", reject);
    stream.resume();
    stream.on("close", () =>
      status === undefined
        ? reject(new Error(`no grpc-status (rst ${stream.rstCode})`))
        : resolve(status),
    );
    stream.end(frame);
  });
}

describe("bad input gets a 4xx in the API's own format, never a 5xx or a hang", () => {
  it.each([
    ...TARGETS.flatMap((model) => [
      [`POST /v1/messages, plain, to ${model}`, "/v1/messages", forModel(SIMPLE, model)] as const,
      [
        `POST /v1/messages, streamed, tools, thinking, image, to ${model}`,
        "/v1/messages",
        forModel(RICH, model),
      ] as const,
    ]),
    // Only Anthropic targets count tokens; the others refuse every count with a 400.
    ["POST /v1/messages/count_tokens", "/v1/messages/count_tokens", COUNT] as const,
  ])("%s", async (_name, path, valid) => {
    const sane = await post(path, JSON.stringify(valid), "application/json");
    expect(sane.status, sane.text).toBe(200);
    const mutations = mutationsOf(valid);
    const failures = await eachOf(mutations, async (m) => {
      const { status, text, type } = await post(path, m.body, m.contentType ?? "application/json");
      return anthropicProblem(status, text, type.startsWith("text/event-stream"));
    });
    expect(failures, `${failures.length} of ${mutations.length} mutations`).toEqual([]);
  });

  it.each(TARGETS)("GatewayService.Chat over Connect's JSON, to %s", async (model) => {
    const path = "/switchyard.gateway.v1.GatewayService/Chat";
    const valid = forModel(CONNECT_CHAT, model);
    const sane = await post(path, JSON.stringify(valid), "application/json");
    expect(sane.status, sane.text).toBe(200);
    const mutations = mutationsOf(valid).filter((m) => m.contentType === undefined);
    const failures = await eachOf(mutations, async (m) => {
      const { status, text } = await post(path, m.body, "application/json");
      return connectProblem(status, text);
    });
    expect(failures, `${failures.length} of ${mutations.length} mutations`).toEqual([]);
  });

  it("GatewayService.Chat with broken binary messages, over Connect and gRPC", async () => {
    const path = "/switchyard.gateway.v1.GatewayService/Chat";
    const sane = await post(path, CHAT_PROTO, "application/proto");
    expect(sane.status, sane.text).toBe(200);
    const mutations = protoMutations();
    const connectFailures = await eachOf(mutations, async (m) => {
      const { status, text } = await post(path, m.bytes, "application/proto");
      // A mutation may still be a valid request, answered 200 in binary.
      return status === 200 ? undefined : connectProblem(status, text);
    });
    const session = http2.connect(gw.url);
    try {
      expect(await grpcCall(session, CHAT_PROTO)).toBe("0");
      const grpcFailures = await eachOf(mutations, async (m) => {
        const status = await grpcCall(session, m.bytes);
        return GATEWAY_FAULTS.has(status) ? `grpc-status ${status}` : undefined;
      });
      const frameFailures = await eachOf(FRAME_MUTATIONS, async (m) => {
        const status = await grpcCall(session, m.body, true);
        return GATEWAY_FAULTS.has(status) ? `grpc-status ${status}` : undefined;
      });
      expect(
        [
          ...connectFailures.map((f) => `connect: ${f}`),
          ...grpcFailures.map((f) => `grpc: ${f}`),
          ...frameFailures.map((f) => `grpc framing: ${f}`),
        ],
        `of ${mutations.length} mutations each, and ${FRAME_MUTATIONS.length} framings`,
      ).toEqual([]);
    } finally {
      session.close();
    }
  });

  it("still answers a valid request afterwards", async () => {
    const { status, text } = await post("/v1/messages", JSON.stringify(SIMPLE), "application/json");
    expect(status, text).toBe(200);
    expect(JSON.parse(text)).toMatchObject({ type: "message", role: "assistant" });
  });
});
