import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { GrpcWebClientBase, MethodDescriptor, MethodType, type RpcError } from "grpc-web";
import {
  ChatRequestSchema,
  type ChatResponse,
  ChatResponseSchema,
  ChatStreamRequestSchema,
  type ChatStreamResponse,
  ChatStreamResponseSchema,
  GatewayService,
  ListModelsRequestSchema,
  type ListModelsResponse,
  ListModelsResponseSchema,
} from "../../gen/switchyard/gateway/v1/gateway_pb.js";
import { NodeXhr } from "./node-xhr.js";

/** A streamed answer as grpc-web handed it over: each message with when it arrived. */
export interface StreamedAnswer {
  messages: ChatStreamResponse[];
  /** performance.now() at each message's arrival. */
  arrivals: number[];
}

/**
 * A GatewayService client on Google's grpc-web library, in its default text mode
 * (`application/grpc-web-text`), as a browser page generated with protoc-gen-grpc-web uses it;
 * protobuf-es does the (de)serialisation that generated code would. grpc-web needs an
 * XMLHttpRequest: NodeXhr is installed as the global one.
 */
export function grpcWebTextGatewayClient(baseUrl: string) {
  (globalThis as { XMLHttpRequest?: unknown }).XMLHttpRequest = NodeXhr;
  const client = new GrpcWebClientBase({ format: "text" });
  // grpc-web posts to the URL it is given; a descriptor's name is the method's path.
  const url = (method: { getName(): string }) => `${baseUrl}${method.getName()}`;
  const chat = descriptor("Chat", MethodType.UNARY, ChatRequestSchema, ChatResponseSchema);
  const listModels = descriptor(
    "ListModels",
    MethodType.UNARY,
    ListModelsRequestSchema,
    ListModelsResponseSchema,
  );
  const chatStream = descriptor(
    "ChatStream",
    MethodType.SERVER_STREAMING,
    ChatStreamRequestSchema,
    ChatStreamResponseSchema,
  );

  return {
    /** The answer, or a rejection with grpc-web's RpcError (its `code` is the gRPC status). */
    chat(
      req: MessageInitShape<typeof ChatRequestSchema>,
      metadata: Record<string, string> = {},
    ): Promise<ChatResponse> {
      return client.unaryCall(url(chat), create(ChatRequestSchema, req), metadata, chat);
    },

    listModels(metadata: Record<string, string> = {}): Promise<ListModelsResponse> {
      return client.unaryCall(
        url(listModels),
        create(ListModelsRequestSchema, {}),
        metadata,
        listModels,
      );
    },

    /** Every message of the stream, or a rejection with the RpcError the call ended with. */
    chatStream(
      req: MessageInitShape<typeof ChatStreamRequestSchema>,
      metadata: Record<string, string> = {},
    ): Promise<StreamedAnswer> {
      return new Promise((resolve, reject) => {
        const answer: StreamedAnswer = { messages: [], arrivals: [] };
        const stream = client.serverStreaming(
          url(chatStream),
          create(ChatStreamRequestSchema, req),
          metadata,
          chatStream,
        );
        stream.on("data", (m) => {
          answer.messages.push(m);
          answer.arrivals.push(performance.now());
        });
        stream.on("error", (err: RpcError) => reject(err));
        stream.on("end", () => resolve(answer));
      });
    },
  };
}

/** A grpc-web method descriptor whose (de)serialisers are protobuf-es's. */
function descriptor<I extends DescMessage, O extends DescMessage>(
  name: string,
  type: string,
  input: I,
  output: O,
): MethodDescriptor<MessageShape<I>, MessageShape<O>> {
  // grpc-web keeps the message classes generated code would give; it only calls the functions.
  const unused = Object as unknown as new () => never;
  return new MethodDescriptor(
    `/${GatewayService.typeName}/${name}`,
    type,
    unused,
    unused,
    (m: MessageShape<I>) => toBinary(input, m),
    (bytes: Uint8Array) => fromBinary(output, bytes),
  );
}
