// An HTTP/1.1 client that sends a body over server.max_body_bytes gets the refusal (413,
// RESOURCE_EXHAUSTED), not a broken pipe: the gateway reads the rest of the body and throws it
// away before it answers and closes, where an answer given while the client was still writing,
// and the close after it, had Node's fetch and browsers report EPIPE / "Failed to fetch".
// Repeated, because the race the client used to lose only sometimes shows.
import http from "node:http";
import net from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";

const LIMIT = 4 * 1024 * 1024;
/** Over the limit by half: big enough that the client is still sending when it is refused. */
const SIZE = 6 * 1024 * 1024;
const TIMES = 20;
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

/** A chat request whose one message is `SIZE` characters. */
const params = () => ({
  model: "demo",
  messages: [
    { role: Role.USER, content: [{ part: { case: "text" as const, value: "x".repeat(SIZE) } }] },
  ],
});

const chatBody = () =>
  JSON.stringify({ model: "demo", messages: [{ role: "user", content: "x".repeat(SIZE) }] });

/** How a client streaming its upload sends it: 64 KB pieces, a millisecond apart. */
const PIECE = 64 * 1024;
const pause = () => new Promise((r) => setTimeout(r, 1));

/** A body as a stream of paced pieces, for fetch. */
function paced(text: string): ReadableStream<Uint8Array> {
  const bytes = Buffer.from(text);
  let at = 0;
  return new ReadableStream({
    async pull(controller) {
      if (at >= bytes.length) {
        controller.close();
        return;
      }
      await pause();
      controller.enqueue(bytes.subarray(at, at + PIECE));
      at += PIECE;
    },
  });
}

