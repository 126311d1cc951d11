import { describe, expect, it } from "vitest";
import { EmbeddingSchema, EmbedResultSchema } from "../../../gen/switchyard/chat/v1/chat_pb.js";
import { Failure } from "../../lib/errors.js";
import { makeMessage } from "../../lib/hop/codec.js";
import {
  MAX_INPUTS,
  MAX_TOKENS_PER_REQUEST,
  parseEmbeddingsRequest,
  renderEmbeddings,
} from "./embeddings.js";

function refusal(input: unknown): Failure {
  try {
    parseEmbeddingsRequest({ model: "m", input });
  } catch (err) {
    if (err instanceof Failure) return err;
    throw err;
  }
  throw new Error(`input ${JSON.stringify(input)} was accepted`);
}

describe("parseEmbeddingsRequest: input", () => {
  it("takes a string or a list of strings as texts", () => {
    expect(parseEmbeddingsRequest({ model: "m", input: "hi" }).params.inputs).toEqual(["hi"]);
    const { params } = parseEmbeddingsRequest({ model: "m", input: ["a", "b"] });
    expect(params.inputs).toEqual(["a", "b"]);
    expect(params.tokenInputs).toEqual([]);
  });

  it("takes a flat array of token ids as one input, and remembers that it was flat", () => {
    const { params } = parseEmbeddingsRequest({ model: "m", input: [1, 2, 3] });
    expect(params.inputs).toEqual([]);
    expect(params.tokenInputs.map((t) => t.ids)).toEqual([[1, 2, 3]]);
    expect(params.flatTokenInput).toBe(true);
  });

  it("takes an array of token arrays as one input each", () => {
    const { params } = parseEmbeddingsRequest({
      model: "m",
      input: [
        [1, 2, 3],
        [4, 5],
        [0, 4294967295],
      ],
      encoding_format: "base64",
    });
    expect(params.tokenInputs.map((t) => t.ids)).toEqual([
      [1, 2, 3],
      [4, 5],
      [0, 4294967295],
    ]);
    expect(params.flatTokenInput).toBe(false);
    // A one-list request given as a list of lists stays one.
    const one = parseEmbeddingsRequest({ model: "m", input: [[7]] }).params;
    expect([one.tokenInputs.length, one.flatTokenInput]).toEqual([1, false]);
  });

  it.each([
    ["mixed strings and numbers", ["a", 1], /'input\[1\]' is not a string/],
    ["numbers then strings", [1, "a"], /'input\[1\]' must be a token id .*it is a string/],
    ["a token array among numbers", [1, [2]], /'input\[1\]' must be a token id .*an array/],
    ["numbers among token arrays", [[1], 2], /'input\[1\]' is not an array/],
    ["a float", [1, 2.5], /'input\[1\]' must be a token id .*not an integer/],
    ["a negative id", [[1], [2, -3]], /'input\[1\]\[1\]' must be a token id .*negative/],
    ["an id past uint32", [4294967296], /'input\[0\]' must be a token id .*above 4294967295/],
    ["a string inside a token array", [[1, "2"]], /'input\[0\]\[1\]' must be a token id/],
    ["an empty array", [], /must not be an empty array/],
    ["an empty token array", [[1], []], /'input\[1\]' must not be an empty array of tokens/],
    ["an empty string", ["a", ""], /must not contain empty strings/],
    ["null inside", [null], /'input' must be a string, an array of strings, an array of token/],
    ["an object", { a: 1 }, /'input' must be a string, an array of strings/],
    ["a number", 5, /'input' must be a string, an array of strings/],
    ["nothing", undefined, /'input' must be a string, an array of strings/],
  ])("refuses %s with a 400 naming input", (_name, input, message) => {
    const f = refusal(input);
    expect([f.status, f.kind, f.param]).toEqual([400, "invalid_request", "input"]);
    expect(f.message).toMatch(message);
  });

  it("never quotes the token ids themselves in a refusal", () => {
    expect(refusal([[123456789, -987654321]]).message).not.toMatch(/123456789|987654321/);
  });

  it(`holds token inputs to OpenAI's caps: ${MAX_INPUTS} inputs, ${MAX_TOKENS_PER_REQUEST} tokens`, () => {
    const inputs = Array.from({ length: MAX_INPUTS }, () => [1]);
    expect(parseEmbeddingsRequest({ model: "m", input: inputs }).params.tokenInputs).toHaveLength(
      MAX_INPUTS,
    );
    expect(refusal([...inputs, [1]]).message).toMatch(/at most 2048 token arrays .* not 2049/);
    const full = new Array<number>(MAX_TOKENS_PER_REQUEST).fill(7);
    expect(
      parseEmbeddingsRequest({ model: "m", input: full }).params.tokenInputs[0]?.ids,
    ).toHaveLength(MAX_TOKENS_PER_REQUEST);
    expect(refusal([full, [1]]).message).toMatch(/at most 300000 tokens .* not 300001/);
  });
});

describe("parseEmbeddingsRequest: dimensions", () => {
  it("refuses a dimensions the hops cannot carry as a uint32 (1e308 once reached the upstream)", () => {
    expect(
      parseEmbeddingsRequest({ model: "m", input: "hi", dimensions: 0xffff_ffff }).params
        .dimensions,
    ).toBe(0xffff_ffff);
    for (const dimensions of [0x1_0000_0000, 1e308]) {
      let failure: unknown;
      try {
        parseEmbeddingsRequest({ model: "m", input: "hi", dimensions });
      } catch (err) {
        failure = err;
      }
      expect(failure).toBeInstanceOf(Failure);
      const f = failure as Failure;
      expect([f.status, f.param, f.message]).toEqual([
        400,
        "dimensions",
        "'dimensions' must be at most 4294967295",
      ]);
    }
  });
});

describe("renderEmbeddings", () => {
  it("encodes base64 as little-endian float32, whatever the input was", () => {
    const result = makeMessage(EmbedResultSchema, {
      embeddings: [makeMessage(EmbeddingSchema, { index: 0, values: [0.5, -1, 2] })],
      upstreamModel: "up",
    });
    const out = renderEmbeddings(result, "base64");
    const bytes = Buffer.from(out.data[0]?.embedding as string, "base64");
    expect(Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, 3))).toEqual([0.5, -1, 2]);
  });
});
