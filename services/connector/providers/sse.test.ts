import { describe, expect, it } from "vitest";
import { type SseEnd, type SseEvent, SseParser } from "./sse.js";

const encoder = new TextEncoder();

/** Feeds the given chunks (strings are UTF-8 encoded) and returns every event and the end. */
function run(chunks: Array<string | Uint8Array>): { events: SseEvent[]; end: SseEnd } {
  const parser = new SseParser();
  const events: SseEvent[] = [];
  for (const chunk of chunks) {
    events.push(...parser.push(typeof chunk === "string" ? encoder.encode(chunk) : chunk));
  }
  return { events, end: parser.end() };
}

/** Every way of cutting `bytes` in two. */
function splits(bytes: Uint8Array): Uint8Array[][] {
  const out: Uint8Array[][] = [];
  for (let i = 0; i <= bytes.length; i++) out.push([bytes.subarray(0, i), bytes.subarray(i)]);
  return out;
}

describe("SseParser", () => {
  it("accepts LF, CRLF and CR line endings alike", () => {
    for (const nl of ["\n", "\r\n", "\r"]) {
      const { events, end } = run([`data: one${nl}${nl}data: two${nl}${nl}`]);
      expect(events).toEqual([{ data: "one" }, { data: "two" }]);
      expect(end.truncated).toBe(false);
    }
  });

  it("treats a CR and LF arriving in different chunks as one line break", () => {
    // Were the "\n" a line of its own it would dispatch "a" alone, before "b" is read.
    const { events } = run(["data: a\r", "\ndata: b\r\n\r", "\n"]);
    expect(events).toEqual([{ data: "a\nb" }]);
  });

  it("keeps a pending CR across an empty chunk", () => {
    const { events } = run(["data: a\r", new Uint8Array(0), "\ndata: b\n\n"]);
    expect(events).toEqual([{ data: "a\nb" }]);
  });

  it("decodes multi-byte UTF-8 split anywhere across chunks", () => {
    const bytes = encoder.encode("data: héllo wörld 👋 日本\n\n");
    for (const chunks of splits(bytes)) {
      expect(run(chunks).events).toEqual([{ data: "héllo wörld 👋 日本" }]);
    }
  });

  it("decodes any bytes, invalid UTF-8 included, as TextDecoder does, however they are split", () => {
    // Valid sequences of every length, invalid and overlong leads, stray continuation bytes,
    // surrogates encoded in UTF-8, and sequences cut short.
    const pieces = [
      [0x61],
      [0xc3, 0xa9],
      [0xe6, 0x97, 0xa5],
      [0xf0, 0x9f, 0x91, 0x8b],
      [0x80],
      [0xbf, 0xbf],
      [0xc0, 0xaf],
      [0xc1],
      [0xe0, 0x80, 0xaf],
      [0xed, 0xa0, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
      [0xf5],
      [0xff],
      [0xe6, 0x97],
      [0xf0, 0x9f, 0x91],
    ];
    let seed = 12345;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 300; round++) {
      const payload = Array.from({ length: 1 + random(12) }, () => pieces[random(pieces.length)])
        .flat()
        .filter((b) => b !== undefined);
      const bytes = new Uint8Array([...encoder.encode("data: "), ...payload, 10, 10]);
      const want = new TextDecoder().decode(new Uint8Array(payload));
      const cuts = [random(bytes.length + 1), random(bytes.length + 1)].sort((a, b) => a - b);
      const chunks = [
        bytes.subarray(0, cuts[0]),
        bytes.subarray(cuts[0], cuts[1]),
        bytes.subarray(cuts[1]),
      ];
      expect(run(chunks).events, `payload ${payload} cut at ${cuts}`).toEqual([{ data: want }]);
    }
  });

  it("gives the same events when fed one byte at a time", () => {
    const text = 'event: delta\r\nid: 7\r\ndata: {"a":1}\r\n\r\n: ping\n\ndata:x\rdata: y\r\r';
    const whole = run([text]).events;
    const bytes = encoder.encode(text);
    const oneByOne = run(Array.from(bytes, (b) => new Uint8Array([b]))).events;
    expect(oneByOne).toEqual(whole);
    expect(whole).toEqual([
      { event: "delta", id: "7", data: '{"a":1}' },
      { id: "7", data: "x\ny" },
    ]);
  });

  it("joins multi-line data with newlines", () => {
    const { events } = run(["data: first\ndata: second\ndata:\ndata: fourth\n\n"]);
    expect(events).toEqual([{ data: "first\nsecond\n\nfourth" }]);
  });

  it("ignores comments, and reads data with or without the space after the colon", () => {
    const { events } = run([": keep-alive\n\ndata:tight\n\n:comment\ndata:  two spaces\n\n"]);
    expect(events).toEqual([{ data: "tight" }, { data: " two spaces" }]);
  });

  it("reads a field without a colon as a field with an empty value", () => {
    const { events } = run(["data\n\n"]);
    expect(events).toEqual([{ data: "" }]);
  });

  it("does not dispatch a blank line that follows no data", () => {
    const { events } = run(["\n\nevent: ping\n\nid: 3\n\ndata: after\n\n"]);
    // The event type was reset by the blank line; the last event id persists.
    expect(events).toEqual([{ data: "after", id: "3" }]);
  });

  it("ignores unknown fields and retry", () => {
    const { events } = run(["retry: 1000\nfoo: bar\ndata: x\n\n"]);
    expect(events).toEqual([{ data: "x" }]);
  });

  it("strips a leading byte order mark", () => {
    const { events } = run([new Uint8Array([0xef, 0xbb, 0xbf]), "data: x\n\n"]);
    expect(events).toEqual([{ data: "x" }]);
  });

  it("does not dispatch a final event without its blank line, and reports truncation", () => {
    const complete = run(["data: a\n\n"]);
    expect(complete.end.truncated).toBe(false);

    const noBlankLine = run(["data: a\n\n", "data: b\n"]);
    expect(noBlankLine.events).toEqual([{ data: "a" }]);
    expect(noBlankLine.end.truncated).toBe(true);

    const halfLine = run(["data: a\n\n", 'data: {"cho']);
    expect(halfLine.events).toEqual([{ data: "a" }]);
    expect(halfLine.end.truncated).toBe(true);

    const cutCodePoint = run([encoder.encode("data: a\n\n👋").subarray(0, 11)]);
    expect(cutCodePoint.end.truncated).toBe(true);
  });

  it("does not count a trailing comment line as an unfinished event", () => {
    expect(run(["data: a\n\n: bye\n"]).end.truncated).toBe(false);
  });

  it("joins a long line that arrives in many chunks", () => {
    const long = "x".repeat(100_000);
    const chunks = ["data: "];
    for (let i = 0; i < long.length; i += 1000) chunks.push(long.slice(i, i + 1000));
    chunks.push("\n\n");
    expect(run(chunks).events).toEqual([{ data: long }]);
  });
});
