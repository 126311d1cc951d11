import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type ChatChunk, ChatChunkSchema } from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { makeMessage } from "../../lib/hop/codec.js";
import { AnswerStream, type StreamEvents } from "./answer-stream.js";
import type { ChatCall } from "./provider.js";
import { createUpstreamHttp, type UpstreamHttp } from "./upstream-http.js";

// What AnswerStream does on its own, whatever the provider: the providers' tests
// (openai/, anthropic/, gemini/) cover the rest through each wire format.

/** Each event's data is a chunk's text; `end` completes the answer. */
class TextEvents implements StreamEvents {
  complete = false;
  push(event: { data: string }): ChatChunk | undefined {
    if (event.data === "end") {
      this.complete = true;
      return undefined;
    }
    return makeMessage(ChatChunkSchema, { choices: [{ index: 0, content: event.data }] });
  }
  finish(): ChatChunk | undefined {
    return undefined;
  }
}

let server: http.Server;
let upstream: UpstreamHttp;
/** Requests the server has, waiting for the test to answer them. */
const waiting: Array<{ req: http.IncomingMessage; res: http.ServerResponse }> = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    waiting.push({ req, res });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  upstream = createUpstreamHttp({
    provider: "p",
    baseUrl: `http://127.0.0.1:${port}`,
    headers: {},
  });
});

afterAll(async () => {
  // Connections first: a request still open (a test that failed) must not hold up the close.
  server.closeAllConnections();
  await upstream.close();
  await new Promise((resolve) => server.close(resolve));
});

function call(): ChatCall {
  return {
    provider: "p",
    model: "m",
    params: undefined,
    context: {} as ChatCall["context"],
    signal: new AbortController().signal,
  };
}

/** A stream whose request has no deadline: only the stream itself may end it. */
function answerStream() {
  const c = call();
  return new AnswerStream("p", [], c, () =>
    upstream
      .postJson("/chat", {}, c.signal)
      .then((response) => ({ response, events: new TextEvents() })),
  );
}

async function nextRequest() {
  for (let i = 0; i < 200 && waiting.length === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const got = waiting.shift();
  if (!got) throw new Error("the upstream got no request");
  return got;
}

it("reads each event as it comes, and the end after the answer completes", async () => {
  const stream = answerStream();
  const first = stream.next();
  const { res } = await nextRequest();
  res.writeHead(200, { "content-type": "text/event-stream" });
  res.write("data: a\n\n");
  expect((await first).value?.choices[0]?.content).toBe("a");
  const second = stream.next();
  res.write("data: b\n\ndata: end\n\n");
  expect((await second).value?.choices[0]?.content).toBe("b");
  expect(await stream.next()).toEqual({ done: true, value: undefined });
  res.end();
});

it("cancels the upstream request when its reader stops before the answer's head came", async () => {
  const stream = answerStream();
  const pending = stream.next();
  const { res } = await nextRequest();
  await stream.return();
  const closed = new Promise((resolve) => res.on("close", resolve));
  res.writeHead(200, { "content-type": "text/event-stream" });
  res.write("data: late\n\n");
  // The read under way ends with nothing, and the response is dropped, not read.
  expect(await pending).toEqual({ done: true, value: undefined });
  await closed;
  expect(await stream.next()).toEqual({ done: true, value: undefined });
});

it("says the stream ended early when the body ends before the answer completes", async () => {
  const stream = answerStream();
  const first = stream.next();
  const { res } = await nextRequest();
  res.writeHead(200, { "content-type": "text/event-stream" });
  res.end("data: a\n\ndata: b");
  expect((await first).value?.choices[0]?.content).toBe("a");
  await expect(stream.next()).rejects.toMatchObject({
    kind: "upstream_error",
    retryable: true,
    message: "stream from provider p ended early",
  });
});
