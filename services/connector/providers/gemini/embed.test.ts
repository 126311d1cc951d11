import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EmbedParamsSchema } from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import { fromGeminiEmbedResponse, toGeminiEmbedRequest } from "./embed.js";
import { readJsonFixture } from "./fixtures/fixtures.js";

describe("toGeminiEmbedRequest", () => {
  it("asks for one embedding per input, in order, naming the model in each", () => {
    const params = create(EmbedParamsSchema, { model: "alias", inputs: ["first", "second"] });
    expect(toGeminiEmbedRequest(params, "gemini-embedding-001")).toEqual({
      requests: [
        { model: "models/gemini-embedding-001", content: { parts: [{ text: "first" }] } },
        { model: "models/gemini-embedding-001", content: { parts: [{ text: "second" }] } },
      ],
    });
  });

  it("passes dimensions and the fields the API names, and ignores the rest", () => {
    const params = create(EmbedParamsSchema, {
      inputs: ["doc"],
      dimensions: 768,
      extraJson: JSON.stringify({
        task_type: "RETRIEVAL_DOCUMENT",
        title: "Manual",
        encoding_format: "base64",
      }),
    });
    expect(toGeminiEmbedRequest(params, "models/text-embedding-004").requests).toEqual([
      {
        model: "models/text-embedding-004",
        content: { parts: [{ text: "doc" }] },
        taskType: "RETRIEVAL_DOCUMENT",
        title: "Manual",
        outputDimensionality: 768,
      },
    ]);
  });
});

describe("fromGeminiEmbedResponse", () => {
  it("returns the vectors in input order, with zero usage since Gemini counts none", () => {
    const result = fromGeminiEmbedResponse(readJsonFixture("embed-response.json"), {
      provider: "google",
      model: "gemini-embedding-001",
      inputs: 2,
    });
    expect(result.embeddings.map((e) => e.index)).toEqual([0, 1]);
    expect(result.embeddings[0]?.values).toEqual([
      -0.0122718215, 0.0038911023, 0.0541028, -0.07012346,
    ]);
    expect(result.usage).toMatchObject({ promptTokens: 0, completionTokens: 0, totalTokens: 0 });
    expect(result).toMatchObject({ upstreamModel: "gemini-embedding-001", provider: "google" });
  });

  it("refuses an answer without one vector per input", () => {
    const options = { provider: "google", model: "m", inputs: 3 };
    expect(() => fromGeminiEmbedResponse(readJsonFixture("embed-response.json"), options)).toThrow(
      "embeddings from provider google were malformed: 2 vectors for 3 inputs",
    );
    expect(() =>
      fromGeminiEmbedResponse({ embeddings: [{ values: ["x"] }] }, { ...options, inputs: 1 }),
    ).toThrow(/embeddings\[0\]\.values/);
    expect(() => fromGeminiEmbedResponse({}, options)).toThrow(/no embeddings/);
  });
});
