/**
 * The hop micro-benchmark — one internal hop alone: a ConnectorService client in this process calls
 * a real connector (createConnectorService with the mock provider: every token at once) in a
 * child process, over each transport under test. What one hop costs, without the rest of the
 * gateway around it:
 *
 * - `µs/call` p50/p99 at concurrency 1 (latency) and the calls per second at higher
 *   concurrency, closed loop;
 * - CPU µs per call of the client (this process) and of the server (the child, from /proc);
 * - RSS per open stream: `--open-streams` chat streams held open at once (first chunk received,
 *   the rest pending), RSS growth of client and server ÷ streams.
 *
 * Variants are interleaved (rotated per repeat) and figures are medians over `--repeats`.
 * The `raw-h2` variant is the floor: node:http2 on both ends, the server answering precomputed
 * bytes, the client only counting them — what the network and HTTP/2 alone cost.
 *
 * Run: node --expose-gc --import tsx bench/hop.ts [--variants LIST] [--concurrency 1,16] [--duration S] [--repeats N]
 *      [--chunks N] [--open-streams N] [--rpc chat|embed] [--cpu-prof DIR]
 * (`--cpu-prof DIR`: the server children write .cpuprofile files there; run this process under
 * `node --cpu-prof` too for the client side; bench/profile-summary.ts reads them.)
 * A server child runs as: node --import tsx bench/hop.ts --serve KIND (prints {"listening":P}).
 */

