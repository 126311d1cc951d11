// A refused HTTP/1.1 body that goes on past what the gateway reads of it (refused-body.ts): its
// answer must reach a client that is still writing, and the connection must still close, within
// the linger's bounds, leaving nothing open.
import net from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { testConfig } from "../../test/helpers/fabric.js";
import { type IngressRig, startIngress } from "../../test/helpers/ingress.js";
import { lingerBounds } from "./refused-body.js";

const LIMIT = 1024 * 1024;
const PIECE = 64 * 1024;
const defaults = { ...lingerBounds };

let rig: IngressRig;
let port: number;

beforeAll(async () => {
  const config = testConfig(`
server: { max_body_bytes: ${LIMIT} }
providers: { mock: { type: mock, tokens: 3 } }
models: { demo: { targets: [{ provider: mock, model: m }] } }
`);
  // Every body here is refused before the router would be asked.
  rig = await startIngress({ config, router: {} });
  port = rig.port;
});

/** The clients a test opened, closed after it whatever it left them as. */
const clients = new Set<net.Socket>();

afterEach(() => {
  Object.assign(lingerBounds, defaults);
  for (const socket of clients) socket.destroy();
  clients.clear();
});

afterAll(async () => {
  await rig?.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The server's open connections, once every one closing has closed (or after 10 s). */
async function openConnections(): Promise<number> {
  const count = () =>
    new Promise<number>((resolve, reject) =>
      rig.server.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
    );
  for (let waited = 0; waited < 10_000; waited += 50) {
    if ((await count()) === 0) return 0;
    await sleep(50);
  }
  return count();
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/** The HTTP/1.1 answer at the start of `raw`, once all of it (its Content-Length) is there. */
function answerIn(raw: Buffer): Answer | undefined {
  const headEnd = raw.indexOf("\r\n\r\n");
  if (headEnd < 0) return undefined;
  const [statusLine = "", ...lines] = raw.subarray(0, headEnd).toString("latin1").split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  const length = Number(headers["content-length"]);
  const body = raw.subarray(headEnd + 4);
  if (!Number.isInteger(length) || body.length < length) return undefined;
  return {
    status: Number(statusLine.split(" ")[1]),
    headers,
    body: JSON.parse(body.subarray(0, length).toString("utf8")),
  };
}

/**
 * A raw client POSTing a body of `length` bytes to `path`, reading whatever comes as it writes.
 * Half-open: the server's FIN does not end its own side (Node's default would, and so stop it
 * writing), as a client whose writing does not wait on what it reads.
 */
function sender(path: string, length = 1024 ** 3) {
  const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  clients.add(socket);
  const received: Buffer[] = [];
  let error: (Error & { code?: string }) | undefined;
  let endedByServer = false;
  socket.on("data", (d: Buffer) => received.push(d));
  socket.on("error", (e) => {
    error = e;
  });
  socket.on("end", () => {
    endedByServer = true;
  });
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  let isClosed = false;
  void closed.then(() => {
    isClosed = true;
  });
  socket.write(
    `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`,
  );
  let sent = 0;
  const answer = () => answerIn(Buffer.concat(received));
  /** Writes `size`-byte pieces while `more()` says so, the body lasts and the connection is open. */
  const write = async (size: number, more: () => boolean | Promise<boolean>) => {
    const piece = Buffer.alloc(size, "x");
    while (sent < length && !isClosed && !socket.destroyed && (await more())) {
      const next = piece.subarray(0, Math.min(size, length - sent));
      if (!socket.write(next)) {
        await Promise.race([new Promise((r) => socket.once("drain", r)), closed]);
      }
      sent += next.length;
    }
  };
  /** Writes fast until the whole answer has come (it comes once 16 MiB past the limit are read). */
  const untilAnswered = () => write(PIECE, () => answer() === undefined);
  return {
    socket,
    closed,
    isClosed: () => isClosed,
    answer,
    write,
    untilAnswered,
    sent: () => sent,
    error: () => error,
    endedByServer: () => endedByServer,
  };
}

const apis = [
  {
    api: "OpenAI",
    path: "/v1/chat/completions",
    status: 413,
    refusal: { error: { type: "invalid_request_error" } },
  },
  {
    api: "Anthropic",
    path: "/v1/messages",
    status: 413,
    refusal: { type: "error", error: { type: "request_too_large" } },
  },
  {
    api: "Connect",
    path: "/switchyard.gateway.v1.GatewayService/Chat",
    // The Connect protocol's HTTP status for RESOURCE_EXHAUSTED.
    status: 429,
    refusal: { code: "resource_exhausted" },
  },
];

describe.each(apis)(
  "a refused body going on past what is read of it ($api)",
  ({ path, status, refusal }) => {
    it("reaches a client still writing, whole, and the connection then closes in order, not reset", async () => {
      const c = sender(path);
      await c.untilAnswered();
      // The answer is in: the client goes on writing, at a steady pace, for another half second
      // (a reset sent behind the answer reaches it well within that), then stops and closes.
      const until = performance.now() + 500;
      await c.write(16 * 1024, async () => {
        await sleep(5);
        return performance.now() < until;
      });
      expect(c.isClosed(), "the server closed the connection while the client wrote").toBe(false);
      c.socket.end();
      await c.closed;
      expect(c.error()?.code).toBeUndefined();
      expect(c.endedByServer()).toBe(true);
      const answer = c.answer();
      expect(answer?.status).toBe(status);
      expect(answer?.headers.connection).toBe("close");
      expect(answer?.body).toMatchObject(refusal);
      expect(await openConnections()).toBe(0);
    }, 30_000);
  },
);

describe("the linger after a refused body's answer", () => {
  it("ends when its time is up, for a client that never stops sending", async () => {
    Object.assign(lingerBounds, { maxMs: 300, quietMs: 60_000, maxBytes: 1024 ** 3 });
    const c = sender("/v1/chat/completions");
    await c.untilAnswered();
    const answered = performance.now();
    // 16 KiB every 5 ms: the linger's byte bound is far away, its quiet bound never comes.
    await c.write(16 * 1024, async () => {
      await sleep(5);
      return performance.now() - answered < 20_000;
    });
    expect(c.isClosed()).toBe(true);
    expect(performance.now() - answered).toBeLessThan(10_000);
    expect(c.answer()?.status).toBe(413);
    expect(await openConnections()).toBe(0);
  }, 30_000);

  // Its byte bound as it is: a smaller one (1 MiB was tried) can be used up by what the client
  // wrote before it could see the answer, and the reset then costs the client the answer.
  it("ends once its bytes are read, for a client sending on at full speed", async () => {
    Object.assign(lingerBounds, { maxMs: 60_000, quietMs: 60_000 });
    const c = sender("/v1/chat/completions");
    await c.untilAnswered();
    const before = c.sent();
    await c.write(PIECE, () => c.sent() - before < 1024 ** 3);
    expect(c.isClosed()).toBe(true);
    // What the linger reads, and what the kernel's buffers between the two ends held (tens of
    // MiB at most).
    expect(c.sent() - before).toBeLessThan(lingerBounds.maxBytes + 128 * 1024 * 1024);
    expect(c.answer()?.status).toBe(413);
    expect(await openConnections()).toBe(0);
  }, 30_000);

  it("ends once it has been quiet that long, for a client that stops sending and stays", async () => {
    Object.assign(lingerBounds, { maxMs: 60_000, quietMs: 200, maxBytes: 1024 ** 3 });
    const c = sender("/v1/chat/completions");
    await c.untilAnswered();
    // The server's side closes; the client's, half-open and silent, learns of it only when it
    // next writes.
    expect(await openConnections()).toBe(0);
    expect(c.endedByServer()).toBe(true);
    expect(c.answer()?.status).toBe(413);
  }, 30_000);

  it("ends once the body has all come, for a client that then stays", async () => {
    Object.assign(lingerBounds, { maxMs: 60_000, quietMs: 60_000 });
    const c = sender("/v1/chat/completions", LIMIT + 24 * 1024 * 1024);
    await c.untilAnswered();
    await c.write(PIECE, () => true);
    expect(await openConnections()).toBe(0);
    expect(c.error()).toBeUndefined();
    expect(c.answer()?.status).toBe(413);
  }, 30_000);
});
