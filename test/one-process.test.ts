import http2 from "node:http2";
import net from "node:net";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import OpenAI from "openai";
import { request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { metricValue } from "./helpers/metrics.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// All four services in one process, an OpenAI-compatible upstream on a real port, and the
// official openai client against the ingress.
let primary: OpenAIUpstream;
let backup: OpenAIUpstream;
let gw: RunningFabric;
let client: OpenAI;

beforeAll(async () => {
  primary = await startOpenAIUpstream({
    behavior: { kind: "answer", text: "Hello from primary." },
  });
  backup = await startOpenAIUpstream({ behavior: { kind: "answer", text: "Hello from backup." } });
  const config = testConfig(`
server: { max_body_bytes: 65536 }
providers:
  primary: { type: openai, base_url: "${primary.url}", api_key: sk-primary-secret }
  backup: { type: openai, base_url: "${backup.url}", api_key: sk-backup-secret }
  mock: { type: mock, tokens: 5 }
models:
  gpt-test:
    targets:
      - { provider: primary, model: up-model-a }
      - { provider: backup, model: up-model-b }
  solo:
    targets: [{ provider: primary, model: up-solo }]
  demo:
    targets: [{ provider: mock, model: mock-1 }]
routing:
  retries: 2
  backoff: { base_ms: 1, max_ms: 5 }
  timeouts: { first_token_ms: 2000, idle_ms: 2000, total_ms: 10000 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`);
  gw = await startOneProcess(config);
  client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "unused", maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await primary?.close();
  await backup?.close();
});

afterEach(() => {
  primary.setBehavior({ kind: "answer", text: "Hello from primary." });
  backup.setBehavior({ kind: "answer", text: "Hello from backup." });
  primary.requests.length = 0;
  backup.requests.length = 0;
});

describe("OpenAI chat completions through one process", () => {
  it("answers a non-streaming request with the upstream's content, usage and route headers", async () => {
    const { data, response } = await client.chat.completions
      .create({ model: "gpt-test", messages: [{ role: "user", content: "hi" }] })
      .withResponse();
    expect(data.choices[0]?.message.content).toBe("Hello from primary.");
    expect(data.choices[0]?.finish_reason).toBe("stop");
    expect(data.usage?.total_tokens).toBeGreaterThan(0);
    expect(response.headers.get("x-switchyard-provider")).toBe("primary");
    expect(response.headers.get("x-switchyard-model")).toBe("up-model-a");
    expect(response.headers.get("x-switchyard-attempts")).toBe("1");
    expect(response.headers.get("x-request-id")).toBeTruthy();
    // The upstream got the upstream model name and the gateway's own key, not the client's.
    const sent = primary.requests.at(-1);
    expect((sent?.body as { model?: string } | undefined)?.model).toBe("up-model-a");
    expect(sent?.headers.authorization).toBe("Bearer sk-primary-secret");
  });

  it("streams chunk by chunk and reassembles to the same text, with usage when asked", async () => {
    primary.setBehavior({ kind: "answer", text: "one two three four", chunks: 4 });
    const stream = await client.chat.completions.create({
      model: "gpt-test",
      messages: [{ role: "user", content: "count" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const pieces: string[] = [];
    let finish: string | null | undefined;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (c?.delta.content) pieces.push(c.delta.content);
      if (c?.finish_reason) finish = c.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(pieces.length).toBe(4);
    expect(pieces.join("")).toBe("one two three four");
    expect(finish).toBe("stop");
    expect(usage?.completion_tokens).toBeGreaterThan(0);
  });

  it("omits the usage chunk when the client did not ask for it", async () => {
    const res = await request(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "gpt-test",
        messages: [{ role: "user", content: "x" }],
        stream: true,
      }),
    });
    const text = await res.body.text();
    expect(res.headers["content-type"]).toContain("text/event-stream");
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(text).not.toContain('"usage"');
  });

  it("passes tool calls through, streamed fragments reassembled exactly", async () => {
    const args = '{"city":"Paris","unit":"celsius"}';
    primary.setBehavior({
      kind: "answer",
      text: "",
      toolCalls: [{ id: "call_abc", name: "get_weather", arguments: args, fragments: 4 }],
      finishReason: "tool_calls",
    });
    const tools: OpenAI.ChatCompletionTool[] = [
      {
        type: "function",
        function: {
          name: "get_weather",
          parameters: { type: "object", properties: { city: { type: "string" } } },
        },
      },
    ];
    const stream = await client.chat.completions.create({
      model: "gpt-test",
      messages: [{ role: "user", content: "weather?" }],
      tools,
      stream: true,
    });
    let id = "";
    let name = "";
    let argText = "";
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      for (const tc of c?.delta.tool_calls ?? []) {
        id += tc.id ?? "";
        name += tc.function?.name ?? "";
        argText += tc.function?.arguments ?? "";
      }
      if (c?.finish_reason) finish = c.finish_reason;
    }
    expect({ id, name, argText, finish }).toEqual({
      id: "call_abc",
      name: "get_weather",
      argText: args,
      finish: "tool_calls",
    });
    // The tool definition reached the upstream intact.
    expect((primary.requests.at(-1)?.body as { tools?: unknown } | undefined)?.tools).toEqual(
      tools,
    );

    const full = await client.chat.completions.create({
      model: "gpt-test",
      messages: [{ role: "user", content: "weather?" }],
      tools,
    });
    expect(full.choices[0]?.message.tool_calls).toEqual([
      { id: "call_abc", type: "function", function: { name: "get_weather", arguments: args } },
    ]);
    expect(full.choices[0]?.finish_reason).toBe("tool_calls");
  });

  it("passes request fields it does not model through to OpenAI-compatible upstreams", async () => {
    await client.chat.completions.create({
      model: "gpt-test",
      messages: [{ role: "user", content: "hi" }],
      logit_bias: { "50256": -100 },
      temperature: 0.2,
      max_tokens: 7,
    });
    const body = primary.requests.at(-1)?.body as Record<string, unknown>;
    expect(body.logit_bias).toEqual({ "50256": -100 });
    expect(body.temperature).toBe(0.2);
    expect(body.max_tokens).toBe(7);
  });
});

describe("failover before the first token", () => {
  it("tries the next target when the first answers 500", async () => {
    primary.setBehavior({ kind: "error", status: 500 });
    const { data, response } = await client.chat.completions
      .create({ model: "gpt-test", messages: [{ role: "user", content: "hi" }] })
      .withResponse();
    expect(data.choices[0]?.message.content).toBe("Hello from backup.");
    expect(response.headers.get("x-switchyard-provider")).toBe("backup");
    expect(response.headers.get("x-switchyard-attempts")).toBe("2");
    expect(primary.requests.length).toBe(1);
  });

  it("tries the next target on 429 and when the first upstream hangs past first_token_ms", async () => {
    // No Retry-After: that would cool the target down for the tests that follow.
    primary.setBehavior({ kind: "error", status: 429 });
    const a = await client.chat.completions.create({
      model: "gpt-test",
      messages: [{ role: "user", content: "a" }],
      stream: true,
    });
    let text = "";
    for await (const c of a) text += c.choices[0]?.delta.content ?? "";
    expect(text).toBe("Hello from backup.");
  });

  it("returns a 400 from the upstream at once, without trying another target", async () => {
    primary.setBehavior({
      kind: "error",
      status: 400,
      body: {
        error: {
          message: "Invalid 'messages': bad",
          type: "invalid_request_error",
          param: "messages",
          code: null,
        },
      },
    });
    const err = await client.chat.completions
      .create({ model: "gpt-test", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.APIError>).message).toContain("Invalid 'messages'");
    expect(backup.requests.length).toBe(0);
  });

  it("gives 502 with an OpenAI envelope when every target fails, never leaking upstream keys", async () => {
    primary.setBehavior({
      kind: "error",
      status: 503,
      body: { error: { message: "key sk-primary-secret overloaded" } },
    });
    backup.setBehavior({ kind: "error", status: 502 });
    const res = await request(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-test", messages: [{ role: "user", content: "x" }] }),
    });
    const text = await res.body.text();
    expect(res.statusCode).toBeGreaterThanOrEqual(502);
    expect(res.statusCode).toBeLessThanOrEqual(503);
    expect(JSON.parse(text).error.type).toBeTruthy();
    expect(text).not.toContain("sk-primary-secret");
    expect(text).not.toContain("sk-backup-secret");
  });

  it("ends a stream that breaks after its first token with an error event and no [DONE]", async () => {
    primary.setBehavior({
      kind: "answer",
      text: "a b c d",
      chunks: 4,
      // Spaced out so the first chunks reach the client before the connection is reset.
      chunkDelayMs: 30,
      cutAfterChunks: 2,
      cutMode: "destroy",
    });
    const res = await request(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "gpt-test",
        messages: [{ role: "user", content: "x" }],
        stream: true,
      }),
    });
    const text = await res.body.text();
    expect(res.statusCode).toBe(200);
    expect(text).toContain('"error"');
    expect(text).not.toContain("[DONE]");
    // The SDK surfaces it as an error rather than a short answer.
    const stream = await client.chat.completions.create({
      model: "gpt-test",
      messages: [{ role: "user", content: "x" }],
      stream: true,
    });
    await expect(async () => {
      for await (const _ of stream) {
        // drain
      }
    }).rejects.toThrow();
    // No retry after tokens were sent.
    expect(backup.requests.length).toBe(0);
  });
});

