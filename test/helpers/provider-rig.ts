// A provider adapter's test file in two calls: `useProviderRig` starts its fake upstream and
// closes what each test built; `describeProviderConduct` proves what every adapter owes its
// caller whatever its wire: it cancels the upstream request when the caller aborts or stops
// reading, keeps its connection across whole streams, fails a cut or malformed stream, maps the
// upstream's refusals, and never shows its key. What the wires do differently is in the rig.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type ChatChunk, FinishReason } from "../../gen/switchyard/chat/v1/chat_pb.js";
import type { ChatCall, Provider } from "../../services/connector/providers/provider.js";
import { aggregate } from "../../services/lib/chat/aggregate.js";
import type { ProviderConfig } from "../../services/lib/config/types.js";
import type { HangBehavior, RawBehavior } from "../upstreams/wire.js";
import { collect, failure, requestsArrived, within } from "./provider-calls.js";

/** The behaviours every fake upstream has in the same shape. */
export type SharedBehavior =
  | { kind: "answer" }
  | { kind: "error"; status: number; body?: unknown; headers?: Record<string, string> }
  | HangBehavior
  | RawBehavior;

/** What the conduct suite needs of a fake upstream; `B` is its own answer behaviours. */
export interface FakeUpstream<B> {
  requests: Array<{ closed: Promise<void>; aborted: boolean }>;
  /** TCP connections accepted so far. */
  readonly connections: number;
  setBehavior(behavior: B | SharedBehavior): void;
  close(): Promise<void>;
}

export interface ProviderRig<U extends FakeUpstream<B>, B> {
  /** The provider's name in its config, as its chunks and errors name it. */
  name: string;
  /** Its API key, which no error may show. */
  key: string;
  start(): Promise<U>;
  /** The provider's own constructor, e.g. `createOpenAIProvider`. */
  create(name: string, config: ProviderConfig): Provider;
  /** Its config for the fake upstream, which a test's overrides amend. */
  config(upstream: U): ProviderConfig;
  /** A one-message chat call; the signal defaults to a 10 s timeout. */
  call(stream: boolean, signal?: AbortSignal): ChatCall;
  wire: ProviderWire<B>;
}

/** Where the providers' wires differ, for each behaviour the conduct suite proves. */
export interface ProviderWire<B> {
  /** What marks a stream whole, for test names: e.g. "[DONE]". */
  end: string;
  /** A streamed answer of several chunks, 100 ms apart: time to abort after the first. */
  slowStream: B;
  /** A whole streamed answer; where the wire has an end marker, its body ends after it. */
  wholeStream: B;
  /** A stream cut (as `cutMode` says) after the events of three chunks for the client. */
  cutAfterThreeChunks(cutMode: "end" | "destroy"): B;
  /** Raw body: the events of `yielded` chunks, then half an event, then the body ends. */
  halfEvent: { chunks: string[]; yielded: number };
  /** Raw body whose first event is not JSON. */
  notJson: string[];
  /** A stream that brings `yielded` chunks, then an error event the provider maps to `error`. */
  errorEvent: { behavior: B; yielded: number; error: Record<string, unknown> };
  /** The upstream's 400 in its own error shape; `words` must reach the message, `error` match. */
  invalidRequest: { body: unknown; words: string; error?: Record<string, unknown> };
  /** The upstream's 429, telling its delay the way `delay` names; `error` must match too. */
  rateLimited: {
    delay: string;
    behavior: B;
    retryAfterMs: number;
    error?: Record<string, unknown>;
  };
}

export interface RiggedProvider<U> {
  /** The fake upstream, once `beforeAll` started it. */
  readonly upstream: U;
  /** A provider on the fake upstream, closed after the test. */
  provider(overrides?: Partial<ProviderConfig>): Provider;
}

/**
 * Starts the rig's upstream before the file's tests and closes it after them; after each test,
 * forgets its requests, answers normally again and closes the providers the test made.
 */
export function useProviderRig<U extends FakeUpstream<B>, B>(
  rig: ProviderRig<U, B>,
): RiggedProvider<U> {
  let upstream: U | undefined;
  const providers: Provider[] = [];
  const started = (): U => {
    if (upstream === undefined) throw new Error("the fake upstream starts in beforeAll");
    return upstream;
  };
  beforeAll(async () => {
    upstream = await rig.start();
  });
  afterAll(async () => {
    await upstream?.close();
  });
  afterEach(async () => {
    const up = started();
    up.requests.length = 0;
    up.setBehavior({ kind: "answer" });
    await Promise.all(providers.splice(0).map((p) => p.close()));
  });
  return {
    get upstream() {
      return started();
    },
    provider(overrides = {}) {
      const p = rig.create(rig.name, { ...rig.config(started()), ...overrides });
      providers.push(p);
      return p;
    },
  };
}

