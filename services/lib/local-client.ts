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
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  createContextValues,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";

/** What Headers accepts (the DOM `HeadersInit`, which this project's lib settings do not declare). */
type HeaderInit = ConstructorParameters<typeof Headers>[0];

type AnyImpl = (req: unknown, ctx: HandlerContext) => unknown;
type AnyMethod = DescMethodUnary<DescMessage, DescMessage> | DescMethodStreaming;

/**
 * A Connect client of a service implementation in this process, for one-process mode: the
 * handler is called directly with the request message — no serialization, no protocol framing,
 * and none of a Transport's per-call wrapping (connect's generic client runs every message
 * through two async generators of its own) — while the seam keeps its meaning: errors arrive as
 * ConnectError, a deadline aborts the handler's signal with DeadlineExceeded, the caller's signal
 * aborts it too, and so does a consumer that stops reading a stream (`return()`, which connect's
 * own clients do not offer). Messages are shared, not copied: neither side may keep mutating one
 * after handing it over. Unary and server-streaming methods only: the fabric has no others.
 */
export function createLocalClient<S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
): Client<S> {
  const client: Record<string, unknown> = {};
  for (const method of service.methods as readonly AnyMethod[]) {
    const fn = (impl as Record<string, AnyImpl | undefined>)[method.localName]?.bind(impl);
    const missing = () =>
      new ConnectError(`${service.typeName}.${method.name} is not implemented`, Code.Unimplemented);
    if (method.methodKind === "unary") {
      client[method.localName] = (input: MessageInitShape<DescMessage>, options?: CallOptions) =>
        callUnary(service, method, fn, missing, input, options);
    } else if (method.methodKind === "server_streaming") {
      client[method.localName] = (input: MessageInitShape<DescMessage>, options?: CallOptions) =>
        callServerStream(service, method, fn, missing, input, options);
    } else {
      client[method.localName] = () => {
        throw new ConnectError(
          `${service.typeName}.${method.name}: only unary and server-streaming methods are served in process`,
          Code.Unimplemented,
        );
      };
    }
  }
  return client as Client<S>;
}

async function callUnary(
  service: DescService,
  method: DescMethodUnary<DescMessage, DescMessage>,
  fn: AnyImpl | undefined,
  missing: () => ConnectError,
  input: MessageInitShape<DescMessage>,
  options: CallOptions | undefined,
): Promise<MessageShape<DescMessage>> {
  const call = localContext(service, method, options);
  let completed = false;
  try {
    if (!fn) throw missing();
    const out = await call.untilAborted(
      Promise.resolve(fn(create(method.input, input), call.ctx) as MessageInitShape<DescMessage>),
    );
    completed = true;
    options?.onHeader?.(call.ctx.responseHeader);
    options?.onTrailer?.(call.ctx.responseTrailer);
    return create(method.output, out);
  } catch (err) {
    throw call.error(err);
  } finally {
    call.finish(completed);
  }
}

function callServerStream(
  service: DescService,
  method: DescMethodStreaming,
  fn: AnyImpl | undefined,
  missing: () => ConnectError,
  input: MessageInitShape<DescMessage>,
  options: CallOptions | undefined,
): AsyncIterable<MessageShape<DescMessage>> {
  // The call starts now, as a remote call would (its deadline runs from here); the handler runs
  // when the first message is asked for.
  const call = localContext(service, method, options);
  let source: AsyncIterator<unknown> | undefined;
  let over = false;
  const end = (completed: boolean) => {
    if (over) return;
    over = true;
    call.finish(completed);
    // A handler that did not complete is stopped; its own error (if any) has no one to tell.
    if (!completed) void source?.return?.()?.catch(() => {});
  };
  const iterator: AsyncIterator<MessageShape<DescMessage>> = {
    async next() {
      if (over) return { done: true, value: undefined };
      try {
        if (source === undefined) {
          if (!fn) throw missing();
          const messages = fn(create(method.input, input), call.ctx) as AsyncIterable<unknown>;
          source = messages[Symbol.asyncIterator]();
          options?.onHeader?.(call.ctx.responseHeader);
        }
        const r = await call.untilAborted(source.next());
        if (r.done) {
          end(true);
          options?.onTrailer?.(call.ctx.responseTrailer);
          return { done: true, value: undefined };
        }
        return {
          done: false,
          value: create(method.output, r.value as MessageInitShape<DescMessage>),
        };
      } catch (err) {
        const error = call.error(err);
        end(false);
        throw error;
      }
    },
    async return() {
      end(false);
      return { done: true, value: undefined };
    },
  };
  return { [Symbol.asyncIterator]: () => iterator };
}

/** Why a finished call's handler signal is aborted (the call is over, nothing failed). */
const CALL_ENDED = new ConnectError("call ended", Code.Canceled);

function localContext(
  service: DescService,
  method: HandlerContext["method"],
  options: CallOptions | undefined,
) {
  const signal = options?.signal;
  const timeoutMs = options?.timeoutMs;
  const header: HeaderInit | undefined = options?.headers;
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
    values: options?.contextValues ?? createContextValues(),
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
