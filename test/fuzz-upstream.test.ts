import { appendFileSync, readFileSync } from "node:fs";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashKey } from "../services/lib/config/keys.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import {
  DEEP_ARRAY,
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
  type UpstreamBehavior as AnthropicBehavior,
  type AnthropicUpstream,
  startAnthropicUpstream,
} from "./upstreams/anthropic-upstream.js";
import {
  type GeminiBehavior,
  type GeminiUpstream,
  startGeminiUpstream,
} from "./upstreams/gemini-upstream.js";
import { type OpenAIUpstream, startOpenAIUpstream } from "./upstreams/openai-upstream.js";
import type { RawBehavior } from "./upstreams/wire.js";

// Mutation fuzzing of what UPSTREAMS answer: from recorded valid answers of OpenAI, Anthropic and
// Gemini (the adapters' fixture files), every field of each kind of event replaced by a wrong
// value, deleted, or joined by an unknown sibling; whole events broken, repeated, swapped,
// dropped; the stream's end missing or followed by more; and answers that are not the format at
// all. The fakes send each mutation byte for byte to a gateway that makes one attempt. A bad
// upstream answer is the upstream's fault: the client (the `openai` SDK, and for a share of the
// mutations the `@anthropic-ai/sdk`) gets an answer the SDK parses, or a 502/503/504 in its API's
// envelope, or an error event after the stream began; never a 500, a hang, or a stream that ends
// as complete when the upstream's did not. FUZZ_TRACE=FILE lists the mutations as they are sent.

type Provider = "openai" | "anthropic" | "gemini";
type Client = "openai" | "anthropic";

const TRACE = process.env.FUZZ_TRACE;
const KEY = "sk-fuzz-upstream-key";
/** The upstreams' keys: no answer to the client may show them. */
const SECRETS = ["sk-oa-secret-7731", "an-secret-7732", "ge-secret-7733"];
const PER_CALL_MS = 10_000;
const IN_FLIGHT = 6;

/** One SSE event as the upstream framed it: a name (Anthropic's), and data lines or a comment. */
interface SseEvent {
  event?: string;
  data: string;
}

interface Answer {
  provider: Provider;
  /** e.g. "openai stream-plain". */
  label: string;
  streamed: boolean;
  /** Streamed: the events; whole: one event holding the JSON body. */
  events: SseEvent[];
}

interface Mutation {
  provider: Provider;
  name: string;
  streamed: boolean;
  raw: Omit<RawBehavior, "kind">;
  /** True when the upstream's stream did not end complete: the client must not see a clean end. */
  cut: boolean;
}

const FIXTURES = new URL("../services/connector/providers/", import.meta.url);

function fixture(path: string): string {
  return readFileSync(new URL(path, FIXTURES), "utf8");
}

function parseSse(text: string): SseEvent[] {
  return text
    .replaceAll("\r\n", "\n")
    .split(/\n\n+/)
    .filter((block) => block.trim() !== "")
    .map((block) => {
      const lines = block.split("\n");
      const name = lines.find((l) => l.startsWith("event: "))?.slice("event: ".length);
      const data = lines
        .filter((l) => !l.startsWith("event: "))
        .map((l) => (l.startsWith("data: ") ? l.slice("data: ".length) : l))
        .join("\n");
      return name === undefined ? { data } : { event: name, data };
    });
}

function frame(e: SseEvent): string {
  const data = e.data.startsWith(":") ? e.data : `data: ${e.data}`;
  return `${e.event === undefined ? "" : `event: ${e.event}\n`}${data}\n\n`;
}

function streamed(provider: Provider, path: string): Answer {
  return {
    provider,
    label: `${provider} ${path.split("/").at(-1)}`,
    streamed: true,
    events: parseSse(fixture(path)),
  };
}

function whole(provider: Provider, path: string): Answer {
  return {
    provider,
    label: `${provider} ${path.split("/").at(-1)}`,
    streamed: false,
    events: [{ data: JSON.stringify(JSON.parse(fixture(path))) }],
  };
}

