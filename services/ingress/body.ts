import type http from "node:http";
import type http2 from "node:http2";
import { Failure } from "../lib/errors.js";
import { invalidUtf8Offset } from "../lib/utf8.js";

/**
 * Reads a request body, refusing (413) as soon as it passes `limit` bytes. With the stream's
 * events rather than `for await`: Node's async iterator of a stream is an async generator with an
 * end-of-stream watcher, ~2.6 KB of allocations per request here.
 */
export function readBody(
  req: http.IncomingMessage | http2.Http2ServerRequest,
  limit: number,
  /** How long the whole body may take to arrive (Node's requestTimeout default); 408 after. */
  timeoutMs = BODY_TIMEOUT_MS,
): Promise<Buffer> {
  const declared = declaredLength(req);
  if (declared !== undefined && declared > limit) return Promise.reject(tooLarge(limit));
  const encoding = req.headers["content-encoding"];
  if (encoding !== undefined && encoding.trim().toLowerCase() !== "identity") {
    // Not decoded here: said plainly, rather than a JSON parse error about its first byte.
    return Promise.reject(
      new Failure({
        status: 415,
        kind: "invalid_request",
        code: "unsupported_content_encoding",
        message: `Content-Encoding ${encoding} is not accepted for request bodies; send the body uncompressed`,
      }),
    );
  }
  // A request already gone will not say so again.
  if (req.destroyed) return Promise.reject(clientLeft());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => {
      stop();
      req.pause();
      reject(
        new Failure({
          status: 408,
          kind: "invalid_request",
          code: "request_timeout",
          message: `The request body did not arrive within ${timeoutMs} ms`,
        }),
      );
    }, timeoutMs);
    const stop = () => {
      clearTimeout(timer);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        stop();
        // The rest is not read: the answer (413) closes the connection (rest.ts, sendError).
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      stop();
      resolve(chunks.length === 1 && chunks[0] ? chunks[0] : Buffer.concat(chunks, size));
    };
    const onError = () => {
      stop();
      reject(clientLeft());
    };
    const onClose = () => {
      stop();
      reject(clientLeft());
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onClose);
  });
}

/** The body's length as the request announces it (Content-Length), if it does. */
export function declaredLength(
  req: http.IncomingMessage | http2.Http2ServerRequest,
): number | undefined {
  const declared = Number(req.headers["content-length"]);
  return Number.isFinite(declared) ? declared : undefined;
}

/**
 * The client went away before its request's body was in (the request errs with "aborted", or
 * closes): a 499, logged as the client's doing, not a 500 of ours.
 */
function clientLeft(): Failure {
  return new Failure({
    status: 499,
    kind: "cancelled",
    message: "the client closed the connection before its request was complete",
  });
}

/** How long a request body may take to arrive in full: Node's own requestTimeout default. */
const BODY_TIMEOUT_MS = 300_000;

function tooLarge(limit: number): Failure {
  return new Failure({
    status: 413,
    kind: "invalid_request",
    code: "request_too_large",
    message: `Request body is larger than the ${limit}-byte limit of this gateway`,
  });
}

export function parseJson(body: Buffer): unknown {
  if (body.length === 0) {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      message: "The request body is empty; expected a JSON object",
    });
  }
  const text = utf8Text(body);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      message: `We could not parse the JSON body of your request: ${syntaxErrorOf(err)}`,
    });
  }
}

/**
 * The body as text, refused (400) unless it is UTF-8 (RFC 8259 §8.1): decoding ill-formed bytes
 * into U+FFFD would silently send the upstream something other than what the client wrote. The
 * message gives the offset, never the bytes, which are prompt. A leading byte-order mark is
 * dropped: RFC 8259 lets a parser ignore one, and Python's json.loads, with which OpenAI-style
 * servers read a body's bytes, does; JSON.parse would call it an unexpected token. The check
 * (Node's native isUtf8) costs ~0.2–0.45 ms on a 4 MB body, which takes 25–60 ms to decode and
 * parse.
 */
function utf8Text(body: Buffer): string {
  const at = invalidUtf8Offset(body);
  if (at !== -1) {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      message: `The request body is not valid UTF-8 (an invalid byte sequence starts at byte offset ${at})`,
    });
  }
  const bom = body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf;
  return body.toString("utf8", bom ? 3 : 0);
}

/**
 * V8's reason, without the stretch of the body it quotes around an unexpected token (`Unexpected
 * token 'x', "…my passwo"... is not valid JSON`): that would be a piece of the prompt in the
 * request's log line.
 */
function syntaxErrorOf(err: unknown): string {
  const message = (err as Error).message;
  const quoted = /^(Unexpected token '.+?'), (?:\.\.\.)?"/su.exec(message);
  if (quoted?.[1]) return quoted[1];
  return message.includes('"') ? "the body is not valid JSON" : message;
}

/**
 * Runs a request parser on a parsed body. JSON.parse takes any depth, but the parsers
 * re-serialise free-form parts (tool schemas, pass-through fields) with JSON.stringify, which
 * recurses: a value nested some thousands of levels deep overflows the stack. That is a request
 * the gateway cannot take, the client's 400, not a 500.
 */
export function parseRequest<T>(parse: (body: unknown) => T, body: unknown): T {
  try {
    return parse(body);
  } catch (err) {
    if (err instanceof RangeError) {
      throw new Failure({
        status: 400,
        kind: "invalid_request",
        message: "The request body is nested too deeply",
      });
    }
    throw err;
  }
}
