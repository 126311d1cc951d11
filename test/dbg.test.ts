import { create } from "@bufbuild/protobuf";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import pino from "pino";
import { Registry } from "prom-client";
import { it } from "vitest";
import { ChatParamsSchema, MessageSchema, Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { ConnectorService } from "../gen/switchyard/connector/v1/connector_pb.js";
import { buildConnector } from "../services/connector/main.js";
import { testConfig } from "./helpers/fabric.js";
import { startOpenAIUpstream } from "./upstreams/openai-upstream.js";

it("dbg", async () => {
  const up = await startOpenAIUpstream({
    behavior: {
      kind: "answer",
      text: "a b c d",
      chunks: 4,
      chunkDelayMs: 30,
      cutAfterChunks: 2,
      cutMode: "destroy",
    },
  });
  const config = testConfig(`
providers: { primary: { type: openai, base_url: "${up.url}", api_key: k } }
models: { m: { targets: [{ provider: primary, model: m }] } }
`);
  const c = buildConnector({ config, logger: pino({ level: "silent" }), registry: new Registry() });
  const client = createClient(ConnectorService, createRouterTransport(c.routes));
  const t0 = Date.now();
  try {
    for await (const r of client.chat({
      target: { provider: "primary", model: "m" },
      params: create(ChatParamsSchema, {
        model: "x",
        stream: true,
        messages: [
          create(MessageSchema, {
            role: Role.USER,
            content: [{ part: { case: "text", value: "hi" } }],
          }),
        ],
      }),
    })) {
      console.log(Date.now() - t0, JSON.stringify(r.chunk?.choices[0]?.content));
    }
  } catch (e) {
    console.log(Date.now() - t0, "ERR", String(e));
  }
  await c.close();
  await up.close();
});