const ANSWERS: Answer[] = [
  streamed("openai", "openai/fixtures/stream-plain.sse"),
  streamed("openai", "openai/fixtures/stream-parallel-tool-calls.sse"),
  whole("openai", "openai/fixtures/completion-tool-calls.json"),
  streamed("anthropic", "anthropic/fixtures/stream-tool-use.sse"),
  whole("anthropic", "anthropic/fixtures/message-text.json"),
  streamed("gemini", "gemini/fixtures/stream-tool-calls.sse"),
  whole("gemini", "gemini/fixtures/response-text.json"),
];

/** What each provider sends when its stream fails after it began. */
const ERROR_EVENT: Record<Provider, SseEvent> = {
  openai: { data: '{"error":{"message":"boom","type":"server_error","code":null}}' },
  anthropic: {
    event: "error",
    data: '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
  },
  gemini: { data: '{"error":{"code":500,"message":"boom","status":"INTERNAL"}}' },
};

const FIELD_VALUES: ReadonlyArray<[string, Json]> = [
  ...WRONG_VALUES,
  ["1.5", 1.5],
  ["1e999", rawNumber("1e999")],
  ["10,000-deep array", DEEP_ARRAY],
];

/**
 * Each field of `json` replaced by each wrong value or deleted, an unknown field at each object;
 * a field already fuzzed in an event of this kind (`fuzzed` holds `kind path`, indexes as #) is
 * skipped, so a stream's many deltas of one kind are fuzzed once.
 */
function fieldMutationsOf(json: Json, kind: string, fuzzed: Set<string>): Array<[string, Json]> {
  const out: Array<[string, Json]> = [];
  const firstTime = (path: Path, what: string) => {
    const key = `${kind} ${what} ${path.map((s) => (typeof s === "number" ? "#" : s)).join(".")}`;
    if (fuzzed.has(key)) return false;
    fuzzed.add(key);
    return true;
  };
  for (const path of pathsOf(json)) {
    if (!firstTime(path, "value")) continue;
    for (const [valueName, wrong] of FIELD_VALUES) {
      const copy = structuredClone(json);
      (valueAt(copy, path.slice(0, -1)) as Record<string | number, Json>)[path.at(-1) as string] =
        wrong;
      out.push([`${showPath(path)} = ${valueName}`, copy]);
    }
    const copy = structuredClone(json);
    const parent = valueAt(copy, path.slice(0, -1)) as Json[] | Record<string, Json>;
    if (Array.isArray(parent)) parent.splice(path.at(-1) as number, 1);
    else delete parent[path.at(-1) as string];
    out.push([`delete ${showPath(path)}`, copy]);
  }
  for (const path of [[], ...pathsOf(json)]) {
    const target = valueAt(json, path);
    if (target === null || typeof target !== "object" || Array.isArray(target)) continue;
    if (!firstTime(path, "unknown")) continue;
    const copy = structuredClone(json);
    (valueAt(copy, path) as Record<string, Json>).zz_unknown_field = "surprise";
    out.push([`add ${showPath(path)}.zz_unknown_field`, copy]);
  }
  return out;
}

/** The fields fuzzed so far, per provider and way of answering: each is fuzzed once. */
const FUZZED = new Set<string>();

