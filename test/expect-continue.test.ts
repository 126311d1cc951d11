import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatParamsSchema, Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { ChatRequestSchema, GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";

// `Expect: 100-continue` (curl sends it for bodies over 1 KB): a body announced over
// server.max_body_bytes is refused at once, without the 100 Continue that would have the client
// upload it; one within the limit is asked for, and answered. On a raw socket, so that what the
// server sends before the body is seen as it is.
const LIMIT = 4096;
let gw: RunningFabric;

beforeAll(async () => {
  gw = await startOneProcess(
    testConfig(`
server: { max_body_bytes: ${LIMIT} }
providers: { mock: { type: mock, tokens: 3 } }
models: { demo: { targets: [{ provider: mock, model: m }] } }
`),
  );
});

afterAll(async () => {
  await gw?.stop();
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

const head = (path: string, contentType: string, length: number, expect = "100-continue") =>
  `POST ${path} HTTP/1.1
Host: 127.0.0.1
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
      headers: { "content-type": "application/json" },
      body: chatJson(),
    });
    expect(next.status).toBe(200);
    await next.body?.cancel();
  });
});

describe("over HTTP/2, a body announced over max_body_bytes, with Expect: 100-continue", () => {
  /**
   * Sends the request's headers and never its body, as a client not told to continue does; what
   * it gets back, and whether the server ended the stream by itself, without the client ending
   * its side. A refused body that is being sent is read and thrown away for up to 2 s before the
   * stream is cut; this one is not coming, so its stream has nothing to wait for.
   */
  function withheldBody(session: http2.ClientHttp2Session, path: string, type: string) {
    return new Promise<{ status: number; body: string; closed: boolean; rstCode: number }>(
      (resolve, reject) => {
        const stream = session.request(
          {
            ":method": "POST",
            ":path": path,
            "content-type": type,
            "content-length": String(OVER),
            expect: "100-continue",
          },
          { endStream: false },
        );
        let status = 0;
        let body = "";
        stream.on("response", (headers) => {
          status = Number(headers[":status"]);
        });
        stream.on("continue", () => reject(new Error("the server asked for the body")));
        stream.setEncoding("utf8");
        stream.on("data", (d: string) => {
          body += d;
        });
        stream.on("error", reject);
        // Far below the 2 s a drain waits, far above what ending the stream at once takes.
        const timer = setTimeout(() => {
          resolve({ status, body, closed: false, rstCode: -1 });
          stream.close(http2.constants.NGHTTP2_CANCEL);
        }, 1000);
        stream.on("close", () => {
          clearTimeout(timer);
          resolve({ status, body, closed: true, rstCode: stream.rstCode ?? -1 });
        });
      },
    );
  }

  it.each([
    ["/v1/chat/completions", "application/json", /"code":"request_too_large"/],
    ["/v1/messages", "application/json", /"type":"request_too_large"/],
  ])(
    "%s: 413 at once, and the stream ends without waiting for a body that is not coming",
    async (path, type, envelope) => {
      const session = http2.connect(gw.url);
      try {
        const first = await withheldBody(session, path, type);
        expect(first).toMatchObject({ status: 413, closed: true, rstCode: 0 });
        expect(first.body).toMatch(envelope);
        // The connection serves on.
        const next = await new Promise<number>((resolve, reject) => {
          const stream = session.request({ ":method": "GET", ":path": "/v1/models" });
          stream.on("response", (h) => resolve(Number(h[":status"])));
          stream.on("error", reject);
          stream.resume();
        });
        expect(next).toBe(200);
      } finally {
        session.close();
      }
    },
  );
});
