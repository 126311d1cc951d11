import { execFile } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { Failure } from "../../lib/errors.js";
import { readFixture } from "./openai/fixtures/fixtures.js";
import {
  createUpstreamHttp,
  errorCode,
  failureFromError,
  failureFromResponse,
  MAX_RETRY_AFTER_MS,
  retryAfterMs,
  type UpstreamHttp,
} from "./upstream-http.js";

const KEY = "sk-test-0123456789abcdef";

describe("failureFromResponse", () => {
  it("keeps the upstream's message, param and code for a rejected request", () => {
    const f = failureFromResponse("openai", 400, {}, readFixture("error-invalid-request.json"));
    expect(f).toMatchObject({
      status: 400,
      kind: "invalid_request",
      retryable: false,
      upstreamStatus: 400,
      provider: "openai",
      param: "temperature",
      code: "invalid_value",
    });
    expect(f.message).toBe(
      "provider openai rejected the request (400): Invalid value for 'temperature': expected a number between 0 and 2, but got 7 instead.",
    );
  });

  it("reads an error answered as a one-element array, as Gemini's streaming route may", () => {
    const body = JSON.stringify([
      {
        error: {
          code: 400,
          message: "* GenerateContentRequest.contents: contents is not specified",
          status: "INVALID_ARGUMENT",
        },
      },
    ]);
    const f = failureFromResponse("gemini", 400, {}, body);
    expect(f.message).toBe(
      "provider gemini rejected the request (400): * GenerateContentRequest.contents: contents is not specified",
    );
    expect(f.code).toBe("400");
  });

  it("maps 422 to invalid_request", () => {
    expect(failureFromResponse("p", 422, {}, "")).toMatchObject({
      status: 400,
      kind: "invalid_request",
      retryable: false,
    });
  });

  it("keeps 413: the body is too large for the upstream, not malformed", () => {
    const body = JSON.stringify({
      type: "error",
      error: {
        type: "request_too_large",
        message: "Request exceeds the maximum allowed number of bytes.",
      },
    });
    const f = failureFromResponse("anthropic", 413, {}, body);
    expect(f).toMatchObject({ status: 413, kind: "invalid_request", retryable: false });
    expect(f.message).toContain("(413)");
    expect(f.message).toContain("maximum allowed number of bytes");
  });

  it("names the provider and model when the upstream does not know the model", () => {
    const f = failureFromResponse("openai", 404, {}, readFixture("error-model-not-found.json"), {
      model: "gpt-9",
    });
    expect(f).toMatchObject({
      status: 502,
      kind: "upstream_error",
      retryable: true,
      code: "model_not_found",
    });
    expect(f.message).toContain('provider openai does not know model "gpt-9" (404)');
    expect(f.message).toContain("does not exist");
  });

  it.each([401, 403])("blames the gateway's credentials on %i and never echoes them", (status) => {
    const body = JSON.stringify({
      error: { message: `Incorrect API key provided: ${KEY.slice(0, 8)}****cdef`, code: "x" },
    });
    const f = failureFromResponse("openai", status, {}, body, { secrets: [KEY] });
    expect(f).toMatchObject({ status: 502, kind: "auth", retryable: true, upstreamStatus: status });
    expect(f.message).toBe(`provider openai rejected the gateway's credentials (${status})`);
  });

  it("maps 408 to a retryable timeout", () => {
    expect(failureFromResponse("p", 408, {}, "")).toMatchObject({
      status: 504,
      kind: "timeout",
      retryable: true,
    });
  });

  it("maps 429 to rate_limited with the upstream's Retry-After", () => {
    const f = failureFromResponse("p", 429, { "retry-after": "7" }, "");
    expect(f).toMatchObject({ status: 429, kind: "rate_limited", retryable: true });
    expect(f.retryAfterMs).toBe(7000);
  });

  it("maps 500 and 502 to a retryable upstream_error and 503 to upstream_unavailable", () => {
    expect(failureFromResponse("p", 500, {}, "boom")).toMatchObject({
      status: 502,
      kind: "upstream_error",
      retryable: true,
      message: "provider p failed (500): boom",
    });
    expect(failureFromResponse("p", 502, {}, "")).toMatchObject({ status: 502, retryable: true });
    expect(failureFromResponse("p", 503, {}, "")).toMatchObject({
      status: 503,
      kind: "upstream_unavailable",
      retryable: true,
    });
  });

  it("scrubs the API key from the upstream's message", () => {
    const f = failureFromResponse("p", 500, {}, `{"error":{"message":"bad key ${KEY} here"}}`, {
      secrets: [KEY],
    });
    expect(f.message).toBe("provider p failed (500): bad key [redacted] here");
  });

  it("cuts a long text body to 500 characters and collapses whitespace", () => {
    const f = failureFromResponse("p", 502, {}, `<html>\n  ${"x".repeat(2000)}</html>`);
    const said = f.message.slice("provider p failed (502): ".length);
    expect(said.startsWith("<html> xxx")).toBe(true);
    expect(said.length).toBe(501);
  });

  it("reads Anthropic's and Gemini's error shapes too", () => {
    const anthropic = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}';
    expect(failureFromResponse("a", 529, {}, anthropic).message).toBe(
      "provider a failed (529): Overloaded",
    );
    const gemini =
      '{"error":{"code":400,"message":"API key not valid","status":"INVALID_ARGUMENT"}}';
    expect(failureFromResponse("g", 400, {}, gemini)).toMatchObject({ code: "400" });
  });
});