function mutationsOf(a: Answer): Mutation[] {
  const out: Mutation[] = [];
  const contentType = a.streamed ? "text/event-stream" : "application/json";
  const body = (events: SseEvent[]) =>
    a.streamed ? events.map(frame).join("") : events.map((e) => e.data).join("");
  const add = (name: string, chunks: string[], cut = false, raw: Partial<RawBehavior> = {}) =>
    out.push({
      provider: a.provider,
      name: `${a.label}: ${name}`,
      streamed: a.streamed,
      raw: { headers: { "content-type": contentType }, chunks, ...raw },
      cut: a.streamed && cut,
    });
  const last = a.events.length - 1;

  a.events.forEach((e, i) => {
    if (e.data.startsWith(":") || e.data === "[DONE]") return;
    for (const [what, json] of fieldMutationsOf(
      JSON.parse(e.data) as Json,
      `${a.provider} ${a.streamed} ${e.event ?? ""}`,
      FUZZED,
    )) {
      const events = a.events.slice();
      events[i] = { ...e, data: stringify(json) };
      add(`${a.streamed ? `event ${i}` : "body"}${what}`, [body(events)]);
    }
  });

  if (a.streamed) {
    a.events.forEach((e, i) => {
      const replaced = (data: string) => a.events.map((x, j) => (j === i ? { ...x, data } : x));
      add(`event ${i} not JSON`, [body(replaced("this is not json {"))], false);
      add(
        `event ${i} truncated`,
        [body(replaced(e.data.slice(0, Math.floor(e.data.length / 2))))],
        false,
      );
      add(
        `event ${i} repeated`,
        [body([...a.events.slice(0, i + 1), e, ...a.events.slice(i + 1)])],
        false,
      );
      add(
        `event ${i} dropped`,
        [body(a.events.filter((_, j) => j !== i))],
        i === last && a.provider !== "openai",
      );
      if (i < last) {
        const swapped = a.events.slice();
        [swapped[i], swapped[i + 1]] = [a.events[i + 1] as SseEvent, e];
        add(`events ${i} and ${i + 1} swapped`, [body(swapped)]);
      }
    });
    const text = body(a.events);
    // An OpenAI stream whose every choice gave its finish reason is whole without [DONE] (TGI,
    // llama.cpp forks never send it): only Anthropic's and Gemini's last events are needed.
    const lastNeeded = a.provider !== "openai";
    add(
      "end missing (stream stops after the last event but one)",
      [body(a.events.slice(0, -1))],
      lastNeeded,
    );
    add("extra data after the end", [text, frame({ data: '{"late":true}' })]);
    add("extra text after the end", [`${text}garbage without a newline`]);
    add("an empty data: line first", [`data:\n\n${text}`]);
    add("an empty data: line in the middle", [
      body(a.events.slice(0, 2)),
      "data:\n\n",
      body(a.events.slice(2)),
    ]);
    add("CRLF line ends", [text.replaceAll("\n", "\r\n")]);
    add("CR line ends", [text.replaceAll("\n", "\r")]);
    add("a BOM first", [`\ufeff${text}`]);
    add("each byte its own chunk (first 200)", [
      ...Array.from(text.slice(0, 200)),
      text.slice(200),
    ]);
    for (const fraction of [0.1, 0.5, 0.9]) {
      const at = Math.floor(text.length * fraction);
      add(`cut at byte ${at}`, [text.slice(0, at)], true);
      add(`connection reset at byte ${at}`, [text.slice(0, at)], true, { endMode: "destroy" });
    }
    for (const fraction of [0.34, 0.67]) {
      const k = Math.floor(a.events.length * fraction);
      add(`stops between events, after event ${k - 1}`, [body(a.events.slice(0, k))], true);
    }
    add("connection reset after the whole stream", [text], false, { endMode: "destroy" });
    add(
      "the provider's error event after three events",
      [body(a.events.slice(0, 3)), frame(ERROR_EVENT[a.provider])],
      true,
    );
    add("each event's JSON over several data: lines", [
      a.events
        .map((e) =>
          e.data.startsWith(":") || e.data === "[DONE]"
            ? frame(e)
            : `${e.event === undefined ? "" : `event: ${e.event}\n`}${JSON.stringify(
                JSON.parse(e.data),
                null,
                1,
              )
                .split("\n")
                .map((line) => `data: ${line}\n`)
                .join("")}\n`,
        )
        .join(""),
    ]);
    add("id:, retry: and comment lines between events", [
      a.events.map((e, i) => `: tick ${i}\nid: ${i}\nretry: 10\n${frame(e)}`).join(""),
    ]);
    add("event names dropped", [body(a.events.map((e) => ({ data: e.data })))]);
    add("labelled application/json", [text], true, {
      headers: { "content-type": "application/json" },
    });
  } else {
    const text = body(a.events);
    add("not JSON", ["this is not json {"]);
    add("JSON null", ["null"]);
    add("JSON array", [`[${text}]`]);
    add("JSON string", [JSON.stringify(text)]);
    add("a BOM first", [`\ufeff${text}`]);
    add("extra data after the end", [`${text}{"late":true}`]);
    for (const fraction of [0.1, 0.5, 0.9]) {
      const at = Math.floor(text.length * fraction);
      add(`truncated at byte ${at}`, [text.slice(0, at)]);
      add(`connection reset at byte ${at}`, [text.slice(0, at)], false, { endMode: "destroy" });
    }
    add("as an event stream", [`data: ${text}\n\n`], false, {
      headers: { "content-type": "text/event-stream" },
    });
  }
  add("200 text/html", ["<html><body><h1>502 Bad Gateway</h1></body></html>"], true, {
    headers: { "content-type": "text/html" },
  });
  add("200 with an empty body", [], true);
  add("500 with a body that is not JSON", ["Internal Server Error"], true, {
    status: 500,
    headers: { "content-type": "text/plain" },
  });
  add("503 text/html", ["<html><body>Service Unavailable</body></html>"], true, {
    status: 503,
    headers: { "content-type": "text/html" },
  });
  add("502 labelled an event stream", [frame({ data: '{"oops":1}' })], true, { status: 502 });
  add(
    "200 with an OpenAI error body",
    ['{"error":{"message":"boom","type":"server_error"}}'],
    true,
    {
      headers: { "content-type": "application/json" },
    },
  );
  add("200 with no content-type", [body(a.events)], false, { headers: { "content-type": "" } });
  return out;
}