describe("cancellation", () => {
  it("cancels the upstream request when the client disconnects mid-stream", async () => {
    primary.setBehavior({ kind: "answer", text: "a b c d e f g h", chunks: 8, chunkDelayMs: 200 });
    const ac = new AbortController();
    const stream = await client.chat.completions.create(
      { model: "solo", messages: [{ role: "user", content: "x" }], stream: true },
      { signal: ac.signal },
    );
    for await (const _ of stream) {
      ac.abort();
      break;
    }
    const upstreamReq = primary.requests.at(-1);
    expect(upstreamReq).toBeDefined();
    // Resolves only when the gateway closed its upstream connection; the test would time out otherwise.
    await upstreamReq?.closed;
    expect(upstreamReq?.aborted).toBe(true);
  });

  it.each([
    ["mid-stream", { kind: "answer", text: "a b c d e f g h", chunks: 8, chunkDelayMs: 200 }],
    ["before the first token", { kind: "hang" }],
  ] as const)(
    "cancels the upstream request when an HTTP/2 client resets its stream %s",
    async (_, behavior) => {
      primary.setBehavior(behavior);
      const session = http2.connect(gw.url);
      try {
        const stream = session.request({
          ":method": "POST",
          ":path": "/v1/chat/completions",
          "content-type": "application/json",
        });
        stream.on("error", () => {});
        stream.end(
          JSON.stringify({
            model: "solo",
            stream: true,
            messages: [{ role: "user", content: "x" }],
          }),
        );
        if (behavior.kind === "hang") {
          while (primary.requests.length === 0) await new Promise((r) => setTimeout(r, 10));
        } else {
          await new Promise((r) => stream.once("data", r));
        }
        stream.close(http2.constants.NGHTTP2_CANCEL);
        const upstreamReq = primary.requests.at(-1);
        await upstreamReq?.closed;
        expect(upstreamReq?.aborted).toBe(true);
        // Nothing stays counted as in flight.
        const inflight = async () =>
          metricValue(
            await (await request(`${gw.url}/metrics`)).body.text(),
            "switchyard_inflight_requests",
            { api: "openai" },
          );
        for (let i = 0; i < 100 && (await inflight()) !== 0; i++) {
          await new Promise((r) => setTimeout(r, 20));
        }
        expect(await inflight()).toBe(0);
      } finally {
        session.close();
      }
    },
  );

  it("cancels the upstream request when a non-streaming client disconnects", async () => {
    primary.setBehavior({ kind: "hang" });
    const ac = new AbortController();
    const pending = client.chat.completions
      .create({ model: "solo", messages: [{ role: "user", content: "x" }] }, { signal: ac.signal })
      .catch(() => "aborted");
    while (primary.requests.length === 0) await new Promise((r) => setTimeout(r, 10));
    ac.abort();
    expect(await pending).toBe("aborted");
    await primary.requests[0]?.closed;
    expect(primary.requests[0]?.aborted).toBe(true);
  });
});

