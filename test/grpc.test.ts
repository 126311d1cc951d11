import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { request as undiciRequest } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ChatParams,
  ChatParamsSchema,
  ContentPartSchema,
  type Message,
  MessageSchema,
  ResponseFormatSchema,
  Role,
  type ToolChoice_Mode,
  ToolChoiceSchema,
  ToolSchema,
} from "../gen/switchyard/chat/v1/chat_pb.js";
import { ChatRequestSchema, GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { hashKey } from "../services/lib/config/keys.js";
import { grpcJsGatewayClient } from "./clients/grpc-js-gateway.js";
import { grpcWebTextGatewayClient } from "./clients/grpc-web-gateway.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { metricValue } from "./helpers/metrics.js";
import { rpcProtocols } from "./helpers/rpc-transports.js";
import { startFaultUpstream } from "./upstreams/fault-upstream.js";
import {
  type OpenAIUpstream,
  startOpenAIUpstream,
  type UpstreamBehavior,
} from "./upstreams/openai-upstream.js";

// GatewayService on the ingress port, called by real clients of every protocol it serves.
const KEY = "sk-switchyard-test-key";
let upstream: OpenAIUpstream;
let gw: RunningFabric;

beforeAll(async () => {
  upstream = await startOpenAIUpstream({
    behavior: { kind: "answer", text: "one two three", chunks: 3 },
  });
  gw = await startOneProcess(
    testConfig(`
server: { max_body_bytes: 65536 }
providers:
  up: { type: openai, base_url: "${upstream.url}", api_key: sk-up }
models:
  chat: { targets: [{ provider: up, model: up-chat }] }
  other: { targets: [{ provider: up, model: up-other }] }
tenants:
  acme: { keys: ["${hashKey(KEY)}"], models: [chat] }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
});

afterAll(async () => {
  await gw?.stop();
  await upstream?.close();
});

const params = (model = "chat"): ChatParams =>
  create(ChatParamsSchema, {
    model,
    messages: [
      {
        role: Role.USER,
        content: [{ part: { case: "text", value: "count" } }],
        contentIsText: true,
      },
    ],
  });
const auth = { authorization: `Bearer ${KEY}` };

/** The client's request compression: none, or gzip. */
const sending = (gzip: boolean) => (gzip ? { sendCompression: compressionGzip } : {});

describe.each([
  [
    "Connect over h2c",
    (gzip = false) =>
      createConnectTransport({ baseUrl: gw.url, httpVersion: "2", ...sending(gzip) }),
  ],
  [
    "Connect over HTTP/1.1 (JSON)",
    (gzip = false) =>
      createConnectTransport({
        baseUrl: gw.url,
        httpVersion: "1.1",
        useBinaryFormat: false,
        ...sending(gzip),
      }),
  ],
  ["gRPC over h2c", (gzip = false) => createGrpcTransport({ baseUrl: gw.url, ...sending(gzip) })],
  [
    "gRPC-Web over HTTP/1.1",
    (gzip = false) =>
      createGrpcWebTransport({ baseUrl: gw.url, httpVersion: "1.1", ...sending(gzip) }),
  ],
])("GatewayService via connect-node, %s", (_name, transport) => {
  it("streams token deltas then a finish reason and usage", async () => {
    const client = createClient(GatewayService, transport());
    const texts: string[] = [];
    let finish = 0;
    let completionTokens = 0;
    for await (const res of client.chatStream({ params: params() }, { headers: auth })) {
      for (const c of res.chunk?.choices ?? []) {
        if (c.content) texts.push(c.content);
        if (c.finishReason) finish = c.finishReason;
      }
      if (res.chunk?.usage) completionTokens = res.chunk.usage.completionTokens;
    }
    expect(texts.join("")).toBe("one two three");
    expect(texts.length).toBe(3);
    expect(finish).toBe(1); // FINISH_REASON_STOP
    expect(completionTokens).toBeGreaterThan(0);
  });

  it("answers the unary call with the whole completion", async () => {
    const client = createClient(GatewayService, transport());
    const res = await client.chat({ params: params() }, { headers: auth });
    const text = res.completion?.choices[0]?.message?.content
      .map((p) => (p.part.case === "text" ? p.part.value : ""))
      .join("");
    expect(text).toBe("one two three");
    expect(res.completion?.provider).toBe("up");
    expect(res.completion?.upstreamModel).toBe("up-chat");
  });

  it("refuses a missing key, a model outside the allow-list and an unknown model with precise codes", async () => {
    const client = createClient(GatewayService, transport());
    const codeOf = (p: Promise<unknown>) =>
      p.then(
        () => "ok",
        (e) => ConnectError.from(e).code,
      );
    expect(await codeOf(client.chat({ params: params() }))).toBe(Code.Unauthenticated);
    expect(await codeOf(client.chat({ params: params("other") }, { headers: auth }))).toBe(
      Code.PermissionDenied,
    );
    expect(await codeOf(client.chat({ params: params("nope") }, { headers: auth }))).toBe(
      Code.NotFound,
    );
    expect(
      await codeOf(
        client.chat({ params: create(ChatParamsSchema, { model: "chat" }) }, { headers: auth }),
      ),
    ).toBe(Code.InvalidArgument);
  });

  it("refuses what a newer schema could add rather than dropping it: an unknown role, an empty content part, an unknown tool choice or response format", async () => {
    const client = createClient(GatewayService, transport());
    const refusal = (p: ChatParams) =>
      client.chat({ params: p }, { headers: auth }).then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
    const cases: Array<[string, (p: ChatParams) => void]> = [
      [
        "'params.messages[0].role' 7 is not a known role",
        (p) => {
          (p.messages[0] as Message).role = 7 as Role;
        },
      ],
      [
        "'params.messages[0].content[1]' holds no text, image, audio or file",
        (p) => {
          (p.messages[0] as Message).content.push(create(ContentPartSchema, {}));
        },
      ],
      [
        "'params.tool_choice.mode' 9 is not one of none, auto, required, function",
        (p) => {
          p.toolChoice = create(ToolChoiceSchema, { mode: 9 as ToolChoice_Mode });
        },
      ],
      [
        "'params.response_format.type' 0 is not one of text, json_object, json_schema",
        (p) => {
          p.responseFormat = create(ResponseFormatSchema, {});
        },
      ],
    ];
    for (const [message, change] of cases) {
      const p = params();
      change(p);
      const err = await refusal(p);
      expect(err?.code).toBe(Code.InvalidArgument);
      expect(err?.rawMessage).toBe(message);
    }
  });

  it("refuses what REST refuses, naming the field: ranges, names, JSON text, what goes together", async () => {
    const client = createClient(GatewayService, transport());
    const refusal = (p: ChatParams) =>
      client.chat({ params: p }, { headers: auth }).then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
    const tool = (name: string, parametersJson = "") =>
      create(ToolSchema, { name, parametersJson });
    const cases: Array<[RegExp, (p: ChatParams) => void]> = [
      [/'params.temperature' must be a number between 0 and 2/, (p) => (p.temperature = -1)],
      [/'params.temperature'/, (p) => (p.temperature = Number.NaN)],
      [/'params.top_p'/, (p) => (p.topP = 1.5)],
      [/'params.max_tokens' must be at least 1/, (p) => (p.maxTokens = 0)],
      [/'params.stop' holds at most 4/, (p) => (p.stop = ["a", "b", "c", "d", "e"])],
      [/'params.tools\[0\].name' must match/, (p) => (p.tools = [tool("")])],
      [
        /'params.tools\[0\].parameters_json' must be a JSON object/,
        (p) => (p.tools = [tool("f", "[1]")]),
      ],
      [
        /'params.tool_choice.function_name' must name one of/,
        (p) => {
          p.tools = [tool("f")];
          p.toolChoice = create(ToolChoiceSchema, { mode: 4 as ToolChoice_Mode });
        },
      ],
      [
        /'params.tool_choice' needs 'params.tools'/,
        (p) => {
          p.toolChoice = create(ToolChoiceSchema, { mode: 3 as ToolChoice_Mode });
        },
      ],
      [
        /'params.messages\[1\].tool_call_id' is required/,
        (p) => {
          p.messages.push(
            create(MessageSchema, {
              role: Role.TOOL,
              content: [{ part: { case: "text", value: "42" } }],
            }),
          );
        },
      ],
      [/'params.extra_json' must be a JSON object/, (p) => (p.extraJson = "not json")],
      // What ChatParams names is checked there, never slipped past the checks in extra_json.
      [/'params.extra_json' may not set 'temperature'/, (p) => (p.extraJson = '{"temperature":5}')],
      [/'params.extra_json' may not set 'tools'/, (p) => (p.extraJson = '{"tools":[]}')],
    ];
    const posts = () => upstream.requests.filter((r) => r.method === "POST").length;
    const before = posts();
    for (const [message, change] of cases) {
      const p = params();
      change(p);
      const err = await refusal(p);
      expect([String(message), err?.code]).toEqual([String(message), Code.InvalidArgument]);
      expect(err?.rawMessage).toMatch(message);
    }
    expect(posts()).toBe(before);
  });

  it("refuses a message larger than server.max_body_bytes, sent compressed or not", async () => {
    const big = params();
    (big.messages[0] as Message).content = [
      create(ContentPartSchema, { part: { case: "text", value: "x".repeat(200_000) } }),
    ];
    for (const gzip of [false, true]) {
      const client = createClient(GatewayService, transport(gzip));
      const err = await client.chat({ params: big }, { headers: auth }).then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
      expect([gzip, err?.code]).toEqual([gzip, Code.ResourceExhausted]);
    }
    expect(
      upstream.requests.some((r) => JSON.stringify(r.body ?? "").includes("x".repeat(1000))),
    ).toBe(false);
  });

  it("refuses embeddings the REST route refuses, before any upstream sees them", async () => {
    const client = createClient(GatewayService, transport());
    const posts = () => upstream.requests.filter((r) => r.method === "POST").length;
    const before = posts();
    for (const [inputs, dimensions, message] of [
      [["a", ""], undefined, /must not contain empty strings/],
      [["a"], 0, /'params.dimensions' must be at least 1/],
      [Array.from({ length: 2049 }, () => "a"), undefined, /at most 2048 inputs .* not 2049/],
    ] as const) {
      const err = await client
        .embed({ params: { model: "chat", inputs: [...inputs], dimensions } }, { headers: auth })
        .then(
          () => undefined,
          (e) => ConnectError.from(e),
        );
      expect(err?.code).toBe(Code.InvalidArgument);
      expect(err?.rawMessage).toMatch(message);
    }
    expect(posts()).toBe(before);
  });

  it("names the request's id on an error given before the service saw the call", async () => {
    const big = params();
    (big.messages[0] as Message).content = [
      create(ContentPartSchema, { part: { case: "text", value: "x".repeat(200_000) } }),
    ];
    const client = createClient(GatewayService, transport());
    let id: string | null = null;
    const err = await client
      .chat(
        { params: big },
        {
          headers: { ...auth, "x-request-id": "req-too-big" },
          onHeader: (h) => {
            id = h.get("x-request-id");
          },
        },
      )
      .then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
    expect(err?.code).toBe(Code.ResourceExhausted);
    expect(id ?? err?.metadata.get("x-request-id")).toBe("req-too-big");
  });

  it("lists only the models the key may use", async () => {
    const client = createClient(GatewayService, transport());
    const res = await client.listModels({}, { headers: auth });
    expect(res.models.map((m) => m.id)).toEqual(["chat"]);
  });
});

describe("one HTTP/2 connection of connect-node's", () => {
  it.each([
    ["gRPC", () => createGrpcTransport({ baseUrl: gw.url })],
    ["Connect", () => createConnectTransport({ baseUrl: gw.url, httpVersion: "2" })],
  ])("%s: keeps serving after many messages refused for their size", async (_name, transport) => {
    const client = createClient(GatewayService, transport());
    const big = params();
    (big.messages[0] as Message).content = [
      create(ContentPartSchema, { part: { case: "text", value: "x".repeat(1_000_000) } }),
    ];
    // 16 MB refused on one connection: more than Node's client keeps for a session (10 MB)
    // if the refused streams are left holding what they could not send.
    for (let i = 0; i < 16; i++) {
      const err = await client.chat({ params: big }, { headers: auth }).then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
      expect([i, err?.code]).toEqual([i, Code.ResourceExhausted]);
    }
    const res = await client.chat({ params: params() }, { headers: auth });
    expect(res.completion?.choices).toHaveLength(1);
  });
});

describe("an upstream that answers 429", () => {
  it("reaches a gRPC client as RESOURCE_EXHAUSTED with its retry-after", async () => {
    // A gateway of its own: the target is paused for the 7 s it asks, and the tests that follow
    // need theirs.
    const own = await startOneProcess(
      testConfig(`
providers: { up: { type: openai, base_url: "${upstream.url}", api_key: sk-up } }
models: { chat: { targets: [{ provider: up, model: up-limited }] } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    const client = createClient(GatewayService, createGrpcTransport({ baseUrl: own.url }));
    upstream.setBehavior({ kind: "error", status: 429, headers: { "retry-after": "7" } });
    try {
      const err = await client.chat({ params: params() }).then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
      expect(err?.code).toBe(Code.ResourceExhausted);
      expect(err?.metadata.get("retry-after")).toBe("7");
      expect(err?.metadata.get("retry-after-ms")).toBe("7000");
      // As on REST, an error after upstream attempts says how many there were.
      expect(err?.metadata.get("x-switchyard-attempts")).toBe("1");
    } finally {
      upstream.setBehavior({ kind: "answer", text: "one two three", chunks: 3 });
      await own.stop();
    }
  });
});

describe("an upstream that answers 503 with Retry-After", () => {
  it("reaches connect-node and @grpc/grpc-js clients as UNAVAILABLE with its retry-after, as REST's 503 has it", async () => {
    // A gateway of its own: the target is paused for the 7 s it asks.
    const busy = await startOpenAIUpstream({
      behavior: { kind: "error", status: 503, headers: { "retry-after": "7" } },
    });
    const own = await startOneProcess(
      testConfig(`
providers: { up: { type: openai, base_url: "${busy.url}", api_key: sk-up } }
models: { chat: { targets: [{ provider: up, model: up-busy }] } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
    );
    const grpcJs = grpcJsGatewayClient(`127.0.0.1:${own.fabric.ports.ingress}`);
    /**
     * What a client was told of when to come back: retry-after (s), retry-after-ms and gRPC's
     * grpc-retry-pushback-ms.
     */
    const waits: Array<{ client: string; code: number; s: number; ms: number; pushback: number }> =
      [];
    const noted = (client: string, code: number, get: (key: string) => unknown) =>
      waits.push({
        client,
        code,
        s: Number(get("retry-after")),
        ms: Number(get("retry-after-ms")),
        pushback: Number(get("grpc-retry-pushback-ms")),
      });
    try {
      // The first call reaches the upstream: its own 7 s. The others are answered by the
      // gateway while the target is paused, with what is left of the pause.
      const connect = createClient(
        GatewayService,
        createConnectTransport({ baseUrl: own.url, httpVersion: "1.1" }),
      );
      const unary = await connect.chat({ params: params() }).then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
      noted("connect unary", unary?.code ?? 0, (k) => unary?.metadata.get(k));
      expect(unary?.metadata.get("x-switchyard-attempts")).toBe("1");
      const grpc = createClient(GatewayService, createGrpcTransport({ baseUrl: own.url }));
      const streamed = await (async () => {
        for await (const _ of grpc.chatStream({ params: params() })) {
          // nothing arrives
        }
      })().then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
      noted("connect-node gRPC stream", streamed?.code ?? 0, (k) => streamed?.metadata.get(k));
      const web = createClient(
        GatewayService,
        createGrpcWebTransport({ baseUrl: own.url, httpVersion: "1.1" }),
      );
      const webErr = await web.chat({ params: params() }).then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
      noted("connect-node gRPC-Web", webErr?.code ?? 0, (k) => webErr?.metadata.get(k));
      for (const call of [
        () => grpcJs.chat({ params: params() }),
        () => grpcJs.chatStream({ params: params() }),
      ]) {
        const e = (await call().then(
          () => undefined,
          (err: unknown) => err,
        )) as { code: number; metadata: { get(k: string): unknown[] } } | undefined;
        noted("grpc-js", e?.code ?? 0, (k) => e?.metadata.get(k)[0]);
      }
      expect(waits[0]).toEqual({
        client: "connect unary",
        code: Code.Unavailable,
        s: 7,
        ms: 7000,
        pushback: 7000,
      });
      for (const w of waits) {
        expect(w.code).toBe(Code.Unavailable);
        expect([w.client, w.pushback]).toEqual([w.client, w.ms]);
        expect(w.s).toBeGreaterThanOrEqual(1);
        expect(w.s).toBeLessThanOrEqual(7);
        expect(w.ms).toBeGreaterThan((w.s - 1) * 1000);
        expect(w.ms).toBeLessThanOrEqual(w.s * 1000);
      }
      expect(waits).toHaveLength(5);
      expect(busy.requests.filter((r) => r.method === "POST")).toHaveLength(1);
      // The same two a REST client is given with its 503.
      const rest = await fetch(`${own.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "chat", messages: [{ role: "user", content: "hi" }] }),
      });
      await rest.body?.cancel();
      expect(rest.status).toBe(503);
      expect(Number(rest.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(Number(rest.headers.get("retry-after-ms"))).toBeGreaterThan(0);
    } finally {
      grpcJs.close();
      await own.stop();
      await busy.close();
    }
  });
});

describe("a tool schema nested deeper than JSON.stringify can walk", () => {
  it("is refused with INVALID_ARGUMENT, not INTERNAL", async () => {
    const client = createClient(GatewayService, createGrpcTransport({ baseUrl: gw.url }));
    const p = params();
    const deep = `${"[".repeat(20_000)}${"]".repeat(20_000)}`;
    p.tools = [create(ToolSchema, { name: "f", parametersJson: `{"type":"object","x":${deep}}` })];
    const err = await client.chat({ params: p }, { headers: auth }).then(
      () => undefined,
      (e) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toMatch(/nested too deeply/);
  });
});

describe("a Connect JSON body that is not valid UTF-8", () => {
  it("is refused with INVALID_ARGUMENT naming the offset, not passed on with U+FFFD in it", async () => {
    const head = `{"params":{"model":"chat","messages":[{"role":"ROLE_USER","content":[{"text":"secret `;
    const body = Buffer.concat([Buffer.from(head), Buffer.from([0xff]), Buffer.from('"}]}]}}')]);
    const res = await undiciRequest(`${gw.url}/${GatewayService.typeName}/Chat`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json", "connect-protocol-version": "1" },
      body,
    });
    const answer = (await res.body.json()) as { code: string; message: string };
    expect(res.statusCode).toBe(400);
    expect(answer.code).toBe("invalid_argument");
    expect(answer.message).toBe(
      `the request body is not valid UTF-8 (an invalid byte sequence starts at byte offset ${head.length})`,
    );
    expect(upstream.requests.some((r) => JSON.stringify(r.body ?? "").includes("secret"))).toBe(
      false,
    );
  });
});

describe("a binary request whose text is not valid UTF-8", () => {
  // protobuf-es writes a message's unknown fields as they are (after the tag: the length, then
  // the bytes): one numbered as ContentPart's `text` (1, length-delimited) puts these bytes on
  // the wire as the text, 0xff in "secret …".
  const INVALID = Buffer.concat([Buffer.from("secret "), Buffer.from([0xff]), Buffer.from("!")]);
  const invalidParams = (): ChatParams => {
    const p = params();
    const part = create(ContentPartSchema);
    part.$unknown = [
      { no: 1, wireType: 2, data: Buffer.concat([Buffer.from([INVALID.length]), INVALID]) },
    ];
    (p.messages[0] as Message).content = [part];
    // Over the 1 KiB from which connect-node's clients compress what they send.
    p.messages.push(
      create(MessageSchema, {
        role: Role.USER,
        content: [{ part: { case: "text", value: "x".repeat(2048) } }],
      }),
    );
    return p;
  };
  const FIELD = "params.messages[0].content[0].text is not valid UTF-8";
  const reachedUpstream = () =>
    upstream.requests.some((r) => JSON.stringify(r.body ?? "").includes("secret"));

  it.each(rpcProtocols(() => gw.url))(
    "is refused over %s with INVALID_ARGUMENT naming the field, compressed or not, unary and streamed",
    async (_name, transport) => {
      for (const gzip of [false, true]) {
        const client = createClient(GatewayService, transport(gzip));
        const unary = await client.chat({ params: invalidParams() }, { headers: auth }).then(
          () => undefined,
          (e) => ConnectError.from(e),
        );
        const streamed = await (async () => {
          for await (const _ of client.chatStream({ params: invalidParams() }, { headers: auth })) {
            // nothing is expected
          }
        })().then(
          () => undefined,
          (e) => ConnectError.from(e),
        );
        for (const err of [unary, streamed]) {
          expect([gzip, err?.code]).toEqual([gzip, Code.InvalidArgument]);
          expect(err?.rawMessage).toContain(FIELD);
        }
      }
      expect(reachedUpstream()).toBe(false);
    },
  );

  it("is refused with INVALID_ARGUMENT by @grpc/grpc-js and Google's grpc-web (text mode) clients too", async () => {
    const grpcJs = grpcJsGatewayClient(`127.0.0.1:${gw.fabric.ports.ingress}`);
    try {
      const err = await grpcJs.chat({ params: invalidParams() }, auth).catch((e) => e);
      expect(err).toMatchObject({ code: 3 }); // INVALID_ARGUMENT
      expect(String((err as Error).message)).toContain(FIELD);
    } finally {
      grpcJs.close();
    }
    const web = grpcWebTextGatewayClient(gw.url);
    const err = await web.chat({ params: invalidParams() }, auth).catch((e) => e);
    expect(err).toMatchObject({ code: 3 });
    expect(String((err as Error).message)).toContain(FIELD);
    expect(reachedUpstream()).toBe(false);
  });

  it("is refused over Connect's unary protocol with a 400, not a 500", async () => {
    const message = toBinary(
      ChatRequestSchema,
      create(ChatRequestSchema, { params: invalidParams() }),
    );
    const res = await undiciRequest(`${gw.url}/${GatewayService.typeName}/Chat`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/proto", "connect-protocol-version": "1" },
      body: Buffer.from(message),
    });
    const answer = (await res.body.json()) as { code: string; message: string };
    expect(res.statusCode).toBe(400);
    expect(answer).toEqual({
      code: "invalid_argument",
      message: `${FIELD} (an invalid byte sequence starts at byte offset 7 of the field); proto3 string fields must be UTF-8`,
    });
  });
});

describe("a binary request message that is malformed", () => {
  const message = () =>
    Buffer.from(toBinary(ChatRequestSchema, create(ChatRequestSchema, { params: params() })));
  /** A raw gRPC call on its own HTTP/2 session: its grpc-status and grpc-message. */
  const grpcCall = (frame: Buffer, headers: Record<string, string> = {}) =>
    new Promise<{ status: unknown; message: unknown }>((resolve, reject) => {
      const session = http2.connect(gw.url);
      const stream = session.request({
        ":method": "POST",
        ":path": `/${GatewayService.typeName}/Chat`,
        "content-type": "application/grpc",
        te: "trailers",
        ...auth,
        ...headers,
      });
      let answer = { status: undefined as unknown, message: undefined as unknown };
      const take = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] !== undefined) {
          answer = { status: h["grpc-status"], message: h["grpc-message"] };
        }
      };
      stream.on("response", take);
      stream.on("trailers", take);
      stream.on("error", reject);
      stream.resume();
      stream.on("close", () => {
        session.close();
        resolve(answer);
      });
      stream.end(frame);
    });
  const framed = (data: Buffer, flags = 0) => {
    const head = Buffer.alloc(5);
    head[0] = flags;
    head.writeUInt32BE(data.length, 1);
    return Buffer.concat([head, data]);
  };

  it("is refused over Connect's unary protocol with a 400 and protobuf-es's reason, not a 500", async () => {
    const res = await undiciRequest(`${gw.url}/${GatewayService.typeName}/Chat`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/proto" },
      body: message().subarray(0, 20),
    });
    expect(res.statusCode).toBe(400);
    expect(await res.body.json()).toEqual({
      code: "invalid_argument",
      message: "the request message is not valid protobuf: premature EOF",
    });
  });

  it("is refused over gRPC with INVALID_ARGUMENT, not INTERNAL: cut short, or flagged compressed with no grpc-encoding", async () => {
    expect(await grpcCall(framed(message().subarray(0, 20)))).toEqual({
      status: "3",
      message: "the request message is not valid protobuf: premature EOF",
    });
    expect(await grpcCall(framed(message(), 1))).toEqual({
      status: "3",
      message: "the request message is flagged compressed, but the call names no grpc-encoding",
    });
    // The same message, whole and not flagged, is served.
    expect((await grpcCall(framed(message()))).status).toBe("0");
  });
});

