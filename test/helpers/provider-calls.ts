// What the provider adapters' tests do with a chat call: make one, read it to its end, read it
// to its failure, wait for the fake upstream to see a request, bound how long something takes.

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { expect } from "vitest";
import {
  type ChatChunk,
  ChatParamsSchema,
  MessageSchema,
  RequestContextSchema,
  Role,
} from "../../gen/switchyard/chat/v1/chat_pb.js";
import type { ChatCall } from "../../services/connector/providers/provider.js";
import { Failure } from "../../services/lib/errors.js";

/**
 * A call of one user message (`text`, default "Say hello") for `model` on `provider`; `params`
 * add to the call's or replace them. The signal defaults to a 10 s timeout.
 */
export function chatCall(
  target: { provider: string; model: string },
  stream: boolean,
  options: {
    text?: string;
    signal?: AbortSignal | undefined;
    params?: MessageInitShape<typeof ChatParamsSchema>;
  } = {},
): ChatCall {
  return {
    ...target,
    params: create(ChatParamsSchema, {
      model: "public",
      stream,
      messages: [
        create(MessageSchema, {
          role: Role.USER,
          contentIsText: true,
          content: [{ part: { case: "text", value: options.text ?? "Say hello" } }],
        }),
      ],
      ...options.params,
    }),
    context: create(RequestContextSchema, { requestId: "req-1" }),
    signal: options.signal ?? AbortSignal.timeout(10_000),
  };
}

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
