import { AsyncLocalStorage, AsyncResource } from "node:async_hooks";
import { once } from "node:events";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forgetSentHeaders, requestStream } from "./h2-request.js";

let server: http2.Http2Server;
let origin: string;

beforeAll(async () => {
  server = http2.createServer();
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200 });
    stream.end("ok");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

/** The answer's body, read to the end. */
async function body(stream: http2.ClientHttp2Stream): Promise<string> {
  let text = "";
  for await (const chunk of stream) text += String(chunk);
  return text;
}

describe("requestStream", () => {
  it("makes the request, then gives AsyncResource#bind back", async () => {
    const nodeBind = AsyncResource.prototype.bind;
    const session = http2.connect(origin);
    try {
      const stream = requestStream(session, { ":path": "/" }, { endStream: true });
      expect(AsyncResource.prototype.bind).toBe(nodeBind);
      expect(await body(stream)).toBe("ok");
    } finally {
      session.close();
    }
  });

  it("gives AsyncResource#bind back when the request throws", () => {
    const nodeBind = AsyncResource.prototype.bind;
    const session = http2.connect(origin);
    session.destroy();
    expect(() => requestStream(session, { ":path": "/" }, {})).toThrow(
      expect.objectContaining({ code: "ERR_HTTP2_INVALID_SESSION" }),
    );
    expect(AsyncResource.prototype.bind).toBe(nodeBind);
  });

  it("starts a request made while connecting in the caller's async context, as Node's does", async () => {
    const context = new AsyncLocalStorage<string>();
    const seen: Array<string | undefined> = [];
    for (const request of [
      (s: http2.ClientHttp2Session) => s.request({ ":path": "/" }, { endStream: true }),
      (s: http2.ClientHttp2Session) => requestStream(s, { ":path": "/" }, { endStream: true }),
    ]) {
      const session = http2.connect(origin); // not connected yet: the request waits for it
      try {
        const stream = context.run("caller", () => request(session));
        const [store] = await Promise.all([
          new Promise((resolve) => stream.once("ready", () => resolve(context.getStore()))),
          body(stream),
        ]);
        seen.push(store as string | undefined);
      } finally {
        session.close();
      }
    }
    expect(seen).toEqual(["caller", "caller"]);
  });
});

describe("forgetSentHeaders", () => {
  it("drops both ends' copies of the sent headers while the stream goes on", async () => {
    // A stream that stays open after its headers: the answer's body comes when the client asks.
    const holder = http2.createServer();
    const seen: { before?: unknown; after?: unknown } = {};
    holder.on("stream", (stream, headers) => {
      stream.respond({ ":status": 200, "x-echo": String(headers["x-question"]) });
      seen.before = stream.sentHeaders?.["x-echo"];
      forgetSentHeaders(stream);
      seen.after = stream.sentHeaders;
      stream.on("data", (chunk) => stream.end(`answer to ${chunk}`));
    });
    holder.listen(0, "127.0.0.1");
    await once(holder, "listening");
    const session = http2.connect(`http://127.0.0.1:${(holder.address() as AddressInfo).port}`);
    try {
      const stream = requestStream(
        session,
        { ":method": "POST", ":path": "/", "x-question": "why" },
        { endStream: false },
      );
      expect(stream.sentHeaders?.["x-question"]).toBe("why");
      forgetSentHeaders(stream);
      expect(stream.sentHeaders).toBeUndefined();
      const [head] = (await once(stream, "response")) as [http2.IncomingHttpHeaders];
      expect(head["x-echo"]).toBe("why");
      expect(seen).toEqual({ before: "why", after: undefined });
      stream.end("this");
      expect(await body(stream)).toBe("answer to this");
    } finally {
      session.close();
      await new Promise((resolve) => holder.close(resolve));
    }
  });
});