const ALL: Mutation[] = ANSWERS.flatMap(mutationsOf);

/** Which client sends mutation `i`: the Anthropic SDK for every third, via the gateway's translation. */
function clientOf(i: number): Client {
  return i % 3 === 2 ? "anthropic" : "openai";
}

const MODEL: Record<Provider, string> = {
  openai: "m-openai",
  anthropic: "m-anthropic",
  gemini: "m-gemini",
};

let openaiUp: OpenAIUpstream;
let anthropicUp: AnthropicUpstream;
let geminiUp: GeminiUpstream;
let gw: RunningFabric;

/** The mutation a request carries: its prompt names it, since calls to one fake run at once. */
function mutationFor(body: unknown): Mutation | undefined {
  const m = /fuzz-case-(\d+)/.exec(JSON.stringify(body ?? null));
  return m ? ALL[Number(m[1])] : undefined;
}

function rawFor(body: unknown): RawBehavior | undefined {
  const m = mutationFor(body);
  return m ? { kind: "raw", ...m.raw } : undefined;
}

beforeAll(async () => {
  [openaiUp, anthropicUp, geminiUp] = await Promise.all([
    startOpenAIUpstream(),
    startAnthropicUpstream(),
    startGeminiUpstream(),
  ]);
  openaiUp.setBehavior((req) => rawFor(req.body) ?? { kind: "answer" });
  anthropicUp.setBehavior((req): AnthropicBehavior => rawFor(req.body) ?? { kind: "answer" });
  geminiUp.setBehavior((req): GeminiBehavior => rawFor(req.body) ?? { kind: "answer" });
  gw = await startOneProcess(
    testConfig(`
providers:
  oa: { type: openai, base_url: "${openaiUp.url}", api_key: ${SECRETS[0]} }
  an: { type: anthropic, base_url: "${anthropicUp.url}", api_key: ${SECRETS[1]} }
  ge: { type: gemini, base_url: "${geminiUp.url}", api_key: ${SECRETS[2]} }
models:
  m-openai: { targets: [{ provider: oa, model: gpt-up, price: { input: 2.5, output: 10 } }] }
  m-anthropic: { targets: [{ provider: an, model: claude-up, price: { input: 3, output: 15 } }] }
  m-gemini: { targets: [{ provider: ge, model: gemini-up, price: { input: 1, output: 4 } }] }
tenants:
  fuzz:
    keys: ["${hashKey(KEY)}"]
    limits: { rpm: 1000000, tpm: 1000000000, concurrency: 100, daily_tokens: 1000000000000, monthly_usd: 1000000000 }
routing:
  retries: 0
  circuit_breaker: { consecutive_failures: 1000000, cooldown_ms: 1 }
health: { probe_interval_ms: 600000, stale_after_ms: 1200000 }
`),
  );
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([openaiUp?.close(), anthropicUp?.close(), geminiUp?.close()]);
});

