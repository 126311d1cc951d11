import http2 from "node:http2";
import { performance } from "node:perf_hooks";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { ChatRequestSchema } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { hashKey } from "../services/lib/config/keys.js";
import { grpcJsGatewayClient } from "./clients/grpc-js-gateway.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { parseMetrics } from "./helpers/metrics.js";
import {
  type OpenAIUpstream,
  startOpenAIUpstream,
  type UpstreamBehavior,
} from "./upstreams/openai-upstream.js";

// gRFC A6's `grpc-retry-pushback-ms`, as a real @grpc/grpc-js client with a retry policy obeys
// it: it waits exactly that long before its next attempt, and makes none on a negative value.
// It retries only a call answered Trailers-Only, which the gateway's errors before a first
// message are.

/** A retry policy as a service would publish it: two attempts, a short backoff of its own. */
const RETRY_POLICY: grpc.ChannelOptions = {
  "grpc.service_config": JSON.stringify({
    methodConfig: [
      {
        name: [{ service: "switchyard.gateway.v1.GatewayService" }],
        retryPolicy: {
          maxAttempts: 2,
          initialBackoff: "0.01s",
          maxBackoff: "0.01s",
          backoffMultiplier: 1,
          retryableStatusCodes: ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
        },
      },
    ],
  }),
};

const REQUEST = {
  params: {
    model: "chat",
    messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "hi" } }] }],
  },
};
const REQUEST_BYTES = Buffer.from(toBinary(ChatRequestSchema, create(ChatRequestSchema, REQUEST)));
const ANSWER: UpstreamBehavior = { kind: "answer", text: "one two three", chunks: 3 };
const BUDGET_KEY = "sk-budget";

let upstream: OpenAIUpstream | undefined;
let gw: RunningFabric | undefined;
const clients: Array<{ close(): void }> = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await gw?.stop();
  await upstream?.close();
  gw = undefined;
  upstream = undefined;
});

/**
 * A gateway whose only target is an upstream that answers its first chat request with `first`,
 * then answers; `arrivals` holds when each chat request reached the upstream (performance.now()).
 * Its one tenant may spend one token a day, on a clock that stays at noon (UTC).
 */
async function start(first: UpstreamBehavior) {
  const arrivals: number[] = [];
  upstream = await startOpenAIUpstream({
    behavior: (req) => {
      if (req.method !== "POST") return ANSWER;
      arrivals.push(performance.now());
      return arrivals.length === 1 ? first : ANSWER;
    },
  });
  gw = await startOneProcess(
    testConfig(`
providers: { up: { type: openai, base_url: "${upstream.url}", api_key: sk-up } }
models: { chat: { targets: [{ provider: up, model: up-chat }] } }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
tenants: { budget: { keys: ["${hashKey(BUDGET_KEY)}"], limits: { daily_tokens: 1 } } }
`),
    { clock: () => Date.UTC(2026, 0, 15, 12) },
  );
  return { gw, arrivals, address: `127.0.0.1:${gw.fabric.ports.ingress}` };
}

const auth = { authorization: `Bearer ${BUDGET_KEY}` };

/** How many GatewayService calls the gateway has answered. */
async function grpcCallsAnswered(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return parseMetrics(text)
    .filter((m) => m.name === "switchyard_requests_total" && m.labels.api === "grpc")
    .reduce((sum, m) => sum + m.value, 0);
}

