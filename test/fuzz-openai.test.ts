import { appendFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatParamsSchema, EmbedParamsSchema } from "../gen/switchyard/chat/v1/chat_pb.js";
import { parseJson, parseRequest } from "../services/ingress/body.js";
import { openAICodec, responsesCodec } from "../services/ingress/codecs.js";
import { parseEmbeddingsRequest } from "../services/ingress/openai/embeddings.js";
import { hashKey } from "../services/lib/config/keys.js";
import { Failure } from "../services/lib/errors.js";
import { codecFor } from "../services/lib/hop/codec.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import {
  type Json,
  type Path,
  pathsOf,
  rawNumber,
  showPath,
  stringify,
  valueAt,
  WRONG_VALUES,
} from "./helpers/json-paths.js";
import {
  type AnthropicUpstream,
  signThinking,
  startAnthropicUpstream,
} from "./upstreams/anthropic-upstream.js";
import { type GeminiUpstream, startGeminiUpstream } from "./upstreams/gemini-upstream.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";

// Mutation fuzzing of the OpenAI-style routes (`/v1/chat/completions`, `/v1/responses`,
// `/v1/embeddings`): from a few valid bodies, every field replaced by each of a fixed set of
// wrong values, every field deleted, an unknown field added at every object level, and whole
// bodies that are not a JSON object. The bodies name models on OpenAI, Anthropic and Gemini
// fakes, so each translation gets its share; the fakes always answer well, so any 5xx is the
// gateway's own. Each mutation must get a 2xx or a 4xx in OpenAI's error envelope, in time, and
// the gateway must still serve a valid request at the end. FUZZ_TRACE=FILE lists the mutations
// as they are sent.

interface Case {
  route: string;
  /** What was done to which body, so a failure can be reproduced from its message. */
  name: string;
  body: string;
  contentType?: string;
}

const TRACE = process.env.FUZZ_TRACE;
const KEY = "sk-fuzz-openai-key";
const PER_REQUEST_TIMEOUT_MS = 10_000;
const IN_FLIGHT = 4;

const DEEP: Json = { a: { b: { c: "d" } } };
const FIELD_VALUES: ReadonlyArray<[string, Json]> = [
  ...WRONG_VALUES,
  ["[null]", [null]],
  ["3-deep object", DEEP],
  ["-0", rawNumber("-0")],
  ["1.5", 1.5],
  ["2^53+1", rawNumber("9007199254740993")],
  // JSON.parse reads it as Infinity.
  ["1e999", rawNumber("1e999")],
  ['"\\u0000"', "\u0000"],
  ["10,000 strings", Array.from({ length: 10_000 }, () => "x")],
];

/** Keys an object's prototype answers for, added as fields: parsers must not take them for its own. */
const PROTO_KEYS: ReadonlyArray<[string, Json]> = [
  ["__proto__", { polluted: true }],
  ["toString", 1],
];

const SLOT = "\u0000slot\u0000";

const weatherSchema: Json = {
  type: "object",
  properties: { city: { type: "string" } },
  required: ["city"],
  additionalProperties: false,
};

const PNG_DATA_URL =
  "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

const chatWhole: Json = {
  model: "m-openai",
  messages: [
    { role: "system", content: "You are terse." },
    {
      role: "user",
      content: [
        { type: "text", text: "What is in this picture, and the weather in Paris?" },
        { type: "image_url", image_url: { url: PNG_DATA_URL, detail: "low" } },
      ],
    },
    {
      role: "assistant",
      content: null,
      tool_calls: [
        {
          id: "call_1",
          type: "function",
          function: { name: "get_weather", arguments: '{"city":"Paris"}' },
        },
      ],
    },
    { role: "tool", tool_call_id: "call_1", content: "sunny" },
    { role: "user", name: "ann", content: [{ type: "text", text: "Thanks." }] },
  ],
  tools: [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "Weather for a city",
        parameters: weatherSchema,
      },
    },
  ],
  tool_choice: { type: "function", function: { name: "get_weather" } },
  response_format: {
    type: "json_schema",
    json_schema: { name: "answer", schema: weatherSchema, strict: true },
  },
  temperature: 0.5,
  max_tokens: 64,
  stop: ["END"],
  seed: 7,
  user: "u-1",
  n: 1,
  presence_penalty: 0.1,
  frequency_penalty: 0.1,
  logprobs: true,
  top_logprobs: 2,
  fallbacks: ["m-gemini"],
  metadata: { trace: "t-1" },
};

