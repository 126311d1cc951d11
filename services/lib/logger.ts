import pino from "pino";

export type Logger = pino.Logger;

/**
 * JSON logs on stdout. Credentials never reach a log line: request headers are not logged, and
 * these paths are redacted in case a caller passes an object that holds one.
 */
export function createLogger(opts: { level?: string | undefined; service?: string }): Logger {
  return pino({
    level: opts.level ?? "info",
    // Each service adds its name in a child logger; one process holds several.
    base: opts.service ? { pid: process.pid, service: opts.service } : { pid: process.pid },
    redact: {
      paths: [
        "api_key",
        "*.api_key",
        "providers.*.api_key",
        "authorization",
        "*.authorization",
        'headers["x-api-key"]',
        "headers.authorization",
      ],
      censor: "[redacted]",
    },
  });
}
