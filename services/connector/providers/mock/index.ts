// `type: mock` — a deterministic token streamer with no network, so the gateway runs (and is
// tested and benchmarked) without any upstream account.

import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type ChatChunk,
  ChatChunkSchema,
  type ChatParams,
  ChatStartSchema,
  type ChoiceDelta,
  ChoiceDeltaSchema,
  EmbeddingSchema,
  type EmbedResult,
  EmbedResultSchema,
  FinishReason,
  type Message,
  Role,
  type TokenCount,
  TokenCountSchema,
  ToolCallDeltaSchema,
  ToolChoice_Mode,
  type Usage,
  UsageSchema,
} from "../../../../gen/switchyard/chat/v1/chat_pb.js";
import type { ProviderConfig } from "../../../lib/config/types.js";
import { tokenInputCount } from "../../../lib/embed-inputs.js";
import { Failure } from "../../../lib/errors.js";
import { makeMessage } from "../../../lib/hop/codec.js";
import { refusal, refuseAnthropicOnly } from "../anthropic-only.js";
import {
  type ChatCall,
  type CountTokensCall,
  type EmbedCall,
  type Provider,
  takeParams,
} from "../provider.js";

export const MOCK_DEFAULTS = { first_token_ms: 200, token_interval_ms: 20, tokens: 24 } as const;

/** Mock embeddings have this many dimensions unless the request asks for others. */
export const MOCK_EMBEDDING_DIMENSIONS = 8;
/** Larger than any real embedding model's vectors; a bound on the work one request can cause. */
const MAX_EMBEDDING_DIMENSIONS = 4096;
/** OpenAI's own limit on `n`, choices per request; a bound on the work one request can cause. */
const MAX_CHOICES = 128;

const PREFIX = "This is a mock answer from Switchyard to:";
/** Deterministic filler for answers longer than the prefix and the question. */
const FILLER = [
  "alpha",
  "bravo",
  "charlie",
  "delta",
  "echo",
  "foxtrot",
  "golf",
  "hotel",
  "india",
  "juliet",
  "kilo",
  "lima",
  "mike",
  "november",
  "oscar",
  "papa",
  "quebec",
  "romeo",
  "sierra",
  "tango",
  "uniform",
  "victor",
  "whiskey",
  "xray",
  "yankee",
  "zulu",
];
/** The arguments of a mock tool call, in the fragments they stream in. */
const TOOL_ARGUMENT_FRAGMENTS = ["{", "}"];

let answers = 0;

/**
 * The tokens of the mock answer to `params`: the prefix and the last user message's words, cut
 * or padded to exactly `tokens` tokens. A token is a word and the space after it; the last one
 * has no space, so the tokens joined give the answer text.
 */
export function mockAnswerTokens(params: ChatParams, tokens: number): string[] {
  const words = `${PREFIX} ${lastUserText(params.messages)}`.split(/\s+/).filter((w) => w !== "");
  const out: string[] = [];
  for (let i = 0; i < tokens; i++) {
    const word = words[i] ?? FILLER[(i - words.length) % FILLER.length] ?? "";
    out.push(i < tokens - 1 ? `${word} ` : word);
  }
  return out;
}

/** A deterministic stand-in for a tokenizer: the number of words in every text part. */
export function mockPromptTokens(messages: readonly Message[]): number {
  let count = 0;
  for (const message of messages) {
    for (const part of message.content) {
      if (part.part.case === "text") count += wordCount(part.part.value);
    }
  }
  return count;
}

/**
 * A deterministic unit vector standing in for the embedding of `text`: the same text always
 * gets the same vector, different texts (almost surely) different ones.
 */
export function mockEmbedding(text: string, dimensions: number): number[] {
  return unitVector(dimensions, (block) => `${block}\0${text}`);
}

/**
 * The same for a list of token ids: the same ids always get the same vector, never that of a
 * text (not even of the text "1,2,3").
 */
export function mockTokenEmbedding(ids: readonly number[], dimensions: number): number[] {
  // A text's seed has \0 after the block number, a token list's \x01: the two never meet.
  return unitVector(dimensions, (block) => `${block}\x01${ids.join(",")}`);
}

function unitVector(dimensions: number, seed: (block: number) => string): number[] {
  const raw: number[] = [];
  for (let block = 0; raw.length < dimensions; block++) {
    const digest = createHash("sha256").update(seed(block)).digest();
    for (let i = 0; i + 1 < digest.length && raw.length < dimensions; i += 2) {
      // Never exactly 0, so the vector always has a length to divide by.
      raw.push((digest.readUInt16BE(i) - 32767.5) / 32767.5);
    }
  }
  const length = Math.hypot(...raw);
  return raw.map((v) => v / length);
}

