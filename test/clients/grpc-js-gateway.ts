import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  ChatRequestSchema as ChatRequestDesc,
  type ChatRequestSchema,
  type ChatResponse,
  ChatResponseSchema,
  ChatStreamRequestSchema as ChatStreamRequestDesc,
  type ChatStreamRequestSchema,
  type ChatStreamResponse,
  ChatStreamResponseSchema,
} from "../../gen/switchyard/gateway/v1/gateway_pb.js";

/**
 * A GatewayService client built on @grpc/grpc-js alone (the interop check for non-Connect gRPC
 * clients), with protobuf-es doing the (de)serialisation. `options` are the channel's (e.g.
 * `grpc.service_config`, for a retry policy).
 */
export function grpcJsGatewayClient(address: string, options: grpc.ChannelOptions = {}) {
  const definition = {
    chatStream: {
      path: "/switchyard.gateway.v1.GatewayService/ChatStream",
      requestStream: false,
      responseStream: true,
      requestSerialize: (m: MessageInitShape<typeof ChatStreamRequestSchema>) =>
        Buffer.from(toBinary(ChatStreamRequestDesc, create(ChatStreamRequestDesc, m))),
      requestDeserialize: (b: Buffer) => fromBinary(ChatStreamRequestDesc, b),
      responseSerialize: (m: ChatStreamResponse) =>
        Buffer.from(toBinary(ChatStreamResponseSchema, m)),
      responseDeserialize: (b: Buffer) => fromBinary(ChatStreamResponseSchema, b),
    },
    chat: {
      path: "/switchyard.gateway.v1.GatewayService/Chat",
      requestStream: false,
      responseStream: false,
      requestSerialize: (m: MessageInitShape<typeof ChatRequestSchema>) =>
        Buffer.from(toBinary(ChatRequestDesc, create(ChatRequestDesc, m))),
      requestDeserialize: (b: Buffer) => fromBinary(ChatRequestDesc, b),
      responseSerialize: (m: ChatResponse) => Buffer.from(toBinary(ChatResponseSchema, m)),
      responseDeserialize: (b: Buffer) => fromBinary(ChatResponseSchema, b),
    },
  } satisfies grpc.ServiceDefinition;
  const Ctor = grpc.makeGenericClientConstructor(definition, "GatewayService");
  const client = new Ctor(address, grpc.credentials.createInsecure(), options);

  return {
    /** All chunks of a streamed answer, or the gRPC error the call ended with. */
    chatStream(
      req: MessageInitShape<typeof ChatStreamRequestSchema>,
      metadata: Record<string, string> = {},
    ): Promise<ChatStreamResponse[]> {
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(metadata)) md.set(k, v);
      return new Promise((resolve, reject) => {
        const out: ChatStreamResponse[] = [];
        const call = client.makeServerStreamRequest(
          definition.chatStream.path,
          definition.chatStream.requestSerialize,
          definition.chatStream.responseDeserialize,
          req,
          md,
        );
        call.on("data", (m: ChatStreamResponse) => out.push(m));
        call.on("error", reject);
        call.on("end", () => resolve(out));
      });
    },
    chat(
      req: MessageInitShape<typeof ChatRequestSchema>,
      metadata: Record<string, string> = {},
    ): Promise<ChatResponse> {
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(metadata)) md.set(k, v);
      return new Promise((resolve, reject) => {
        client.makeUnaryRequest(
          definition.chat.path,
          definition.chat.requestSerialize,
          definition.chat.responseDeserialize,
          req,
          md,
          (err: grpc.ServiceError | null, res?: ChatResponse) =>
            err || !res ? reject(err) : resolve(res),
        );
      });
    },
    close: () => client.close(),
  };
}
