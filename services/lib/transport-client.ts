import type {
  DescMessage,
  DescMethodStreaming,
  DescMethodUnary,
  DescService,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import {
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  type StreamResponse,
  type Transport,
} from "@connectrpc/connect";

type AnyMethod = DescMethodUnary<DescMessage, DescMessage> | DescMethodStreaming;

/**
 * A client of `service` reached through `via`: a Transport (to another process) gets a client
 * made over it; a ready client (one in this process, see local-client.ts) is used as it is.
 */
export function asClient<S extends DescService>(service: S, via: Transport | Client<S>): Client<S> {
  return isTransport(via) ? createTransportClient(service, via) : via;
}

function isTransport(value: object): value is Transport {
  const v = value as Partial<Transport>;
  return typeof v.unary === "function" && typeof v.stream === "function";
}

/**
 * A client over a Transport, like connect's createClient, for the fabric's unary and
 * server-streaming calls. connect's client is compiled down to ES2017 and runs every call through
 * generator polyfills (`__asyncGenerator`: one for the request, one wrapping the response
 * stream); this one hands the request over as a native one-message generator and the transport's
 * response stream back as it is. Same semantics: errors are the transport's ConnectErrors,
 * `onHeader` / `onTrailer` are called, and the iterable has no `return()`, as connect's has
 * none: a call is cancelled with its signal.
 */
export function createTransportClient<S extends DescService>(
  service: S,
  transport: Transport,
): Client<S> {
  const client: Record<string, unknown> = {};
  for (const method of service.methods as readonly AnyMethod[]) {
    if (method.methodKind === "unary") {
      client[method.localName] = async (
        input: MessageInitShape<DescMessage>,
        options?: CallOptions,
      ): Promise<MessageShape<DescMessage>> => {
        const response = await transport.unary(
          method,
          options?.signal,
          options?.timeoutMs,
          options?.headers,
          input,
          options?.contextValues,
        );
        options?.onHeader?.(response.header);
        options?.onTrailer?.(response.trailer);
        return response.message;
      };
    } else if (method.methodKind === "server_streaming") {
      client[method.localName] = (input: MessageInitShape<DescMessage>, options?: CallOptions) =>
        serverStream(transport, method, input, options);
    } else {
      client[method.localName] = () => {
        throw new ConnectError(
          `${service.typeName}.${method.name}: only unary and server-streaming methods are called here`,
          Code.Unimplemented,
        );
      };
    }
  }
  return client as Client<S>;
}

function serverStream(
  transport: Transport,
  method: DescMethodStreaming,
  input: MessageInitShape<DescMessage>,
  options: CallOptions | undefined,
): AsyncIterable<MessageShape<DescMessage>> {
  // The call starts now, as with connect's client; a failure to start surfaces on the first read.
  const started: Promise<StreamResponse<DescMessage, DescMessage>> = transport.stream(
    method,
    options?.signal,
    options?.timeoutMs,
    options?.headers,
    oneMessage(input),
    options?.contextValues,
  );
  started.catch(() => {}); // read (and rethrown) by next(); never an unhandled rejection
  let response: StreamResponse<DescMessage, DescMessage> | undefined;
  let messages: AsyncIterator<MessageShape<DescMessage>> | undefined;
  // Each read is the response's own (chained only for a caller that wants the trailer), not an
  // async method's: an open stream waits in it for minutes, and a suspended async frame would
  // cost several times what the pending read does.
  const onTrailer = options?.onTrailer;
  const trailerAtEnd =
    onTrailer &&
    ((r: IteratorResult<MessageShape<DescMessage>>) => {
      if (r.done && response) onTrailer(response.trailer);
      return r;
    });
  const iterator = {
    next(): Promise<IteratorResult<MessageShape<DescMessage>>> {
      if (messages === undefined) {
        return started.then((r) => {
          response = r;
          options?.onHeader?.(r.header);
          messages = r.message[Symbol.asyncIterator]();
          return iterator.next();
        });
      }
      return trailerAtEnd ? messages.next().then(trailerAtEnd) : messages.next();
    },
  };
  return { [Symbol.asyncIterator]: () => iterator };
}

/**
 * The request of a unary-input call as the async iterable a Transport's stream() takes: a native
 * generator (connect's transports pipe it, and need its throw() and return()).
 */
async function* oneMessage<T>(message: T): AsyncGenerator<T> {
  yield message;
}
