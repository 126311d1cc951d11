/**
 * A start that failed for a reason the operator can fix (a port in use, a missing setting): the
 * CLI prints its message alone, without a stack trace. `cause` keeps the original error.
 */
export class StartupError extends Error {
  override readonly name = "StartupError";
}

/** What a failed listen means, in an operator's words (Node's error codes). */
export function listenFailure(
  err: unknown,
  what: string,
  address: { host: string; port: number },
): StartupError {
  const code = (err as { code?: string }).code;
  const reasons: Record<string, string> = {
    EADDRINUSE: "the address is already in use (is another switchyard or server running?)",
    EADDRNOTAVAIL: "this machine has no such address",
    ENOTFOUND: "no such host",
    EAI_AGAIN: "the host name could not be resolved",
    EACCES: "permission denied (ports below 1024 need privileges)",
  };
  const reason = (code && reasons[code]) ?? (err instanceof Error ? err.message : String(err));
  return new StartupError(
    `cannot listen on ${address.host}:${address.port} for ${what}: ${reason}`,
    {
      cause: err,
    },
  );
}