const chatStreamed: Json = {
  model: "m-anthropic",
  messages: [{ role: "user", content: "Weather in Paris?" }],
  tools: [{ type: "function", function: { name: "get_weather", parameters: weatherSchema } }],
  tool_choice: "auto",
  parallel_tool_calls: false,
  max_completion_tokens: 64,
  stream: true,
  stream_options: { include_usage: true },
};

const THINKING = "The user wants the weather.";
const REASONING = `sy1.${Buffer.from(
  JSON.stringify([
    { type: "thinking", thinking: THINKING, signature: signThinking(THINKING) },
    { type: "redacted_thinking", data: "opaque" },
  ]),
).toString("base64url")}`;

const responsesWhole: Json = {
  model: "m-anthropic",
  instructions: "You are terse.",
  input: [
    {
      role: "user",
      content: [
        { type: "input_text", text: "What is in this picture?" },
        { type: "input_image", image_url: PNG_DATA_URL, detail: "low" },
      ],
    },
    // Reasoning blocks as this gateway hands them out (`sy1.` and base64url JSON).
    {
      type: "reasoning",
      id: "rs_1",
      summary: [{ type: "summary_text", text: "Thinking about the weather." }],
      encrypted_content: REASONING,
    },
    {
      type: "function_call",
      call_id: "call_1",
      name: "get_weather",
      arguments: '{"city":"Paris"}',
    },
    { type: "function_call_output", call_id: "call_1", output: "sunny" },
  ],
  tools: [
    {
      type: "function",
      name: "get_weather",
      description: "Weather for a city",
      parameters: weatherSchema,
      strict: true,
    },
  ],
  tool_choice: "auto",
  text: { format: { type: "json_schema", name: "answer", schema: weatherSchema, strict: true } },
  max_output_tokens: 64,
  temperature: 0.5,
  include: ["reasoning.encrypted_content"],
  parallel_tool_calls: true,
  metadata: { trace: "t-1" },
  store: false,
  user: "u-1",
};

const responsesStreamed: Json = {
  model: "m-gemini",
  input: [{ role: "user", content: "Weather in Paris?" }],
  tools: [{ type: "function", name: "get_weather", parameters: weatherSchema, strict: false }],
  tool_choice: { type: "function", name: "get_weather" },
  text: { format: { type: "text" } },
  stream: true,
};

const embedBodies: Json[] = [
  { model: "m-openai", input: "hello world" },
  { model: "m-gemini", input: ["hello", "world"], encoding_format: "float", dimensions: 8 },
  {
    model: "m-openai",
    input: [
      [1, 2, 3],
      [4, 5],
    ],
  },
  { model: "m-openai", input: [1, 2, 3], encoding_format: "base64" },
];

const VALID: ReadonlyArray<[string, string, Json]> = [
  ["/v1/chat/completions", "chat whole", chatWhole],
  ["/v1/chat/completions", "chat streamed", chatStreamed],
  ["/v1/responses", "responses whole", responsesWhole],
  ["/v1/responses", "responses streamed", responsesStreamed],
  ...embedBodies.map((b, i): [string, string, Json] => ["/v1/embeddings", `embeddings ${i}`, b]),
];

/** Paths to every object (the root included), where an unknown field can be added. */
function objectPathsOf(value: Json): Path[] {
  return [[], ...pathsOf(value)].filter((p) => {
    const v = valueAt(value, p);
    return v !== null && typeof v === "object" && !Array.isArray(v);
  });
}

/** A deep copy of `value` with `edit` applied to the container of `path`'s last step. */
function mutate(
  value: Json,
  path: Path,
  edit: (parent: Json[] | Record<string, Json>, key: string | number) => void,
): Json {
  const copy = structuredClone(value);
  const parent = valueAt(copy, path.slice(0, -1)) as Json[] | Record<string, Json>;
  edit(parent, path.at(-1) as string | number);
  return copy;
}