describe("retryAfterMs", () => {
  it("reads seconds, an HTTP date and retry-after-ms", () => {
    const now = Date.parse("2025-01-01T00:00:00Z");
    expect(retryAfterMs({ "retry-after": "2" }, now)).toBe(2000);
    expect(retryAfterMs({ "retry-after": "0.5" }, now)).toBe(500);
    expect(retryAfterMs({ "retry-after": "Wed, 01 Jan 2025 00:00:30 GMT" }, now)).toBe(30_000);
    expect(retryAfterMs({ "retry-after": "Tue, 31 Dec 2024 00:00:00 GMT" }, now)).toBe(0);
    expect(retryAfterMs({ "retry-after-ms": "250", "retry-after": "9" }, now)).toBe(250);
    expect(retryAfterMs({ "retry-after": "soon" }, now)).toBeUndefined();
    expect(retryAfterMs({}, now)).toBeUndefined();
  });

  it("takes a wait longer than MAX_RETRY_AFTER_MS as that long", () => {
    const now = Date.parse("2025-01-01T00:00:00Z");
    expect(retryAfterMs({ "retry-after": "300" }, now)).toBe(MAX_RETRY_AFTER_MS);
    expect(retryAfterMs({ "retry-after": "86400" }, now)).toBe(MAX_RETRY_AFTER_MS);
    expect(retryAfterMs({ "retry-after": "1e300" }, now)).toBe(MAX_RETRY_AFTER_MS);
    expect(retryAfterMs({ "retry-after-ms": "99999999999" }, now)).toBe(MAX_RETRY_AFTER_MS);
    expect(retryAfterMs({ "retry-after": "Fri, 01 Jan 2100 00:00:00 GMT" }, now)).toBe(
      MAX_RETRY_AFTER_MS,
    );
  });
});

describe("failureFromError", () => {
  it("reports a cancelled call when the signal was aborted", () => {
    const controller = new AbortController();
    controller.abort();
    const f = failureFromError("p", new Error("aborted"), controller.signal);
    expect(f).toMatchObject({ status: 499, kind: "cancelled" });
  });

  it("finds the code inside causes and aggregates", () => {
    const refused = Object.assign(new Error("connect"), { code: "ECONNREFUSED" });
    expect(errorCode(new AggregateError([refused]))).toBe("ECONNREFUSED");
    expect(errorCode(new TypeError("fetch failed", { cause: refused }))).toBe("ECONNREFUSED");
    expect(failureFromError("p", { code: "UND_ERR_HEADERS_TIMEOUT" })).toMatchObject({
      status: 504,
      kind: "timeout",
    });
  });
});

