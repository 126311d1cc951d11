import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import OpenAI from "openai";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import {
  MOCK_EMBEDDING_DIMENSIONS,
  mockTokenEmbedding,
} from "../services/connector/providers/mock/index.js";
import { hashKey } from "../services/lib/config/keys.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { type GeminiUpstream, startGeminiUpstream } from "./upstreams/gemini-upstream.js";
import {
  fakeEmbedding,
  type OpenAIUpstream,
  startOpenAIUpstream,
} from "./upstreams/openai-upstream.js";

// Token-array embedding inputs (what LangChain's OpenAIEmbeddings sends) through one gateway
// process, from the official openai client and a gRPC client, to local upstreams that speak
// OpenAI's, Azure's and Gemini's wire formats, and to the mock.
const KEY = "sk-embed-tokens-key";
const METERED_KEY = "sk-embed-tokens-metered";
const ADMIN_KEY = "sk-embed-tokens-admin";

let openaiUp: OpenAIUpstream;
let azureUp: OpenAIUpstream;
let meteredUp: OpenAIUpstream;
let geminiUp: GeminiUpstream;
let gw: RunningFabric;
let oai: OpenAI;

beforeAll(async () => {
  openaiUp = await startOpenAIUpstream();
  azureUp = await startOpenAIUpstream();
  // An OpenAI-compatible server that reports no usage for embeddings.
  meteredUp = await startOpenAIUpstream({ behavior: { kind: "answer", noEmbeddingUsage: true } });
  geminiUp = await startGeminiUpstream();
  gw = await startOneProcess(
    testConfig(`
providers:
  oa: { type: openai, base_url: "${openaiUp.url}", api_key: sk-oa }
  az: { type: azure-openai, base_url: "${azureUp.origin}", api_key: az-key, api_version: "2024-10-21" }
  local: { type: openai, base_url: "${meteredUp.url}" }
  ge: { type: gemini, base_url: "${geminiUp.url}", api_key: ge-key }
  demo: { type: mock, first_token_ms: 0 }
  claude: { type: anthropic, base_url: "http://127.0.0.1:9", api_key: an-key }
models:
  m-openai: { targets: [{ provider: oa, model: emb-up }] }
  m-azure: { targets: [{ provider: az, model: my-deployment }] }
  m-gemini: { targets: [{ provider: ge, model: gemini-embedding-001 }] }
  m-mixed:
    strategy: priority
    targets:
      - { provider: ge, model: gemini-embedding-001 }
      - { provider: oa, model: emb-up }
  m-chat-first:
    strategy: priority
    targets:
      - { provider: claude, model: claude-sonnet-4-5 }
      - { provider: oa, model: emb-up }
  m-mock: { targets: [{ provider: demo, model: mock-embedding }] }
  m-metered: { targets: [{ provider: local, model: local-emb, price: { input: 1000, output: 0 } }] }
tenants:
  acme: { keys: ["${hashKey(KEY)}"] }
  metered:
    keys: ["${hashKey(METERED_KEY)}"]
    limits: { tpm: 1000000, daily_tokens: 10000000 }
admin: { keys: ["${hashKey(ADMIN_KEY)}"] }
routing: { retries: 0 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
  oai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEY, maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([openaiUp?.close(), azureUp?.close(), meteredUp?.close(), geminiUp?.close()]);
});

const embedPosts = (up: OpenAIUpstream) => up.requests.filter((r) => r.path.includes("embeddings"));
/** The `input` of the last embeddings request `up` received. */
const lastInput = (up: OpenAIUpstream) =>
  (embedPosts(up).at(-1)?.body as { input?: unknown } | undefined)?.input;
const geminiEmbeds = () => geminiUp.requests.filter((r) => r.action === "batchEmbedContents");

async function postEmbeddings(json: unknown, key = KEY) {
  const res = await request(`${gw.url}/v1/embeddings`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify(json),
  });
  const body = (await res.body.json()) as {
    error: { type: string; message: string; param: string };
    usage: unknown;
    data?: unknown[];
  };
  return { status: res.statusCode, headers: res.headers, body };
}

describe("token-array embedding inputs over REST", () => {
  it("reach an openai target exactly as the official client sent them (base64 by default)", async () => {
    const { data, response } = await oai.embeddings
      .create({
        model: "m-openai",
        input: [
          [1, 2, 3],
          [4, 5],
        ],
      })
      .withResponse();
    const sent = embedPosts(openaiUp).at(-1)?.body as Record<string, unknown>;
    expect(sent.input).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    expect(sent.model).toBe("emb-up");
    // The SDK asked for base64; the gateway decoded and re-encoded the same float32 values.
    expect(data.data.map((d) => d.embedding)).toEqual([
      fakeEmbedding("[1,2,3]"),
      fakeEmbedding("[4,5]"),
    ]);
    expect(data.usage).toEqual({ prompt_tokens: 5, total_tokens: 5 });
    expect(response.headers.get("x-switchyard-provider")).toBe("oa");
  });

  it("keep a flat array flat, as one input", async () => {
    const res = await oai.embeddings.create({
      model: "m-openai",
      input: [7, 8, 9],
      encoding_format: "float",
    });
    expect(lastInput(openaiUp)).toEqual([7, 8, 9]);
    expect(res.data).toHaveLength(1);
    expect(res.data[0]?.embedding).toEqual(fakeEmbedding("[7,8,9]"));
  });

  it("reach an azure-openai deployment as sent", async () => {
    const res = await oai.embeddings.create({ model: "m-azure", input: [[7, 8], [9]] });
    const seen = embedPosts(azureUp).at(-1);
    expect(seen?.deployment).toBe("my-deployment");
    expect(seen?.body).toMatchObject({ input: [[7, 8], [9]] });
    expect(res.data.map((d) => d.index)).toEqual([0, 1]);
  });

  it("get the mock's deterministic vectors", async () => {
    const res = await oai.embeddings.create({ model: "m-mock", input: [[1, 2, 3]] });
    const expected = mockTokenEmbedding([1, 2, 3], MOCK_EMBEDDING_DIMENSIONS);
    const got = res.data[0]?.embedding ?? [];
    expect(got).toHaveLength(expected.length);
    // float32 on the way back to the client.
    for (const [i, v] of got.entries()) expect(v).toBeCloseTo(expected[i] ?? Number.NaN, 6);
    expect(res.usage.prompt_tokens).toBe(3);
  });

  it("are refused with a 400 saying so by a model whose only target is Gemini", async () => {
    const before = geminiEmbeds().length;
    const err = await oai.embeddings
      .create({ model: "m-gemini", input: [[1, 2]] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).message).toMatch(
      /cannot embed token ids: Gemini takes text only/,
    );
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("input");
    expect(geminiEmbeds().length).toBe(before);
  });

  it("pass over a Gemini target for the model's next one, without counting an attempt", async () => {
    const geminiBefore = geminiEmbeds().length;
    const openaiBefore = embedPosts(openaiUp).length;
    const { data, response } = await oai.embeddings
      .create({ model: "m-mixed", input: [[3, 1, 4]] })
      .withResponse();
    expect(response.headers.get("x-switchyard-provider")).toBe("oa");
    expect(response.headers.get("x-switchyard-attempts")).toBe("1");
    expect(data.data[0]?.embedding).toEqual(fakeEmbedding("[3,1,4]"));
    expect(geminiEmbeds().length).toBe(geminiBefore);
    expect(embedPosts(openaiUp).length).toBe(openaiBefore + 1);
    // Text still goes to Gemini, the model's first target.
    await oai.embeddings.create({ model: "m-mixed", input: "pi" });
    expect(geminiEmbeds().length).toBe(geminiBefore + 1);
  });

  it("pass over a target whose provider has no embeddings (Anthropic), texts too", async () => {
    const openaiBefore = embedPosts(openaiUp).length;
    for (const input of ["pi", [[3, 1, 4]]] as const) {
      const { response } = await oai.embeddings
        .create({ model: "m-chat-first", input: input as string })
        .withResponse();
      expect(response.headers.get("x-switchyard-provider")).toBe("oa");
      expect(response.headers.get("x-switchyard-attempts")).toBe("1");
    }
    expect(embedPosts(openaiUp).length).toBe(openaiBefore + 2);
  });

  it.each([
    ["strings mixed with numbers", ["a", 1]],
    ["token arrays mixed with numbers", [[1, 2], 3]],
    ["a float", [[1, 2.5]]],
    ["a negative id", [1, -2]],
    ["an empty token array", [[1], []]],
    ["an empty array", []],
  ])("with %s get an OpenAI 400 naming input, and reach no upstream", async (_name, input) => {
    const before = embedPosts(openaiUp).length;
    const res = await postEmbeddings({ model: "m-openai", input });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ type: "invalid_request_error", param: "input" });
    expect(res.body.error.message).toMatch(/input/);
    expect(embedPosts(openaiUp).length).toBe(before);
  });

  it("over OpenAI's caps (2,048 inputs, 300,000 tokens) get a 400", async () => {
    const many = await postEmbeddings({
      model: "m-openai",
      input: Array.from({ length: 2049 }, () => [1]),
    });
    expect([many.status, many.body.error.param]).toEqual([400, "input"]);
    expect(many.body.error.message).toMatch(/at most 2048/);
    const long = await postEmbeddings({
      model: "m-openai",
      input: [new Array(200_000).fill(1), new Array(100_001).fill(2)],
    });
    expect(long.status).toBe(400);
    expect(long.body.error.message).toMatch(/at most 300000 tokens/);
  });

  it("texts too: a list of 2,049 strings gets the 400, 2,048 reach the upstream", async () => {
    const before = embedPosts(openaiUp).length;
    const many = await postEmbeddings({
      model: "m-openai",
      input: Array.from({ length: 2049 }, (_, i) => `text ${i}`),
    });
    expect([many.status, many.body.error.param]).toEqual([400, "input"]);
    expect(many.body.error.message).toMatch(/at most 2048 inputs .* not 2049/);
    expect(embedPosts(openaiUp).length).toBe(before);
    const full = await postEmbeddings({
      model: "m-openai",
      input: Array.from({ length: 2048 }, (_, i) => `text ${i}`),
    });
    expect(full.status).toBe(200);
    expect(full.body.data).toHaveLength(2048);
  });

  it("count exactly the tokens sent for usage, limits and cost when the upstream reports none", async () => {
    const res = await postEmbeddings(
      {
        model: "m-metered",
        input: [
          [1, 2, 3, 4],
          [5, 6, 7],
        ],
      },
      METERED_KEY,
    );
    expect(res.status).toBe(200);
    expect(embedPosts(meteredUp).at(-1)?.body).toMatchObject({
      input: [
        [1, 2, 3, 4],
        [5, 6, 7],
      ],
    });
    expect(res.body.usage).toEqual({ prompt_tokens: 7, total_tokens: 7 });
    // 7 tokens at $1,000 per million.
    expect(Number(res.headers["x-switchyard-cost-usd"])).toBeCloseTo(0.007, 9);
    const used = async (limit: string) => {
      const r = await request(`${gw.url}/admin/usage?tenant=metered`, {
        headers: { authorization: `Bearer ${ADMIN_KEY}` },
      });
      const body = (await r.body.json()) as {
        subjects: Array<{ limits: Array<{ limit: string; used: number }> }>;
      };
      return body.subjects[0]?.limits.find((l) => l.limit === limit)?.used;
    };
    await vi.waitFor(async () => expect(await used("daily_tokens")).toBe(7), { timeout: 5000 });
    expect(await used("tpm")).toBe(7);
  });
});

describe("token-array embedding inputs over GatewayService", () => {
  const client = () => createClient(GatewayService, createGrpcTransport({ baseUrl: gw.url }));
  const auth = { headers: { authorization: `Bearer ${KEY}` } };

  it("reach the upstream in the shape given: lists, or one flat list", async () => {
    const res = await client().embed(
      { params: { model: "m-openai", tokenInputs: [{ ids: [1, 2] }, { ids: [3] }] } },
      auth,
    );
    expect(lastInput(openaiUp)).toEqual([[1, 2], [3]]);
    expect(res.result?.embeddings.map((e) => e.values)).toEqual([
      fakeEmbedding("[1,2]"),
      fakeEmbedding("[3]"),
    ]);
    expect(res.result?.usage?.promptTokens).toBe(3);
    await client().embed(
      { params: { model: "m-openai", tokenInputs: [{ ids: [5, 6] }], flatTokenInput: true } },
      auth,
    );
    expect(lastInput(openaiUp)).toEqual([5, 6]);
  });

  it.each([
    [
      "texts and token ids together",
      { inputs: ["a"], tokenInputs: [{ ids: [1] }] },
      /'params.inputs' or 'params.token_inputs', not both/,
    ],
    ["an empty token list", { tokenInputs: [{ ids: [1] }, { ids: [] }] }, /token_inputs\[1\]/],
    [
      "a flat input of two lists",
      { tokenInputs: [{ ids: [1] }, { ids: [2] }], flatTokenInput: true },
      /flat_token_input/,
    ],
    [
      "more than 2,048 lists",
      { tokenInputs: Array.from({ length: 2049 }, () => ({ ids: [1] })) },
      /at most 2048/,
    ],
  ])("refuse %s with INVALID_ARGUMENT before any upstream", async (_name, fields, message) => {
    const before = embedPosts(openaiUp).length;
    const err = await client()
      .embed({ params: { model: "m-openai", ...fields } }, auth)
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toMatch(message);
    expect(embedPosts(openaiUp).length).toBe(before);
  });

  it("are refused by a Gemini-only model with INVALID_ARGUMENT saying why", async () => {
    const err = await client()
      .embed({ params: { model: "m-gemini", tokenInputs: [{ ids: [1] }] } }, auth)
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toMatch(/cannot embed token ids/);
  });
});
