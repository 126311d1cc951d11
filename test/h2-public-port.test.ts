import http from "node:http";
import http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import OpenAI from "openai";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatParamsSchema, Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { type Fabric, startFabric } from "../services/fabric.js";
import { grpcJsGatewayClient } from "./clients/grpc-js-gateway.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";

// What the ingress port holds an HTTP/2 client to, as the fabric starts it: a request's head to
// HTTP/1.1's bound, and a connection with no call open to HTTP/1.1's keep-alive time. The
// fabric's internal ports keep Node's defaults.
const CONFIG = testConfig(`
providers: { mock: { type: mock, tokens: 3 } }
models: { demo: { targets: [{ provider: mock, model: m }] } }
`);
/** HTTP/1.1's 16 KB in HTTP/2's count, with room for ten fields' 32 bytes (fabric.ts). */
const H2_BOUND = 16_384 + 10 * 32;

const chatBody = JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }] });
const fields150 = Object.fromEntries(Array.from({ length: 150 }, (_, i) => [`x-h${i}`, "v"]));
/** One header of 17,000 bytes: over 16 KB on either protocol. */
const tooLarge = { "x-request-id": "r-too-large", "x-big": "a".repeat(17_000) };

/** A chat request over HTTP/2: its status and request id, or the code its stream was reset with. */
function h2Chat(session: http2.ClientHttp2Session, extra: Record<string, string>) {
  return new Promise<string>((resolve) => {
    const stream = session.request({
      ":method": "POST",
      ":path": "/v1/chat/completions",
      "content-type": "application/json",
      ...extra,
    });
    let answer = "";
    stream.on("response", (h) => {
      answer = `${h[":status"]} ${h["x-request-id"]}`;
    });
    stream.resume();
    stream.on("error", () => {});
    stream.on("close", () => resolve(answer || `reset ${stream.rstCode}`));
    stream.end(chatBody);
  });
}

/** The same over HTTP/1.1: its status and request id. */
function h1Chat(url: string, extra: Record<string, string>) {
  return new Promise<string>((resolve, reject) => {
    const req = http.request(
      `${url}/v1/chat/completions`,
      { method: "POST", agent: false, headers: { "content-type": "application/json", ...extra } },
      (res) => {
        res.resume();
        res.on("end", () => resolve(`${res.statusCode} ${res.headers["x-request-id"]}`));
      },
    );
    req.on("error", reject);
    req.end(chatBody);
  });
}

const settled = (session: http2.ClientHttp2Session) =>
  new Promise((resolve) => session.once("remoteSettings", resolve));