/** The behaviour every provider owes its caller, proved over the rig's wire. */
export function describeProviderConduct<U extends FakeUpstream<B>, B>(
  title: string,
  rig: ProviderRig<U, B>,
  rigged: RiggedProvider<U>,
): void {
  const { name, key, wire, call } = rig;
  const { provider } = rigged;
  const firstRequest = () => {
    const request = rigged.upstream.requests[0];
    if (!request) throw new Error("the upstream saw no request");
    return request;
  };
  /** Waits for the first request's exchange to end, and says whether the provider cut it. */
  const cutByProvider = async () => {
    await within(firstRequest().closed, 1000);
    return firstRequest().aborted;
  };

  describe(`${title}, as every provider`, () => {
    it("cancels the upstream request when the signal aborts before headers", async () => {
      rigged.upstream.setBehavior({ kind: "hang" });
      const controller = new AbortController();
      const pending = failure(provider().chat(call(true, controller.signal)));
      await requestsArrived(rigged.upstream.requests, 1);
      controller.abort();
      await within(pending, 5000);
      const { error } = await pending;
      expect(error).toMatchObject({ status: 499, kind: "cancelled" });
      expect(await cutByProvider()).toBe(true);
    });

    it("cancels the upstream request when the signal aborts mid-stream", async () => {
      rigged.upstream.setBehavior(wire.slowStream);
      const controller = new AbortController();
      const yielded: ChatChunk[] = [];
      const error = await (async () => {
        try {
          for await (const chunk of provider().chat(call(true, controller.signal))) {
            yielded.push(chunk);
            controller.abort();
          }
        } catch (err) {
          return err;
        }
        return undefined;
      })();
      expect(yielded).toHaveLength(1);
      expect(error).toMatchObject({ status: 499, kind: "cancelled" });
      expect(await cutByProvider()).toBe(true);
    });

    it("cancels the upstream request when the caller stops reading", async () => {
      rigged.upstream.setBehavior(wire.slowStream);
      for await (const chunk of provider().chat(call(true))) {
        expect(chunk.start).toBeDefined();
        break;
      }
      expect(await cutByProvider()).toBe(true);
    });

    it("keeps its connection across complete streams", async () => {
      rigged.upstream.setBehavior(wire.wholeStream);
      const p = provider();
      const before = rigged.upstream.connections;
      for (let i = 0; i < 4; i++) {
        const chunks = await collect(p.chat(call(true)));
        expect(aggregate(chunks).choices[0]?.finishReason).toBe(FinishReason.STOP);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(rigged.upstream.connections - before).toBe(1);
    });

    it.each(["end", "destroy"] as const)(
      `throws when the stream stops before ${wire.end} (cut by %s)`,
      async (cutMode) => {
        rigged.upstream.setBehavior(wire.cutAfterThreeChunks(cutMode));
        const { error, yielded } = await failure(provider().chat(call(true)));
        expect(yielded).toHaveLength(3);
        expect(error).toMatchObject({ status: 502, kind: "upstream_error", retryable: true });
        expect(error.message).toMatch(new RegExp(`^stream from provider ${name} ended early`));
      },
    );

    it("throws when the stream stops in the middle of an event", async () => {
      rigged.upstream.setBehavior({ kind: "raw", chunks: wire.halfEvent.chunks });
      const { error, yielded } = await failure(provider().chat(call(true)));
      expect(yielded).toHaveLength(wire.halfEvent.yielded);
      expect(error).toMatchObject({ status: 502, kind: "upstream_error", retryable: true });
      expect(error.message).toBe(`stream from provider ${name} ended early`);
    });

    it("throws when an event is not JSON", async () => {
      rigged.upstream.setBehavior({ kind: "raw", chunks: wire.notJson });
      const { error } = await failure(provider().chat(call(true)));
      expect(error.message).toBe(`stream from provider ${name} was malformed: invalid JSON`);
    });

    it("throws the upstream's words when an error event arrives mid-stream", async () => {
      rigged.upstream.setBehavior(wire.errorEvent.behavior);
      const { error, yielded } = await failure(provider().chat(call(true)));
      expect(yielded).toHaveLength(wire.errorEvent.yielded);
      expect(error).toMatchObject(wire.errorEvent.error);
    });

    it("maps an upstream 400 to invalid_request with the upstream's words", async () => {
      const { body, words } = wire.invalidRequest;
      rigged.upstream.setBehavior({ kind: "error", status: 400, body });
      const { error } = await failure(provider().chat(call(false)));
      expect(error).toMatchObject({
        status: 400,
        kind: "invalid_request",
        retryable: false,
        upstreamStatus: 400,
        provider: name,
        ...wire.invalidRequest.error,
      });
      expect(error.message).toContain(words);
    });

    it(`maps an upstream 429 to rate_limited, waiting as its ${wire.rateLimited.delay} says`, async () => {
      rigged.upstream.setBehavior(wire.rateLimited.behavior);
      const { error, yielded } = await failure(provider().chat(call(true)));
      expect(yielded).toEqual([]);
      expect(error).toMatchObject({
        status: 429,
        kind: "rate_limited",
        retryable: true,
        retryAfterMs: wire.rateLimited.retryAfterMs,
        upstreamStatus: 429,
        provider: name,
        ...wire.rateLimited.error,
      });
    });

    it("never lets the API key into an error message", async () => {
      rigged.upstream.setBehavior({ kind: "error", status: 502, body: `proxy got key ${key}` });
      const { error } = await failure(provider().chat(call(false)));
      expect(error.message).not.toContain(key);
      expect(error.message).toContain("[redacted]");
    });

    it("fails a probe the upstream refuses the gateway's key for", async () => {
      rigged.upstream.setBehavior({ kind: "error", status: 401 });
      await expect(provider().probe("m", AbortSignal.timeout(5000))).rejects.toMatchObject({
        kind: "auth",
        status: 502,
      });
    });

    it("calls nothing to probe when probe is none", async () => {
      rigged.upstream.setBehavior({ kind: "error", status: 500 });
      await provider({ probe: "none" }).probe("m", AbortSignal.timeout(5000));
      expect(rigged.upstream.requests).toEqual([]);
    });
  });
}
