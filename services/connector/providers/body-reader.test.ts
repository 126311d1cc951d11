import http from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BodyReader } from "./body-reader.js";
import { createUpstreamHttp, type UpstreamHttp } from "./upstream-http.js";

// A real HTTP server, and bodies as the providers get them (undici's, through upstream-http).
let server: http.Server;
let upstream: UpstreamHttp;
/** Each request's response, for the test to write and end (or break). */
const responses: http.ServerResponse[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.flushHeaders();
    responses.push(res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  upstream = createUpstreamHttp({
    provider: "test",
    baseUrl: `http://127.0.0.1:${port}`,
    headers: {},
  });
});

afterAll(async () => {
  await upstream.close();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

async function open() {
  const response = await upstream.postJson("/stream", {}, AbortSignal.timeout(10_000));
  const res = responses.shift();
  if (!res) throw new Error("no response on the server");
  return { body: response.body, res };
}

const text = (bytes: Buffer | undefined) => bytes?.toString("utf8");

describe("BodyReader", () => {
  it("hands out each write as it arrives, then undefined at the end", async () => {
    const { body, res } = await open();
    const reader = new BodyReader(body);
    const first = reader.read();
    res.write("one");
    expect(text(await first)).toBe("one");
    res.write("two");
    expect(text(await reader.read())).toBe("two");
    res.end("three");
    let rest = "";
    for (let b = await reader.read(); b !== undefined; b = await reader.read()) rest += text(b);
    expect(rest).toBe("three");
    // Asked again after the end, it says the end again.
    expect(await reader.read()).toBeUndefined();
  });

  it("rejects the read under way when the connection breaks", async () => {
    const { body, res } = await open();
    const reader = new BodyReader(body);
    res.write("partial");
    expect(text(await reader.read())).toBe("partial");
    const pending = reader.read();
    res.socket?.destroy();
    await expect(pending).rejects.toThrow();
    // And every read after it.
    await expect(reader.read()).rejects.toThrow();
  });

  it("rejects with undici's abort error when the body is destroyed under it", async () => {
    const { body, res } = await open();
    const reader = new BodyReader(body);
    const pending = reader.read();
    body.destroy();
    await expect(pending).rejects.toMatchObject({ code: "UND_ERR_ABORTED" });
    res.end();
  });

  // undici always destroys its bodies with an error; a plain stream need not.
  it("rejects with a premature close when a stream closes before its end without an error", async () => {
    const stream = new Readable({ read() {} });
    const reader = new BodyReader(stream);
    stream.push("a");
    expect(text(await reader.read())).toBe("a");
    const pending = reader.read();
    stream.destroy();
    await expect(pending).rejects.toMatchObject({ code: "ERR_STREAM_PREMATURE_CLOSE" });
  });

  it("knows a body that ended before it was made", async () => {
    const { body, res } = await open();
    res.end("all");
    let got = "";
    for await (const b of body) got += text(b as Buffer);
    expect(got).toBe("all");
    expect(await new BodyReader(body).read()).toBeUndefined();
  });

  it("lets go of the body on release(), so it can be drained", async () => {
    const { body, res } = await open();
    const reader = new BodyReader(body);
    res.write("head");
    expect(text(await reader.read())).toBe("head");
    reader.release();
    expect(body.listenerCount("readable")).toBe(0);
    const drained = body.dump();
    res.end("tail");
    await drained;
    expect(body.readableEnded || body.destroyed).toBe(true);
  });

  it("ends a read still waiting when it lets go of the body, as at the body's end", async () => {
    const { body, res } = await open();
    const reader = new BodyReader(body);
    const waiting = reader.read();
    reader.release();
    expect(await waiting).toBeUndefined();
    body.destroy();
    res.destroy();
  });
});
