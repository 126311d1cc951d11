import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { coldFigures, coldProbe } from "./cold.js";
import { gapRows } from "./gaps.js";
import {
  type ClosedResult,
  newHistogram,
  recordMs,
  runClosed,
  SseChunkParser,
  slowStreamComplete,
  streamTimings,
  summarize,
} from "./load.js";
import {
  parseFdLimit,
  parseProcStat,
  parseProcStatus,
  parseVariants,
  streamsThatFit,
} from "./procs.js";
import { formatTable, median, rotate } from "./run.js";
import { parseTrace, socketPeers, timeline, timelineRows } from "./timeline.js";

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

describe("the per-process timeline (bench/timeline.ts)", () => {
  // A client (pid 10) calls a proxy (20) that calls an upstream (30); the proxy's thread 21 writes
  // a log line. The upstream's read of the proxy's request was split by another CPU's line.
  const trace = [
    "     0.100 ( 0.010 ms): node/10 writev(fd: 5, vec: 0x1, vlen: 2)              = 300",
    "     0.150 ( 0.010 ms): node/20 read(fd: 7, buf: 0x2, count: 65536)            = 300",
    "     0.400 ( 0.050 ms): node/20 writev(fd: 8, vec: 0x3, vlen: 2)               = 450",
    "     0.500 (         ): node/30 read(fd: 9, buf: 0x4, count: 65536)            ...",
    "     0.480 ( 0.020 ms): node/21 write(fd: 1, buf: 0x5, count: 4000)            = 4000",
    "     0.500 ( 0.010 ms): node/30  ... [continued]: read())                       = 450",
    "     0.700 ( 0.020 ms): node/30 writev(fd: 9, vec: 0x6, vlen: 5)               = 5000",
    "     0.760 ( 0.010 ms): node/20 read(fd: 8, buf: 0x7, count: 65536)            = 5000",
    "     0.770 ( 0.005 ms): node/20 read(fd: 16, buf: 0x8, count: 1024)            = 8",
    "     1.000 ( 0.040 ms): node/20 writev(fd: 7, vec: 0x9, vlen: 2)               = 800",
    "     1.020 ( 0.010 ms): node/20 write(fd: 7, buf: 0xa, count: 40)              = 40",
    "     1.100 ( 0.010 ms): node/10 read(fd: 5, buf: 0xb, count: 65536)            = 840",
    "     1.200 ( 0.010 ms): node/10 read(fd: 5, buf: 0xc, count: 65536)            = -11 EAGAIN",
  ].join("\n");
  const ss = [
    '0 0 127.0.0.1:40000 127.0.0.1:8080 users:(("node",pid=10,fd=5))',
    '0 0 127.0.0.1:8080 127.0.0.1:40000 users:(("node",pid=20,fd=7))',
    '0 0 127.0.0.1:40001 127.0.0.1:9090 users:(("node",pid=20,fd=8))',
    '0 0 127.0.0.1:9090 127.0.0.1:40001 users:(("node",pid=30,fd=9))',
    '0 0 127.0.0.1:40002 127.0.0.1:4222 users:(("node",pid=20,fd=12))',
  ].join("\n");
  const names = new Map([
    [10, "client"],
    [20, "proxy"],
    [30, "upstream"],
  ]);

  it("parses completed calls, joins split ones and orders them by their start", () => {
    const calls = parseTrace(trace);
    expect(calls.map((c) => [c.pid, c.call, c.fd, c.bytes])).toEqual([
      [10, "writev", 5, 300],
      [20, "read", 7, 300],
      [20, "writev", 8, 450],
      [21, "write", 1, 4000],
      [30, "read", 9, 450],
      [30, "writev", 9, 5000],
      [20, "read", 8, 5000],
      [20, "read", 16, 8],
      [20, "writev", 7, 800],
      [20, "write", 7, 40],
      [10, "read", 5, 840],
    ]);
    const split = calls.find((c) => c.pid === 30 && c.call === "read");
    expect(split?.start).toBeCloseTo(500, 6);
    expect(split?.end).toBeCloseTo(510, 6);
  });

  it("pairs the two ends of each connection among the traced processes only", () => {
    const peers = socketPeers(ss, new Set(names.keys()));
    expect(Object.fromEntries(peers)).toEqual({
      "10:5": "20:7",
      "20:7": "10:5",
      "20:8": "30:9",
      "30:9": "20:8",
    });
  });

  it("splits the chain into segments inside each process and handoffs between them", () => {
    const t = timeline(parseTrace(trace), names, socketPeers(ss, new Set(names.keys())));
    const us = (m: Map<string, number[]>) =>
      Object.fromEntries([...m].map(([k, v]) => [k, v.map((x) => Math.round(x))]));
    expect(us(t.segments)).toEqual({
      "proxy: client → upstream": [300], // 0.150 read → 0.450 end of its writev
      "proxy: upstream → client": [280], // 0.760 read → 1.040 end of its writev
      "upstream: proxy → proxy": [220],
    });
    // The client read the proxy's two writes of its answer at once: one handoff. The 8-byte
    // read (an event-fd wake-up) is no message of the chain.
    expect(us(t.handoffs)).toEqual({
      "client → proxy": [40],
      "proxy → upstream": [50],
      "upstream → proxy": [40],
      "proxy → client": [60],
    });
    expect(timelineRows(t.handoffs, 1)[0]).toEqual(["client → proxy", "1", "40"]);
    expect(timelineRows(t.handoffs, 2)).toEqual([]);
  });
});