function casesOf(route: string, label: string, valid: Json): Case[] {
  const cases: Case[] = [];
  const add = (name: string, body: Json) =>
    cases.push({ route, name: `${label}: ${name}`, body: stringify(body) });
  for (const path of pathsOf(valid)) {
    for (const [valueName, wrong] of FIELD_VALUES) {
      add(
        `${showPath(path)} = ${valueName}`,
        mutate(valid, path, (p, k) => {
          (p as Record<string | number, Json>)[k] = wrong;
        }),
      );
    }
    add(
      `delete ${showPath(path)}`,
      mutate(valid, path, (p, k) => {
        if (Array.isArray(p)) p.splice(k as number, 1);
        else delete p[k as string];
      }),
    );
  }
  for (const path of objectPathsOf(valid)) {
    const target = structuredClone(valid);
    (valueAt(target, path) as Record<string, Json>).zz_unknown_field = "surprise";
    add(`add ${showPath(path)}.zz_unknown_field`, target);
    for (const [key, value] of PROTO_KEYS) {
      // Written as text: an object literal's or JSON.stringify's "__proto__" is not a field.
      const json = stringify(valueAt(valid, path));
      const withKey = `{${JSON.stringify(key)}:${JSON.stringify(value)}${json === "{}" ? "" : ","}${json.slice(1)}`;
      const body =
        path.length === 0
          ? withKey
          : stringify(
              mutate(valid, path, (p, k) => {
                (p as Record<string | number, Json>)[k] = SLOT;
              }),
            ).replace(JSON.stringify(SLOT), () => withKey);
      cases.push({ route, name: `${label}: add ${showPath(path)}.${key}`, body });
    }
  }
  return cases;
}

function wholeBodyCases(route: string, valid: Json): Case[] {
  const text = JSON.stringify(valid);
  const raw = (name: string, body: string, contentType?: string): Case => ({
    route,
    name: `whole body: ${name}`,
    body,
    ...(contentType === undefined ? {} : { contentType }),
  });
  return [
    raw("not JSON", "model=m-openai&input=hi"),
    raw("JSON null", "null"),
    raw("JSON array", JSON.stringify([valid])),
    raw("JSON number", "42"),
    raw("JSON string", JSON.stringify(text)),
    raw("truncated JSON", text.slice(0, Math.floor(text.length / 2))),
    raw("10,000 [", "[".repeat(10_000)),
    raw("10,000 nested objects", `${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}`),
    raw("wrong content-type", text, "text/plain"),
    raw("form content-type", text, "application/x-www-form-urlencoded"),
    raw("empty body", ""),
    raw("whitespace only", "   \n"),
    raw("duplicate keys", `{"model":"m-openai","model":1,${text.slice(1)}`),
    raw("trailing garbage", `${text}]`),
  ];
}

const ALL_CASES: Case[] = [
  ...VALID.flatMap(([route, label, body]) => casesOf(route, label, body)),
  ...[...new Set(VALID.map(([route]) => route))].flatMap((route) =>
    wholeBodyCases(route, VALID.find(([r]) => r === route)?.[2] ?? null),
  ),
];

let openai: OpenAIUpstream;
let anthropic: AnthropicUpstream;
let gemini: GeminiUpstream;
let gw: RunningFabric;

