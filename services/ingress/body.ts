import type http from "node:http";
import type http2 from "node:http2";
import { Failure } from "../lib/errors.js";

/** Reads a request body, refusing (413) as soon as it passes `limit` bytes. */
export async function readBody(
  req: http.IncomingMessage | http2.Http2ServerRequest,
  limit: number,
): Promise<Buffer> {
  const tooLarge = () =>
    new Failure({
      status: 413,
      kind: "invalid_request",
      code: "request_too_large",
      message: `Request body is larger than the ${limit}-byte limit of this gateway`,
    });
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  return chunks.length === 1 && chunks[0] ? chunks[0] : Buffer.concat(chunks, size);
}

export function parseJson(body: Buffer): unknown {
  if (body.length === 0) {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      message: "The request body is empty; expected a JSON object",
    });
  }
  try {
    return JSON.parse(body.toString("utf8"));
  } catch (err) {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      message: `We could not parse the JSON body of your request: ${(err as Error).message}`,
    });
  }
}