describe("closed-loop starts", () => {
  // A stream server that answers every request 600 ms after it arrived, noting when it did.
  /**
   * Each request's arrival, ms after the first one's (`arrivals`) and after `run` was called
   * (`sinceStart`).
   */
  async function slowStreams(
    run: (origin: string) => Promise<void>,
    answerAfterMs = 600,
  ): Promise<number[] & { sinceStart: number[] }> {
    const arrivals: number[] = [];
    const server = createServer((req, res) => {
      arrivals.push(performance.now());
      req.resume();
      setTimeout(() => {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.end('data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\ndata: [DONE]\n\n');
      }, answerAfterMs);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const start = performance.now();
    try {
      await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    return Object.assign(
      arrivals.map((t) => t - (arrivals[0] ?? t)),
      { sinceStart: arrivals.map((t) => t - start) },
    );
  }
  const job = (origin: string, staggerMs?: number) => ({
    kind: "closed" as const,
    target: { origin, path: "/", headers: { "content-type": "application/json" }, body: "{}" },
    concurrency: 3,
    durationMs: 1000,
    stream: true,
    ...(staggerMs !== undefined && { staggerMs }),
  });

  it("spreads staggered clients over the span and times only what is sent once all have started", async () => {
    let r = {} as Awaited<ReturnType<typeof runClosed>>;
    const arrivals = await slowStreams(async (origin) => {
      r = await runClosed(job(origin, 600));
    });
    // Three clients over 600 ms: first requests sent at 0, 200 and 400 ms after the run began (a
    // timer is never early). Measured from the call, not from the first arrival, which a loaded
    // machine can delay by more than the margin between two clients.
    expect(arrivals.sinceStart[1]).toBeGreaterThanOrEqual(200);
    expect(arrivals.sinceStart[2]).toBeGreaterThanOrEqual(400);
    expect(r.completed).toBe(arrivals.length);
    expect(r.completed).toBeGreaterThan(3);
    // Every stream's tokens are checked; the three sent during the ramp are not timed.
    expect(r.stream?.sequences).toEqual({ a: r.completed });
    expect(r.stream?.ttftData.count).toBe(r.completed - 3);
    expect(r.latency.count).toBe(r.completed - 3);
  });

  it("starts lockstep clients together and times every stream", async () => {
    let r = {} as Awaited<ReturnType<typeof runClosed>>;
    const arrivals = await slowStreams(async (origin) => {
      r = await runClosed(job(origin));
    });
    expect(arrivals[2]).toBeLessThan(100);
    expect(r.completed).toBe(arrivals.length);
    expect(r.stream?.ttftData.count).toBe(r.completed);
    expect(r.latency.count).toBe(r.completed);
  });

  it("leaves a client idle for pauseMs between the end of one request and the next", async () => {
    let r = {} as Awaited<ReturnType<typeof runClosed>>;
    const arrivals = await slowStreams(async (origin) => {
      r = await runClosed({ ...job(origin), concurrency: 1, durationMs: 500, pauseMs: 150 });
    }, 0);
    // Answered at once, so without the pause there would be hundreds in 500 ms.
    expect(r.completed).toBe(arrivals.length);
    expect(arrivals.length).toBeGreaterThanOrEqual(2);
    expect(arrivals.length).toBeLessThanOrEqual(4);
    for (let i = 1; i < arrivals.length; i++) {
      expect((arrivals[i] ?? 0) - (arrivals[i - 1] ?? 0)).toBeGreaterThanOrEqual(140);
    }
  });
});

describe("idle gaps (bench/gaps.ts)", () => {
  const result = (p50: number, p90 = p50 * 2) =>
    ({ latency: { count: 10, p50, p90 } }) as unknown as ClosedResult;
  it("reports medians over repeats and what a variant adds to direct in the same repeat", () => {
    const rows = gapRows(
      [
        { variant: "direct", gap: 5, repeat: 0, result: result(1.0) },
        { variant: "one", gap: 5, repeat: 0, result: result(1.5) },
        { variant: "direct", gap: 5, repeat: 1, result: result(1.2) },
        { variant: "one", gap: 5, repeat: 1, result: result(2.0) },
        { variant: "direct", gap: 5, repeat: 2, result: result(3.0) },
        { variant: "one", gap: 5, repeat: 2, result: result(3.6) },
        { variant: "direct", gap: 0, repeat: 0, result: result(0.1) },
      ],
      [
        { name: "direct", label: "direct" },
        { name: "one", label: "one process" },
      ],
      [0, 5],
    );
    expect(rows).toEqual([
      ["0", "direct", "10", "0.100", "0.200", "—"],
      ["5", "direct", "30", "1.200", "2.400", "—"],
      // Added per repeat: 0.5, 0.8, 0.6; not the difference of the medians (2.0 − 1.2).
      ["5", "one process", "30", "2.000", "4.000", "+0.600"],
    ]);
  });
});

describe("variant lists", () => {
  it("takes known names and refuses an unknown one instead of starting something else", () => {
    expect(parseVariants("bare,one,two,four")).toEqual(["bare", "one", "two", "four"]);
    expect(() => parseVariants("one,fuor")).toThrow("unknown variant 'fuor'");
  });
});

describe("the cold-code probe (bench/cold.ts)", () => {
  it("times the task at each gap, in order, and idles for the gap before each run", async () => {
    const t0 = performance.now();
    const probe = await coldProbe([0, 5], 20);
    const elapsed = performance.now() - t0;
    expect(probe.rows.map((r) => [r.gapMs, r.runs])).toEqual([
      [0, 20],
      [5, 20],
    ]);
    for (const r of probe.rows) {
      expect(r.p50Us).toBeGreaterThan(0);
      expect(r.p90Us).toBeGreaterThanOrEqual(r.p50Us);
    }
    // One second of warm-up, then 20 sleeps of 5 ms (a timer may fire up to 1 ms early).
    expect(elapsed).toBeGreaterThanOrEqual(1000 + 20 * 4);
  });

  it("gives each gap's median with its ratio to back to back", () => {
    const row = (gapMs: number, p50Us: number) => ({ gapMs, runs: 10, p50Us, p90Us: p50Us });
    expect(coldFigures({ task: "t", rows: [row(0, 60), row(5, 132.4), row(20, 150)] })).toBe(
      "60 µs back to back, 132 µs after 5 ms idle (2.2×), 150 µs after 20 ms idle (2.5×)",
    );
    // Without a back-to-back row there is nothing to compare with.
    expect(coldFigures({ task: "t", rows: [row(5, 100)] })).toBe("100 µs after 5 ms idle");
  });
});