describe("a client deadline longer than a Node.js timer (about 24.8 days)", () => {
  // Node fires such a timer after 1 ms; the answer here takes ~90 ms, so a deadline that had
  // overflowed would end every call with DEADLINE_EXCEEDED.
  it.each([
    [
      "Connect, ten digits of milliseconds",
      () => createConnectTransport({ baseUrl: gw.url, httpVersion: "1.1" }),
      { "connect-timeout-ms": "9999999999" },
    ],
    [
      "gRPC, eight digits of hours",
      () => createGrpcTransport({ baseUrl: gw.url }),
      { "grpc-timeout": "99999999H" },
    ],
  ])("is served: %s", async (_name, transport, deadline) => {
    upstream.setBehavior({ kind: "answer", text: "one two three", chunks: 3, chunkDelayMs: 30 });
    try {
      const client = createClient(GatewayService, transport());
      const res = await client.chat({ params: params() }, { headers: { ...auth, ...deadline } });
      const text = res.completion?.choices[0]?.message?.content
        .map((p) => (p.part.case === "text" ? p.part.value : ""))
        .join("");
      expect(text).toBe("one two three");
    } finally {
      upstream.setBehavior({ kind: "answer", text: "one two three", chunks: 3 });
    }
  });
});

describe("GatewayService via @grpc/grpc-js", () => {
  it("streams and answers unary calls over plain gRPC", async () => {
    const client = grpcJsGatewayClient(`127.0.0.1:${gw.fabric.ports.ingress}`);
    try {
      const chunks = await client.chatStream({ params: params() }, auth);
      const text = chunks
        .flatMap((r) => r.chunk?.choices ?? [])
        .map((c) => c.content ?? "")
        .join("");
      expect(text).toBe("one two three");
      const unary = await client.chat({ params: params() }, auth);
      expect(unary.completion?.choices[0]?.finishReason).toBe(1);
      const err = await client.chat({ params: params() }).catch((e: { code: number }) => e);
      expect((err as { code: number }).code).toBe(16); // UNAUTHENTICATED
    } finally {
      client.close();
    }
  });
});

