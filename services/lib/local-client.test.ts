import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  ChatChunkSchema,
  ChatParamsSchema,
  EmbedResultSchema,
} from "../../gen/switchyard/chat/v1/chat_pb.js";
import { type ChatRequest, RouterService } from "../../gen/switchyard/router/v1/router_pb.js";
import { heapKeptEach } from "../../test/helpers/heap.js";
import { createLocalClient } from "./local-client.js";

// The in-process client keeps the meaning of the Connect seam: messages, errors, deadlines,
// cancellation and early stops reach the handler as they would over the network.
function service(
  chat: (
    req: ChatRequest,
    ctx: HandlerContext,
  ) => AsyncGenerator<{ chunk: ReturnType<typeof chunk> }>,
) {
  return createLocalClient(RouterService, {
    chat,
    async embed(req) {
      if (req.params?.model === "boom") throw new ConnectError("no", Code.InvalidArgument);
      return { result: create(EmbedResultSchema, { provider: req.params?.model ?? "" }) };
    },
  });
}
const chunk = (text: string) => create(ChatChunkSchema, { choices: [{ index: 0, content: text }] });

describe("createLocalClient", () => {
  it("streams the handler's messages in order and passes the request through", async () => {
    const client = service(async function* (req) {
      yield { chunk: chunk(req.params?.model ?? "") };
      yield { chunk: chunk("b") };
    });
    const got: string[] = [];
    for await (const r of client.chat({ params: create(ChatParamsSchema, { model: "a" }) })) {
      got.push(r.chunk?.choices[0]?.content ?? "");
    }
    expect(got).toEqual(["a", "b"]);
  });

  it("answers unary calls and keeps the handler's error code", async () => {
    const client = service(async function* () {});
    expect((await client.embed({ params: { model: "m" } })).result?.provider).toBe("m");
    const err = await client.embed({ params: { model: "boom" } }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.InvalidArgument);
  });

  it("ends a call that passes its deadline with DeadlineExceeded and aborts the handler", async () => {
    let handlerSignal: AbortSignal | undefined;
    const client = service(async function* (_req, ctx) {
      handlerSignal = ctx.signal;
      await new Promise((r) => setTimeout(r, 5_000));
      yield { chunk: chunk("late") };
    });
    const started = Date.now();
    const err = await (async () => {
      for await (const _ of client.chat({}, { timeoutMs: 50 })) {
        // nothing arrives in time
      }
    })().catch((e: unknown) => ConnectError.from(e));
    expect(err?.code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(handlerSignal?.aborted).toBe(true);
  });

  // Connect clients never call return() on a stream (they omit it on purpose): cancelling a call
  // is done with its signal, and that must reach the handler.
  it("holds a deadline longer than a Node.js timer instead of ending the call at once", async () => {
    // Node fires a timer of more than 2^31 - 1 ms after 1 ms; this answer takes 50.
    const client = service(async function* () {
      await new Promise((r) => setTimeout(r, 50));
      yield { chunk: chunk("in time") };
    });
    const got: string[] = [];
    for await (const r of client.chat({}, { timeoutMs: 3_000_000_000 })) {
      got.push(r.chunk?.choices[0]?.content ?? "");
    }
    expect(got).toEqual(["in time"]);
  });

  it("aborts the handler when the caller's signal aborts", async () => {
    const signals: AbortSignal[] = [];
    const client = service(async function* (_req, ctx) {
      signals.push(ctx.signal);
      for (let i = 0; ; i++) {
        yield { chunk: chunk(String(i)) };
        await new Promise((r) => setTimeout(r, 10));
      }
    });
    const ac = new AbortController();
    const stopped = (async () => {
      for await (const _ of client.chat({}, { signal: ac.signal })) ac.abort();
    })().catch((e: unknown) => ConnectError.from(e));
    expect((await stopped)?.code).toBe(Code.Canceled);
    expect(signals.map((s) => s.aborted)).toEqual([true]);
  });

  it("stops the handler when the consumer stops reading, and ends the call", async () => {
    const signals: AbortSignal[] = [];
    let stopped = false;
    const client = service(async function* (_req, ctx) {
      signals.push(ctx.signal);
      try {
        for (let i = 0; ; i++) yield { chunk: chunk(String(i)) };
      } finally {
        stopped = true;
      }
    });
    const got: string[] = [];
    for await (const r of client.chat({})) {
      got.push(r.chunk?.choices[0]?.content ?? "");
      if (got.length === 3) break;
    }
    expect(got).toEqual(["0", "1", "2"]);
    expect(signals.map((s) => s.aborted)).toEqual([true]);
    await new Promise((r) => setImmediate(r));
    expect(stopped).toBe(true);
  });

  it("leaves the signal of a handler that completed alone, and the call's deadline timer gone", async () => {
    const signals: AbortSignal[] = [];
    const client = service(async function* (_req, ctx) {
      signals.push(ctx.signal);
      yield { chunk: chunk("only") };
    });
    const got: string[] = [];
    for await (const r of client.chat({}, { timeoutMs: 30 })) {
      got.push(r.chunk?.choices[0]?.content ?? "");
    }
    await new Promise((r) => setTimeout(r, 60));
    expect(got).toEqual(["only"]);
    // Past the deadline: a timer left behind would have aborted it.
    expect(signals.map((s) => s.aborted)).toEqual([false]);
  });

  it("hands a handler's failure mid-stream to the consumer as a ConnectError, after the messages before it", async () => {
    const client = service(async function* () {
      yield { chunk: chunk("a") };
      throw new ConnectError("upstream went away", Code.Unavailable);
    });
    const got: string[] = [];
    const err = await (async () => {
      for await (const r of client.chat({})) got.push(r.chunk?.choices[0]?.content ?? "");
    })().catch((e: unknown) => ConnectError.from(e));
    expect(got).toEqual(["a"]);
    expect(err?.code).toBe(Code.Unavailable);
    expect(err?.rawMessage).toBe("upstream went away");
  });

  it("answers Unimplemented for a method the implementation lacks", async () => {
    const client = createLocalClient(RouterService, {});
    const err = await client.embed({}).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.Unimplemented);
    const streamErr = await (async () => {
      for await (const _ of client.chat({})) {
        // nothing
      }
    })().catch((e: unknown) => ConnectError.from(e));
    expect(streamErr?.code).toBe(Code.Unimplemented);
  });

  // An open stream holds its call for as long as it lasts (minutes for a slow answer), once per
  // in-process hop: what a call keeps is memory per open stream.
  it("keeps little per open call", async () => {
    const ac = new AbortController();
    const client = service(async function* (_req, ctx) {
      yield { chunk: chunk("first") };
      await new Promise((r) => ctx.signal.addEventListener("abort", r));
    });
    const open: Array<Promise<unknown>> = [];
    const call = async (signal: AbortSignal) => {
      const it = client.chat({}, { signal, timeoutMs: 60_000 })[Symbol.asyncIterator]();
      await it.next();
      open.push(it.next().catch(() => {}));
      return it;
    };
    // Warmed up first, so the code and feedback the first calls allocate are not counted.
    const warmUp = new AbortController();
    for (let i = 0; i < 200; i++) await call(warmUp.signal);
    warmUp.abort();
    await Promise.all(open.splice(0));
    const { bytesEach: perCall } = await heapKeptEach(2000, () => call(ac.signal));
    ac.abort();
    await Promise.all(open);
    // Handler, consumer and call together: ~2.5 KB; 2.6 with the read as an async method
    // waiting through CallCancel.until, 5.3 KB with the context as an object literal with
    // getters (V8 keeps those in dictionary mode), closures and an eager error.
    expect(perCall).toBeLessThan(4600);
  });
});
