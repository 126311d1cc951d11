import http2 from "node:http2";
import net from "node:net";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChatParams, ChatParamsSchema, Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { startFabric } from "../services/fabric.js";
import { grpcJsGatewayClient } from "./clients/grpc-js-gateway.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// server.http2_max_concurrent_streams: the ingress port bounds the streams one HTTP/2 connection
// has open at once; clients that follow the protocol queue past it, and the fabric's own hops
// are not bounded.
const BOUND = 100;
const CONFIG = (upstreamUrl: string) => `
server: { http2_max_concurrent_streams: ${BOUND} }
providers:
  up: { type: openai, base_url: "${upstreamUrl}", api_key: sk-up }
models:
  chat: { targets: [{ provider: up, model: up-chat }] }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`;

let upstream: OpenAIUpstream;
let gw: RunningFabric;
/** Chat requests the upstream is answering now, and the most it has answered at once. */
const chats = { open: 0, most: 0 };

beforeAll(async () => {
  upstream = await startOpenAIUpstream({
    behavior: (req) => {
      if (!req.path.endsWith("/chat/completions")) return { kind: "answer" };
      chats.open += 1;
      chats.most = Math.max(chats.most, chats.open);
      void req.closed.then(() => {
        chats.open -= 1;
      });
      const body = req.body as { messages?: Array<{ content?: string }> };
      // "hang" holds the answer until the gateway goes away; anything else streams slowly.
      return body.messages?.[0]?.content === "hang"
        ? { kind: "hang" }
        : { kind: "answer", text: "one two three", chunks: 3, chunkDelayMs: 100 };
    },
  });
  gw = await startOneProcess(testConfig(CONFIG(upstream.url)));
});

afterAll(async () => {
  await gw?.stop();
  await upstream?.close();
});

const params = (): ChatParams =>
  create(ChatParamsSchema, {
    model: "chat",
    messages: [
      {
        role: Role.USER,
        content: [{ part: { case: "text", value: "count" } }],
        contentIsText: true,
      },
    ],
  });

const CALLS = 2 * BOUND;

describe("the ingress port's HTTP/2 stream bound", () => {
  it("is advertised on the ingress port only, not on an internal service's", async () => {
    const fabric = await startFabric({
      config: testConfig(CONFIG(upstream.url)),
      services: new Set(["ingress", "connector"]),
      logger: pino({ level: "silent" }),
      listen: {
        ingress: { host: "127.0.0.1", port: 0 },
        connector: { host: "127.0.0.1", port: 0 },
      },
    });
    try {
      const advertised = async (port: number | undefined) => {
        const session = http2.connect(`http://127.0.0.1:${port}`);
        try {
          await new Promise((resolve) => session.once("remoteSettings", resolve));
          return session.remoteSettings.maxConcurrentStreams;
        } finally {
          session.close();
        }
      };
      expect(await advertised(fabric.ports.ingress)).toBe(BOUND);
      // The router's calls to a connector all share one connection.
      expect(await advertised(fabric.ports.connector)).toBe(2 ** 32 - 1);
    } finally {
      await fabric.stop(1000);
    }
  });

  it.each([
    [
      "connect-node (gRPC)",
      async () => {
        const client = createClient(GatewayService, createGrpcTransport({ baseUrl: gw.url }));
        const call = async () => {
          let text = "";
          for await (const res of client.chatStream({ params: params() }))
            text += res.chunk?.choices[0]?.content ?? "";
          return text;
        };
        return Promise.all(Array.from({ length: CALLS }, call));
      },
    ],
    [
      "@grpc/grpc-js",
      async () => {
        const client = grpcJsGatewayClient(`127.0.0.1:${gw.fabric.ports.ingress}`);
        try {
          const call = async () =>
            (await client.chatStream({ params: params() }))
              .map((r) => r.chunk?.choices[0]?.content ?? "")
              .join("");
          return await Promise.all(Array.from({ length: CALLS }, call));
        } finally {
          client.close();
        }
      },
    ],
  ])("queues %s calls past it on one connection, and all of them succeed", async (_, calls) => {
    chats.most = 0;
    const texts = await calls();
    expect(texts).toEqual(Array(CALLS).fill("one two three"));
    // Each call holds its stream for at least 300 ms: unbounded, as many would overlap as the
    // provider's connection pool allows (128).
    expect(chats.most).toBeLessThanOrEqual(BOUND);
  });

  it("ends the connection of a client that ignores it, cancels its calls, and serves others", async () => {
    const raw = await rawH2(gw.fabric.ports.ingress ?? 0);
    try {
      const before = upstream.requests.length;
      for (let i = 0; i < BOUND; i++) raw.chat(1 + 2 * i, "hang");
      while (upstream.requests.length < before + BOUND) await new Promise((r) => setTimeout(r, 10));
      // Past a bound the client has acknowledged: nghttp2 takes it as a connection error.
      raw.chat(1 + 2 * BOUND, "hang");
      const ended = await Promise.race([
        raw.closed.then(() => "closed"),
        new Promise((r) => setTimeout(r, 10_000, "still open").unref()),
      ]);
      expect(ended).toBe("closed");
      expect(raw.frames()).toContainEqual(expect.objectContaining({ type: "GOAWAY" }));
      const cut = upstream.requests.slice(before);
      await Promise.all(cut.map((r) => r.closed));
      expect(cut.map((r) => r.aborted)).toEqual(Array(BOUND).fill(true));
    } finally {
      raw.socket.destroy();
    }
    // The gateway goes on serving, over HTTP/2 and HTTP/1.1.
    const client = createClient(GatewayService, createGrpcTransport({ baseUrl: gw.url }));
    const models = await client.listModels({});
    expect(models.models.map((m) => m.id)).toContain("chat");
    expect((await fetch(`${gw.url}/v1/models`)).status).toBe(200);
  });
});

