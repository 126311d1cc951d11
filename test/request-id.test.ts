// Every answer of the ingress carries x-request-id (SPEC §4), the client's when it sent a valid
// one, including those given before any handler runs: refusals of GatewayService calls by
// connect-node or the gRPC-Web text translation, the health service, CORS, and Node's own
// answers (an unknown Expect, an unparsable request).
import http from "node:http";
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashKey } from "../services/lib/config/keys.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";

const KEY = "sk-request-id-test";
const LIMIT = 1024;
let gw: RunningFabric;

beforeAll(async () => {
  gw = await startOneProcess(
    testConfig(`
server: { max_body_bytes: ${LIMIT}, cors_origins: ["https://app.example"] }
providers: { demo: { type: mock } }
models: { demo: { targets: [{ provider: demo, model: m }] } }
tenants: { acme: { keys: ["${hashKey(KEY)}"] } }
`),
  );
});

afterAll(async () => {
  await gw?.stop();
});

interface Ask {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** HTTP/1.1 only: send the body chunked, without Content-Length. */
  chunked?: boolean;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function askH1(a: Ask): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...a.headers };
    if (a.body !== undefined && !a.chunked) {
      headers["content-length"] = String(Buffer.byteLength(a.body));
    }
    const req = http.request(`${gw.url}${a.path}`, {
      method: a.method ?? "POST",
      headers,
      agent: false,
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    });
    req.on("error", reject);
    req.end(a.body);
  });
}

function askH2(a: Ask): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(gw.url);
    session.on("error", reject);
    const stream = session.request({
      ":method": a.method ?? "POST",
      ":path": a.path,
      ...a.headers,
    });
    const chunks: Buffer[] = [];
    let head: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => {
      head = h;
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      session.close();
      resolve({ status: Number(head[":status"]), headers: head, body: Buffer.concat(chunks) });
    });
    stream.on("error", (err) => {
      session.close();
      reject(err);
    });
    stream.end(a.body);
  });
}

const CHAT = "/switchyard.gateway.v1.GatewayService/Chat";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A gRPC-Web message frame of `n` zero bytes (not a valid request: refused before it matters). */
function frame(n: number): Buffer {
  const b = Buffer.alloc(5 + n);
  b.writeUInt32BE(n, 1);
  return b;
}

/** The gRPC status a gRPC-Web answer carries, in its headers or its trailer frame. */
function grpcStatus(a: Answer, text = false): string | undefined {
  const inHeader = a.headers["grpc-status"];
  if (typeof inHeader === "string") return inHeader;
  const body = text ? Buffer.from(a.body.toString("latin1"), "base64") : a.body;
  return /grpc-status:\s*(\d+)/.exec(body.toString("latin1"))?.[1];
}

const auth = { authorization: `Bearer ${KEY}` };
const grpcWeb = { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...auth };
const grpcWebText = { "content-type": "application/grpc-web-text", "x-grpc-web": "1", ...auth };

