import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  ChatChunkSchema,
  ChatParamsSchema,
  EmbedResultSchema,
} from "../../gen/switchyard/chat/v1/chat_pb.js";
import { type ChatRequest, RouterService } from "../../gen/switchyard/router/v1/router_pb.js";
import { createLocalTransport } from "./local-transport.js";

// The in-process transport keeps the meaning of the Connect seam: messages, errors, deadlines,
// cancellation and early stops reach the handler as they would over the network.
function service(
  chat: (
    req: ChatRequest,
    ctx: HandlerContext,
  ) => AsyncGenerator<{ chunk: ReturnType<typeof chunk> }>,
) {
  return createClient(
    RouterService,
    createLocalTransport(RouterService, {
      chat,
      async embed(req) {
        if (req.params?.model === "boom") throw new ConnectError("no", Code.InvalidArgument);
        return { result: create(EmbedResultSchema, { provider: req.params?.model ?? "" }) };
      },
    }),
  );
}
const chunk = (text: string) => create(ChatChunkSchema, { choices: [{ index: 0, content: text }] });

describe("createLocalTransport", () => {
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
});