import { type ChildProcess, spawn } from "node:child_process";
import { once, setMaxListeners } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { create, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { type Client, createClient, type Transport } from "@connectrpc/connect";
import {
  connectNodeAdapter,
  createConnectTransport,
  createGrpcTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { Registry } from "prom-client";
import {
  ChatParamsSchema,
  ContentPartSchema,
  EmbedParamsSchema,
  MessageSchema,
  RequestContextSchema,
  Role,
} from "../gen/switchyard/chat/v1/chat_pb.js";
import {
  ChatRequestSchema,
  ChatResponseSchema,
  ConnectorService,
  EmbedRequestSchema,
  EmbedResponseSchema,
} from "../gen/switchyard/connector/v1/connector_pb.js";
import { TargetSchema } from "../gen/switchyard/health/v1/health_pb.js";
import { createConnectorService } from "../services/connector/connector-service.js";
import { createMockProvider } from "../services/connector/providers/mock/index.js";
import type { Provider } from "../services/connector/providers/provider.js";
import { createHopTransport } from "../services/lib/hop/client.js";
import { codecFor } from "../services/lib/hop/codec.js";
import { createHopHandler, hopService } from "../services/lib/hop/server.js";
import { createDualServer, type DualHandler } from "../services/lib/http/dual-server.js";
import { createLocalClient } from "../services/lib/local-client.js";
import { createLogger } from "../services/lib/logger.js";
import { useFastUtf8Encoding } from "../services/lib/utf8.js";
import { newHistogram, recordMs, summarize } from "./load.js";
import { readUsage } from "./procs.js";
import { formatTable, median, rotate } from "./run.js";

// ---------------------------------------------------------------------------------------------
// The server side

type ServerKind = "connect" | "hop" | "raw-h2" | "grpc-js";
const SERVER_KINDS: readonly ServerKind[] = ["connect", "hop", "raw-h2", "grpc-js"];

/** Provider `instant` answers every token at once; `held` sends one, then waits for a cancel. */
function connectorImpl(chunks: number) {
  const providers = new Map<string, Provider>([
    [
      "instant",
      createMockProvider("instant", {
        type: "mock",
        first_token_ms: 0,
        token_interval_ms: 0,
        tokens: chunks,
      } as Parameters<typeof createMockProvider>[1]),
    ],
    [
      "held",
      createMockProvider("held", {
        type: "mock",
        first_token_ms: 0,
        token_interval_ms: 3_600_000,
        tokens: 2,
      } as Parameters<typeof createMockProvider>[1]),
    ],
  ]);
  return createConnectorService({
    providers,
    logger: createLogger({ level: "warn" }),
    registry: new Registry(),
  });
}

/** The bytes a Connect server-streaming answer of `chunks` chat chunks takes on the wire. */
function precomputedAnswer(chunks: number): Buffer {
  const envelope = (flags: number, body: Uint8Array) => {
    const head = Buffer.alloc(5);
    head.writeUInt8(flags, 0);
    head.writeUInt32BE(body.length, 1);
    return Buffer.concat([head, body]);
  };
  const parts: Buffer[] = [];
  for (let i = 0; i < chunks; i++) {
    const msg = create(ChatResponseSchema, {
      chunk: { choices: [{ index: 0, content: `word${i} ` }] },
    });
    parts.push(envelope(0, toBinary(ChatResponseSchema, msg)));
  }
  parts.push(envelope(2, Buffer.from("{}")));
  return Buffer.concat(parts);
}

/**
 * ConnectorService's two methods as @grpc/grpc-js describes a service: its paths and, for both
 * ends, the same compiled protobuf codec the hop transport uses, so a comparison measures the
 * framework, not the serializer.
 */
const chatCodec = { req: codecFor(ChatRequestSchema), res: codecFor(ChatResponseSchema) };
const embedCodec = { req: codecFor(EmbedRequestSchema), res: codecFor(EmbedResponseSchema) };
const GRPC_DEFINITION = {
  chat: {
    path: "/switchyard.connector.v1.ConnectorService/Chat",
    requestStream: false,
    responseStream: true,
    requestSerialize: (m: MessageShape<typeof ChatRequestSchema>) => chatCodec.req.encode(m),
    requestDeserialize: (b: Buffer) => chatCodec.req.decode(b),
    responseSerialize: (m: MessageShape<typeof ChatResponseSchema>) => chatCodec.res.encode(m),
    responseDeserialize: (b: Buffer) => chatCodec.res.decode(b),
  },
  embed: {
    path: "/switchyard.connector.v1.ConnectorService/Embed",
    requestStream: false,
    responseStream: false,
    requestSerialize: (m: MessageShape<typeof EmbedRequestSchema>) => embedCodec.req.encode(m),
    requestDeserialize: (b: Buffer) => embedCodec.req.decode(b),
    responseSerialize: (m: MessageShape<typeof EmbedResponseSchema>) => embedCodec.res.encode(m),
    responseDeserialize: (b: Buffer) => embedCodec.res.decode(b),
  },
} satisfies grpc.ServiceDefinition;

/**
 * The connector behind a @grpc/grpc-js server. grpc-js has no Connect-style service
 * implementations, so each call shape gets a small adapter: the handler calls the connector
 * through the in-process client (its handler context, deadline and cancellation), and a call the
 * client cancels aborts it.
 */
async function serveGrpcJs(chunks: number): Promise<number> {
  const connector = createLocalClient(ConnectorService, connectorImpl(chunks));
  const server = new grpc.Server();
  // Both call shapes are grpc-js ServerSurfaceCalls (a type its index does not export).
  const abortOnCancel = (call: Pick<grpc.ServerUnaryCall<unknown, unknown>, "on">) => {
    const abort = new AbortController();
    call.on("cancelled", () => abort.abort());
    return abort.signal;
  };
  server.addService(GRPC_DEFINITION, {
    chat: (call: grpc.ServerWritableStream<MessageShape<typeof ChatRequestSchema>, unknown>) => {
      void (async () => {
        try {
          for await (const res of connector.chat(call.request, { signal: abortOnCancel(call) })) {
            call.write(res);
          }
          call.end();
        } catch (err) {
          if (!call.cancelled) call.destroy(err instanceof Error ? err : new Error(String(err)));
        }
      })();
    },
    embed: (
      call: grpc.ServerUnaryCall<MessageShape<typeof EmbedRequestSchema>, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) => {
      connector.embed(call.request, { signal: abortOnCancel(call) }).then(
        (res) => callback(null, res),
        (err: unknown) => callback({ code: grpc.status.INTERNAL, details: String(err) }),
      );
    },
  });
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    ),
  );
}