/** Every early refusal (and the health service), what it answers, and how to tell. */
const CASES: Array<{ name: string; ask: Ask; check(a: Answer): void }> = [
  {
    name: "gRPC-Web with a content type nothing serves",
    ask: { path: CHAT, headers: { "content-type": "application/x-unknown" }, body: "x" },
    check: (a) => expect(a.status).toBe(415),
  },
  {
    name: "gRPC-Web announcing a message over the limit",
    ask: { path: CHAT, headers: grpcWeb, body: frame(LIMIT * 2) },
    check: (a) => expect(grpcStatus(a)).toBe("8"),
  },
  {
    name: "gRPC-Web sending a message over the limit, chunked",
    ask: { path: CHAT, headers: grpcWeb, body: frame(LIMIT * 2), chunked: true },
    check: (a) => expect(grpcStatus(a)).toBe("8"),
  },
  {
    name: "gRPC-Web without a key",
    ask: { path: CHAT, headers: { ...grpcWeb, authorization: "" }, body: frame(0) },
    check: (a) => expect(grpcStatus(a)).toBe("16"),
  },
  {
    name: "gRPC-Web with an unknown key",
    ask: { path: CHAT, headers: { ...grpcWeb, authorization: "Bearer nope" }, body: frame(0) },
    check: (a) => expect(grpcStatus(a)).toBe("16"),
  },
  {
    name: "gRPC-Web to a method GatewayService does not have",
    ask: { path: "/switchyard.gateway.v1.GatewayService/Nope", headers: grpcWeb, body: frame(0) },
    check: (a) => expect(a.status).toBe(404),
  },
  {
    name: "a GatewayService method asked with GET",
    ask: { method: "GET", path: CHAT },
    check: (a) => expect(a.status).toBe(405),
  },
  {
    name: "gRPC-Web text that is not base64",
    ask: { path: CHAT, headers: grpcWebText, body: "!!!!" },
    check: (a) => expect(grpcStatus(a, true)).toBe("3"),
  },
  {
    name: "gRPC-Web text over the limit",
    ask: { path: CHAT, headers: grpcWebText, body: frame(LIMIT * 2).toString("base64") },
    check: (a) => expect(grpcStatus(a, true)).toBe("8"),
  },
  {
    name: "a Connect call over the limit",
    ask: {
      path: CHAT,
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({ pad: "x".repeat(LIMIT * 2) }),
    },
    check: (a) => expect(JSON.parse(a.body.toString()).code).toBe("resource_exhausted"),
  },
  {
    name: "the health service",
    ask: {
      path: "/grpc.health.v1.Health/Check",
      headers: { "content-type": "application/json" },
      body: "{}",
    },
    check: (a) => expect(JSON.parse(a.body.toString())).toEqual({ status: "SERVING" }),
  },
  {
    name: "the health service with a content type it does not serve",
    ask: {
      path: "/grpc.health.v1.Health/Check",
      headers: { "content-type": "application/x-unknown" },
      body: "{}",
    },
    check: (a) => expect(a.status).toBe(415),
  },
  {
    name: "a page of an origin not allowed",
    ask: {
      path: "/v1/chat/completions",
      headers: { origin: "https://elsewhere.example", "content-type": "application/json" },
      body: "{}",
    },
    check: (a) => expect(a.status).toBe(403),
  },
  {
    name: "a CORS preflight",
    ask: {
      method: "OPTIONS",
      path: CHAT,
      headers: { origin: "https://app.example", "access-control-request-method": "POST" },
    },
    check: (a) => expect(a.status).toBe(204),
  },
];

describe.each([
  ["HTTP/1.1", askH1],
  ["HTTP/2", askH2],
])("over %s, every early answer carries x-request-id", (_, ask) => {
  it.each(CASES.map((c) => [c.name, c] as const))("%s", async (_name, c) => {
    const echoed = await ask({ ...c.ask, headers: { ...c.ask.headers, "x-request-id": "rid-1" } });
    c.check(echoed);
    expect(echoed.headers["x-request-id"]).toBe("rid-1");
    const fresh = await ask(c.ask);
    c.check(fresh);
    expect(fresh.headers["x-request-id"]).toMatch(UUID);
  });
});

describe("answers Node gives before any handler", () => {
  it("an unknown Expect gets 417 with x-request-id", async () => {
    const a = await askH1({
      path: "/v1/chat/completions",
      headers: { expect: "something-else", "x-request-id": "rid-417" },
      body: "{}",
    });
    expect(a.status).toBe(417);
    expect(a.headers["x-request-id"]).toBe("rid-417");
  });

  it("a head too large gets 431 with x-request-id", async () => {
    const a = await askH1({
      method: "GET",
      path: "/v1/models",
      headers: { "x-padding": "a".repeat(20_000) },
    });
    expect(a.status).toBe(431);
    expect(a.headers["x-request-id"]).toMatch(UUID);
  });
});
