import pino from "pino";
import type { RequestContext } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { StartupError } from "./startup-error.js";
import { traceIdOf } from "./trace.js";

export type Logger = pino.Logger;

/**
 * JSON logs on stdout. Credentials and prompts never reach a log line: request headers and
 * bodies are not logged, and these paths are redacted in case a caller passes an object that
 * holds one. A tenant configured with `log_prompts` gets its prompt under `prompt`, which is
 * deliberately not among them.
 */
export function createLogger(opts: {
  level?: string | undefined;
  service?: string;
  /** Where lines go instead of stdout (tests read them). */
  destination?: pino.DestinationStream;
}): Logger {
  // Case does not matter (LOG_LEVEL=WARN), as in most servers.
  const level = (opts.level || "info").toLowerCase();
  if (level !== "silent" && !(level in pino.levels.values)) {
    throw new StartupError(
      `LOG_LEVEL must be one of ${Object.keys(pino.levels.values).join(", ")}, silent; got '${level}'`,
    );
  }
  const options: pino.LoggerOptions = {
    level,
    // Each service adds its name in a child logger; one process holds several.
    base: opts.service ? { pid: process.pid, service: opts.service } : { pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
  };
  return pino(options, opts.destination ?? asyncStdout());
}

/** How long a log line may wait for others to share its write (see asyncStdout). */
export const LOG_FLUSH_MS = 250;

/**
 * Stdout written asynchronously and in batches. A line per request must not block the event loop
 * on a write(2) (pino's default stdout is synchronous; measured at up to 8% of the ingress's CPU
 * under load), and a write per line costs a thread-pool hand-off and a wake-up of the event loop:
 * at one request at a time, the request line cost one process 9% of its CPU and the 4-process
 * ingress 70 µs per request (the bench at LOG_LEVEL warn against info). So lines gather until
 * 4 KB are waiting (pino's advice for asynchronous logging), and go out LOG_FLUSH_MS after the
 * first of them in any case. What is still pending when the process exits, also through
 * process.exit() or an uncaught exception, is written synchronously then (pino sees to that); only
 * a kill -9 loses it.
 *
 * The flush timer runs only while a line waits. sonic-boom's own `periodicFlush` is an interval
 * that writes even when nothing waits: an idle process made four empty write(2)s a second, each
 * through the thread pool and back with a wake-up of the event loop.
 */
function asyncStdout(): pino.DestinationStream {
  // pino registers an asynchronous destination to be flushed synchronously at exit.
  const out = pino.destination({ dest: 1, sync: false, minLength: 4096 });
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    out.flush();
  };
  const stream: pino.DestinationStream & { flush(cb: (err?: Error) => void): void } = {
    write(line: string): void {
      out.write(line);
      timer ??= setTimeout(flush, LOG_FLUSH_MS).unref();
    },
    // logger.flush() (pino calls its stream's flush).
    flush(cb: (err?: Error) => void): void {
      clearTimeout(timer);
      timer = undefined;
      out.flush(cb);
    },
  };
  return stream;
}

/** Where keys, auth headers and prompt content would sit in a logged object. */
export const REDACTED_PATHS = [
  "api_key",
  "*.api_key",
  "providers.*.api_key",
  "authorization",
  "*.authorization",
  "headers.authorization",
  'headers["x-api-key"]',
  'headers["api-key"]',
  'headers["x-goog-api-key"]',
  "headers.cookie",
  "*.headers.authorization",
  '*.headers["x-api-key"]',
  // Prompt and answer content of chat and embeddings requests, canonical or wire-shaped.
  "messages",
  "*.messages",
  "system",
  "*.system",
  "inputs",
  "*.inputs",
  "tokenInputs",
  "*.tokenInputs",
  "token_inputs",
  "*.token_inputs",
];

/**
 * A child logger whose lines name the request and its trace. Made where a service logs about one
 * request (failures, fallbacks), never ahead of time on the request path.
 */
export function requestLogger(logger: Logger, context: RequestContext | undefined): Logger {
  return logger.child({
    request_id: context?.requestId || undefined,
    trace_id: traceIdOf(context?.traceparent ?? ""),
  });
}

/**
 * The logger for the ingress's one line per request (made once, at start). That line is built
 * field by field from values that never hold a credential (ids, names, counts, times, a failure's
 * already scrubbed message; the prompt only for a tenant with `log_prompts`), so it skips
 * redaction, which would cost ~20 µs a line (pino's redaction walks the wildcard paths of every
 * object it logs: measured 24 µs against 3.6 µs for a 20-field line).
 */
export function requestLineLogger(logger: Logger): Logger {
  return logger.child({}, { redact: { paths: [], censor: "" } });
}
