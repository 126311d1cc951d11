import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatParamsSchema, Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { ChatRequestSchema, GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { drainBounds } from "../services/ingress/refused-body.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";

// `Expect: 100-continue` (curl sends it for bodies over 1 KB): a body announced over
// server.max_body_bytes is refused at once, without the 100 Continue that would have the client
// upload it; one within the limit is asked for, and answered. On a raw socket, so that what the
// server sends before the body is seen as it is.
const LIMIT = 4096;
/** The key the gateway's one tenant has ("test"), and one it does not know. */
const KEY = "test";
const BAD_KEY = "not-a-key";
/**
 * How long a refused body that is still coming is read and thrown away, raised from its 2 s for
 * these tests: an answer or a stream that waited on it would be 60 s late, so an answer that
 * comes within a tenth of that did not wait.
 */
const DRAIN_MS = 60_000;
const drainDefaults = { ...drainBounds };
let gw: RunningFabric;

beforeAll(async () => {
  Object.assign(drainBounds, { maxMs: DRAIN_MS });
  gw = await startOneProcess(
    testConfig(`
server: { max_body_bytes: ${LIMIT} }
tenants: { t: { keys: ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"] } }
providers: { mock: { type: mock, tokens: 3 } }
models: { demo: { targets: [{ provider: mock, model: m }] } }
`),
  );
});

afterAll(async () => {
  await gw?.stop();
  Object.assign(drainBounds, drainDefaults);
});

interface Exchange {
  /** Everything the server sent, as latin1 text, until it closed the connection. */
  received: string;
  /** What it had sent when the client decided whether to send the body. */
  beforeBody: string;
}

/**
 * Sends a request's head, then waits (up to 1.5 s) for the server to answer or ask for the body;
 * sends `body` only if the server asked for it with 100 Continue, then reads until the server
 * closes (every request here says `Connection: close`, and a refused one is closed anyway).
 */
function exchange(head: string, body: Buffer): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(new URL(gw.url).port), "127.0.0.1");
    let received = "";
    let beforeBody: string | undefined;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no end within 5 s; received: ${JSON.stringify(received)}`));
    }, 5000);
    const decide = () => {
      if (beforeBody !== undefined) return;
      beforeBody = received;
      if (received.startsWith("HTTP/1.1 100 ")) socket.write(body);
    };
    socket.on("data", (d: Buffer) => {
      received += d.toString("latin1");
      // A 100 Continue is a head of its own, sent alone; anything else is the answer.
      if (received.includes("\r\n\r\n")) decide();
    });
    socket.on("error", reject);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ received, beforeBody: beforeBody ?? received });
    });
    socket.write(head.replace(/\n/g, "\r\n"));
    // A client that was never answered sends its body after a while (curl: 1 s).
    setTimeout(decide, 1500);
  });
}

/** The body of the one answer in `received`, its chunked framing (if any) undone. */
function bodyOf(received: string): string {
  const split = received.indexOf("\r\n\r\n");
  const body = received.slice(split + 4);
  if (!/transfer-encoding: chunked/i.test(received.slice(0, split))) return body;
  let out = "";
  for (let at = 0; ; ) {
    const eol = body.indexOf("\r\n", at);
    const size = Number.parseInt(body.slice(at, eol), 16);
    if (!(size > 0)) return out;
    out += body.slice(eol + 2, eol + 2 + size);
    at = eol + 2 + size + 2;
  }
}

const head = (
  path: string,
  contentType: string,
  length: number,
  expect = "100-continue",
  key = KEY,
) =>
  `POST ${path} HTTP/1.1
Host: 127.0.0.1
Authorization: Bearer ${key}
Content-Type: ${contentType}
Content-Length: ${length}
Expect: ${expect}
Connection: close