describe("a request's head on the ingress port", () => {
  let gw: RunningFabric;
  beforeAll(async () => {
    gw = await startOneProcess(CONFIG);
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it("of 150 fields is taken on HTTP/1.1 (the openai SDK) and on HTTP/2 alike", async () => {
    const openai = new OpenAI({
      baseURL: `${gw.url}/v1`,
      apiKey: "unused",
      maxRetries: 0,
      defaultHeaders: fields150,
    });
    const answer = await openai.chat.completions.create({
      model: "demo",
      messages: [{ role: "user", content: "hi" }],
    });
    expect(answer.object).toBe("chat.completion");
    const session = http2.connect(gw.url);
    try {
      await settled(session);
      expect(await h2Chat(session, { ...fields150, "x-request-id": "r-150" })).toBe("200 r-150");
    } finally {
      session.close();
    }
  });

  it("over 16 KB gets 431 on HTTP/1.1; on HTTP/2 the bound is advertised, and past it the stream is reset, or answered 431 if sent before the client had the bound", async () => {
    // HTTP/1.1's head was not read, so its id is not known: the answer carries a new one.
    expect(await h1Chat(gw.url, tooLarge)).toMatch(/^431 [0-9a-f-]{36}$/);
    const session = http2.connect(gw.url);
    const hasSettings = settled(session);
    try {
      // Asked at once: it goes out before the client has the server's settings.
      expect(await h2Chat(session, tooLarge)).toBe("431 r-too-large");
      await hasSettings;
      expect(session.remoteSettings.maxHeaderListSize).toBe(H2_BOUND);
      expect(await h2Chat(session, tooLarge)).toBe(
        `reset ${http2.constants.NGHTTP2_ENHANCE_YOUR_CALM}`,
      );
      // The connection serves on, and a head HTTP/1.1 takes near its bound is taken here too.
      const near = { "x-request-id": "r-near", "x-big": "a".repeat(16_000) };
      expect(await h1Chat(gw.url, near)).toBe("200 r-near");
      expect(await h2Chat(session, near)).toBe("200 r-near");
      expect(session.destroyed).toBe(false);
    } finally {
      session.close();
    }
  });

  const params = () =>
    create(ChatParamsSchema, {
      model: "demo",
      messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }],
    });

  it("over the bound is RESOURCE_EXHAUSTED to a gRPC call from grpc-js; 150 metadata entries pass", async () => {
    const client = grpcJsGatewayClient(`127.0.0.1:${gw.fabric.ports.ingress}`);
    try {
      // grpc-js waits for the server's settings before its first call.
      await expect(client.chatStream({ params: params() }, tooLarge)).rejects.toMatchObject({
        code: 8,
      });
      expect((await client.chatStream({ params: params() }, fields150)).length).toBeGreaterThan(0);
    } finally {
      client.close();
    }
  });

  it("over the bound fails a connect-node gRPC call: ResourceExhausted as a new connection's first call, Internal (the reset) later; 150 headers pass", async () => {
    const client = createClient(GatewayService, createGrpcTransport({ baseUrl: gw.url }));
    const outcome = (headers: Record<string, string>) =>
      client.chat({ params: params() }, { headers }).then(
        () => "ok",
        (e: unknown) => Code[ConnectError.from(e).code],
      );
    expect(await outcome(tooLarge)).toBe("ResourceExhausted");
    expect(await outcome(fields150)).toBe("ok");
    expect(await outcome(tooLarge)).toBe("Internal");
    expect(await outcome({})).toBe("ok");
  });
});

describe("an HTTP/2 connection with no call open", () => {
  const IDLE_MS = 300;
  let fabric: Fabric;
  beforeAll(async () => {
    // The ingress and a connector, each on its own port, as in separate processes.
    fabric = await startFabric({
      config: CONFIG,
      services: new Set(["ingress", "connector"]),
      logger: pino({ level: "silent" }),
      listen: {
        ingress: { host: "127.0.0.1", port: 0 },
        connector: { host: "127.0.0.1", port: 0 },
      },
      h2IdleTimeoutMs: IDLE_MS,
    });
  });
  afterAll(async () => {
    await fabric?.stop(1000);
  });

  /** A connection to `port` once it has the server's settings, and when it closed. */
  async function idleConnection(port: number | undefined) {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", () => {});
    const goaway = new Promise<number>((resolve) => session.once("goaway", resolve));
    const closed = new Promise<number>((resolve) =>
      session.once("close", () => resolve(performance.now())),
    );
    await settled(session);
    return { session, goaway, closed, since: performance.now() };
  }

  it("to the ingress port is closed with GOAWAY (NO_ERROR) once idle past its time", async () => {
    const { session, goaway, closed, since } = await idleConnection(fabric.ports.ingress);
    try {
      const stillOpen = new Promise((r) => setTimeout(r, IDLE_MS * 10, "still open"));
      expect(await Promise.race([goaway, stillOpen])).toBe(http2.constants.NGHTTP2_NO_ERROR);
      expect((await closed) - since).toBeLessThan(IDLE_MS * 10);
    } finally {
      session.destroy();
    }
  });

  it("to an internal port stays open, and holds no head bound", async () => {
    const { session } = await idleConnection(fabric.ports.connector);
    try {
      expect(session.remoteSettings.maxHeaderListSize).toBe(2 ** 32 - 1);
      await new Promise((r) => setTimeout(r, IDLE_MS * 10));
      expect(session.closed).toBe(false);
    } finally {
      session.close();
    }
  });
});