describe("an error's message", () => {
  const sse = (event: object) => `data: ${JSON.stringify(event)}\n\n`;
  it("reaches @grpc/grpc-js as connect-node's client reads it, before the first message and after it", async () => {
    const grpcJs = grpcJsGatewayClient(`127.0.0.1:${gw.fabric.ports.ingress}`);
    const connect = createClient(GatewayService, createGrpcTransport({ baseUrl: gw.url }));
    // The upstream's words are relayed: a refusal before any token, and an error event after one
    // (the Trailers-Only answer and the trailers after a message: trailers-only.ts).
    const refusal = "Invalid 'messages[0]': expected one of: a, b; see /docs?x=1 (100%)";
    const cases: Array<[string, UpstreamBehavior, number, number]> = [
      [
        "a refusal before the first message",
        {
          kind: "error",
          status: 400,
          body: { error: { message: refusal, type: "invalid_request_error" } },
        },
        Code.InvalidArgument,
        0,
      ],
      [
        "an error event after the first token",
        {
          kind: "raw",
          headers: { "content-type": "text/event-stream" },
          chunks: [
            sse({
              id: "c1",
              object: "chat.completion.chunk",
              model: "up-chat",
              choices: [{ index: 0, delta: { role: "assistant", content: "one" } }],
            }),
            sse({ error: { message: refusal, type: "server_error" } }),
          ],
        },
        Code.Internal,
        1,
      ],
    ];
    const p = params();
    try {
      for (const [what, behavior, code, messages] of cases) {
        upstream.setBehavior(behavior);
        let got = 0;
        const viaConnect = await (async () => {
          try {
            for await (const _ of connect.chatStream({ params: p }, { headers: auth })) got++;
          } catch (e) {
            return ConnectError.from(e);
          }
        })();
        expect([what, got]).toEqual([what, messages]);
        const viaGrpcJs = await grpcJs.chatStream({ params: p }, auth).then(
          () => undefined,
          (e: { code: number; details: string }) => e,
        );
        expect([what, viaConnect?.code, viaGrpcJs?.code]).toEqual([what, code, code]);
        // Characters that connect-node's spelling of grpc-message escapes and grpc-js's
        // decoding (decodeURI) left escaped: "%3A" where the message said ":".
        expect(viaConnect?.rawMessage).toMatch(/[:;,/?()]/);
        expect([what, viaGrpcJs?.details]).toEqual([what, viaConnect?.rawMessage]);
      }
    } finally {
      upstream.setBehavior({ kind: "answer", text: "one two three", chunks: 3 });
      grpcJs.close();
    }
  });
});