describe("bad input gets the OpenAI envelope and the right status", () => {
  const post = (body: string | Buffer, headers: Record<string, string> = {}) =>
    request(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body,
    });

  it.each([
    ["malformed JSON", "{not json", 400, /parse the JSON body/],
    ["a JSON array", "[1,2]", 400, /object/],
    [
      "missing model",
      JSON.stringify({ messages: [{ role: "user", content: "x" }] }),
      400,
      /'model'/,
    ],
    ["missing messages", JSON.stringify({ model: "gpt-test" }), 400, /'messages'/],
    ["wrong type", JSON.stringify({ model: "gpt-test", messages: "hi" }), 400, /messages/],
    [
      "unknown model",
      JSON.stringify({ model: "nope", messages: [{ role: "user", content: "x" }] }),
      404,
      /'nope'/,
    ],
  ])("%s", async (_name, body, status, message) => {
    const res = await post(body);
    const json = (await res.body.json()) as { error: { message: string; type: string } };
    expect(res.statusCode).toBe(status);
    expect(json.error.message).toMatch(message);
    expect(json.error.type).toBeTruthy();
    expect(res.headers["x-request-id"]).toBeTruthy();
  });

  it("does not quote the body around a JSON syntax error (it would be prompt in the log line)", async () => {
    const res = await post(
      `{"model":"gpt-test","messages":[{"role":"user","content":'my password is hunter2'}]}`,
    );
    const json = (await res.body.json()) as { error: { message: string } };
    expect(res.statusCode).toBe(400);
    expect(json.error.message).toMatch(/parse the JSON body/);
    expect(json.error.message).not.toMatch(/passwo|hunter/);
  });

  it("refuses a body that is not valid UTF-8 with 400 in each API's envelope, naming the offset, never the bytes", async () => {
    const head =
      '{"model":"gpt-test","max_tokens":5,"messages":[{"role":"user","content":"my secret ';
    // 0xC3 opens a two-byte sequence that "(" does not continue: decoded leniently, it would
    // reach the upstream as U+FFFD.
    const body = Buffer.concat([Buffer.from(head), Buffer.from([0xc3]), Buffer.from('("}]}')]);
    const openai = await post(body);
    expect(openai.statusCode).toBe(400);
    const o = (await openai.body.json()) as { error: { message: string; type: string } };
    expect(o.error.type).toBe("invalid_request_error");
    expect(o.error.message).toBe(
      `The request body is not valid UTF-8 (an invalid byte sequence starts at byte offset ${head.length})`,
    );
    const anthropic = await request(`${gw.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    expect(anthropic.statusCode).toBe(400);
    const a = (await anthropic.body.json()) as {
      type: string;
      error: { type: string; message: string };
    };
    expect([a.type, a.error.type]).toEqual(["error", "invalid_request_error"]);
    expect(a.error.message).toMatch(/not valid UTF-8 .*byte offset \d+/);
    const sent = [...primary.requests, ...backup.requests].map((r) => JSON.stringify(r.body ?? ""));
    expect(sent.some((b) => b.includes("my secret"))).toBe(false);
  });

  it("takes a body that opens with a UTF-8 byte-order mark, as JSON parsers of bytes may (RFC 8259)", async () => {
    const json = JSON.stringify({
      model: "gpt-test",
      messages: [{ role: "user", content: "héllo" }],
    });
    const res = await post(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(json)]));
    expect(res.statusCode).toBe(200);
    await res.body.dump();
    expect(primary.requests.some((r) => JSON.stringify(r.body ?? "").includes('"héllo"'))).toBe(
      true,
    );
  });

  it("refuses JSON nested deeper than the gateway can re-serialise with a 400, on every route", async () => {
    const deep = `${"[".repeat(20_000)}${"]".repeat(20_000)}`;
    const messages = '[{"role":"user","content":"x"}]';
    for (const [path, body] of [
      ["/v1/chat/completions", `{"model":"gpt-test","messages":${messages},"extra_x":${deep}}`],
      [
        "/v1/chat/completions",
        `{"model":"gpt-test","messages":${messages},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","x":${deep}}}}]}`,
      ],
      [
        "/v1/messages",
        `{"model":"gpt-test","max_tokens":5,"messages":${messages},"tools":[{"name":"f","input_schema":{"type":"object","x":${deep}}}]}`,
      ],
      ["/v1/embeddings", `{"model":"gpt-test","input":"x","extra_x":${deep}}`],
    ] as const) {
      const res = await request(`${gw.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      const text = await res.body.text();
      expect([path, res.statusCode]).toEqual([path, 400]);
      expect(text).toMatch(/nested too deeply/);
    }
  });

  it("refuses a body over max_body_bytes with 413", async () => {
    const big = JSON.stringify({
      model: "gpt-test",
      messages: [{ role: "user", content: "x".repeat(70_000) }],
    });
    const res = await post(big);
    expect(res.statusCode).toBe(413);
    expect(((await res.body.json()) as { error: { message: string } }).error.message).toMatch(
      /limit/,
    );
  });

  it("refuses a body without a declared length with 413 once it passes max_body_bytes", async () => {
    const piece = JSON.stringify({ model: "gpt-test", messages: [] }).padEnd(16_384, " ");
    // A stream body goes out chunked, with no content-length.
    async function* pieces() {
      for (let i = 0; i < 8; i++) yield Buffer.from(piece);
    }
    const refused = await request(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: Readable.from(pieces()),
    });
    expect(refused.statusCode).toBe(413);
    expect(refused.headers["content-length"]).toBeDefined();
    expect(((await refused.body.json()) as { error: { message: string } }).error.message).toMatch(
      /limit/,
    );
    // The gateway goes on serving.
    const next = await post(JSON.stringify({ model: "gpt-test", messages: [] }));
    expect(next.statusCode).toBe(400);
    await next.body.dump();
  });

  it("keeps an HTTP/2 connection serving after many bodies refused for their size", async () => {
    const session = http2.connect(gw.url);
    session.on("error", () => {});
    const post = (body: Buffer) =>
      new Promise<number>((resolve) => {
        const stream = session.request({
          ":method": "POST",
          ":path": "/v1/chat/completions",
          "content-type": "application/json",
        });
        let status = 0;
        stream.on("response", (h) => {
          status = Number(h[":status"]);
        });
        stream.on("error", () => {});
        stream.resume();
        stream.on("close", () => resolve(status));
        stream.end(body);
      });
    try {
      // 16 MB refused: more than Node's client keeps for a session (10 MB) if each refused
      // stream is left holding what it could not send.
      const statuses: number[] = [];
      for (let i = 0; i < 16; i++) statuses.push(await post(Buffer.alloc(1_000_000, " ")));
      expect(statuses).toEqual(Array(16).fill(413));
      expect(await post(Buffer.from("{}"))).toBe(400);
    } finally {
      session.close();
    }
  });

  it("answers an HTTP/2 body over max_body_bytes with 413, then resets the stream", async () => {
    const session = http2.connect(gw.url);
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": "/v1/chat/completions",
        "content-type": "application/json",
      });
      // Keeps sending past the limit, as a client that does not look at the answer would.
      const piece = Buffer.alloc(16_384, " ");
      const sending = setInterval(() => {
        if (!stream.destroyed && !stream.closed) stream.write(piece);
      }, 5);
      let status = 0;
      let text = "";
      stream.on("response", (h) => {
        status = Number(h[":status"]);
      });
      stream.setEncoding("utf8");
      stream.on("data", (d: string) => {
        text += d;
      });
      stream.on("error", () => {});
      // The reset is seen when the stream closes: on its close event, or (Node's client with
      // writes still queued behind the reset, as this one often has) only on its `closed` flag,
      // for Node then waits on those writes before it emits close, and they never go.
      const code = await new Promise<number>((resolve) => {
        const seen = () => {
          clearInterval(watch);
          resolve(stream.rstCode ?? -1);
        };
        const watch = setInterval(() => {
          if (stream.closed) seen();
        }, 20);
        stream.once("close", seen);
      });
      clearInterval(sending);
      stream.destroy();
      expect(status).toBe(413);
      expect(JSON.parse(text)).toMatchObject({ error: { code: "request_too_large" } });
      expect(code).toBe(http2.constants.NGHTTP2_NO_ERROR);
    } finally {
      session.close();
    }
  });

  it("answers HEAD as GET, and a wrong method with 405 naming the right ones in Allow", async () => {
    for (const path of ["/healthz", "/readyz", "/metrics", "/v1/models"]) {
      const head = await request(`${gw.url}${path}`, { method: "HEAD" });
      expect([path, head.statusCode, await head.body.text()]).toEqual([path, 200, ""]);
      const post = await request(`${gw.url}${path}`, { method: "POST", body: "{}" });
      await post.body.dump();
      expect([path, post.statusCode, post.headers.allow]).toEqual([path, 405, "GET, HEAD"]);
    }
    const get = await request(`${gw.url}/v1/chat/completions`);
    await get.body.dump();
    expect([get.statusCode, get.headers.allow]).toEqual([405, "POST"]);
  });

  it("takes a request target in absolute form as its path", async () => {
    const port = new URL(gw.url).port;
    const socket = net.connect(Number(port), "127.0.0.1");
    socket.write(
      `GET http://127.0.0.1:${port}/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    );
    let answer = "";
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      answer += d;
    });
    await new Promise((r) => socket.once("close", r));
    expect(answer.startsWith("HTTP/1.1 200")).toBe(true);
  });

  it("refuses a compressed request body with 415, saying so", async () => {
    const res = await request(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "content-encoding": "gzip" },
      body: gzipSync(JSON.stringify({ model: "gpt-test", messages: [] })),
    });
    expect(res.statusCode).toBe(415);
    expect(((await res.body.json()) as { error: { message: string } }).error.message).toMatch(
      /Content-Encoding gzip is not accepted/,
    );
  });

  it("answers an unknown route with 404 and echoes the client's request id", async () => {
    const res = await request(`${gw.url}/v1/nope`, { headers: { "x-request-id": "req-123" } });
    expect(res.statusCode).toBe(404);
    expect(res.headers["x-request-id"]).toBe("req-123");
    expect(((await res.body.json()) as { error: { message: string } }).error.message).toMatch(
      /Unknown request URL/,
    );
  });
});

