/**
 * The hop codec against protobuf-es, one message at a time: ns per encode and decode of a
 * typical connector request (a two-message chat with context and target) and a typical answer
 * chunk, in a loop after a warm-up. CPU-bound and single-threaded, so steadier than the load
 * scenarios, but still a loop over one message: read the ratios, not the nanoseconds.
 *
 * Run: node --import tsx bench/codec.ts [--rounds N]
 */

import { parseArgs } from "node:util";
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import {
  ChatRequestSchema,
  ChatResponseSchema,
} from "../gen/switchyard/connector/v1/connector_pb.js";
import { codecFor } from "../services/lib/hop/codec.js";
import { useFastUtf8Encoding } from "../services/lib/utf8.js";
import { formatTable, median } from "./run.js";

const request = create(ChatRequestSchema, {
  context: {
    requestId: "req_0123456789abcdef",
    tenant: "acme",
    traceparent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
  },
  target: { provider: "openai", model: "gpt-4o-mini" },
  params: {
    model: "gpt-4o-mini",
    messages: [
      {
        role: Role.SYSTEM,
        content: [{ part: { case: "text", value: "You are a helpful assistant." } }],
      },
      {
        role: Role.USER,
        content: [{ part: { case: "text", value: "Say hello in one short sentence." } }],
      },
    ],
    maxTokens: 64,
    temperature: 0.7,
    stream: true,
  },
  holdMs: 250,
});

const answer = create(ChatResponseSchema, {
  chunk: {
    start: {
      id: "chatcmpl-0123456789",
      created: 1_764_000_000n,
      upstreamModel: "gpt-4o-mini-2024-07-18",
      provider: "openai",
    },
    choices: [
      { index: 0, role: Role.ASSISTANT, content: "Hello there! How can I help you today?" },
    ],
  },
});

function nsPer(n: number, fn: () => unknown): number {
  let sink: unknown;
  for (let i = 0; i < n / 10; i++) sink = fn();
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sink = fn();
  if (sink === undefined) throw new Error("nothing made");
  return Number(process.hrtime.bigint() - t) / n;
}

function rows<D extends DescMessage>(
  name: string,
  schema: D,
  message: MessageShape<D>,
  rounds: number,
) {
  const codec = codecFor(schema);
  const bytes = toBinary(schema, message);
  if (Buffer.compare(codec.encode(message), bytes) !== 0) throw new Error(`${name}: bytes differ`);
  const n = 100_000;
  const take = (fn: () => unknown) => median(Array.from({ length: rounds }, () => nsPer(n, fn)));
  const enc = [take(() => toBinary(schema, message)), take(() => codec.encode(message))];
  const dec = [take(() => fromBinary(schema, bytes)), take(() => codec.decode(bytes))];
  return [
    [`${name} (${bytes.length} B)`, "encode", enc[0], enc[1]],
    ["", "decode", dec[0], dec[1]],
  ].map(([a, b, pe, ours]) => [
    a as string,
    b as string,
    (pe as number).toFixed(0),
    (ours as number).toFixed(0),
    `${((pe as number) / (ours as number)).toFixed(1)}×`,
  ]);
}

const { values } = parseArgs({ options: { rounds: { type: "string", default: "5" } } });
const rounds = Number(values.rounds);
useFastUtf8Encoding(); // as every gateway process runs
console.log(
  `\nCODEC — ns per message, median of ${rounds} rounds of 100,000\n\n${formatTable(
    ["message", "", "protobuf-es", "hop codec", "faster"],
    [
      ...rows("connector request", ChatRequestSchema, request, rounds),
      ...rows("answer chunk", ChatResponseSchema, answer, rounds),
    ],
  )}\n`,
);