/** A fetch that keeps a copy of each response body's text, to see how a stream really ended. */
function recordingFetch(texts: Array<Promise<string>>): typeof fetch {
  return async (input, init) => {
    const res = await fetch(input, init);
    texts.push(
      res
        .clone()
        .text()
        .catch(() => ""),
    );
    return res;
  };
}

/** Token counts in `usage` that no tokenizer gives: negative, fractional, beyond 2^53. */
function badCounts(usage: unknown): string | undefined {
  if (usage === null || typeof usage !== "object") return undefined;
  for (const [key, value] of Object.entries(usage)) {
    if (typeof value === "object") {
      const inner = badCounts(value);
      if (inner) return inner;
    } else if (
      /tokens$/.test(key) &&
      typeof value === "number" &&
      !(Number.isSafeInteger(value) && value >= 0)
    ) {
      return `usage ${key} = ${value}`;
    }
  }
  return undefined;
}

interface Outcome {
  /** What went wrong, or undefined. */
  problem?: string;
  /** "ok", "status NNN", "error event": to count what the mutations led to. */
  kind: string;
}

function envelopeProblem(client: Client, err: unknown): string | undefined {
  if (client === "openai") {
    if (!(err instanceof OpenAI.APIError)) return `not an APIError: ${String(err)}`;
    const e = err.error as { message?: unknown; type?: unknown } | undefined;
    return typeof e?.message === "string" && e.message !== "" && typeof e.type === "string"
      ? undefined
      : `error outside OpenAI's envelope: ${JSON.stringify(err.error)}`;
  }
  if (!(err instanceof Anthropic.APIError)) return `not an APIError: ${String(err)}`;
  const body = err.error as { type?: unknown; error?: { type?: unknown; message?: unknown } };
  return body?.type === "error" &&
    typeof body.error?.type === "string" &&
    typeof body.error.message === "string"
    ? undefined
    : `error outside Anthropic's envelope: ${JSON.stringify(err.error)}`;
}

async function drive(i: number, m: Mutation): Promise<Outcome> {
  const outcome = await call(i, m);
  const shown = [outcome.text, outcome.problem ?? ""].join("\n");
  const leaked = SECRETS.find((secret) => shown.includes(secret));
  if (leaked) return { kind: outcome.kind, problem: "an upstream key in the answer" };
  return outcome;
}

