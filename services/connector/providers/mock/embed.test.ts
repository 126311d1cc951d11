import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  EmbedParamsSchema,
  RequestContextSchema,
  TokenIdsSchema,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import type { EmbedCall } from "../provider.js";
import {
  createMockProvider,
  MOCK_EMBEDDING_DIMENSIONS,
  mockEmbedding,
  mockTokenEmbedding,
} from "./index.js";

const instant = createMockProvider("demo", { type: "mock", first_token_ms: 0 });

function embedCall(
  inputs: string[],
  options: { dimensions?: number; signal?: AbortSignal } = {},
): EmbedCall {
  const params = create(EmbedParamsSchema, { model: "demo-embed", inputs });
  if (options.dimensions !== undefined) params.dimensions = options.dimensions;
  return {
    provider: "demo",
    model: "mock-embedding",
    params,
    context: create(RequestContextSchema, { requestId: "req-m" }),
    signal: options.signal ?? AbortSignal.timeout(5000),
  };
}

function length(values: readonly number[]): number {
  return Math.hypot(...values);
}

describe("mock embeddings", () => {
  it("give the same unit vector for the same text, every time and in any batch", async () => {
    const first = await instant.embed?.(embedCall(["hello world", "other text"]));
    const second = await instant.embed?.(embedCall(["something else", "hello world"]));
    const a = first?.embeddings[0]?.values ?? [];
    expect(a).toHaveLength(MOCK_EMBEDDING_DIMENSIONS);
    expect(length(a)).toBeCloseTo(1, 12);
    expect(second?.embeddings[1]?.values).toEqual(a);
    expect(a).toEqual(mockEmbedding("hello world", MOCK_EMBEDDING_DIMENSIONS));
  });

  it("give different texts different vectors", async () => {
    const result = await instant.embed?.(embedCall(["cat", "dog", "Cat"]));
    const [cat, dog, capital] = result?.embeddings.map((e) => e.values) ?? [];
    expect(cat).not.toEqual(dog);
    expect(cat).not.toEqual(capital);
  });

  it("honour the requested dimensions, also beyond one hash's worth", async () => {
    const result = await instant.embed?.(embedCall(["x"], { dimensions: 40 }));
    const values = result?.embeddings[0]?.values ?? [];
    expect(values).toHaveLength(40);
    expect(length(values)).toBeCloseTo(1, 12);
    expect(new Set(values).size).toBe(40);
  });

  it("count words as tokens and name the model and provider", async () => {
    const result = await instant.embed?.(embedCall(["the quick brown fox", "  jumps  over "]));
    expect(result?.embeddings.map((e) => e.index)).toEqual([0, 1]);
    expect(result?.usage).toMatchObject({ promptTokens: 6, completionTokens: 0, totalTokens: 6 });
    expect(result).toMatchObject({ upstreamModel: "mock-embedding", provider: "demo" });
  });

  it("embed token ids deterministically, apart from any text, counting one token per id", async () => {
    const call = embedCall([]);
    call.params.tokenInputs = [
      create(TokenIdsSchema, { ids: [1, 2, 3] }),
      create(TokenIdsSchema, { ids: [4, 5] }),
    ];
    const first = await instant.embed?.(call);
    const again = await instant.embed?.(call);
    const [a, b] = first?.embeddings.map((e) => e.values) ?? [];
    expect(first?.embeddings.map((e) => e.index)).toEqual([0, 1]);
    expect(a).toEqual(mockTokenEmbedding([1, 2, 3], MOCK_EMBEDDING_DIMENSIONS));
    expect(length(a ?? [])).toBeCloseTo(1, 12);
    expect(again?.embeddings[0]?.values).toEqual(a);
    expect(b).not.toEqual(a);
    expect(a).not.toEqual(mockEmbedding("1,2,3", MOCK_EMBEDDING_DIMENSIONS));
    expect(first?.usage).toMatchObject({ promptTokens: 5, totalTokens: 5 });
  });

  it("refuse dimensions it cannot make", async () => {
    await expect(instant.embed?.(embedCall(["x"], { dimensions: 0 }))).rejects.toMatchObject({
      status: 400,
      kind: "invalid_request",
      param: "dimensions",
    });
  });

  it("wait first_token_ms and stop at once when cancelled", async () => {
    const slow = createMockProvider("demo", { type: "mock", first_token_ms: 5000 });
    const controller = new AbortController();
    const started = Date.now();
    const pending = slow.embed?.(embedCall(["x"], { signal: controller.signal }));
    setTimeout(() => controller.abort(), 20);
    await expect(pending).rejects.toMatchObject({ status: 499, kind: "cancelled" });
    expect(Date.now() - started).toBeLessThan(1000);
  });
});
