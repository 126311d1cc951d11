import OpenAI from "openai";
import { request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type FaultUpstream, startFaultUpstream } from "./fault-upstream.js";

// The official SDK talks to the fake directly: each mode must fail the way its name says, and
// the answer modes must still be OpenAI's wire format.
const TEXT = "Bytes — café 🦊 — in order.";
let fault: FaultUpstream;
let client: OpenAI;

beforeEach(async () => {
  fault = await startFaultUpstream({ text: TEXT, chunks: 3 });
  client = new OpenAI({ baseURL: fault.url, apiKey: "sk-fake", maxRetries: 0, timeout: 5000 });
});
afterEach(async () => {
  await fault.close();
});

const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "x" }];

async function streamedPieces(): Promise<string[]> {
  const pieces: string[] = [];
  const stream = await client.chat.completions.create({ model: "m", messages, stream: true });
  for await (const chunk of stream) {
    const piece = chunk.choices[0]?.delta.content;
    if (piece) pieces.push(piece);
  }
  return pieces;
}

/** The raw SSE body of a streamed request, read until the upstream ends or resets it. */
async function rawStream(signal?: AbortSignal): Promise<{ text: string; error?: unknown }> {
  const res = await request(`${fault.url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "m", messages, stream: true }),
    ...(signal && { signal }),
  });
  let text = "";
  try {
    for await (const part of res.body) text += (part as Buffer).toString("utf8");
  } catch (error) {
    return { text, error };
  }
  return { text };
}

describe("fault upstream", () => {
  it("answers like OpenAI when told to, streamed and whole, and counts attempts", async () => {
    expect(await streamedPieces()).toEqual([...fault.pieces]);
    expect(fault.pieces.join("")).toBe(TEXT);
    const whole = await client.chat.completions.create({ model: "m", messages });
    expect(whole.choices[0]?.message.content).toBe(TEXT);
    expect((await client.models.list()).data.length).toBe(1);
    expect(fault.attempts).toBe(2);
    expect(fault.requests.map((r) => r.stream)).toEqual([true, false, false]);
    expect(fault.requests[0]?.aborted).toBe(false);
  });

  it("refuse: the port refuses connections, and answers again on the same URL afterwards", async () => {
    await fault.setMode({ kind: "refuse" });
    const err = await client.chat.completions.create({ model: "m", messages }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.APIConnectionError);
    expect(JSON.stringify(err.cause?.cause?.code ?? err.cause?.code)).toContain("ECONNREFUSED");
    expect(fault.attempts).toBe(0);
    await fault.setMode({ kind: "answer" });
    expect(await streamedPieces()).toEqual([...fault.pieces]);
  });

  it("refuse with reset: each connection is reset at once and counted", async () => {
    await fault.setMode({ kind: "refuse", how: "reset" });
    const err = await client.chat.completions.create({ model: "m", messages }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.APIConnectionError);
    expect(fault.refusedConnections).toBe(1);
    expect(fault.attempts).toBe(0);
  });

  it("status and rate-limit: the status, OpenAI's envelope and Retry-After", async () => {
    await fault.setMode({ kind: "status", status: 503 });
    const unavailable = await client.chat.completions
      .create({ model: "m", messages })
      .catch((e) => e);
    expect(unavailable).toBeInstanceOf(OpenAI.InternalServerError);
    expect(unavailable.status).toBe(503);
    await fault.setMode({ kind: "rate-limit", retryAfterSeconds: 3 });
    const limited = await client.chat.completions.create({ model: "m", messages }).catch((e) => e);
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
    expect(limited.headers.get("retry-after")).toBe("3");
    expect(limited.code).toBe("rate_limit_exceeded");
  });

  it("error-first-event: 200, then an error the SDK raises before any content", async () => {
    await fault.setMode({ kind: "error-first-event", message: "boom" });
    await expect(streamedPieces()).rejects.toThrow("boom");
    // Not streamed: a 200 whose JSON body is an error object, which the SDK does not check.
    const whole: unknown = await client.chat.completions.create({ model: "m", messages });
    expect(whole).toEqual({ error: expect.objectContaining({ message: "boom" }) });
    expect(fault.requests.map((r) => r.chunksSent)).toEqual([1, 0]);
  });

  it("reset-after: k events, then a reset connection, recorded as aborted", async () => {
    await fault.setMode({ kind: "reset-after", chunks: 2 });
    const { text, error } = await rawStream();
    expect(error).toBeDefined();
    expect(text.split("\n\n").filter((e) => e.startsWith("data: "))).toHaveLength(2);
    await fault.requests[0]?.closed;
    expect(fault.requests[0]?.aborted).toBe(true);
    expect(fault.requests[0]?.chunksSent).toBe(2);
  });

  it("stall-after: k events, then silence on an open connection until the client leaves", async () => {
    await fault.setMode({ kind: "stall-after", chunks: 1 });
    const ac = new AbortController();
    const reading = rawStream(ac.signal);
    await new Promise((r) => setTimeout(r, 200));
    expect(fault.requests[0]?.closedAt).toBeUndefined();
    ac.abort();
    const { text } = await reading;
    expect(text.split("\n\n").filter((e) => e.startsWith("data: "))).toHaveLength(1);
    await fault.requests[0]?.closed;
    expect(fault.requests[0]?.aborted).toBe(true);
    expect(fault.requests[0]?.closedAt).toBeGreaterThan(fault.requests[0]?.receivedAt ?? 0);
  });

  it("hang-before-headers: no answer, and the close is recorded when the client leaves", async () => {
    await fault.setMode({ kind: "hang-before-headers" });
    const ac = new AbortController();
    const call = client.chat.completions
      .create({ model: "m", messages }, { signal: ac.signal })
      .catch((e) => e);
    while (fault.attempts === 0) await new Promise((r) => setTimeout(r, 5));
    ac.abort();
    expect(await call).toBeInstanceOf(OpenAI.APIUserAbortError);
    await fault.requests[0]?.closed;
    expect(fault.requests[0]?.aborted).toBe(true);
  });

  it("trickle: the whole answer, one event per interval", async () => {
    await fault.setMode({ kind: "trickle", intervalMs: 40 });
    const started = performance.now();
    expect(await streamedPieces()).toEqual([...fault.pieces]);
    // Role, 3 pieces, finish and [DONE]: six waits.
    expect(performance.now() - started).toBeGreaterThanOrEqual(6 * 40 * 0.8);
  });

  it("split-bytes: one byte per write still reassembles exactly, streamed and whole", async () => {
    await fault.setMode({ kind: "split-bytes" });
    expect(await streamedPieces()).toEqual([...fault.pieces]);
    const whole = await client.chat.completions.create({ model: "m", messages });
    expect(whole.choices[0]?.message.content).toBe(TEXT);
  });
});
