import {
  create,
  type DescMessage,
  type DescMethodStreaming,
  type DescMethodUnary,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  type HandlerContext,
  type ServiceImpl,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";

/** What Headers accepts (the DOM `HeadersInit`, which this project's lib settings do not declare). */
type HeaderInit = ConstructorParameters<typeof Headers>[0];

type AnyImpl = (req: unknown, ctx: HandlerContext) => unknown;

/**
 * A Connect Transport to a service implementation in this process, for one-process mode: the
 * handler is called directly with the request message — no serialization, no protocol framing —
 * while the seam keeps its meaning: errors arrive as ConnectError, a deadline aborts the
 * handler's signal with DeadlineExceeded, the caller's signal (or a consumer that stops reading
 * a stream) aborts it too. Messages are shared, not copied: neither side may keep mutating one
 * after handing it over.
 */
export function createLocalTransport<S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
): Transport {
  const handler = (method: { localName: string; name: string }): AnyImpl => {
    const fn = (impl as Record<string, AnyImpl | undefined>)[method.localName];
    if (!fn) {
      throw new ConnectError(
        `${service.typeName}.${method.name} is not implemented`,
        Code.Unimplemented,
      );
    }
    return fn.bind(impl);
  };

  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ): Promise<UnaryResponse<I, O>> {
      const call = localContext(service, method, signal, timeoutMs, header, contextValues);
      let completed = false;
      try {
        const out = await call.untilAborted(
          handler(method)(create(method.input, input), call.ctx) as Promise<MessageInitShape<O>>,
        );
        completed = true;
        return {
          stream: false,
          service,
          method,
          header: call.ctx.responseHeader,
          message: create(method.output, out) as MessageShape<O>,
          trailer: call.ctx.responseTrailer,
        };
      } catch (err) {
        throw call.error(err);
      } finally {
        call.finish(completed);
      }
    },

    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeaderInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ): Promise<StreamResponse<I, O>> {
      if (method.methodKind !== "server_streaming") {
        throw new ConnectError("only server streaming is supported in process", Code.Unimplemented);
      }
      let request: MessageInitShape<I> | undefined;
      for await (const m of input) {
        request = m;
        break;
      }
      const call = localContext(service, method, signal, timeoutMs, header, contextValues);
      const source = handler(method)(create(method.input, request), call.ctx) as AsyncIterable<
        MessageInitShape<O>
      >;
      async function* messages(): AsyncGenerator<MessageShape<O>> {
        const it = source[Symbol.asyncIterator]();
        let completed = false;
        try {
          for (;;) {
            const r = await call.untilAborted(it.next());
            if (r.done) {
              completed = true;
              return;
            }
            yield create(method.output, r.value) as MessageShape<O>;
          }
        } catch (err) {
          throw call.error(err);
        } finally {
          // A consumer that stops early (or an abort) ends the handler's work as well.
          call.finish(completed);
          if (!completed) void it.return?.()?.catch(() => {});
        }
      }
      return {
        stream: true,
        service,
        method,
        header: call.ctx.responseHeader,
        message: messages(),
        trailer: call.ctx.responseTrailer,
      };
    },
  };
}

/** Why a finished call's handler signal is aborted (the call is over, nothing failed). */
const CALL_ENDED = new ConnectError("call ended", Code.Canceled);

function localContext(
  service: DescService,
  method: HandlerContext["method"],
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
  header: HeaderInit | undefined,
  contextValues: ContextValues | undefined,
) {
  const controller = new AbortController();
  const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
  const timer =
    timeoutMs === undefined
      ? undefined
      : setTimeout(
          () =>
            controller.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded)),
          timeoutMs,
        );
  const onCallerAbort = () =>
    controller.abort(ConnectError.from(signal?.reason ?? "cancelled", Code.Canceled));
  if (signal?.aborted) onCallerAbort();
  else signal?.addEventListener("abort", onCallerAbort, { once: true });
  // What the caller awaits also rejects when the call is aborted, so a handler that ignores its
  // signal cannot hang the caller. One listener per call: a Promise.race per message would leave
  // a reaction on a never-settled promise for every message of a long stream.
  let interrupt: ((reason: unknown) => void) | undefined;
  controller.signal.addEventListener("abort", () => interrupt?.(controller.signal.reason), {
    once: true,
  });
  const untilAborted = <T>(work: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (controller.signal.aborted) {
        work.catch(() => {});
        reject(controller.signal.reason);
        return;
      }
      interrupt = reject;
      work.then(resolve, reject);
    });

  // Headers are built only when someone looks at them: most calls never do.
  let requestHeader: Headers | undefined;
  let responseHeader: Headers | undefined;
  let responseTrailer: Headers | undefined;
  const ctx: HandlerContext = {
    service,
    method,
    signal: controller.signal,
    timeoutMs: () => (deadline === undefined ? undefined : deadline - Date.now()),
    requestMethod: "POST",
    get requestHeader() {
      requestHeader ??= new Headers(header);
      return requestHeader;
    },
    get responseHeader() {
      responseHeader ??= new Headers();
      return responseHeader;
    },
    get responseTrailer() {
      responseTrailer ??= new Headers();
      return responseTrailer;
    },
    protocolName: "in-process",
    values: contextValues ?? createContextValues(),
    url: `in-process:///${service.typeName}/${method.name}`,
  };

  return {
    ctx,
    untilAborted,
    /** The error the caller sees: the abort reason when the call was aborted. */
    error(err: unknown): ConnectError {
      if (controller.signal.aborted && controller.signal.reason !== CALL_ENDED) {
        return ConnectError.from(controller.signal.reason);
      }
      return ConnectError.from(err);
    },
    /**
     * The call is over. A handler that did not complete (the consumer stopped early, or it
     * failed) has its signal aborted, so whatever it still holds is released; one that returned
     * has nothing left to stop, and an abort (an event dispatch) would only cost time.
     */
    finish(completed: boolean) {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onCallerAbort);
      if (!completed && !controller.signal.aborted) controller.abort(CALL_ENDED);
    },
  };
}
