import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ChatChunkSchema, EmbedResultSchema } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { RouterService } from "../../gen/switchyard/router/v1/router_pb.js";
import { createLocalClient } from "./local-client.js";
import { asClient, createTransportClient } from "./transport-client.js";

// Over connect's own in-memory transport (the full Connect protocol, serialization included).
const transport = createRouterTransport((router) =>
  router.service(RouterService, {
    async *chat(req, ctx) {
      ctx.responseHeader.set("x-who", "router");
      for (const text of [req.params?.model ?? "", "b"]) {
        yield { chunk: create(ChatChunkSchema, { choices: [{ index: 0, content: text }] }) };
      }
      if (req.params?.model === "fail") throw new ConnectError("cut", Code.Unavailable);
      ctx.responseTrailer.set("x-end", "clean");
    },
    async embed(req) {
      if (req.params?.model === "boom") throw new ConnectError("no", Code.InvalidArgument);
      return { result: create(EmbedResultSchema, { provider: req.params?.model ?? "" }) };
    },
  }),
);
const client = createTransportClient(RouterService, transport);

describe("createTransportClient", () => {
  it("streams a server stream's messages, with its header and trailer", async () => {
    const seen: string[] = [];
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    const call = client.chat(
      { params: { model: "a" } },
      { onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) },
    );
    for await (const r of call) seen.push(r.chunk?.choices[0]?.content ?? "");
    expect(seen).toEqual(["a", "b"]);
    expect(header?.get("x-who")).toBe("router");
    expect(trailer?.get("x-end")).toBe("clean");
  });

  it("hands over the messages before a stream's error, then the error", async () => {
    const seen: string[] = [];
    const err = await (async () => {
      for await (const r of client.chat({ params: { model: "fail" } })) {
        seen.push(r.chunk?.choices[0]?.content ?? "");
      }
    })().catch((e: unknown) => ConnectError.from(e));
    expect(seen).toEqual(["fail", "b"]);
    expect(err?.code).toBe(Code.Unavailable);
  });

  it("answers unary calls and keeps their error code", async () => {
    expect((await client.embed({ params: { model: "m" } })).result?.provider).toBe("m");
    const err = await client.embed({ params: { model: "boom" } }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.InvalidArgument);
  });

  it("surfaces a call that could not start on the first read", async () => {
    const aborted = new AbortController();
    aborted.abort();
    const call = client.chat({ params: { model: "a" } }, { signal: aborted.signal });
    const err = await (async () => {
      for await (const _ of call) {
        // nothing arrives
      }
    })().catch((e: unknown) => ConnectError.from(e));
    expect(err?.code).toBe(Code.Canceled);
  });
});

describe("asClient", () => {
  it("makes a client over a Transport, and takes a ready client as it is", async () => {
    const over = asClient(RouterService, transport);
    expect((await over.embed({ params: { model: "t" } })).result?.provider).toBe("t");
    const local = createLocalClient(RouterService, {
      async embed() {
        return { result: create(EmbedResultSchema, { provider: "local" }) };
      },
    });
    expect(asClient(RouterService, local)).toBe(local);
  });
});