export function createMockProvider(name: string, config: ProviderConfig): Provider {
  const firstTokenMs = config.first_token_ms ?? MOCK_DEFAULTS.first_token_ms;
  const intervalMs = config.token_interval_ms ?? MOCK_DEFAULTS.token_interval_ms;
  const tokens = Math.max(0, Math.floor(config.tokens ?? MOCK_DEFAULTS.tokens));

  async function* chat(call: ChatCall): AsyncGenerator<ChatChunk> {
    // The mock stands for the model itself: it answers from the prompt, and keeps it.
    const params = takeParams(call);
    const signal = call.signal;
    if (signal.aborted) throw cancelled(name, signal.reason);
    refuseAnthropicOnly(params, refusal({ provider: name, model: call.model }, "mock"));
    // `n` choices, each the same deterministic answer, as a model at temperature 0 might give.
    const n = params.n ?? 1;
    if (n > MAX_CHOICES) {
      throw new Failure({
        status: 400,
        kind: "invalid_request",
        param: "n",
        message: `provider ${name} gives 1 to ${MAX_CHOICES} choices, not ${n}`,
      });
    }
    answers += 1;
    const start = makeMessage(ChatStartSchema, {
      id: `chatcmpl-mock-${answers}`,
      created: BigInt(Math.floor(Date.now() / 1000)),
      upstreamModel: call.model,
      provider: name,
    });
    const promptTokens = mockPromptTokens(params.messages);

    const tool = calledTool(params);
    if (tool !== undefined) {
      // Each choice calls the tool once, under an id of its own.
      const callIdOf = (index: number) =>
        index === 0 ? `call_mock_${answers}` : `call_mock_${answers}_${index}`;
      const fragments = TOOL_ARGUMENT_FRAGMENTS;
      const usage = usageOf(promptTokens, fragments.length * n);
      if (!params.stream) {
        await pause(firstTokenMs + intervalMs * (fragments.length - 1), signal, name);
        const choices = everyChoice(n, (index) =>
          makeMessage(ChoiceDeltaSchema, {
            index,
            role: Role.ASSISTANT,
            toolCalls: [
              makeMessage(ToolCallDeltaSchema, {
                index: 0,
                id: callIdOf(index),
                name: tool,
                arguments: fragments.join(""),
              }),
            ],
            finishReason: FinishReason.TOOL_CALLS,
            rawFinishReason: "tool_calls",
          }),
        );
        yield makeMessage(ChatChunkSchema, { start, choices, usage });
        return;
      }
      for (const [i, fragment] of fragments.entries()) {
        await pause(i === 0 ? firstTokenMs : intervalMs, signal, name);
        const chunk = makeMessage(ChatChunkSchema, {
          choices: everyChoice(n, (index) =>
            i === 0
              ? toolDelta(index, { id: callIdOf(index), name: tool, arguments: fragment })
              : toolDelta(index, { arguments: fragment }),
          ),
        });
        if (i === 0) chunk.start = start;
        yield chunk;
      }
      yield finalChunk(n, FinishReason.TOOL_CALLS, "tool_calls", usage);
      return;
    }

    const limit = params.maxTokens !== undefined ? Math.min(params.maxTokens, tokens) : tokens;
    const pieces = mockAnswerTokens(params, tokens).slice(0, limit);
    const [finish, raw] =
      limit < tokens ? [FinishReason.LENGTH, "length"] : [FinishReason.STOP, "stop"];
    const usage = usageOf(promptTokens, pieces.length * n);
    if (!params.stream) {
      await pause(firstTokenMs + intervalMs * Math.max(0, pieces.length - 1), signal, name);
      const content = pieces.join("");
      const choices = everyChoice(n, (index) =>
        makeMessage(ChoiceDeltaSchema, {
          index,
          role: Role.ASSISTANT,
          content,
          finishReason: finish,
          rawFinishReason: raw,
        }),
      );
      yield makeMessage(ChatChunkSchema, { start, choices, usage });
      return;
    }
    await pause(firstTokenMs, signal, name);
    const first = pieces[0] ?? "";
    yield makeMessage(ChatChunkSchema, {
      start,
      choices: everyChoice(n, (index) =>
        makeMessage(ChoiceDeltaSchema, { index, role: Role.ASSISTANT, content: first }),
      ),
    });
    for (const piece of pieces.slice(1)) {
      await pause(intervalMs, signal, name);
      yield makeMessage(ChatChunkSchema, {
        choices: everyChoice(n, (index) =>
          makeMessage(ChoiceDeltaSchema, { index, content: piece }),
        ),
      });
    }
    yield finalChunk(n, finish, raw, usage);
  }

  async function embed(call: EmbedCall): Promise<EmbedResult> {
    const dimensions = call.params.dimensions ?? MOCK_EMBEDDING_DIMENSIONS;
    if (dimensions < 1 || dimensions > MAX_EMBEDDING_DIMENSIONS) {
      throw new Failure({
        status: 400,
        kind: "invalid_request",
        param: "dimensions",
        message: `provider ${name} makes embeddings of 1 to ${MAX_EMBEDDING_DIMENSIONS} dimensions, not ${dimensions}`,
      });
    }
    await pause(firstTokenMs, call.signal, name);
    const { inputs, tokenInputs } = call.params;
    let tokens = 0;
    let vectors: number[][];
    if (tokenInputs.length > 0) {
      tokens = tokenInputCount(call.params);
      vectors = tokenInputs.map((list) => mockTokenEmbedding(list.ids, dimensions));
    } else {
      for (const input of inputs) tokens += wordCount(input);
      vectors = inputs.map((input) => mockEmbedding(input, dimensions));
    }
    return makeMessage(EmbedResultSchema, {
      embeddings: vectors.map((values, index) => makeMessage(EmbeddingSchema, { index, values })),
      usage: makeMessage(UsageSchema, { promptTokens: tokens, totalTokens: tokens }),
      upstreamModel: call.model,
      provider: name,
    });
  }

  /** The prompt tokens the mock's own answer to the same request reports in its usage. */
  async function countTokens(call: CountTokensCall): Promise<TokenCount> {
    if (call.signal.aborted) throw cancelled(name, call.signal.reason);
    refuseAnthropicOnly(call.params, refusal({ provider: name, model: call.model }, "mock"));
    return makeMessage(TokenCountSchema, {
      inputTokens: mockPromptTokens(call.params.messages),
      upstreamModel: call.model,
      provider: name,
    });
  }

  return {
    name,
    config,
    chat,
    embed,
    countTokens,
    probe: async () => {},
    close: async () => {},
  };
}

