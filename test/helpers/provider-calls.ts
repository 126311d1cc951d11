// What the provider adapters' tests do with a chat call: read it to its end, read it to its
// failure, wait for the fake upstream to see a request, bound how long something takes.

import { expect } from "vitest";
import type { ChatChunk } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../services/lib/errors.js";

/** Every chunk of a call that must succeed. */
export async function collect(chunks: AsyncIterable<ChatChunk>): Promise<ChatChunk[]> {
  const out: ChatChunk[] = [];
  for await (const chunk of chunks) out.push(chunk);
  return out;
}

/** Runs a call to its end and returns the Failure it throws, with the chunks it yielded first. */
export async function failure(
  chunks: AsyncIterable<ChatChunk>,
): Promise<{ error: Failure; yielded: ChatChunk[] }> {
  const yielded: ChatChunk[] = [];
  try {
    for await (const chunk of chunks) yielded.push(chunk);
  } catch (err) {
    expect(err).toBeInstanceOf(Failure);
    return { error: err as Failure, yielded };
  }
  throw new Error("the call succeeded");
}

/** Resolves once a fake upstream's request log holds `n` requests; fails after 5 s. */
export async function requestsArrived(requests: { length: number }, n: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (requests.length < n) {
    if (Date.now() > deadline) throw new Error(`${n - requests.length} request(s) never arrived`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Milliseconds until `promise` settles; fails unless it does within `limit` ms. */
export async function within(promise: Promise<unknown>, limit: number): Promise<number> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`not within ${limit} ms`)), limit);
    }),
  ]).finally(() => clearTimeout(timer));
  return Date.now() - started;
}