describe("a gRPC client that cancels a fast, long stream", () => {
  it("ends the request, and the connector's call, whatever the state of the writes", async () => {
    // A big answer sent at once: the gateway's writes back up behind a client that stopped.
    const big = await startFaultUpstream({ text: "abcdefghij".repeat(300_000), chunks: 10_000 });
    const gwBig = await startOneProcess(
      testConfig(`
providers: { big: { type: openai, base_url: "${big.url}", probe: none } }
models: { big: { targets: [{ provider: big, model: m-big }] } }
routing: { retries: 0 }
`),
    );
    try {
      const client = createClient(GatewayService, createGrpcTransport({ baseUrl: gwBig.url }));
      const p = params("big");
      for (let i = 0; i < 8; i++) {
        const ac = new AbortController();
        let got = 0;
        try {
          for await (const _ of client.chatStream({ params: p }, { signal: ac.signal })) {
            if (++got >= 2) ac.abort();
          }
        } catch {
          // cancelled
        }
      }
      const gauges = async () => {
        const text = await (await fetch(`${gwBig.url}/metrics`)).text();
        return [
          metricValue(text, "switchyard_inflight_requests", { api: "grpc" }),
          metricValue(text, "switchyard_connector_inflight_requests", { provider: "big" }),
        ];
      };
      for (let i = 0; i < 100 && (await gauges()).some((v) => v !== 0); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await gauges()).toEqual([0, 0]);
    } finally {
      await gwBig.stop();
      await big.close();
    }
  });
});