/** The function a mock answer calls, when the request forces a tool call. */
function calledTool(params: ChatParams): string | undefined {
  const first = params.tools[0];
  if (first === undefined) return undefined;
  switch (params.toolChoice?.mode) {
    case ToolChoice_Mode.REQUIRED:
      return first.name;
    case ToolChoice_Mode.FUNCTION:
      return params.toolChoice.functionName || first.name;
    default:
      return undefined;
  }
}

/** One delta for each of the answer's `n` choices, made by `make(index)`. */
function everyChoice(n: number, make: (index: number) => ChoiceDelta): ChoiceDelta[] {
  const out: ChoiceDelta[] = [];
  for (let index = 0; index < n; index++) out.push(make(index));
  return out;
}

/** Choice `choice`'s fragment of its one tool call; the first names the call. */
function toolDelta(
  choice: number,
  call: { id?: string; name?: string; arguments: string },
): ChoiceDelta {
  const fragment = makeMessage(ToolCallDeltaSchema, { index: 0, arguments: call.arguments });
  if (call.id !== undefined) fragment.id = call.id;
  if (call.name !== undefined) fragment.name = call.name;
  const delta = makeMessage(ChoiceDeltaSchema, { index: choice, toolCalls: [fragment] });
  if (call.id !== undefined) delta.role = Role.ASSISTANT;
  return delta;
}

function finalChunk(n: number, finish: FinishReason, raw: string, usage: Usage): ChatChunk {
  const choices = everyChoice(n, (index) =>
    makeMessage(ChoiceDeltaSchema, { index, finishReason: finish, rawFinishReason: raw }),
  );
  return makeMessage(ChatChunkSchema, { choices, usage });
}

function usageOf(promptTokens: number, completionTokens: number): Usage {
  return makeMessage(UsageSchema, {
    promptTokens,
    completionTokens,
    totalTokens: promptTokens + completionTokens,
  });
}

function lastUserText(messages: readonly Message[]): string {
  for (let i = messages.length - 1; i >= 0; i--) {
    const message = messages[i];
    if (message?.role !== Role.USER) continue;
    const texts: string[] = [];
    for (const part of message.content) if (part.part.case === "text") texts.push(part.part.value);
    return texts.join(" ");
  }
  return "";
}

function wordCount(text: string): number {
  let count = 0;
  for (const word of text.split(/\s+/)) if (word !== "") count++;
  return count;
}

/** Waits like a model thinking; an abort stops the wait at once. */
async function pause(ms: number, signal: AbortSignal, provider: string): Promise<void> {
  if (signal.aborted) throw cancelled(provider, signal.reason);
  if (ms <= 0) return;
  try {
    await sleep(ms, undefined, { signal });
  } catch (err) {
    throw cancelled(provider, err);
  }
}

function cancelled(provider: string, cause: unknown): Failure {
  return new Failure(
    {
      status: 499,
      kind: "cancelled",
      message: `request to provider ${provider} was cancelled`,
      provider,
    },
    { cause },
  );
}