`;

const chatJson = (padTo = 0) =>
  Buffer.from(
    JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }] }).padEnd(
      padTo,
      " ",
    ),
  );
const OVER = LIMIT * 4;

describe("a body announced over max_body_bytes, with Expect: 100-continue", () => {
  it.each([
    ["/v1/chat/completions", /"type":"invalid_request_error".*"code":"request_too_large"/],
    ["/v1/messages", /"type":"error","error":\{"type":"request_too_large"/],
  ])(
    "%s: 413 in the API's envelope at once, no 100 Continue, the body never sent",
    async (path, envelope) => {
      const { received, beforeBody } = await exchange(
        head(path, "application/json", OVER),
        chatJson(OVER),
      );
      expect(received).not.toMatch(/^HTTP\/1\.1 100/m);
      expect(beforeBody).toMatch(/^HTTP\/1\.1 413 /);
      expect(beforeBody).toMatch(/\r\nconnection: close\r\n/i);
      expect(received).toMatch(envelope);
    },
  );

  /** A gRPC-Web frame: flags, big-endian length, payload. */
  const frame = (payload: Uint8Array) => {
    const out = Buffer.alloc(5 + payload.length);
    out.writeUInt32BE(payload.length, 1);
    out.set(payload, 5);
    return out;
  };
  const grpcWebBody = () =>
    frame(
      toBinary(
        ChatRequestSchema,
        create(ChatRequestSchema, {
          params: create(ChatParamsSchema, {
            model: "demo",
            messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }],
          }),
        }),
      ),
    );
  const CHAT = `/${GatewayService.typeName}/Chat`;

  it.each([
    ["gRPC-Web", "application/grpc-web+proto", (b: Buffer) => b, /grpc-status: ?8/],
    [
      "gRPC-Web text",
      "application/grpc-web-text",
      (b: Buffer) => Buffer.from(b.toString("base64")),
      /grpc-status: ?8/,
    ],
    ["Connect (JSON)", "application/json", (b: Buffer) => b, /"code":"resource_exhausted"/],
  ])("%s: RESOURCE_EXHAUSTED at once, no 100 Continue", async (_name, type, encode, status) => {
    const { received, beforeBody } = await exchange(head(CHAT, type, OVER), encode(grpcWebBody()));
    expect(received).not.toMatch(/^HTTP\/1\.1 100/m);
    expect(beforeBody).toMatch(/^HTTP\/1\.1 (200|429) /);
    let body = bodyOf(received);
    // gRPC-Web's status is in its trailer frame, base64 in text mode.
    if (type.includes("text")) body = Buffer.from(body, "base64").toString("latin1");
    expect(body).toMatch(status);
  });
});

describe("a body within the limit, with Expect: 100-continue", () => {
  it("gets 100 Continue, then, once sent, its answer", async () => {
    const body = chatJson();
    const { received, beforeBody } = await exchange(
      head("/v1/chat/completions", "application/json", body.length),
      body,
    );
    expect(beforeBody).toBe("HTTP/1.1 100 Continue\r\n\r\n");
    expect(received.slice(beforeBody.length)).toMatch(/^HTTP\/1\.1 200 /);
    expect(received).toMatch(/"object":"chat\.completion"/);
  });
});

describe("an Expect other than 100-continue", () => {
  it("gets 417 at once, on a connection that then closes, and the gateway serves on", async () => {
    const body = chatJson();
    // Kept alive, the connection would read the body, sent or not, as the next request's start.
    const keptAlive = head("/v1/chat/completions", "application/json", body.length, "x-other");
    const { received } = await exchange(keptAlive.replace("Connection: close\n", ""), body);
    expect(received).toMatch(/^HTTP\/1\.1 417 /);
    expect(received).toMatch(/\r\nconnection: close\r\n/i);
    expect(received).not.toMatch(/chat\.completion/);
    const next = await fetch(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
      body: chatJson(),
    });
    expect(next.status).toBe(200);
    await next.body?.cancel();
  });
});

describe("a request refused from its headers (a key the gateway does not know), with Expect: 100-continue", () => {
  it("with a body over the limit: 401 at once, no 100 Continue, the body never sent", async () => {
    const { received, beforeBody } = await exchange(
      head("/v1/chat/completions", "application/json", OVER, "100-continue", BAD_KEY),
      chatJson(OVER),
    );
    expect(received).not.toMatch(/^HTTP\/1\.1 100/m);
    expect(beforeBody).toMatch(/^HTTP\/1\.1 401 /);
    expect(beforeBody).toMatch(/\r\nconnection: close\r\n/i);
    expect(received).toMatch(/"code":"invalid_api_key"/);
  });

  it("with a body within the limit: 401 at once, no 100 Continue, the body never sent", async () => {
    const body = chatJson();
    const { received, beforeBody } = await exchange(
      head("/v1/chat/completions", "application/json", body.length, "100-continue", BAD_KEY),
      body,
    );
    expect(received).not.toMatch(/^HTTP\/1\.1 100/m);
    expect(beforeBody).toMatch(/^HTTP\/1\.1 401 /);
    expect(received).toMatch(/"code":"invalid_api_key"/);
  });
});

describe("over HTTP/2, with Expect: 100-continue", () => {
  interface Outcome {
    status: number;
    body: string;
    /** Whether the server asked for the body (100 Continue). */
    continued: boolean;
    /** Whether the stream ended within a tenth of the drain bound, and its reset code. */
    closed: boolean;
    rstCode: number;
  }

  /**
   * Sends a request's headers, and its body only if the server asks for it (as a client that
   * asked `Expect: 100-continue` does); what it gets back, and whether the server ended the
   * stream by itself within a tenth of DRAIN_MS, without the client ending its side. A refused
   * body that is being sent is read and thrown away for up to DRAIN_MS before the stream is cut;
   * one that is not coming leaves nothing to wait for.
   */
  function expecting(
    session: http2.ClientHttp2Session,
    path: string,
    opts: { key?: string; length: number; body?: Buffer },
  ) {
    return new Promise<Outcome>((resolve, reject) => {
      const stream = session.request(
        {
          ":method": "POST",
          ":path": path,
          "content-type": "application/json",
          authorization: `Bearer ${opts.key ?? KEY}`,
          "content-length": String(opts.length),
          expect: "100-continue",
        },
        { endStream: false },
      );
      const out: Outcome = { status: 0, body: "", continued: false, closed: false, rstCode: -1 };
      stream.on("response", (headers) => {
        out.status = Number(headers[":status"]);
      });
      stream.on("continue", () => {
        out.continued = true;
        if (opts.body) stream.end(opts.body);
        else reject(new Error("the server asked for a body it should have refused"));
      });
      stream.setEncoding("utf8");
      stream.on("data", (d: string) => {
        out.body += d;
      });
      stream.on("error", reject);
      const timer = setTimeout(() => {
        resolve(out);
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }, DRAIN_MS / 10);
      stream.on("close", () => {
        clearTimeout(timer);
        resolve({ ...out, closed: true, rstCode: stream.rstCode ?? -1 });
      });
    });
  }

  async function onOneConnection(run: (session: http2.ClientHttp2Session) => Promise<void>) {
    const session = http2.connect(gw.url);
    try {
      await run(session);
      // The connection serves on.
      const next = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ":method": "GET", ":path": "/v1/models" });
        stream.on("response", (h) => resolve(Number(h[":status"])));
        stream.on("error", reject);
        stream.resume();
      });
      expect(next).toBe(401);
    } finally {
      session.close();
    }
  }

  it.each([
    ["/v1/chat/completions", KEY, 413, /"code":"request_too_large"/],
    ["/v1/messages", KEY, 413, /"type":"request_too_large"/],
    ["/v1/chat/completions", BAD_KEY, 401, /"code":"invalid_api_key"/],
    ["/v1/messages", BAD_KEY, 401, /"type":"authentication_error"/],
  ])(
    "%s, a body over the limit, key %s: %d at once, and the stream ends without waiting for a body that is not coming",
    async (path, key, status, envelope) => {
      await onOneConnection(async (session) => {
        const outcome = await expecting(session, path, { key, length: OVER });
        // Reset with NO_ERROR right after the answer (RFC 9113 §8.1): the answer is whole.
        expect(outcome).toMatchObject({ status, continued: false, closed: true, rstCode: 0 });
        expect(outcome.body).toMatch(envelope);
      });
    },
  );

  it("a body within the limit and a key the gateway does not know: 401 at once, no 100 Continue", async () => {
    await onOneConnection(async (session) => {
      const body = chatJson();
      const outcome = await expecting(session, "/v1/chat/completions", {
        key: BAD_KEY,
        length: body.length,
        body,
      });
      expect(outcome).toMatchObject({ status: 401, continued: false, closed: true, rstCode: 0 });
      expect(outcome.body).toMatch(/"code":"invalid_api_key"/);
    });
  });
});
