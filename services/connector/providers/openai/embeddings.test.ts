import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EmbedParamsSchema } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../../lib/errors.js";
import { fromOpenAIEmbeddings, toOpenAIEmbeddingsRequest } from "./embeddings.js";
import { readJsonFixture } from "./fixtures/fixtures.js";

describe("toOpenAIEmbeddingsRequest", () => {
  it("sends the upstream model, the inputs and float encoding", () => {
    const params = create(EmbedParamsSchema, { model: "public", inputs: ["a b", "c"] });
    expect(toOpenAIEmbeddingsRequest(params, "text-embedding-3-small")).toEqual({
      model: "text-embedding-3-small",
      input: ["a b", "c"],
      encoding_format: "float",
    });
  });

  it("sends token ids in the shape the client sent them: a flat list stays flat", () => {
    const flat = create(EmbedParamsSchema, {
      tokenInputs: [{ ids: [1, 2, 3] }],
      flatTokenInput: true,
    });
    expect(toOpenAIEmbeddingsRequest(flat, "m").input).toEqual([1, 2, 3]);
    const lists = create(EmbedParamsSchema, { tokenInputs: [{ ids: [1, 2, 3] }, { ids: [4, 5] }] });
    expect(toOpenAIEmbeddingsRequest(lists, "m").input).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    const one = create(EmbedParamsSchema, { tokenInputs: [{ ids: [9] }] });
    expect(toOpenAIEmbeddingsRequest(one, "m").input).toEqual([[9]]);
  });

  it("adds dimensions and user only when the client set them", () => {
    const params = create(EmbedParamsSchema, { inputs: ["x"], dimensions: 256, user: "u-1" });
    expect(toOpenAIEmbeddingsRequest(params, "m")).toMatchObject({ dimensions: 256, user: "u-1" });
  });

  it("passes extra fields through but never lets them replace the gateway's", () => {
    const params = create(EmbedParamsSchema, {
      inputs: ["x"],
      extraJson:
        '{"input_type":"query","model":"other","input":["smuggled"],"encoding_format":"base64",' +
        '"__proto__":{"polluted":true}}',
    });
    const body = toOpenAIEmbeddingsRequest(params, "m");
    expect(body).toMatchObject({
      model: "m",
      input: ["x"],
      encoding_format: "float",
      input_type: "query",
    });
    // A "__proto__" key is a plain field to pass on, not the body's prototype.
    expect(Object.getPrototypeOf(body)).toBe(Object.prototype);
    expect(JSON.stringify(body)).toContain('"__proto__":{"polluted":true}');
  });

  it("refuses extra_json that is not an object", () => {
    const params = create(EmbedParamsSchema, { inputs: ["x"], extraJson: "[1]" });
    expect(() => toOpenAIEmbeddingsRequest(params, "m")).toThrow(Failure);
  });
});

describe("fromOpenAIEmbeddings", () => {
  it("reads vectors, usage and model from a recorded answer", () => {
    const reading = fromOpenAIEmbeddings(readJsonFixture("embeddings.json"), 2, "openai");
    expect(reading.ok).toBe(true);
    if (!reading.ok) return;
    const { result } = reading;
    expect(result.upstreamModel).toBe("text-embedding-3-small");
    expect(result.provider).toBe("openai");
    expect(result.usage).toMatchObject({ promptTokens: 8, completionTokens: 0, totalTokens: 8 });
    expect(result.embeddings.map((e) => e.index)).toEqual([0, 1]);
    expect(result.embeddings[0]?.values).toEqual([
      0.0023064255, -0.009327292, -0.0028842222, 0.017162561,
    ]);
  });

  it("orders vectors by index", () => {
    const answer = {
      data: [
        { index: 1, embedding: [1] },
        { index: 0, embedding: [0] },
      ],
      model: "m",
      usage: { prompt_tokens: 2, total_tokens: 2 },
    };
    const reading = fromOpenAIEmbeddings(answer, 2, "p");
    expect(reading.ok && reading.result.embeddings.map((e) => e.values)).toEqual([[0], [1]]);
  });

  it("leaves the model empty when the answer names one no header can carry", () => {
    for (const model of ["\ud800", "x".repeat(100 * 1024), "m\r\nx-evil: 1"]) {
      const reading = fromOpenAIEmbeddings({ data: [{ index: 0, embedding: [1] }], model }, 1, "p");
      expect(reading.ok && reading.result.upstreamModel).toBe("");
    }
  });

  it("decodes base64 vectors from a server that ignored encoding_format", () => {
    const answer = { data: [{ index: 0, embedding: "AAAAPwAAgL4AAAA+" }], model: "m" };
    const reading = fromOpenAIEmbeddings(answer, 1, "p");
    expect(reading.ok && reading.result.embeddings[0]?.values).toEqual([0.5, -0.25, 0.125]);
    // No usage reported: zero, not a failure.
    expect(reading.ok && reading.result.usage?.promptTokens).toBe(0);
  });

  it.each([
    ["a vector missing", { data: [{ index: 0, embedding: [1] }] }, "1 embeddings for 2 inputs"],
    [
      "an index repeated",
      {
        data: [
          { index: 0, embedding: [1] },
          { index: 0, embedding: [2] },
        ],
      },
      "data[1] has index 0 out of place",
    ],
    [
      "a vector that is not numbers",
      {
        data: [
          { index: 0, embedding: ["x"] },
          { index: 1, embedding: [1] },
        ],
      },
      "data[0].embedding is not a vector",
    ],
    ["no data", { object: "list" }, "no data"],
  ])("reports %s as the problem", (_, answer, problem) => {
    expect(fromOpenAIEmbeddings(answer, 2, "p")).toEqual({ ok: false, problem });
  });
});