async function serve(kind: ServerKind, chunks: number): Promise<void> {
  if (kind === "grpc-js") {
    const port = await serveGrpcJs(chunks);
    process.stdout.write(`${JSON.stringify({ listening: port })}\n`);
    process.on("SIGTERM", () => process.exit(0));
    process.on("SIGUSR2", () => global.gc?.());
    return;
  }
  let handler: DualHandler;
  if (kind === "raw-h2") {
    const answer = precomputedAnswer(chunks);
    handler = (req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/connect+proto" });
        res.end(answer);
      });
    };
  } else {
    const impl = connectorImpl(chunks);
    const adapter = connectNodeAdapter({ routes: (r) => r.service(ConnectorService, impl) });
    handler =
      kind === "hop"
        ? createHopHandler({ services: [hopService(ConnectorService, impl)], fallback: adapter })
        : adapter;
  }
  const server = createDualServer(handler);
  const port = await server.listen(0, "127.0.0.1");
  process.stdout.write(`${JSON.stringify({ listening: port })}\n`);
  process.on("SIGTERM", () => void server.close(0).then(() => process.exit(0)));
  // The open-streams scenario asks for a collection before it reads RSS (retained, not garbage).
  process.on("SIGUSR2", () => global.gc?.());
}

// ---------------------------------------------------------------------------------------------
// The client side: variants

interface HopClient {
  chat(provider: string, signal?: AbortSignal): AsyncIterable<unknown>;
  embed(): Promise<unknown>;
  close(): void;
}

interface VariantSpec {
  server: ServerKind;
  describe: string;
  make(baseUrl: string): HopClient;
}

function rpcClient(transports: Transport[]): HopClient {
  const clients: Array<Client<typeof ConnectorService>> = transports.map((t) =>
    createClient(ConnectorService, t),
  );
  let turn = 0;
  const next = () => clients[turn++ % clients.length] as Client<typeof ConnectorService>;
  return {
    chat: (provider, signal) =>
      next().chat(chatRequest(provider), signal ? { signal, timeoutMs: 3_600_000 } : {}),
    embed: () => next().embed(embedRequest()),
    close() {},
  };
}

const connectH2 = (baseUrl: string, extra: Record<string, unknown> = {}) =>
  createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, ...extra });

const VARIANTS: Record<string, VariantSpec> = {
  "connect-h2": {
    server: "connect",
    describe: "connect-node, Connect protocol, binary, h2c, one session (the fabric before)",
    make: (u) => rpcClient([connectH2(u)]),
  },
  "connect-h2-json": {
    server: "connect",
    describe: "the same with JSON messages",
    make: (u) =>
      rpcClient([createConnectTransport({ baseUrl: u, httpVersion: "2", useBinaryFormat: false })]),
  },
  "connect-h2-ping": {
    server: "connect",
    describe: "connect-h2 with pingIntervalMs 10 s, idleConnectionTimeoutMs 60 s",
    make: (u) =>
      rpcClient([connectH2(u, { pingIntervalMs: 10_000, idleConnectionTimeoutMs: 60_000 })]),
  },
  "connect-h2-x4": {
    server: "connect",
    describe: "connect-h2 over 4 sessions, calls spread round-robin",
    make: (u) => rpcClient([0, 1, 2, 3].map(() => connectH2(u))),
  },
  "connect-h1": {
    server: "connect",
    describe: "connect-node, Connect protocol, binary, HTTP/1.1 keep-alive agent",
    make: (u) =>
      rpcClient([
        createConnectTransport({
          baseUrl: u,
          httpVersion: "1.1",
          useBinaryFormat: true,
          nodeOptions: { agent: new http.Agent({ keepAlive: true }) },
        }),
      ]),
  },
  "grpc-h2": {
    server: "connect",
    describe: "connect-node, gRPC protocol, h2c",
    make: (u) => rpcClient([createGrpcTransport({ baseUrl: u })]),
  },
  hop: {
    server: "hop",
    describe: "services/lib/hop client and server: Connect protocol, binary, h2c, one session",
    make: (u) => rpcClient([createHopTransport({ baseUrl: u })]),
  },
  "hop-x4": {
    server: "hop",
    describe: "hop over 4 sessions (the pool picks the one with the fewest open calls)",
    make: (u) => rpcClient([createHopTransport({ baseUrl: u, sessions: 4 })]),
  },
  "hop-client": {
    server: "connect",
    describe: "hop client against connect-node's server (what the client alone saves)",
    make: (u) => rpcClient([createHopTransport({ baseUrl: u })]),
  },
  "hop-server": {
    server: "hop",
    describe: "connect-node's client against the hop server (what the server alone saves)",
    make: (u) => rpcClient([connectH2(u)]),
  },
  "grpc-js": {
    server: "grpc-js",
    describe: "@grpc/grpc-js client and server, h2c, one channel (hop's protobuf codec both ends)",
    make: grpcJsClient,
  },
  "grpc-js-client": {
    server: "hop",
    describe: "@grpc/grpc-js client against the hop server (gRPC protocol: connect-node answers)",
    make: grpcJsClient,
  },
  "raw-h2": {
    server: "raw-h2",
    describe: "floor: node:http2 both ends, precomputed answer, bytes counted, nothing decoded",
    make: rawH2Client,
  },
};