// HPACK (RFC 7541): static-table entries and literals without indexing, short enough for
// one-byte lengths.
const literal = (nameIndex: number, value: string) => {
  const v = Buffer.from(value);
  const name = nameIndex < 15 ? [nameIndex] : [15, nameIndex - 15];
  return Buffer.from([...name, v.length, ...v]);
};
const CHAT_HEADERS = Buffer.concat([
  Buffer.from([0x83, 0x86]), // :method POST, :scheme http
  literal(4, "/v1/chat/completions"), // :path
  literal(1, "gateway"), // :authority
  literal(31, "application/json"), // content-type
]);
const FRAME_TYPES: Record<number, string> = {
  1: "HEADERS",
  3: "RST_STREAM",
  4: "SETTINGS",
  7: "GOAWAY",
};

/**
 * An HTTP/2 client on a bare socket that acknowledges the server's settings and then opens
 * whatever streams it is told to, bound or not, as no HTTP/2 library lets a client do.
 */
async function rawH2(port: number) {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  const frame = (type: number, flags: number, stream: number, payload: Buffer) => {
    const head = Buffer.alloc(9);
    head.writeUIntBE(payload.length, 0, 3);
    head[3] = type;
    head[4] = flags;
    head.writeUInt32BE(stream, 5);
    socket.write(Buffer.concat([head, payload]));
  };
  const frames: Array<{ type: string; stream: number }> = [];
  let settingsAcked: () => void = () => {};
  const acked = new Promise<void>((resolve) => {
    settingsAcked = resolve;
  });
  let pending = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 9 && pending.length >= 9 + pending.readUIntBE(0, 3)) {
      const length = pending.readUIntBE(0, 3);
      const type = pending[3] ?? 0;
      const flags = pending[4] ?? 0;
      frames.push({ type: FRAME_TYPES[type] ?? String(type), stream: pending.readUInt32BE(5) });
      if (type === 4 && (flags & 1) === 0) {
        frame(4, 1, 0, Buffer.alloc(0)); // ACK the server's settings
        settingsAcked();
      }
      pending = pending.subarray(9 + length);
    }
  });
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  await new Promise((resolve) => socket.once("connect", resolve));
  socket.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  frame(4, 0, 0, Buffer.alloc(0));
  await acked;
  return {
    socket,
    closed,
    frames: () => frames,
    /** A streamed chat request on `stream` (odd), its body in one DATA frame. */
    chat(stream: number, prompt: string) {
      frame(1, 0x4, stream, CHAT_HEADERS); // END_HEADERS
      const body = { model: "chat", stream: true, messages: [{ role: "user", content: prompt }] };
      frame(0, 0x1, stream, Buffer.from(JSON.stringify(body))); // END_STREAM
    },
  };
}