async function call(i: number, m: Mutation): Promise<Outcome & { text: string }> {
  const client = clientOf(i);
  const prompt = `fuzz-case-${i}`;
  const texts: Array<Promise<string>> = [];
  const signal = AbortSignal.timeout(PER_CALL_MS);
  const answered = async () => (await Promise.all(texts)).join("");
  const result = async (kind: string, problem?: string) => ({
    kind,
    text: await answered(),
    ...(problem === undefined ? {} : { problem }),
  });
  // Content the client was given: an error event after it is the contract, before it a 502 is.
  let content = 0;
  try {
    if (client === "openai") {
      const sdk = new OpenAI({
        baseURL: `${gw.url}/v1`,
        apiKey: KEY,
        maxRetries: 0,
        fetch: recordingFetch(texts),
      });
      const params = {
        model: MODEL[m.provider],
        messages: [{ role: "user" as const, content: prompt }],
      };
      if (m.streamed) {
        const stream = await sdk.chat.completions.create(
          { ...params, stream: true, stream_options: { include_usage: true } },
          { signal },
        );
        for await (const chunk of stream) {
          if (!Array.isArray(chunk.choices)) return result("ok", "a chunk without choices");
          const bad = badCounts(chunk.usage);
          if (bad) return result("ok", bad);
          content += chunk.choices.length;
        }
      } else {
        const answer = await sdk.chat.completions.create(params, { signal });
        if (!Array.isArray(answer.choices) || answer.choices[0]?.message === undefined)
          return result("ok", `an answer without a message: ${JSON.stringify(answer)}`);
        const bad = badCounts(answer.usage);
        if (bad) return result("ok", bad);
      }
    } else {
      const sdk = new Anthropic({
        baseURL: gw.url,
        apiKey: KEY,
        maxRetries: 0,
        fetch: recordingFetch(texts),
      });
      const params = {
        model: MODEL[m.provider],
        max_tokens: 64,
        messages: [{ role: "user" as const, content: prompt }],
      };
      if (m.streamed) {
        const stream = await sdk.messages.create({ ...params, stream: true }, { signal });
        for await (const event of stream) {
          if (typeof event.type !== "string") return result("ok", "an untyped event");
          const usage =
            event.type === "message_start"
              ? event.message.usage
              : event.type === "message_delta"
                ? event.usage
                : undefined;
          const bad = badCounts(usage);
          if (bad) return result("ok", bad);
          if (event.type === "content_block_delta") content += 1;
        }
      } else {
        const answer = await sdk.messages.create(params, { signal });
        if (!Array.isArray(answer.content))
          return result("ok", `an answer without content: ${JSON.stringify(answer)}`);
        const bad = badCounts(answer.usage);
        if (bad) return result("ok", bad);
      }
    }
  } catch (err) {
    if (signal.aborted) return result("hang", `no answer within ${PER_CALL_MS} ms`);
    const status = (err as { status?: unknown }).status;
    const message = (err as Error).message.slice(0, 300);
    if (typeof status === "number") {
      if (status !== 502 && status !== 503 && status !== 504)
        return result(`status ${status}`, `status ${status}: ${message}`);
      return result(`status ${status}`, envelopeProblem(client, err));
    }
    if (m.streamed && (err instanceof OpenAI.APIError || err instanceof Anthropic.APIError)) {
      const problem = envelopeProblem(client, err);
      return result(content === 0 ? "error event before content" : "error event", problem);
    }
    return result("thrown", `${(err as Error).name}: ${message}`);
  }
  const text = await answered();
  if (m.streamed) {
    const complete =
      client === "openai"
        ? text.trimEnd().endsWith("data: [DONE]")
        : /event: message_stop\n/.test(text) && !/event: error\n/.test(text);
    if (!complete) return result("ok", `a stream that ended without its end: ${text.slice(-200)}`);
    if (m.cut) return result("ok", `a cut upstream stream ended complete: ${text.slice(-200)}`);
  }
  return { kind: "ok", text };
}

describe("mutated upstream answers", () => {
  it(`each of ${ALL.length} mutations gets a clean answer or a 502-class error, in time`, async () => {
    const problems: string[] = [];
    const kinds = new Map<string, number>();
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < ALL.length; i = next++) {
        const m = ALL[i] as Mutation;
        const name = `${clientOf(i)} client, ${m.streamed ? "streamed" : "whole"}, ${m.name}`;
        if (TRACE) appendFileSync(TRACE, `${i} ${name}\n`);
        const out = await drive(i, m);
        if (TRACE) appendFileSync(TRACE, `${i} -> ${out.kind}${out.problem ? " PROBLEM" : ""}\n`);
        kinds.set(out.kind, (kinds.get(out.kind) ?? 0) + 1);
        if (out.problem) problems.push(`${name} -> ${out.problem}`);
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    if (TRACE) appendFileSync(TRACE, `outcomes ${JSON.stringify([...kinds])}\n`);
    expect(problems, problems.join("\n")).toEqual([]);
  }, 120_000);

  it("still answers a valid request afterwards", async () => {
    const sdk = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEY, maxRetries: 0 });
    for (const model of Object.values(MODEL)) {
      const answer = await sdk.chat.completions.create({
        model,
        messages: [{ role: "user", content: "hello" }],
      });
      expect(answer.choices[0]?.message.content, model).toBeTruthy();
    }
  });
});