function chatRequest(provider: string) {
  return create(ChatRequestSchema, {
    context: create(RequestContextSchema, { requestId: "hop-bench" }),
    target: create(TargetSchema, { provider, model: "bench" }),
    params: create(ChatParamsSchema, {
      model: "bench",
      stream: true,
      messages: [
        create(MessageSchema, {
          role: Role.USER,
          content: [
            create(ContentPartSchema, {
              part: { case: "text", value: "Say hello in one short sentence." },
            }),
          ],
        }),
      ],
    }),
  });
}

function embedRequest() {
  return create(EmbedRequestSchema, {
    context: create(RequestContextSchema, { requestId: "hop-bench" }),
    target: create(TargetSchema, { provider: "instant", model: "bench" }),
    params: create(EmbedParamsSchema, { model: "bench", inputs: ["hello"] }),
  });
}

/** A @grpc/grpc-js channel to the server; a held stream's signal cancels its call. */
function grpcJsClient(baseUrl: string): HopClient {
  const client = new grpc.Client(new URL(baseUrl).host, grpc.credentials.createInsecure());
  const { chat, embed } = GRPC_DEFINITION;
  return {
    chat(provider, signal) {
      const call = client.makeServerStreamRequest(
        chat.path,
        chat.requestSerialize,
        chat.responseDeserialize,
        chatRequest(provider),
      );
      signal?.addEventListener("abort", () => call.cancel(), { once: true });
      return call;
    },
    embed: () =>
      new Promise((resolve, reject) =>
        client.makeUnaryRequest(
          embed.path,
          embed.requestSerialize,
          embed.responseDeserialize,
          embedRequest(),
          (err, res) => (err ? reject(err) : resolve(res)),
        ),
      ),
    close: () => client.close(),
  };
}

function rawH2Client(baseUrl: string): HopClient {
  const session = http2.connect(baseUrl);
  const body = Buffer.concat([
    Buffer.from([0, 0, 0, 0, 0]),
    toBinary(ChatRequestSchema, chatRequest("instant")),
  ]);
  body.writeUInt32BE(body.length - 5, 1);
  const call = () =>
    new Promise<number>((resolve, reject) => {
      const stream = session.request({
        ":method": "POST",
        ":path": "/switchyard.connector.v1.ConnectorService/Chat",
        "content-type": "application/connect+proto",
      });
      let bytes = 0;
      stream.on("data", (c: Buffer) => {
        bytes += c.length;
      });
      stream.on("end", () => resolve(bytes));
      stream.on("error", reject);
      stream.end(body);
    });
  return {
    async *chat() {
      yield await call();
    },
    embed: call,
    close: () => session.close(),
  };
}

// ---------------------------------------------------------------------------------------------
// Measuring

interface Options {
  variants: string[];
  concurrency: number[];
  durationMs: number;
  repeats: number;
  chunks: number;
  openStreams: number;
  rpc: "chat" | "embed";
}

interface Window {
  variant: string;
  concurrency: number;
  repeat: number;
  calls: number;
  errors: number;
  firstError?: string;
  messages: number;
  p50us: number;
  p99us: number;
  callsPerSecond: number;
  clientCpuUsPerCall: number;
  serverCpuUsPerCall: number;
}

