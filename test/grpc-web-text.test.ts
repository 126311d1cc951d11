import http from "node:http";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { RpcError } from "grpc-web";
import { request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type ChatParams,
  ChatParamsSchema,
  type ContentPart,
  Role,
} from "../gen/switchyard/chat/v1/chat_pb.js";
import {
  ChatRequestSchema,
  ChatResponseSchema,
  ChatStreamResponseSchema,
  GatewayService,
  ListModelsResponseSchema,
} from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { hashKey } from "../services/lib/config/keys.js";
import { grpcWebTextGatewayClient } from "./clients/grpc-web-gateway.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// gRPC-Web's text mode (application/grpc-web-text), which Google's grpc-web library uses by
// default: that library itself against the ingress, then the wire format by hand for what a
// well-behaved client never sends.
const KEY = "sk-switchyard-text-mode-key";
const LIMIT = 65536;
const APP = "https://app.example.com";
const ANSWER = { kind: "answer", text: "one two three", chunks: 3 } as const;
let upstream: OpenAIUpstream;
let gw: RunningFabric;

beforeAll(async () => {
  upstream = await startOpenAIUpstream({ behavior: ANSWER });
  gw = await startOneProcess(
    testConfig(`
server: { max_body_bytes: ${LIMIT}, cors_origins: ["${APP}"] }
providers:
  up: { type: openai, base_url: "${upstream.url}", api_key: sk-up }
models:
  chat: { targets: [{ provider: up, model: up-chat }] }
  other: { targets: [{ provider: up, model: up-other }] }
tenants:
  acme: { keys: ["${hashKey(KEY)}"], models: [chat] }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
});

afterAll(async () => {
  await gw?.stop();
  await upstream?.close();
});

afterEach(() => upstream.setBehavior(ANSWER));

const auth = { authorization: `Bearer ${KEY}` };
/** Chat calls the upstream got (its health probes list models). */
const chatCalls = () => upstream.requests.filter((r) => r.path.includes("/chat/")).length;
const params = (model = "chat", text = "count"): ChatParams =>
  create(ChatParamsSchema, {
    model,
    messages: [{ role: Role.USER, content: [{ part: { case: "text", value: text } }] }],
  });
const textOf = (parts: ContentPart[] = []) =>
  parts.map((p) => (p.part.case === "text" ? p.part.value : "")).join("");

describe("Google's grpc-web client in text mode", () => {
  it("gets the unary Chat's whole completion", async () => {
    const client = grpcWebTextGatewayClient(gw.url);
    const res = await client.chat({ params: params() }, auth);
    expect(textOf(res.completion?.choices[0]?.message?.content)).toBe("one two three");
    expect(res.completion?.upstreamModel).toBe("up-chat");
  });

  it("lists only the models the key may use", async () => {
    const client = grpcWebTextGatewayClient(gw.url);
    const res = await client.listModels(auth);
    expect(res.models.map((m) => m.id)).toEqual(["chat"]);
  });

  it("gets ChatStream's messages as they are produced, not all at the end", async () => {
    upstream.setBehavior({ ...ANSWER, chunkDelayMs: 250 });
    const client = grpcWebTextGatewayClient(gw.url);
    const { messages, arrivals } = await client.chatStream({ params: params() }, auth);
    const texts = messages.flatMap((m) => m.chunk?.choices.map((c) => c.content) ?? []);
    expect(texts.join("")).toBe("one two three");
    // Three tokens 250 ms apart: held to the end, they would all arrive within a few ms.
    const first = arrivals.findIndex((_, i) => messages[i]?.chunk?.choices[0]?.content);
    expect((arrivals.at(-1) as number) - (arrivals[first] as number)).toBeGreaterThan(300);
  });

  it("gets a refusal's gRPC status: a missing key, a model outside the allow-list", async () => {
    const client = grpcWebTextGatewayClient(gw.url);
    const codeOf = (p: Promise<unknown>) =>
      p.then(
        () => "ok",
        (e: RpcError) => e.code,
      );
    expect(await codeOf(client.chat({ params: params() }))).toBe(16); // UNAUTHENTICATED
    expect(await codeOf(client.chatStream({ params: params() }))).toBe(16);
    expect(await codeOf(client.chat({ params: params("other") }, auth))).toBe(7); // PERMISSION_DENIED
  });
});

/** A gRPC-Web frame: flags, big-endian length, payload. */
function frame(flags: number, payload: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + payload.length);
  out[0] = flags;
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, 5);
  return out;
}

const chatBody = (p: ChatParams = params()) =>
  frame(0, toBinary(ChatRequestSchema, create(ChatRequestSchema, { params: p })));

interface TextAnswer {
  status: number;
  contentType: string | undefined;
  /** The answer's body as it came, one string per piece read. */
  pieces: string[];
  /** Its message payloads, decoded. */
  messages: Buffer[];
  /** Its trailer frame, as name → value. */
  trailer: Record<string, string>;
}

/**
 * Decodes an answer's base64 as grpc-web does: 4-character groups, each on its own, so a group
 * padded in the middle of the text is taken as one padded at its end.
 */
function decodeText(text: string): Buffer {
  expect(text.length % 4).toBe(0);
  const groups: Buffer[] = [];
  for (let i = 0; i < text.length; i += 4) groups.push(Buffer.from(text.slice(i, i + 4), "base64"));
  return Buffer.concat(groups);
}

function parseFrames(bytes: Buffer): Pick<TextAnswer, "messages" | "trailer"> {
  const messages: Buffer[] = [];
  const trailer: Record<string, string> = {};
  for (let at = 0; at < bytes.length; ) {
    const flags = bytes[at] as number;
    const length = bytes.readUInt32BE(at + 1);
    const payload = bytes.subarray(at + 5, at + 5 + length);
    at += 5 + length;
    if ((flags & 0x80) === 0) {
      messages.push(payload);
      continue;
    }
    for (const line of payload.toString("latin1").split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon > 0) trailer[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
  }
  return { messages, trailer };
}

/**
 * Posts `pieces` as a chunked body, one write each, a few ms apart so each leaves as a write of
 * its own; resolves with the answer. Bounded: a server that hung would fail the test, not stall it.
 */
function postText(
  method: string,
  pieces: Array<string | Buffer>,
  headers: Record<string, string> = auth,
): Promise<TextAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${gw.url}/${GatewayService.typeName}/${method}`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web-text", "x-grpc-web": "1", ...headers },
      timeout: 10_000,
    });
    req.on("timeout", () => req.destroy(new Error("no answer within 10 s")));
    req.on("error", reject);
    req.on("response", (res) => {
      const got: string[] = [];
      res.setEncoding("latin1");
      res.on("data", (s: string) => got.push(s));
      res.on("error", reject);
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          contentType: res.headers["content-type"],
          pieces: got,
          ...parseFrames(decodeText(got.join(""))),
        }),
      );
    });
    void (async () => {
      for (const piece of pieces) {
        if (!req.write(piece)) await new Promise((r) => req.once("drain", r));
        await new Promise((r) => setTimeout(r, 5));
      }
      req.end();
    })().catch(reject);
  });
}

