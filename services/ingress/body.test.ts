import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { Failure } from "../lib/errors.js";
import { readBody } from "./body.js";

const LIMIT = 1024;

let server: http.Server;
let url: string;
/** What readBody made of each request, in order. */
const outcomes: Array<Promise<Buffer>> = [];
/** Each request, as the server got it. */
const requests: http.IncomingMessage[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const read = readBody(req, LIMIT);
    outcomes.push(read);
    requests.push(req);
    // As the ingress answers (rest.ts): a refused body closes the connection.
    read.then(
      (body) => res.end(`read ${body.length}`),
      (err: Failure) => res.writeHead(err.status ?? 500, { connection: "close" }).end("refused"),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

/** Sends `parts` as a chunked body, one write each; resolves with the answer, or the error. */
function send(parts: string[], opts: { abortAfter?: boolean } = {}): Promise<string> {
  return new Promise((resolve) => {
    const req = http.request(url, { method: "POST", headers: { "transfer-encoding": "chunked" } });
    req.on("error", (err) => resolve(`error: ${(err as NodeJS.ErrnoException).code}`));
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (s: string) => {
        text += s;
      });
      res.on("end", () => resolve(text));
    });
    for (const part of parts) req.write(part);
    if (opts.abortAfter) setTimeout(() => req.destroy(), 50);
    else req.end();
  });
}

it("reads a body that arrives in pieces, whole", async () => {
  expect(await send(["a".repeat(300), "b".repeat(300), "c".repeat(300)])).toBe("read 900");
  expect((await outcomes.at(-1))?.toString()).toBe(
    `${"a".repeat(300)}${"b".repeat(300)}${"c".repeat(300)}`,
  );
});

it("refuses a body without a declared length once it passes the limit, and reads no further", async () => {
  const answer = await send(["a".repeat(800), "b".repeat(800), "c".repeat(800)]);
  const err = await outcomes.at(-1)?.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Failure);
  expect(err).toMatchObject({ status: 413, code: "request_too_large" });
  expect(answer).toBe("refused");
  expect(requests.at(-1)?.isPaused()).toBe(true);
});

it("fails as the client's doing (499, cancelled) when it goes away before the body's end", async () => {
  await send(["a".repeat(100)], { abortAfter: true });
  const err = await outcomes.at(-1)?.catch((e: unknown) => e);
  expect(err).toBeInstanceOf(Failure);
  expect(err).toMatchObject({ status: 499, kind: "cancelled" });
});

it("gives up on a body that stops arriving (408) once its time is up", async () => {
  const server = http.createServer((req, res) => {
    readBody(req, LIMIT, 150).then(
      () => res.end("read"),
      (err: Failure) => res.writeHead(err.status, { connection: "close" }).end(err.code),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const port = (server.address() as AddressInfo).port;
    const answer = await new Promise<string>((resolve) => {
      const req = http.request(`http://127.0.0.1:${port}`, {
        method: "POST",
        headers: { "content-length": "100" },
      });
      req.on("response", (res) => {
        let body = "";
        res.on("data", (b: Buffer) => {
          body += b.toString();
        });
        res.on("end", () => resolve(`${res.statusCode} ${body}`));
      });
      req.on("error", () => resolve("error"));
      req.write("only part of it"); // and nothing more
    });
    expect(answer).toBe("408 request_timeout");
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});