beforeAll(async () => {
  [openai, anthropic, gemini] = await Promise.all([
    startOpenAIUpstream(),
    startAnthropicUpstream(),
    startGeminiUpstream(),
  ]);
  gw = await startOneProcess(
    testConfig(`
providers:
  oa: { type: openai, base_url: "${openai.url}", api_key: sk-oa }
  an: { type: anthropic, base_url: "${anthropic.url}", api_key: an-key }
  ge: { type: gemini, base_url: "${gemini.url}", api_key: ge-key }
models:
  m-openai: { targets: [{ provider: oa, model: gpt-up, price: { input: 2.5, output: 10 } }] }
  m-anthropic: { targets: [{ provider: an, model: claude-up, price: { input: 3, output: 15 } }] }
  m-gemini: { targets: [{ provider: ge, model: gemini-up, price: { input: 1, output: 4 } }] }
tenants:
  fuzz:
    keys: ["${hashKey(KEY)}"]
    limits: { rpm: 1000000, tpm: 1000000000, concurrency: 100, daily_tokens: 1000000000000, monthly_usd: 1000000000 }
routing: { retries: 0 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([openai?.close(), anthropic?.close(), gemini?.close()]);
});

interface Outcome {
  status: number;
  contentType: string;
  text: string;
}

async function send(c: Case): Promise<Outcome> {
  const res = await fetch(`${gw.url}${c.route}`, {
    method: "POST",
    headers: {
      "content-type": c.contentType ?? "application/json",
      authorization: `Bearer ${KEY}`,
    },
    body: c.body,
    signal: AbortSignal.timeout(PER_REQUEST_TIMEOUT_MS),
  });
  return {
    status: res.status,
    contentType: res.headers.get("content-type") ?? "",
    text: await res.text(),
  };
}

/** What is wrong with `out` as an answer to `c`, or undefined when nothing is. */
function problemOf(c: Case, out: Outcome): string | undefined {
  if (out.status >= 500) return `status ${out.status}: ${out.text.slice(0, 300)}`;
  if (out.status >= 400) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(out.text);
    } catch {
      return `status ${out.status} with a body that is not JSON: ${out.text.slice(0, 300)}`;
    }
    const error = (parsed as { error?: Record<string, unknown> } | null)?.error;
    const shaped =
      error !== undefined &&
      error !== null &&
      typeof error.message === "string" &&
      error.message !== "" &&
      typeof error.type === "string" &&
      "param" in error &&
      (error.param === null || typeof error.param === "string") &&
      "code" in error &&
      (error.code === null || typeof error.code === "string");
    return shaped
      ? undefined
      : `status ${out.status} outside OpenAI's envelope: ${out.text.slice(0, 300)}`;
  }
  if (out.contentType.startsWith("text/event-stream")) {
    // A stream that began must end as a complete answer: the fakes always answer well.
    const ended =
      c.route === "/v1/responses"
        ? /event: response\.(completed|incomplete)\n/.test(out.text)
        : out.text.trimEnd().endsWith("data: [DONE]");
    if (!ended || /"type":"error"|^data: \{"error"/m.test(out.text))
      return `a stream that did not end well: ${out.text.slice(-300)}`;
  }
  return undefined;
}

describe("mutated OpenAI-style requests", () => {
  it("every valid body is answered 200 (the mutations start from working requests)", async () => {
    for (const [route, label, body] of VALID) {
      const out = await send({ route, name: label, body: JSON.stringify(body) });
      expect(out.status, `${label}: ${out.text.slice(0, 300)}`).toBe(200);
      expect(problemOf({ route, name: label, body: "" }, out), label).toBeUndefined();
    }
  });

  it(`each of ${ALL_CASES.length} mutations gets a 2xx or an OpenAI 4xx in time`, async () => {
    const problems: string[] = [];
    const statuses = new Map<number, number>();
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < ALL_CASES.length; i = next++) {
        const c = ALL_CASES[i] as Case;
        // A mutation that kills the process leaves no assertion behind: FUZZ_TRACE=FILE names
        // each one in FILE before it is sent, so the last line is the culprit.
        if (TRACE) appendFileSync(TRACE, `${i} ${c.route} ${c.name}\n`);
        try {
          const out = await send(c);
          statuses.set(out.status, (statuses.get(out.status) ?? 0) + 1);
          const problem = problemOf(c, out);
          if (problem) problems.push(`${c.route} ${c.name} -> ${problem}`);
        } catch (err) {
          problems.push(
            `${c.route} ${c.name} -> ${(err as Error).name}: ${(err as Error).message}`,
          );
        }
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    expect(problems, problems.join("\n")).toEqual([]);
    // Many mutations are still requests an upstream takes: they must go all the way and back.
    if (TRACE) appendFileSync(TRACE, `statuses ${JSON.stringify([...statuses])}\n`);
    expect(statuses.get(200) ?? 0).toBeGreaterThan(ALL_CASES.length / 10);
  }, 120_000);

  // One process passes the parsed request between its services as an object; separate ones
  // encode it as protobuf, which refuses what its fields cannot hold (a uint32 of 1e308). So
  // whatever the ingress accepts must encode, or that layout would fail where this one did not.
  it("every mutation the ingress accepts encodes as the hops carry it", () => {
    const chat = codecFor(ChatParamsSchema);
    const embed = codecFor(EmbedParamsSchema);
    const encodeAccepted: Record<string, (body: unknown) => void> = {
      "/v1/chat/completions": (body) => chat.encode(parseRequest(openAICodec.parse, body).params),
      "/v1/responses": (body) => chat.encode(parseRequest(responsesCodec.parse, body).params),
      "/v1/embeddings": (body) => embed.encode(parseRequest(parseEmbeddingsRequest, body).params),
    };
    const problems: string[] = [];
    for (const c of ALL_CASES) {
      try {
        encodeAccepted[c.route]?.(parseJson(Buffer.from(c.body)));
      } catch (err) {
        if (!(err instanceof Failure))
          problems.push(`${c.route} ${c.name} -> ${(err as Error).message}`);
      }
    }
    expect(problems, problems.join("\n")).toEqual([]);
  });

  it("still answers a valid request afterwards", async () => {
    const out = await send({
      route: "/v1/chat/completions",
      name: "after",
      body: JSON.stringify(chatWhole),
    });
    expect(out.status, out.text.slice(0, 300)).toBe(200);
  });
});