/** `text` cut into pieces of 1, 2, 3, … characters: every cut falls somewhere new in a group. */
function cutUnevenly(text: string): string[] {
  const pieces: string[] = [];
  for (let at = 0, size = 1; at < text.length; at += size, size++) {
    pieces.push(text.slice(at, at + size));
  }
  return pieces;
}

describe("the text-mode wire", () => {
  it("decodes a body cut anywhere, and answers each frame as padded base64 of its own", async () => {
    const sent = chatBody().toString("base64");
    const answer = await postText("Chat", cutUnevenly(sent));
    expect(answer.status).toBe(200);
    expect(answer.contentType).toBe("application/grpc-web-text+proto");
    expect(answer.trailer["grpc-status"]).toBe("0");
    expect(answer.messages).toHaveLength(1);
    const res = fromBinary(ChatResponseSchema, answer.messages[0] as Buffer);
    expect(textOf(res.completion?.choices[0]?.message?.content)).toBe("one two three");
  });

  it("takes application/grpc-web-text+proto too, and a body that is a run of padded pieces", async () => {
    // Each frame's bytes encoded on their own, as this gateway answers (and a client may send).
    const whole = chatBody();
    const pieces = [whole.subarray(0, 4), whole.subarray(4, 9), whole.subarray(9)].map((b) =>
      b.toString("base64"),
    );
    expect(pieces.join("")).toMatch(/=.+/); // padding in the middle of the body
    const answer = await postText("Chat", [pieces.join("")], {
      ...auth,
      "content-type": "application/grpc-web-text+proto",
    });
    expect([answer.contentType, answer.trailer["grpc-status"]]).toEqual([
      "application/grpc-web-text+proto",
      "0",
    ]);
  });

  it("streams ChatStream: each message a piece of its own, sent as it is produced", async () => {
    upstream.setBehavior({ ...ANSWER, chunkDelayMs: 200 });
    const answer = await postText("ChatStream", [chatBody().toString("base64")]);
    const texts = answer.messages.map(
      (m) => fromBinary(ChatStreamResponseSchema, m).chunk?.choices[0]?.content ?? "",
    );
    expect(texts.join("")).toBe("one two three");
    expect(answer.trailer["grpc-status"]).toBe("0");
    // Sent as produced, 200 ms apart: each frame reached the socket alone.
    expect(answer.pieces.length).toBeGreaterThanOrEqual(answer.messages.length + 1);
    for (const piece of answer.pieces) expect(piece.length % 4).toBe(0);
  });

  it("answers ListModels", async () => {
    const answer = await postText("ListModels", [frame(0, new Uint8Array(0)).toString("base64")]);
    const list = fromBinary(ListModelsResponseSchema, answer.messages[0] as Buffer);
    expect(list.models.map((m) => m.id)).toEqual(["chat"]);
  });

  it.each([
    ["a character outside the alphabet", (b64: string) => `${b64.slice(0, 8)}*${b64.slice(9)}`],
    [
      "line breaks, as MIME's base64 has",
      (b64: string) => `${b64.slice(0, 8)}\r\n${b64.slice(8, 16)}\r\n${b64.slice(16)}`,
    ],
    ["a body that ends inside a group", (b64: string) => b64.replace(/=+$/, "")],
    ["padding that is not at a group's end", (b64: string) => `AA=A${b64}`],
  ])("refuses %s with INVALID_ARGUMENT, before the call runs", async (_name, spoil) => {
    const before = chatCalls();
    // A body whose length is not a multiple of 3, so that its base64 ends padded.
    const body = chatBody(params("chat", "count to four")).toString("base64");
    expect(body).toMatch(/=$/);
    const answer = await postText("Chat", [spoil(body)]);
    expect(answer.status).toBe(200);
    expect(answer.trailer["grpc-status"]).toBe("3");
    expect(decodeURIComponent(answer.trailer["grpc-message"] ?? "")).toMatch(/not valid base64/);
    expect(chatCalls() - before).toBe(0);
  });

  it("refuses a missing key with UNAUTHENTICATED", async () => {
    const answer = await postText("Chat", [chatBody().toString("base64")], {});
    expect(answer.trailer["grpc-status"]).toBe("16");
  });

  it("holds the decoded message to max_body_bytes", async () => {
    // A message one byte over the limit: refused from its frame's header, with what is sent.
    const over = frame(0, Buffer.alloc(LIMIT + 1)).toString("base64");
    const refused = await postText("Chat", [over]);
    expect(refused.trailer["grpc-status"]).toBe("8"); // RESOURCE_EXHAUSTED
    // A message of exactly the limit is read (and then refused as the garbage it is).
    const atLimit = frame(0, Buffer.alloc(LIMIT, 0xff)).toString("base64");
    const read = await postText("Chat", [atLimit]);
    expect(read.trailer["grpc-status"]).not.toBe("8");
  });
});

describe("text mode from a page on an allowed origin", () => {
  it("gets its preflight answered and may read the answer's status", async () => {
    const pre = await request(`${gw.url}/${GatewayService.typeName}/Chat`, {
      method: "OPTIONS",
      headers: {
        origin: APP,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,x-grpc-web,x-user-agent",
      },
    });
    await pre.body.dump();
    expect(pre.statusCode).toBe(204);
    expect(pre.headers["access-control-allow-headers"]).toContain("content-type");
    const res = await request(`${gw.url}/${GatewayService.typeName}/Chat`, {
      method: "POST",
      headers: { ...auth, origin: APP, "content-type": "application/grpc-web-text" },
      body: chatBody().toString("base64"),
    });
    const { trailer } = parseFrames(decodeText(await res.body.text()));
    expect(trailer["grpc-status"]).toBe("0");
    expect(res.headers["access-control-allow-origin"]).toBe(APP);
    expect(String(res.headers["access-control-expose-headers"]).toLowerCase()).toContain(
      "grpc-status",
    );
  });
});
