import { describe, expect, it } from "vitest";
import {
  newHistogram,
  recordMs,
  SseChunkParser,
  slowStreamComplete,
  streamTimings,
  summarize,
} from "./load.js";
import { parseFdLimit, parseProcStat, parseProcStatus, streamsThatFit } from "./procs.js";
import { formatTable, median, rotate } from "./run.js";

// The pure parts of the benchmark harness: if these are wrong, every figure it prints is.

describe("latency summaries", () => {
  it("reports percentiles of 1..1000 ms within the histogram's 3 significant digits", () => {
    const h = newHistogram();
    for (let ms = 1; ms <= 1000; ms++) recordMs(h, ms);
    const s = summarize(h);
    expect(s.count).toBe(1000);
    // Three significant digits: each figure is within 0.1% of the exact one.
    const near = (actual: number, exact: number) =>
      expect(Math.abs(actual - exact)).toBeLessThanOrEqual(exact / 1000);
    near(s.mean, 500.5);
    near(s.p50, 500);
    near(s.p90, 900);
    near(s.p99, 990);
    near(s.max, 1000);
    expect(s.p50).toBeLessThanOrEqual(s.p90);
    expect(s.p90).toBeLessThanOrEqual(s.p99);
    expect(s.p99).toBeLessThanOrEqual(s.p999);
  });

  it("keeps sub-millisecond latencies at microsecond resolution", () => {
    const h = newHistogram();
    for (let i = 0; i < 99; i++) recordMs(h, 0.07);
    recordMs(h, 12);
    const s = summarize(h);
    expect(s.p50).toBe(0.07);
    expect(s.p99).toBe(0.07);
    expect(s.max).toBeCloseTo(12, 1);
  });

  it("summarizes an empty window as zeros rather than throwing", () => {
    expect(summarize(newHistogram())).toEqual({
      count: 0,
      mean: 0,
      p50: 0,
      p90: 0,
      p99: 0,
      p999: 0,
      max: 0,
    });
  });

  it("takes the median of odd and even counts, and nothing of nothing", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeUndefined();
  });

  it("rotates the variant order each repeat (A B C, B C A, C A B)", () => {
    expect([0, 1, 2, 3].map((k) => rotate(["A", "B", "C"], k).join(""))).toEqual([
      "ABC",
      "BCA",
      "CAB",
      "ABC",
    ]);
  });

  it("right-aligns numeric columns and left-aligns text", () => {
    const text = formatTable(
      ["variant", "rps"],
      [
        ["direct", "12000"],
        ["one process", "900"],
      ],
    );
    expect(text.split("\n")).toEqual([
      "variant        rps",
      "-----------  -----",
      "direct       12000",
      "one process    900",
    ]);
  });
});

const chunk = (content: string) =>
  `data: {"choices":[{"index":0,"delta":{"content":"${content}"},"finish_reason":null}]}\n\n`;

describe("SSE chunk timing", () => {
  it("stamps each event with the read that completed it, across split reads", () => {
    const p = new SseChunkParser();
    const first = chunk("t0 ");
    p.feed(first.slice(0, 10), 5); // an event split over two reads
    p.feed(first.slice(10), 7);
    p.feed(chunk("t1 ") + chunk("t2 "), 27); // two events in one read
    p.feed('data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n', 28);
    p.feed("data: [DONE]\n\n", 29);
    expect(p.record.contents).toEqual(["t0 ", "t1 ", "t2 "]);
    expect(p.record.contentTimes).toEqual([7, 27, 27]);
    expect(p.record.dataTimes).toEqual([7, 27, 27, 28]);
    expect(p.record.done).toBe(true);
    const t = streamTimings(2, p.record);
    expect(t.ttftData).toBe(5);
    expect(t.ttftContent).toBe(5);
    expect(t.gaps).toEqual([20, 0]);
  });

  it("tells the first data event from the first token when a role chunk leads", () => {
    const p = new SseChunkParser();
    p.feed('data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\r\n\r\n', 1);
    p.feed(chunk("t0 "), 4);
    const t = streamTimings(0, p.record);
    expect(t.ttftData).toBe(1);
    expect(t.ttftContent).toBe(4);
    expect(p.record.done).toBe(false);
  });

  it("counts error events and ignores comments and non-JSON data", () => {
    const p = new SseChunkParser();
    p.feed(": keep-alive\n\n", 1);
    p.feed("data: not json\n\n", 2);
    p.feed('data: {"error":{"message":"upstream failed"}}\n\n', 3);
    expect(p.record.errorEvents).toBe(1);
    expect(p.record.dataTimes).toEqual([2, 3]);
    expect(p.record.contents).toEqual([]);
  });

  it("accepts a slow stream only when every token came in order, then end and [DONE]", () => {
    const record = (contents: string[], done = true) => ({
      dataTimes: [],
      contents,
      contentTimes: [],
      done,
      errorEvents: 0,
    });
    expect(slowStreamComplete(record(["t0 ", "t1 ", "t2 ", "end"]))).toBe(true);
    expect(slowStreamComplete(record(["t0 ", "t2 ", "end"]))).toBe(false);
    expect(slowStreamComplete(record(["t0 ", "t1 "]))).toBe(false);
    expect(slowStreamComplete(record(["t0 ", "end"], false))).toBe(false);
  });
});

describe("/proc parsing", () => {
  it("reads utime and stime even when the command name holds spaces and parentheses", () => {
    const line =
      "4242 (node (bench) x) S 1 4242 4242 0 -1 4194560 5000 0 12 0 1234 567 0 0 20 0 11 0 9000 1200000000 40000 18446744073709551615 1 1 0 0 0 0 0 4096 134234626 0 0 0 17 1 0 0 0 0 0";
    expect(parseProcStat(line)).toEqual({ utimeTicks: 1234, stimeTicks: 567 });
  });

  it("reads VmRSS and VmHWM in kB from /proc/PID/status", () => {
    const status = [
      "Name:\tnode",
      "VmPeak:\t 1234567 kB",
      "VmHWM:\t  163276 kB",
      "VmRSS:\t  150300 kB",
      "Threads:\t11",
    ].join("\n");
    expect(parseProcStatus(status)).toEqual({ rssKb: 150300, hwmKb: 163276 });
  });

  it("reads the open-file limit from /proc/PID/limits", () => {
    const limits = [
      "Limit                     Soft Limit           Hard Limit           Units",
      "Max processes             95345                95345                processes",
      "Max open files            20000                20000                files",
    ].join("\n");
    expect(parseFdLimit(limits)).toEqual({ soft: 20000, hard: 20000 });
    expect(
      parseFdLimit("Max open files            unlimited            unlimited   files"),
    ).toEqual({ soft: Number.POSITIVE_INFINITY, hard: Number.POSITIVE_INFINITY });
  });

  it("fits held streams to every process's spare descriptors", () => {
    // One process holds two descriptors per stream: 20,000 less what it holds, less the reserve.
    const procs = [
      { room: 19_980, reserve: 64, perStream: 1 }, // load client
      { room: 19_975, reserve: 64, perStream: 2 }, // one-process gateway
      { room: 19_990, reserve: 64, perStream: 0 }, // prober: none per stream
    ];
    expect(streamsThatFit(10_000, procs)).toBe(9_955);
    expect(streamsThatFit(1_000, procs)).toBe(1_000);
    expect(streamsThatFit(10, [{ room: 10, reserve: 64, perStream: 1 }])).toBe(0);
  });

  it("rejects text that is not a stat line", () => {
    expect(() => parseProcStat("garbage")).toThrow();
  });
});
