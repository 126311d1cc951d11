// The ingress's own cut, for a router in another process that is not shutting down: when the
// drain time runs out, the ingress answers every request still open (503 / UNAVAILABLE, the
// gateway is shutting down), cancels its router call, and only then are the connections cut.
// (test/drain-cut.test.ts runs the whole fabric, whose router answers first.)
import Anthropic from "@anthropic-ai/sdk";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import OpenAI from "openai";
import { afterEach, beforeEach, expect, it } from "vitest";
import { ChatChunkSchema, Role } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { GatewayService } from "../../gen/switchyard/gateway/v1/gateway_pb.js";
import { testConfig } from "../../test/helpers/fabric.js";
import { type IngressRig, startIngress } from "../../test/helpers/ingress.js";
import { type CapturedLogs, captureLogs } from "../../test/helpers/logs.js";
import { metricValue, parseMetrics } from "../../test/helpers/metrics.js";
import { makeMessage } from "../lib/hop/codec.js";

/** The router's calls, each open until it is cancelled: what the test sees of cancellation. */
let routerCalls: AbortSignal[];

/**
 * A router elsewhere whose answers never end by themselves: a chat for `streamed` sends its first
 * chunk (the third attempt's), any other sends nothing; every call fails once cancelled, as a
 * cancelled remote call does.
 */
class OpenAnswer implements AsyncIterableIterator<unknown> {
  #sent: boolean;
  constructor(
    private readonly signal: AbortSignal,
    streamed: boolean,
  ) {
    this.#sent = !streamed;
    routerCalls.push(signal);
  }
  [Symbol.asyncIterator](): this {
    return this;
  }
  next(): Promise<IteratorResult<unknown>> {
    if (!this.#sent) {
      this.#sent = true;
      const chunk = makeMessage(ChatChunkSchema, {
        start: { id: "chatcmpl-1", upstreamModel: "m", provider: "p", attempts: 3 },
        choices: [{ index: 0, role: Role.ASSISTANT, content: "Hi" }],
      });
      return Promise.resolve({ done: false, value: { chunk } });
    }
    return untilAborted(this.signal);
  }
  async return(): Promise<IteratorResult<unknown>> {
    return { done: true, value: undefined };
  }
}

function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    const fail = () => reject(new ConnectError("cancelled", Code.Canceled));
    if (signal.aborted) fail();
    else signal.addEventListener("abort", fail, { once: true });
  });
}

let logs: CapturedLogs;
let rig: IngressRig;
let url: string;

beforeEach(async () => {
  routerCalls = [];
  const config = testConfig(`
providers:
  up: { type: openai, base_url: "http://127.0.0.1:9", probe: none }
models:
  m: { targets: [{ provider: up, model: m }] }
`);
  logs = captureLogs();
  rig = await startIngress({
    config,
    logger: logs.logger,
    router: {
      chat: (req: { params?: { stream?: boolean } }, options: { signal: AbortSignal }) =>
        new OpenAnswer(options.signal, req.params?.stream === true),
      embed: (_req: unknown, options: { signal: AbortSignal }) => {
        routerCalls.push(options.signal);
        return untilAborted(options.signal);
      },
    },
  });
  url = rig.url;
});

afterEach(async () => {
  await rig?.close();
});

async function routerHas(n: number): Promise<void> {
  for (let i = 0; i < 500 && routerCalls.length < n; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  expect(routerCalls.length).toBe(n);
}

/** What a call ended with: its error, or undefined. */
const settle = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );

it("answers what is open when the drain runs out, cancels its router calls, and counts it", async () => {
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: "x", maxRetries: 0 });
  const anthropic = new Anthropic({ baseURL: url, apiKey: "x", maxRetries: 0 });
  const messages = [{ role: "user" as const, content: "hello" }];
  const params = {
    model: "m",
    messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "hi" } }] }],
  };
  const connect = createClient(
    GatewayService,
    createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
  );
  const grpc = createClient(GatewayService, createGrpcTransport({ baseUrl: url }));
  const id = (name: string) => ({ headers: { "x-request-id": name } });

  const whole = settle(openai.chat.completions.create({ model: "m", messages }, id("whole")));
  const message = settle(
    anthropic.messages.create({ model: "m", max_tokens: 8, messages }, id("message")),
  );
  const embedding = settle(openai.embeddings.create({ model: "m", input: "x" }, id("embed")));
  const sse = (async () => {
    const stream = await openai.chat.completions.create(
      { model: "m", messages, stream: true },
      id("sse"),
    );
    let chunks = 0;
    try {
      for await (const _ of stream) chunks++;
    } catch (e) {
      return { chunks, error: e };
    }
    return { chunks, error: undefined };
  })();
  const unary = settle(connect.chat({ params }, id("connect")));
  const streamed = settle(
    (async () => {
      for await (const _ of grpc.chatStream({ params }, id("grpc"))) {
        // nothing comes before the cut
      }
    })(),
  );
  await routerHas(6);

  const started = performance.now();
  await rig.server.close(100, () => rig.ingress.cutting(false));
  expect(performance.now() - started).toBeLessThan(10_000);

  const oe = (await whole) as InstanceType<typeof OpenAI.APIError>;
  expect(oe).toBeInstanceOf(OpenAI.APIError);
  expect([oe.status, oe.code]).toEqual([503, "shutting_down"]);
  expect(oe.headers?.get("x-request-id")).toBe("whole");
  expect(oe.headers?.get("connection")).toBe("close");
  const ae = (await message) as InstanceType<typeof Anthropic.APIError>;
  expect(ae).toBeInstanceOf(Anthropic.APIError);
  expect(ae.status).toBe(503);
  expect(ae.message).toContain("the gateway is shutting down");
  expect(ae.headers?.get("x-request-id")).toBe("message");
  const ee = (await embedding) as InstanceType<typeof OpenAI.APIError>;
  expect([ee.status, ee.code]).toEqual([503, "shutting_down"]);
  const s = await sse;
  expect(s.chunks).toBe(1);
  expect(s.error).toBeInstanceOf(OpenAI.APIError);
  expect((s.error as Error).message).toContain("the gateway is shutting down");
  for (const err of [await unary, await streamed]) {
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unavailable);
    expect((err as ConnectError).rawMessage).toContain("the gateway is shutting down");
  }

  // Every router call was cancelled: the upstream requests behind them stop.
  expect(routerCalls.every((s) => s.aborted)).toBe(true);
  const lines = logs.lines();
  for (const name of ["whole", "message", "embed", "sse", "connect", "grpc"]) {
    const mine = lines.filter((l) => l.request_id === name && l.status !== undefined);
    expect(mine, name).toEqual([expect.objectContaining({ status: 503, outcome: "shutdown" })]);
  }
  // The stream's first chunk said how many attempts it took.
  expect(lines.find((l) => l.request_id === "sse")).toMatchObject({
    attempts: 3,
    truncated: false,
  });
  const text = await rig.registry.metrics();
  for (const api of ["openai", "anthropic", "grpc"]) {
    expect(metricValue(text, "switchyard_inflight_requests", { api }), api).toBe(0);
  }
  // Summed over providers: the stream's answer named its own.
  const shutdown = (api: string) =>
    parseMetrics(text)
      .filter((m) => m.name === "switchyard_requests_total" && m.labels.api === api)
      .filter((m) => m.labels.status_class === "5xx" && m.labels.outcome === "shutdown")
      .reduce((sum, m) => sum + m.value, 0);
  expect([shutdown("openai"), shutdown("anthropic"), shutdown("grpc")]).toEqual([3, 1, 2]);
}, 30_000);
