import { create } from "@bufbuild/protobuf";
import { it } from "vitest";
import { ChatParamsSchema, MessageSchema, RequestContextSchema, Role } from "/work/main/gen/switchyard/chat/v1/chat_pb.js";
import { startOpenAIUpstream } from "/work/main/test/upstreams/openai-upstream.js";
import { createOpenAIProvider } from "/work/main/services/connector/providers/openai/index.js";
it("dbg", async () => {
  const up = await startOpenAIUpstream();
  const p = createOpenAIProvider("l", { type: "openai", base_url: up.url });
  const call = (stream: boolean) => ({ provider: "l", model: "m", params: create(ChatParamsSchema, { stream, messages: [create(MessageSchema, { role: Role.USER, contentIsText: true, content: [{ part: { case: "text", value: "x" } }] })] }), context: create(RequestContextSchema, {}), signal: AbortSignal.timeout(5000) });
  for (const s of [true, true, false, false, true]) {
    for await (const _ of p.chat(call(s))) {}
    console.log(s, up.connections);
  }
  await p.close(); await up.close();
});