async function runWindow(
  client: HopClient,
  opts: Options,
  concurrency: number,
  durationMs: number,
) {
  const histogram = newHistogram();
  let calls = 0;
  let errors = 0;
  let messages = 0;
  let firstError: string | undefined;
  const end = performance.now() + durationMs;
  const worker = async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      try {
        if (opts.rpc === "embed") {
          await client.embed();
          messages++;
        } else {
          for await (const _ of client.chat("instant")) messages++;
        }
        recordMs(histogram, performance.now() - t0);
        calls++;
      } catch (err) {
        errors++;
        firstError ??= String(err);
        await sleep(1);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  histogram.destroy();
  return { calls, errors, messages, latency: summarize(histogram), firstError };
}

interface ServerProc {
  kind: ServerKind;
  child: ChildProcess;
  baseUrl: string;
}

async function startServer(
  kind: ServerKind,
  chunks: number,
  cpuProf: string | undefined,
): Promise<ServerProc> {
  const child = spawn(
    process.execPath,
    [
      ...(cpuProf ? ["--cpu-prof", `--cpu-prof-dir=${cpuProf}`] : []),
      "--expose-gc",
      "--import",
      "tsx",
      fileURLToPath(import.meta.url),
      "--serve",
      kind,
      "--chunks",
      String(chunks),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  // The child's other output (e.g. V8 tracing flags in NODE_OPTIONS) goes on to stderr.
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  return new Promise((resolve, reject) => {
    let started = false;
    lines.on("line", (line) => {
      const port = started
        ? undefined
        : (line.startsWith("{") ? (JSON.parse(line) as { listening?: number }) : {}).listening;
      if (port === undefined) {
        process.stderr.write(`[${kind} server] ${line}\n`);
        return;
      }
      started = true;
      resolve({ kind, child, baseUrl: `http://127.0.0.1:${port}` });
    });
    lines.on("close", () => {
      if (!started) reject(new Error(`hop server ${kind} did not start`));
    });
  });
}

const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function measure(
  name: string,
  client: HopClient,
  server: ServerProc,
  opts: Options,
  concurrency: number,
  repeat: number,
): Promise<Window> {
  const pid = server.child.pid as number;
  const before = await readUsage(pid);
  const clientBefore = cpuUs();
  const started = performance.now();
  const r = await runWindow(client, opts, concurrency, opts.durationMs);
  const wallMs = performance.now() - started;
  const clientUs = cpuUs() - clientBefore;
  const after = await readUsage(pid);
  const serverUs = before && after ? after.cpuUs - before.cpuUs : Number.NaN;
  return {
    variant: name,
    concurrency,
    repeat,
    calls: r.calls,
    errors: r.errors,
    ...(r.firstError !== undefined && { firstError: r.firstError }),
    messages: r.calls > 0 ? r.messages / r.calls : 0,
    p50us: r.latency.p50 * 1000,
    p99us: r.latency.p99 * 1000,
    callsPerSecond: (r.calls / wallMs) * 1000,
    clientCpuUsPerCall: r.calls > 0 ? clientUs / r.calls : Number.NaN,
    serverCpuUsPerCall: r.calls > 0 ? serverUs / r.calls : Number.NaN,
  };
}

/** Collects garbage in this process and the server, so RSS shows what is retained. */
async function collect(server: ServerProc): Promise<void> {
  global.gc?.();
  server.child.kill("SIGUSR2");
  await sleep(300);
}

/** Opens `n` held streams, waits for each one's first chunk, reads RSS, then cancels them all. */
async function openStreams(client: HopClient, server: ServerProc, n: number) {
  const pid = server.child.pid as number;
  await collect(server);
  const before = await readUsage(pid);
  const clientBefore = process.memoryUsage();
  const abort = new AbortController();
  setMaxListeners(0, abort.signal); // every held stream listens on it
  let opened = 0;
  let failed = 0;
  let firstError: string | undefined;
  const done: Array<Promise<void>> = [];
  const allOpen = new Promise<void>((resolve) => {
    const check = () => {
      if (opened + failed === n) resolve();
    };
    for (let i = 0; i < n; i++) {
      done.push(
        (async () => {
          let first = true;
          try {
            for await (const _ of client.chat("held", abort.signal)) {
              if (first) {
                first = false;
                opened++;
                check();
              }
            }
          } catch (err) {
            if (first) {
              failed++;
              firstError ??= String(err);
              check();
            }
          }
        })(),
      );
    }
  });
  const t0 = performance.now();
  // Streams that cannot open (a connection cap, say) must not hang the run.
  await Promise.race([allOpen, sleep(60_000)]);
  const openMs = performance.now() - t0;
  await collect(server);
  const at = await readUsage(pid);
  const clientAt = process.memoryUsage();
  abort.abort();
  await Promise.all(done);
  await sleep(500);
  return {
    opened,
    failed,
    firstError,
    openMs,
    serverKbPerStream: before && at && opened > 0 ? (at.rssKb - before.rssKb) / opened : Number.NaN,
    clientKbPerStream: opened > 0 ? (clientAt.rss - clientBefore.rss) / 1024 / opened : Number.NaN,
    /** The part of the client's growth that is JS heap (the rest: node's and nghttp2's own). */
    clientHeapKbPerStream:
      opened > 0 ? (clientAt.heapUsed - clientBefore.heapUsed) / 1024 / opened : Number.NaN,
  };
}

function fmt(n: number | undefined, digits = 0): string {
  return n === undefined || !Number.isFinite(n) ? "—" : n.toFixed(digits);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      serve: { type: "string" },
      variants: { type: "string" },
      concurrency: { type: "string", default: "1,16" },
      duration: { type: "string", default: "3" },
      repeats: { type: "string", default: "3" },
      chunks: { type: "string", default: "27" },
      "open-streams": { type: "string", default: "2000" },
      rpc: { type: "string", default: "chat" },
      "cpu-prof": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const chunks = Number(values.chunks);
  // Strings encode as the fabric's processes encode them (startFabric does the same).
  useFastUtf8Encoding();
  if (values.serve !== undefined) {
    if (!SERVER_KINDS.includes(values.serve as ServerKind)) throw new Error("unknown server kind");
    return serve(values.serve as ServerKind, chunks);
  }
  if (values.help) {
    const names = Object.entries(VARIANTS).map(([k, v]) => `  ${k.padEnd(20)} ${v.describe}`);
    process.stdout.write(`variants:\n${names.join("\n")}\n`);
    return;
  }
  const opts: Options = {
    variants: values.variants?.split(",") ?? Object.keys(VARIANTS),
    concurrency: values.concurrency.split(",").map(Number),
    durationMs: Number(values.duration) * 1000,
    repeats: Number(values.repeats),
    chunks,
    openStreams: Number(values["open-streams"]),
    rpc: values.rpc === "embed" ? "embed" : "chat",
  };
  for (const v of opts.variants) if (!VARIANTS[v]) throw new Error(`unknown variant ${v}`);

  const kinds = [...new Set(opts.variants.map((v) => (VARIANTS[v] as VariantSpec).server))];
  const servers = new Map<ServerKind, ServerProc>();
  for (const kind of kinds) servers.set(kind, await startServer(kind, chunks, values["cpu-prof"]));
  const clients = new Map<string, HopClient>();
  for (const v of opts.variants) {
    const spec = VARIANTS[v] as VariantSpec;
    clients.set(v, spec.make((servers.get(spec.server) as ServerProc).baseUrl));
  }
  const log = (s: string) => process.stderr.write(`[hop] ${s}\n`);
  try {
    for (const v of opts.variants) {
      log(`warm-up ${v}`);
      const spec = VARIANTS[v] as VariantSpec;
      await measure(
        v,
        clients.get(v) as HopClient,
        servers.get(spec.server) as ServerProc,
        {
          ...opts,
          durationMs: 1500,
        },
        16,
        -1,
      );
    }
    const windows: Window[] = [];
    for (const c of opts.concurrency) {
      for (let rep = 0; rep < opts.repeats; rep++) {
        for (const v of rotate(opts.variants, rep)) {
          const spec = VARIANTS[v] as VariantSpec;
          log(`c=${c} repeat ${rep + 1}/${opts.repeats} ${v}`);
          const server = servers.get(spec.server) as ServerProc;
          windows.push(await measure(v, clients.get(v) as HopClient, server, opts, c, rep));
        }
      }
    }
    const rows: string[][] = [];
    for (const c of opts.concurrency) {
      for (const v of opts.variants) {
        const mine = windows.filter((w) => w.variant === v && w.concurrency === c);
        const med = (pick: (w: Window) => number) => median(mine.map(pick));
        const spread = (pick: (w: Window) => number) => {
          const xs = mine.map(pick).filter(Number.isFinite);
          return xs.length ? `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}` : "—";
        };
        rows.push([
          String(c),
          v,
          fmt(med((w) => w.callsPerSecond)),
          spread((w) => w.callsPerSecond),
          fmt(med((w) => w.p50us)),
          fmt(med((w) => w.p99us)),
          fmt(med((w) => w.clientCpuUsPerCall)),
          fmt(med((w) => w.serverCpuUsPerCall)),
          fmt(med((w) => w.clientCpuUsPerCall + w.serverCpuUsPerCall)),
          fmt(
            med((w) => w.messages),
            1,
          ),
          String(mine.reduce((n, w) => n + w.errors, 0)),
        ]);
        const err = mine.find((w) => w.firstError)?.firstError;
        if (err) log(`${v} c=${c}: ${err}`);
      }
    }
    process.stdout.write(
      `\nHOP — ${opts.rpc === "chat" ? `ConnectorService.Chat, ${opts.chunks} chunks per answer` : "ConnectorService.Embed"}; medians of ${opts.repeats} × ${opts.durationMs / 1000} s windows\n\n${formatTable(
        [
          "c",
          "variant",
          "calls/s",
          "calls/s range",
          "p50 µs",
          "p99 µs",
          "client µs/call",
          "server µs/call",
          "cpu µs/call",
          "msgs/call",
          "errors",
        ],
        rows,
      )}\n`,
    );
    if (opts.openStreams > 0 && opts.rpc === "chat") {
      const held: string[][] = [];
      for (const v of opts.variants.filter((x) => VARIANTS[x]?.server !== "raw-h2")) {
        const spec = VARIANTS[v] as VariantSpec;
        log(`open streams: ${opts.openStreams} through ${v}`);
        // A fresh server each time: V8 keeps the heap pages an earlier run grew into, so a
        // reused server would show the next variant's streams as free.
        const server = await startServer(spec.server, chunks, undefined);
        const client = spec.make(server.baseUrl);
        let r: Awaited<ReturnType<typeof openStreams>>;
        try {
          r = await openStreams(client, server, opts.openStreams);
        } finally {
          client.close();
          server.child.kill("SIGTERM");
          await once(server.child, "exit");
        }
        if (r.firstError) log(`${v}: ${r.failed} failed to open (${r.firstError})`);
        held.push([
          v,
          String(r.opened),
          String(r.failed),
          fmt(r.openMs),
          fmt(r.serverKbPerStream, 1),
          fmt(r.clientKbPerStream, 1),
          fmt(r.clientHeapKbPerStream, 1),
          fmt(r.serverKbPerStream + r.clientKbPerStream, 1),
        ]);
      }
      process.stdout.write(
        `\nOPEN STREAMS — ${opts.openStreams} held chat streams; RSS growth ÷ streams, after a GC on both sides${global.gc ? "" : " (server only: run with node --expose-gc for the client)"}; a fresh server per variant, but one client process: its RSS is exact for the first variant only (later ones reuse heap pages), its JS heap for all\n\n${formatTable(
          [
            "variant",
            "opened",
            "failed",
            "open ms",
            "server KB",
            "client KB",
            "of it JS heap",
            "sum KB/stream",
          ],
          held,
        )}\n`,
      );
    }
    process.stdout.write(
      `\n${opts.variants.map((v) => `${v}: ${VARIANTS[v]?.describe}`).join("\n")}\n`,
    );
  } finally {
    for (const c of clients.values()) c.close();
    for (const s of servers.values()) {
      s.child.kill("SIGTERM");
      await once(s.child, "exit");
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().then(
    () => {
      if (!process.argv.includes("--serve")) process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`hop: ${err instanceof Error ? (err.stack ?? err.message) : err}\n`);
      process.exit(1);
    },
  );
}