/** POSTs `body` with node:http in paced pieces; resolves with the answer's status and body. */
function post(
  path: string,
  body: Buffer,
  headers: Record<string, string>,
  withLength: boolean,
): Promise<{ status: number; text: string; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${gw.url}${path}`, {
      method: "POST",
      agent: false,
      headers: withLength ? { ...headers, "content-length": String(body.length) } : headers,
    });
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        text += d;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, text, connection: res.headers.connection }),
      );
    });
    req.on("error", reject);
    void (async () => {
      for (let at = 0; at < body.length && !req.destroyed; at += PIECE) {
        req.write(body.subarray(at, at + PIECE));
        await pause();
      }
      req.end();
    })();
  });
}

const CONNECT_PATH = "/switchyard.gateway.v1.GatewayService/Chat";
const connectBody = () =>
  JSON.stringify({ params: { model: "demo", messages: [] }, pad: "x".repeat(SIZE) });
const connectHeaders = { "content-type": "application/json", "connect-protocol-version": "1" };

/** A gRPC-Web request whose one message frame is `SIZE` bytes (refused by its size alone). */
function grpcWebBody(): Buffer {
  const b = Buffer.alloc(5 + SIZE);
  b.writeUInt32BE(SIZE, 1);
  return b;
}
const grpcWebHeaders = { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" };

describe("an HTTP/1.1 body over max_body_bytes", () => {
  it("gets RESOURCE_EXHAUSTED at the connect-node client, Connect and gRPC-Web, every time", async () => {
    const started = performance.now();
    for (const transport of [
      createConnectTransport({ baseUrl: gw.url, httpVersion: "1.1" }),
      createGrpcWebTransport({ baseUrl: gw.url, httpVersion: "1.1" }),
    ]) {
      const client = createClient(GatewayService, transport);
      for (let i = 0; i < TIMES; i++) {
        const err = await client.chat({ params: params() }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err, `call ${i}`).toBeInstanceOf(ConnectError);
        expect((err as ConnectError).code, `call ${i}: ${String(err)}`).toBe(
          Code.ResourceExhausted,
        );
      }
    }
    // Each answer came once its body had, not when the wait for the rest of it ran out (2 s).
    expect(performance.now() - started).toBeLessThan(TIMES * 1000);
  }, 120_000);

  it("gets the 413 at fetch, with Content-Length and chunked, every time", async () => {
    for (let i = 0; i < TIMES; i++) {
      for (const withLength of [true, false]) {
        const body = chatBody();
        const res = await fetch(`${gw.url}/v1/chat/completions`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            ...(withLength ? { "content-length": String(Buffer.byteLength(body)) } : {}),
          },
          body: paced(body),
          duplex: "half",
        } as RequestInit);
        expect(res.status, `request ${i}, Content-Length ${withLength}`).toBe(413);
        expect(res.headers.get("connection")).toBe("close");
        const answer = (await res.json()) as { error: { type: string } };
        expect(answer.error.type).toBe("invalid_request_error");
      }
    }
  }, 120_000);

  it("gets the Connect error at fetch, with Content-Length and chunked, every time", async () => {
    for (let i = 0; i < TIMES; i++) {
      for (const withLength of [true, false]) {
        const body = connectBody();
        const res = await fetch(`${gw.url}${CONNECT_PATH}`, {
          method: "POST",
          headers: {
            ...connectHeaders,
            ...(withLength ? { "content-length": String(Buffer.byteLength(body)) } : {}),
          },
          body: paced(body),
          duplex: "half",
        } as RequestInit);
        const answer = (await res.json()) as { code: string };
        expect(answer.code, `request ${i}, Content-Length ${withLength}`).toBe(
          "resource_exhausted",
        );
      }
    }
  }, 120_000);

  it("gets the answer at node:http, REST, Connect and gRPC-Web, with Content-Length and chunked, every time", async () => {
    const rest = Buffer.from(chatBody());
    const connect = Buffer.from(connectBody());
    const grpcWeb = grpcWebBody();
    for (let i = 0; i < TIMES; i++) {
      for (const withLength of [true, false]) {
        const at = `request ${i}, Content-Length ${withLength}`;
        const r = await post(
          "/v1/chat/completions",
          rest,
          { "content-type": "application/json" },
          withLength,
        );
        expect([r.status, r.connection], at).toEqual([413, "close"]);
        const c = await post(CONNECT_PATH, connect, connectHeaders, withLength);
        expect(JSON.parse(c.text).code, at).toBe("resource_exhausted");
        const g = await post(CONNECT_PATH, grpcWeb, grpcWebHeaders, withLength);
        expect(g.status, at).toBe(200);
        expect(g.text, at).toMatch(/grpc-status: ?8\r\n/);
      }
    }
  }, 120_000);
});

describe("a refused HTTP/1.1 body that does not end", () => {
  /** A raw connection: what it received, and once it closed, how much of the body it had sent. */
  function raw(head: string) {
    const socket = net.connect(Number(new URL(gw.url).port), "127.0.0.1");
    socket.on("error", () => {});
    let received = "";
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      received += d;
    });
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.write(head);
    return { socket, closed, received: () => received };
  }
  const head = (length: number) =>
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;

  it("is answered and cut when it stops arriving", async () => {
    const c = raw(head(SIZE));
    c.socket.write(Buffer.alloc(1024 * 1024, "x"));
    const started = performance.now();
    await c.closed;
    // The wait for the rest is 2 s.
    expect(performance.now() - started).toBeLessThan(20_000);
    expect(c.received()).toMatch(/^HTTP\/1\.1 413 /);
  }, 30_000);

  // The cut ends the answer with a FIN and reads on behind it (refused-body.ts, lingerThenClose):
  // a client still writing reads the whole answer before it learns the connection is closing.
  // Reset at once, the connection lost a client the answer already in its socket now and then.
  it("is answered and cut when it goes on past what is read of it", {
    timeout: 60_000,
  }, async () => {
    const c = raw(head(1024 * 1024 * 1024));
    let sent = 0;
    const piece = Buffer.alloc(PIECE, "x");
    while (!c.socket.destroyed && sent < 256 * 1024 * 1024) {
      if (!c.socket.write(piece)) {
        await Promise.race([new Promise((r) => c.socket.once("drain", r)), c.closed]);
      }
      sent += PIECE;
    }
    await c.closed;
    expect(c.received()).toMatch(/^HTTP\/1\.1 413 /);
    // 16 MiB more than the limit is read before the answer, at most 64 MiB after it; the
    // client's buffers hold a few more.
    expect(sent).toBeLessThan(128 * 1024 * 1024);
  });
});