describe("operations endpoints", () => {
  it("lists configured models in OpenAI format", async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id).sort()).toEqual(["demo", "gpt-test", "solo"]);
  });

  it("retrieves one model as the list shows it, and answers 404 for one it does not", async () => {
    const demo = await client.models.retrieve("demo");
    expect(demo).toMatchObject({ id: "demo", object: "model", owned_by: "switchyard" });
    const missing = await client.models.retrieve("no-such-model").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect((missing as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("model_not_found");
    const post = await request(`${gw.url}/v1/models/demo`, { method: "POST" });
    await post.body.dump();
    expect(post.statusCode).toBe(405);
  });

  it("serves /healthz, /readyz and Prometheus /metrics", async () => {
    expect((await request(`${gw.url}/healthz`)).statusCode).toBe(200);
    expect((await request(`${gw.url}/readyz`)).statusCode).toBe(200);
    await client.chat.completions.create({
      model: "demo",
      messages: [{ role: "user", content: "hi" }],
    });
    const metrics = await (await request(`${gw.url}/metrics`)).body.text();
    expect(metrics).toMatch(/switchyard_requests_total\{[^}]*model="demo"[^}]*\} \d+/);
    expect(metrics).toContain("switchyard_router_attempts_total");
    expect(metrics).toContain("switchyard_connector_upstream_requests_total");
    expect(metrics).not.toContain("sk-primary-secret");
  });

  it("answers from the mock provider, streaming and not", async () => {
    const full = await client.chat.completions.create({
      model: "demo",
      messages: [{ role: "user", content: "hi" }],
    });
    const stream = await client.chat.completions.create({
      model: "demo",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
    });
    let text = "";
    for await (const c of stream) text += c.choices[0]?.delta.content ?? "";
    expect(text).toBe(full.choices[0]?.message.content);
    expect(full.usage?.completion_tokens).toBe(5);
  });

  it("gives n choices from the mock provider, streaming and not, and refuses too many", async () => {
    const messages = [{ role: "user" as const, content: "hi" }];
    const full = await client.chat.completions.create({ model: "demo", messages, n: 3 });
    expect(full.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    const answer = full.choices[0]?.message.content;
    expect(answer).toMatch(/^This is a mock answer/);
    expect(full.choices.map((c) => c.message.content)).toEqual([answer, answer, answer]);
    expect(full.choices.every((c) => c.finish_reason === "stop")).toBe(true);
    expect(full.usage?.completion_tokens).toBe(15);

    const stream = await client.chat.completions.create({
      model: "demo",
      messages,
      n: 2,
      stream: true,
      stream_options: { include_usage: true },
    });
    const texts = ["", ""];
    const finishes: Array<string | null> = [null, null];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of stream) {
      for (const choice of c.choices) {
        texts[choice.index] += choice.delta.content ?? "";
        if (choice.finish_reason) finishes[choice.index] = choice.finish_reason;
      }
      if (c.usage) usage = c.usage;
    }
    expect(texts).toEqual([answer, answer]);
    expect(finishes).toEqual(["stop", "stop"]);
    expect(usage?.completion_tokens).toBe(10);

    const err = await client.chat.completions
      .create({ model: "demo", messages, n: 129 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).message).toMatch(
      /1 to 128 choices, not 129/,
    );
  });
});