/** One Chat call's answer as it came off the wire: its first HEADERS frame, and whether that ended the stream. */
function rawGrpcChat(url: string) {
  return new Promise<{ headers: http2.IncomingHttpHeaders; endStream: boolean }>(
    (resolve, reject) => {
      const session = http2.connect(url);
      session.on("error", reject);
      const frame = Buffer.alloc(5);
      frame.writeUInt32BE(REQUEST_BYTES.length, 1);
      const stream = session.request({
        ":method": "POST",
        ":path": "/switchyard.gateway.v1.GatewayService/Chat",
        "content-type": "application/grpc",
        te: "trailers",
        ...auth,
      });
      stream.on("response", (headers, flags) => {
        resolve({ headers, endStream: (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0 });
        stream.close();
        session.close();
      });
      stream.on("error", reject);
      stream.end(Buffer.concat([frame, REQUEST_BYTES]));
    },
  );
}

describe("grpc-retry-pushback-ms", () => {
  it("comes with the status, in a Trailers-Only answer, as the upstream's wait", async () => {
    const { address } = await start({
      kind: "error",
      status: 503,
      headers: { "retry-after-ms": "400" },
    });
    const wire = await rawGrpcChat(gw?.url as string);
    expect(wire.endStream).toBe(true);
    expect(wire.headers).toMatchObject({
      ":status": 200,
      "content-type": "application/grpc+proto",
      "grpc-status": "14", // UNAVAILABLE
      "grpc-retry-pushback-ms": "400",
      "retry-after-ms": "400",
    });
    expect(wire.headers["x-request-id"]).toBeTruthy();
    // As a gRPC client reads it: the call's status metadata.
    const client = new grpc.Client(address, grpc.credentials.createInsecure());
    clients.push(client);
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const md = new grpc.Metadata();
      md.set("authorization", auth.authorization);
      const call = client.makeUnaryRequest(
        "/switchyard.gateway.v1.GatewayService/Chat",
        (b: Buffer) => b,
        (b: Buffer) => b,
        REQUEST_BYTES,
        md,
        () => {},
      );
      call.on("status", resolve);
    });
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    // The target is paused for what is left of the 400 ms.
    const pushback = Number(status.metadata.get("grpc-retry-pushback-ms")[0]);
    expect(pushback).toBeGreaterThan(0);
    expect(pushback).toBeLessThanOrEqual(400);
  });

  it("holds a retrying @grpc/grpc-js client as long as the upstream asked, then its call succeeds", async () => {
    const { arrivals, address } = await start({
      kind: "error",
      status: 503,
      headers: { "retry-after-ms": "400" },
    });
    const client = grpcJsGatewayClient(address, RETRY_POLICY);
    clients.push(client);
    const res = await client.chat(REQUEST, auth);
    expect(res.completion?.choices[0]?.finishReason).toBe(1); // FINISH_REASON_STOP
    expect(arrivals).toHaveLength(2);
    // The client's own backoff is 10 ms: only the pushback makes it wait this long.
    expect((arrivals[1] as number) - (arrivals[0] as number)).toBeGreaterThanOrEqual(400);
  });

  it("is -1 for an upstream's wait past a minute: a retrying client gets the error at once, after one call", async () => {
    const { gw, arrivals, address } = await start({
      kind: "error",
      status: 503,
      headers: { "retry-after": "3600" },
    });
    const client = grpcJsGatewayClient(address, RETRY_POLICY);
    clients.push(client);
    const before = await grpcCallsAnswered(gw.url);
    const err = (await client.chat(REQUEST, auth).then(
      () => undefined,
      (e: unknown) => e,
    )) as grpc.ServiceError | undefined;
    expect(err?.code).toBe(grpc.status.UNAVAILABLE);
    // Not retried: the gateway answered one call, and the upstream saw it once.
    expect((await grpcCallsAnswered(gw.url)) - before).toBe(1);
    expect(arrivals).toHaveLength(1);
    // The connector holds an upstream to at most five minutes of it (MAX_RETRY_AFTER_MS).
    expect(err?.metadata.get("retry-after")).toEqual(["300"]);
    expect(err?.metadata.get("grpc-retry-pushback-ms")).toEqual(["-1"]);
  });

  it("is -1 for a spent daily budget: a retrying client gets RESOURCE_EXHAUSTED at once, after one call", async () => {
    const { gw, arrivals, address } = await start(ANSWER);
    const client = grpcJsGatewayClient(address, RETRY_POLICY);
    clients.push(client);
    // The first call is admitted (nothing spent yet) and spends the budget.
    await client.chat(REQUEST, auth);
    const before = await grpcCallsAnswered(gw.url);
    const err = (await client.chat(REQUEST, auth).then(
      () => undefined,
      (e: unknown) => e,
    )) as grpc.ServiceError | undefined;
    expect(err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    // Not retried: the gateway answered one call, and the upstream saw only the first call's.
    expect((await grpcCallsAnswered(gw.url)) - before).toBe(1);
    expect(arrivals).toHaveLength(1);
    expect(err?.metadata.get("x-switchyard-limit")).toEqual(["daily_tokens"]);
    // Noon to midnight.
    expect(err?.metadata.get("retry-after-ms")).toEqual([String(12 * 3600 * 1000)]);
    expect(err?.metadata.get("grpc-retry-pushback-ms")).toEqual(["-1"]);
  });
});
