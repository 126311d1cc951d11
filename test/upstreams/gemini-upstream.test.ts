import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fakeVector, type GeminiUpstream, startGeminiUpstream } from "./gemini-upstream.js";

// No official Gemini SDK is installed here, so the checks read the wire format as the API
// reference describes it.
const KEY = "fake-key";
let upstream: GeminiUpstream;

beforeAll(async () => {
  upstream = await startGeminiUpstream({ apiKey: KEY });
});
afterAll(async () => {
  await upstream.close();
});

function post(path: string, body: unknown, key: string | null = KEY): Promise<Response> {
  return fetch(`${upstream.url}${path}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(key !== null && { "x-goog-api-key": key }),
    },
    body: JSON.stringify(body),
  });
}

interface WholeAnswer {
  candidates: Array<{ content?: unknown; finishReason?: string }>;
  usageMetadata: unknown;
}
interface ErrorAnswer {
  error: { status: string; details: Array<{ reason?: string }> };
}

/** The JSON body, typed as the test expects it; the assertions check the shape. */
async function json<T>(response: Response): Promise<T> {
  return (await response.json()) as T;
}

const prompt = { contents: [{ role: "user", parts: [{ text: "hi" }] }] };

describe("fake Gemini upstream", () => {
  it("streams SSE events that are each a whole response, ending the body without [DONE]", async () => {
    upstream.setBehavior({ kind: "answer", text: "Hi there", chunks: 2 });
    const response = await post("/v1beta/models/gemini-x:streamGenerateContent?alt=sse", prompt);
    expect(response.headers.get("content-type")).toBe("text/event-stream");
    const body = await response.text();
    expect(body).not.toContain("[DONE]");
    const events = body
      .split("\r\n\r\n")
      .filter((block) => block !== "")
      .map((block) => JSON.parse(block.replace(/^data: /, "")));
    expect(events.map((e) => e.candidates[0].content.parts[0].text)).toEqual(["Hi t", "here"]);
    expect(events[0].candidates[0].finishReason).toBeUndefined();
    expect(events[1].candidates[0].finishReason).toBe("STOP");
    expect(events[1].usageMetadata).toMatchObject({
      promptTokenCount: 10,
      candidatesTokenCount: 2,
    });
    expect(events[0].responseId).toBe(events[1].responseId);

    const request = upstream.requests.at(-1);
    expect(request).toMatchObject({
      path: "/v1beta/models/gemini-x:streamGenerateContent",
      query: { alt: "sse" },
      model: "gemini-x",
      action: "streamGenerateContent",
      body: prompt,
    });
  });

  it("sends the same events as a JSON array without alt=sse, and whole for generateContent", async () => {
    upstream.setBehavior({
      kind: "answer",
      text: "abc",
      thoughts: "hmm",
      functionCalls: [{ name: "f", args: { a: 1 } }],
    });
    const array = await (await post("/v1beta/models/m:streamGenerateContent", prompt)).json();
    expect(Array.isArray(array)).toBe(true);
    const whole = await json<WholeAnswer>(await post("/v1beta/models/m:generateContent", prompt));
    expect(whole.candidates[0]).toMatchObject({
      content: {
        role: "model",
        parts: [
          { text: "hmm", thought: true },
          { text: "abc" },
          { functionCall: { name: "f", args: { a: 1 } } },
        ],
      },
      finishReason: "STOP",
    });
    expect(whole.usageMetadata).toMatchObject({ thoughtsTokenCount: 5, totalTokenCount: 19 });
  });

  it("withholds what a safety filter stopped: a last event without content, no content whole", async () => {
    upstream.setBehavior({ kind: "answer", text: "Hi there", chunks: 2, finishReason: "SAFETY" });
    const body = await (
      await post("/v1beta/models/m:streamGenerateContent?alt=sse", prompt)
    ).text();
    const events = body
      .split("\r\n\r\n")
      .filter((block) => block !== "")
      .map((block) => JSON.parse(block.replace(/^data: /, "")));
    expect(events.map((e) => e.candidates[0].content?.parts[0].text)).toEqual([
      "Hi t",
      "here",
      undefined,
    ]);
    expect(events[2].candidates[0]).toMatchObject({ finishReason: "SAFETY" });
    expect(events[2].candidates[0].safetyRatings).toContainEqual(
      expect.objectContaining({ blocked: true }),
    );
    const whole = await json<WholeAnswer>(await post("/v1beta/models/m:generateContent", prompt));
    expect(whole.candidates[0]?.finishReason).toBe("SAFETY");
    expect(whole.candidates[0]).not.toHaveProperty("content");
  });

  it("counts the cached part of the prompt in every event, as the prompt's count is", async () => {
    upstream.setBehavior({
      kind: "answer",
      text: "abcd",
      chunks: 2,
      usage: { promptTokenCount: 40, candidatesTokenCount: 2, cachedContentTokenCount: 32 },
    });
    const events = (await (
      await post("/v1beta/models/m:streamGenerateContent", prompt)
    ).json()) as Array<{ usageMetadata: Record<string, unknown> }>;
    for (const event of events) {
      expect(event.usageMetadata).toMatchObject({
        promptTokenCount: 40,
        cachedContentTokenCount: 32,
      });
    }
    expect(events[0]?.usageMetadata.candidatesTokenCount).toBeUndefined();
    expect(events[1]?.usageMetadata).toMatchObject({
      candidatesTokenCount: 2,
      totalTokenCount: 42,
    });
  });

  it("answers errors in Google's envelope, with RetryInfo when asked", async () => {
    upstream.setBehavior({ kind: "error", status: 429, retryDelay: "3s" });
    const response = await post("/v1beta/models/m:generateContent", prompt);
    expect(response.status).toBe(429);
    expect(await response.json()).toEqual({
      error: {
        code: 429,
        message: "fake upstream error 429",
        status: "RESOURCE_EXHAUSTED",
        details: [{ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "3s" }],
      },
    });
  });

  it("checks the API key the way Google does", async () => {
    upstream.setBehavior({ kind: "answer" });
    const missing = await post("/v1beta/models/m:generateContent", prompt, null);
    expect(missing.status).toBe(403);
    const wrong = await post("/v1beta/models/m:generateContent", prompt, "nope");
    expect(wrong.status).toBe(400);
    expect((await json<ErrorAnswer>(wrong)).error.details[0]?.reason).toBe("API_KEY_INVALID");
  });

  it("embeds, describes models and 404s unknown routes", async () => {
    const embedded = await (
      await post("/v1beta/models/e:batchEmbedContents", {
        requests: [
          { model: "models/e", content: { parts: [{ text: "xy" }] }, outputDimensionality: 2 },
        ],
      })
    ).json();
    expect(embedded).toEqual({ embeddings: [{ values: fakeVector("xy", 2) }] });

    const model = await fetch(`${upstream.url}/v1beta/models/gemini-x`, {
      headers: { "x-goog-api-key": KEY },
    });
    expect(await model.json()).toMatchObject({ name: "models/gemini-x" });

    const unknown = await post("/v1/chat/completions", {});
    expect(unknown.status).toBe(404);
    expect((await json<ErrorAnswer>(unknown)).error.status).toBe("NOT_FOUND");
  });
});
