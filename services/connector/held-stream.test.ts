// What the connector keeps of a chat stream while it is open. A stream can be held for minutes
// between two tokens; each held stream costs its upstream connection, and what the connector
// adds to that (the relay, the provider's reader) should be little.
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { HandlerContext } from "@connectrpc/connect";
import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { ConnectorService } from "../../gen/switchyard/connector/v1/connector_pb.js";
import { testConfig } from "../../test/helpers/fabric.js";
import { heapKeptEach } from "../../test/helpers/heap.js";
import { makeMessage } from "../lib/hop/codec.js";
import { createConnectorService } from "./connector-service.js";
import type { Provider } from "./providers/provider.js";
import { createProvider } from "./providers/registry.js";

const STREAMS = 500;

/** How an upstream's stream opens (up to one token) and how it ends, in its own wire format. */
interface Wire {
  type: "openai" | "anthropic";
  head(): string;
  tail(): string;
  /**
   * Heap per held stream, in bytes, that the connector stays under. Measured with 500 streams,
   * the upstream's server side (in this process) and undici's connection included: OpenAI
   * 21.1–21.6 KB and Anthropic 20.0–20.6 KB while the relay, the provider's readers and the
   * body's iterator were async generators, suspended for as long as the stream waited (their
   * frames, the last chunk, the await chains between them); 18.0–18.6 and 17.0–17.4 KB with
   * iterator objects (the relay, AnswerStream, BodyReader). With one warm-up call OpenAI had
   * crept to 18.75–18.95 KB by 2026-11-29, code V8 made during the measurement; after 50 warm-up
   * calls, 17.1–17.5 and 16.5–17.2 KB.
   */
  keepsUnder: number;
}

const openAIEvent = (delta: object, finish: string | null) =>
  `data: ${JSON.stringify({
    id: "chatcmpl-held",
    object: "chat.completion.chunk",
    created: 1_700_000_000,
    model: "held-model",
    choices: [{ index: 0, delta, finish_reason: finish }],
  })}\n\n`;

const anthropicEvent = (event: { type: string } & Record<string, unknown>) =>
  `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;

const WIRES: Wire[] = [
  {
    type: "openai",
    head: () => openAIEvent({ role: "assistant", content: "Hello" }, null),
    tail: () => `${openAIEvent({}, "stop")}data: [DONE]\n\n`,
    keepsUnder: 19_800,
  },
  {
    type: "anthropic",
    head: () =>
      anthropicEvent({
        type: "message_start",
        message: {
          id: "msg_held",
          type: "message",
          role: "assistant",
          model: "held-model",
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: 5, output_tokens: 1 },
        },
      }) +
      anthropicEvent({
        type: "content_block_start",
        index: 0,
        content_block: { type: "text", text: "" },
      }) +
      anthropicEvent({
        type: "content_block_delta",
        index: 0,
        delta: { type: "text_delta", text: "Hello" },
      }),
    tail: () =>
      anthropicEvent({ type: "content_block_stop", index: 0 }) +
      anthropicEvent({
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null },
        usage: { output_tokens: 2 },
      }) +
      anthropicEvent({ type: "message_stop" }),
    keepsUnder: 18_600,
  },
];

/**
 * An upstream that answers each stream with its first token and holds it open until released,
 * as a slow generation would; then it finishes every stream properly.
 */
function startHoldingUpstream(wire: Wire) {
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      res.write(wire.head());
      held.push(res);
    });
  });
  const release = () => {
    for (const res of held.splice(0)) res.end(wire.tail());
  };
  return { server, release };
}

describe.each(WIRES)("a $type stream the connector holds open", (wire) => {
  let upstream: ReturnType<typeof startHoldingUpstream>;
  let provider: Provider;
  let connector: ReturnType<typeof createConnectorService>;

  beforeAll(async () => {
    upstream = startHoldingUpstream(wire);
    await new Promise<void>((resolve) => upstream.server.listen(0, "127.0.0.1", resolve));
    const { port } = upstream.server.address() as AddressInfo;
    const config = testConfig(`
providers:
  held: { type: ${wire.type}, base_url: "http://127.0.0.1:${port}${wire.type === "openai" ? "/v1" : ""}", api_key: sk-held, probe: none, max_connections: 2000 }
models:
  held:
    targets: [{ provider: held, model: held-model }]
`);
    provider = createProvider(
      "held",
      config.providers.held as NonNullable<typeof config.providers.held>,
    );
    connector = createConnectorService({
      providers: new Map([["held", provider]]),
      logger: pino({ level: "silent" }),
      registry: new Registry(),
    });
  });

  afterAll(async () => {
    upstream?.release();
    await provider?.close();
    upstream?.server.closeAllConnections();
    await new Promise((resolve) => upstream?.server.close(resolve));
  });

  /** What the router's call does: a chat stream, read up to its first chunk and waiting for more. */
  function holder() {
    const reads: Array<Promise<IteratorResult<unknown>>> = [];
    const open = async (i: number) => {
      const ctx = { signal: new AbortController().signal } as HandlerContext;
      const request = makeMessage(ConnectorService.method.chat.input, {
        context: { requestId: `req-${i}` },
        target: { provider: "held", model: "held-model" },
        params: {
          model: "held",
          stream: true,
          messages: [
            { role: Role.USER, content: [{ part: { case: "text", value: `Say hello ${i}` } }] },
          ],
        },
      });
      const stream = connector.chat(request, ctx)[Symbol.asyncIterator]();
      const first = await stream.next();
      expect(first.done).toBe(false);
      reads.push(stream.next());
      return stream;
    };
    return { open, reads };
  }

  it("keeps little per held stream beyond its upstream connection", async () => {
    const { open, reads } = holder();
    // Warm up: the first calls compile and cache what every later one shares, and V8 tiers up
    // the path's functions; code made during the measurement would count as kept per stream.
    for (let i = 1; i <= 50; i++) await open(-i);
    const { bytesEach, kept } = await heapKeptEach(STREAMS, open);
    expect(kept).toHaveLength(STREAMS);
    expect(bytesEach).toBeLessThan(wire.keepsUnder);
    upstream.release();
    // Every held stream still ends properly: its last chunk, then the end.
    for (const read of await Promise.all(reads)) expect(read.done).toBe(false);
    for (const stream of kept) {
      let r = await stream.next();
      while (!r.done) r = await stream.next();
    }
  });
});
