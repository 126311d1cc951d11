import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ChatParamsSchema, Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import {
  ChatStreamRequestSchema,
  ChatStreamResponseSchema,
  GatewayService,
} from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { memoryKeptEach } from "./helpers/heap.js";

// A stream can stay open for minutes, and a request can carry a long context. Once the upstream
// has the request, no layer of the gateway (the ingress's first read and parsed request, the
// in-process calls, the router's attempts, the connector, the provider, undici's request body)
// may keep it for the rest of the stream. One process here; the hop between processes has its
// own test (services/lib/hop/hop.test.ts).

const PROMPT = 1024 * 1024;
const STREAMS = 24;

/**
 * An OpenAI-compatible upstream that answers each stream with one chunk and holds it open until
 * released, as a slow generation would. It reads each request whole and checks it, and keeps
 * nothing of it.
 */
function startHoldingUpstream() {
  // Streams answered while a gate is shut stay open until release(); hold() shuts a new one.
  let gate = shutGate();
  const problems: string[] = [];
  // Each step in a function of its own: a closure kept for the held response must not share a
  // scope with the request's bytes, or the test itself would keep them.
  const check = (req: http.IncomingMessage, chunks: Buffer[], received: number): string => {
    if (received !== Number(req.headers["content-length"])) {
      problems.push(`content-length ${req.headers["content-length"]}, body ${received} bytes`);
    }
    const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    const content: string = body.messages?.[0]?.content ?? "";
    if (content.length < PROMPT) problems.push(`prompt of ${content.length} characters`);
    return body.model;
  };
  const answer = (res: http.ServerResponse, model: string) => {
    const event = (delta: object, finish: string | null) =>
      `data: ${JSON.stringify({
        id: "chatcmpl-held",
        object: "chat.completion.chunk",
        created: 1_700_000_000,
        model,
        choices: [{ index: 0, delta, finish_reason: finish }],
      })}\n\n`;
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    res.write(event({ role: "assistant", content: "Hello" }, null));
    void gate.opened.then(() => res.end(`${event({}, "stop")}data: [DONE]\n\n`));
  };
  const server = http.createServer((req, res) => {
    let received = 0;
    let chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => {
      received += c.length;
      chunks.push(c);
    });
    req.on("end", () => {
      const model = check(req, chunks, received);
      chunks = [];
      answer(res, model);
    });
  });
  return {
    server,
    problems,
    release: () => gate.open(),
    hold: () => {
      gate = shutGate();
    },
  };
}

function shutGate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

let upstream: ReturnType<typeof startHoldingUpstream>;
let gw: RunningFabric;

beforeAll(async () => {
  upstream = startHoldingUpstream();
  await new Promise<void>((resolve) => upstream.server.listen(0, "127.0.0.1", resolve));
  const port = (upstream.server.address() as AddressInfo).port;
  gw = await startOneProcess(
    testConfig(`
providers:
  held: { type: openai, base_url: "http://127.0.0.1:${port}/v1", api_key: sk-held, probe: none }
models:
  long-context:
    targets: [{ provider: held, model: held-model }]
routing:
  timeouts: { first_token_ms: 30000, idle_ms: 60000, total_ms: 120000 }
server:
  max_body_bytes: 8388608
`),
  );
});

afterAll(async () => {
  upstream?.release();
  await gw?.stop();
  upstream?.server.closeAllConnections();
  await new Promise((resolve) => upstream?.server.close(resolve));
});

/** A streamed chat call with a long prompt, open until its first SSE frame has arrived. */
function openStream(i: number): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
    });
    req.on("error", reject);
    req.on("response", (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
      res.setEncoding("utf8");
      res.once("data", (first: string) => {
        if (first.includes("Hello")) resolve(res);
        else reject(new Error(`first frame: ${first}`));
      });
    });
    req.end(requestBody(i));
  });
}

/** A request with a long prompt (made here, so no closure of the caller's holds it). */
function requestBody(i: number): Buffer {
  return Buffer.from(
    JSON.stringify({
      model: "long-context",
      stream: true,
      messages: [{ role: "user", content: `${i} `.padEnd(PROMPT, "context ") }],
    }),
  );
}

function rest(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    res.on("data", (s: string) => {
      text += s;
    });
    res.on("end", () => resolve(text));
    res.on("error", reject);
  });
}

it("keeps none of a streamed request's prompt while the answer streams", async () => {
  upstream.hold();
  const warm = await openStream(-1); // one-off costs (connections, code) go uncounted
  const { bytesEach, kept } = await memoryKeptEach(STREAMS, openStream);
  const ends = [warm, ...kept].map(rest);
  upstream.release();
  // A copy of the prompt kept anywhere would be 1 MB a stream or more.
  expect(bytesEach).toBeLessThan(PROMPT / 4);
  for (const end of await Promise.all(ends)) expect(end).toContain("data: [DONE]");
  expect(upstream.problems).toEqual([]);
});

// A raw gRPC client: connect's own client keeps each request for as long as its stream is open,
// which would count here.
it("keeps none of a gRPC ChatStream request's prompt while the answer streams", async () => {
  upstream.hold();
  const session = http2.connect(gw.url);
  try {
    const open = (i: number) =>
      new Promise<http2.ClientHttp2Stream>((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": `/${GatewayService.typeName}/${GatewayService.method.chatStream.name}`,
          "content-type": "application/grpc",
          te: "trailers",
        });
        stream.on("error", reject);
        stream.once("data", (first: Buffer) => {
          const message = fromBinary(ChatStreamResponseSchema, first.subarray(5));
          if (message.chunk?.choices[0]?.content === "Hello") resolve(stream);
          else reject(new Error("unexpected first message"));
        });
        stream.end(grpcRequest(i));
      });
    const warm = await open(-1);
    const { bytesEach, kept } = await memoryKeptEach(STREAMS, open);
    const ends = [warm, ...kept].map(
      (stream) =>
        new Promise<string | undefined>((resolve) => {
          stream.on("trailers", (t) => resolve(String(t["grpc-status"])));
          stream.resume();
        }),
    );
    upstream.release();
    expect(bytesEach).toBeLessThan(PROMPT / 4);
    for (const status of await Promise.all(ends)) expect(status).toBe("0");
    expect(upstream.problems).toEqual([]);
  } finally {
    session.close();
  }
});

/** A ChatStream request with a long prompt, as a gRPC message frame. */
function grpcRequest(i: number): Buffer {
  const params = create(ChatParamsSchema, {
    model: "long-context",
    messages: [
      {
        role: Role.USER,
        content: [{ part: { case: "text", value: `${i} `.padEnd(PROMPT, "context ") } }],
        contentIsText: true,
      },
    ],
  });
  const bytes = toBinary(ChatStreamRequestSchema, create(ChatStreamRequestSchema, { params }));
  const frame = Buffer.alloc(5 + bytes.length);
  frame.writeUInt32BE(bytes.length, 1);
  frame.set(bytes, 5);
  return frame;
}