describe("createUpstreamHttp", () => {
  let http: UpstreamHttp | undefined;
  afterEach(async () => {
    await http?.close();
    http = undefined;
  });

  it("reports an upstream that refuses connections as unreachable", async () => {
    // Take a free port and release it, so nothing listens there.
    const probe = createServer().listen(0, "127.0.0.1");
    await once(probe, "listening");
    const { port } = probe.address() as { port: number };
    await new Promise((resolve) => probe.close(resolve));

    http = createUpstreamHttp({
      provider: "local",
      baseUrl: `http://127.0.0.1:${port}/v1`,
      headers: {},
    });
    const error = await http.get("/models", AbortSignal.timeout(5000)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Failure);
    expect(error).toMatchObject({
      status: 502,
      kind: "upstream_unavailable",
      retryable: true,
      message: "provider local unreachable: ECONNREFUSED",
    });
  });

  it("answers a request after close() as unavailable, without opening a connection", async () => {
    const server = createServer((socket) => socket.destroy()).listen(0, "127.0.0.1");
    await once(server, "listening");
    let connections = 0;
    server.on("connection", () => connections++);
    const { port } = server.address() as { port: number };
    try {
      // Closed before its first request: the pool was never made (undici loads on first use).
      const closed = createUpstreamHttp({
        provider: "p",
        baseUrl: `http://127.0.0.1:${port}/v1`,
        headers: {},
      });
      await closed.close();
      await expect(closed.get("/models", AbortSignal.timeout(5000))).rejects.toMatchObject({
        kind: "upstream_unavailable",
        message: "provider p unreachable: UND_ERR_CLOSED",
      });
      expect(connections).toBe(0);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("refuses to start a request whose signal is already aborted", async () => {
    http = createUpstreamHttp({ provider: "p", baseUrl: "http://127.0.0.1:9/v1", headers: {} });
    const controller = new AbortController();
    controller.abort();
    await expect(http.get("/models", controller.signal)).rejects.toMatchObject({
      kind: "cancelled",
    });
  });

  it("keeps WebAssembly (undici's llhttp) off TurboFan once undici is loaded", async () => {
    // A hot WebAssembly loop in a fresh process, with and without loading undici's parts first:
    // without, V8 tiers it up to TurboFan (the control); with, it stays on Liftoff.
    const module = fileURLToPath(new URL("./upstream-http.ts", import.meta.url));
    const script = (loadUndici: boolean) => `
      if (${loadUndici}) await (await import(${JSON.stringify(module)})).loadUndiciParts();
      // (func (export "sum") (param i32) (result i32) (local i32): adds n + ... + 1 in a loop)
      const bytes = new Uint8Array([0,97,115,109,1,0,0,0,1,6,1,96,1,127,1,127,3,2,1,0,7,7,1,3,
        115,117,109,0,0,10,27,1,25,1,1,127,3,64,32,1,32,0,106,33,1,32,0,65,1,107,34,0,13,0,11,32,
        1,11]);
      const sum = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.sum;
      const isTurboFan = new Function("f", "return %IsTurboFanFunction(f)");
      const deadline = Date.now() + 3000;
      let turboFan = false;
      while (!turboFan && Date.now() < deadline) {
        for (let i = 0; i < 2000; i++) sum(1000);
        await new Promise((r) => setTimeout(r, 10));
        turboFan = isTurboFan(sum);
      }
      process.stdout.write(JSON.stringify({ turboFan, sum: sum(1000) }));
    `;
    const run = async (loadUndici: boolean) => {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [
          "--import",
          "tsx",
          "--allow-natives-syntax",
          "--input-type=module",
          "-e",
          script(loadUndici),
        ],
        { cwd: fileURLToPath(new URL("../../..", import.meta.url)), timeout: 30_000 },
      );
      return JSON.parse(stdout);
    };
    const [control, connector] = await Promise.all([run(false), run(true)]);
    expect(control).toEqual({ turboFan: true, sum: 500500 });
    expect(connector).toEqual({ turboFan: false, sum: 500500 });
  });

  it("posts and reads an answer through undici's own Pool and request modules alone", async () => {
    // In a fresh process, so that no other test's import of undici hides a load of its entry.
    const module = fileURLToPath(new URL("./upstream-http.ts", import.meta.url));
    const script = `
      import { createServer } from "node:http";
      import { createRequire } from "node:module";
      const { createUpstreamHttp } = await import(${JSON.stringify(module)});
      const server = createServer((req, res) => {
        let body = "";
        req.on("data", (c) => (body += c)).on("end", () => {
          res.setHeader("content-type", "application/json");
          res.end(JSON.stringify({ got: JSON.parse(body), auth: req.headers.authorization }));
        });
      }).listen(0, "127.0.0.1");
      await new Promise((r) => server.once("listening", r));
      const http = createUpstreamHttp({
        provider: "p",
        baseUrl: "http://127.0.0.1:" + server.address().port + "/v1",
        headers: { authorization: "Bearer k" },
      });
      const answer = await http.postJson("/chat/completions", { n: 1 }, AbortSignal.timeout(5000));
      let text = "";
      for await (const chunk of answer.body) text += chunk;
      await http.close();
      server.close();
      const entry = createRequire(import.meta.url).resolve("undici");
      process.stdout.write(JSON.stringify({
        status: answer.status,
        text,
        entryLoaded: entry in createRequire(import.meta.url).cache,
      }));
    `;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script],
      { cwd: fileURLToPath(new URL("../../..", import.meta.url)), timeout: 30_000 },
    );
    expect(JSON.parse(stdout)).toEqual({
      status: 200,
      text: JSON.stringify({ got: { n: 1 }, auth: "Bearer k" }),
      entryLoaded: false,
    });
  });
});
