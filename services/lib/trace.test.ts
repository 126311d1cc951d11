import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RequestContextSchema } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { heapKeptEach } from "../../test/helpers/heap.js";
import { childSpan, formatTraceparent, nextHop, parseTraceparent, traceIdOf } from "./trace.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN = "00f067aa0ba902b7";
const VALID = `00-${TRACE}-${SPAN}-01`;

describe("parseTraceparent", () => {
  it("reads a version 00 header, surrounding whitespace allowed", () => {
    expect(parseTraceparent(VALID)).toEqual({ traceId: TRACE, spanId: SPAN, flags: "01" });
    expect(parseTraceparent(` ${VALID}\t`)?.traceId).toBe(TRACE);
  });

  it("reads a later version by its version-00 fields, extra fields after a dash", () => {
    expect(parseTraceparent(`01-${TRACE}-${SPAN}-00`)?.flags).toBe("00");
    expect(parseTraceparent(`cc-${TRACE}-${SPAN}-01-what-the-future-holds`)?.spanId).toBe(SPAN);
  });

  it.each([
    ["absent", undefined],
    ["empty", ""],
    ["not hex", `00-${TRACE.replace("4", "g")}-${SPAN}-01`],
    ["uppercase", `00-${TRACE.toUpperCase()}-${SPAN}-01`],
    ["all-zero trace id", `00-${"0".repeat(32)}-${SPAN}-01`],
    ["all-zero span id", `00-${TRACE}-${"0".repeat(16)}-01`],
    ["version ff", `ff-${TRACE}-${SPAN}-01`],
    ["version 00 with extra fields", `${VALID}-extra`],
    ["a later version glued to more text", `01-${TRACE}-${SPAN}-01x`],
    ["short trace id", `00-${TRACE.slice(1)}-${SPAN}-01`],
    ["wrong separators", `00_${TRACE}_${SPAN}_01`],
  ])("refuses a header that is %s", (_, header) => {
    expect(parseTraceparent(header)).toBeUndefined();
  });
});

describe("childSpan", () => {
  it("keeps the trace id and flags, with a new span id", () => {
    const child = childSpan(parseTraceparent(`00-${TRACE}-${SPAN}-00`));
    expect(child.traceId).toBe(TRACE);
    expect(child.flags).toBe("00");
    expect(child.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(child.spanId).not.toBe(SPAN);
  });

  it("starts a sampled trace when there is no parent, never repeating an id", () => {
    const spans = Array.from({ length: 2000 }, () => childSpan(undefined));
    for (const s of spans) {
      expect(formatTraceparent(s)).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      expect(parseTraceparent(formatTraceparent(s))).toEqual(s);
    }
    expect(new Set(spans.map((s) => s.traceId)).size).toBe(spans.length);
    expect(new Set(spans.map((s) => s.spanId)).size).toBe(spans.length);
  });
});

describe("nextHop", () => {
  it("passes the request id and tenant on, in the same trace from a span of its own", () => {
    const incoming = create(RequestContextSchema, {
      requestId: "req-1",
      tenant: "acme",
      traceparent: VALID,
    });
    const out = nextHop(incoming);
    expect(out.requestId).toBe("req-1");
    expect(out.tenant).toBe("acme");
    expect(traceIdOf(out.traceparent)).toBe(TRACE);
    expect(out.traceparent).not.toBe(VALID);
    expect(incoming.traceparent).toBe(VALID);
  });

  it("starts a trace for a caller that sent none", () => {
    expect(nextHop(undefined).traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(traceIdOf("")).toBeUndefined();
  });
});

describe("formatTraceparent", () => {
  // Every hop's context keeps its traceparent for as long as a stream is open.
  it("keeps little heap per traceparent held", async () => {
    const make = () => formatTraceparent(childSpan(undefined));
    // Warmed up first: the first calls also allocate code, feedback and the ids' random pool,
    // which took one in six 5,000-string measurements over the bound.
    for (let i = 0; i < 2000; i++) make();
    const { bytesEach, kept } = await heapKeptEach(20_000, make);
    expect(kept.at(-1)).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    // As a template literal: ~265 bytes (a rope of five pieces, which keeps the ids); flat: <100.
    expect(bytesEach).toBeLessThan(150);
  });
});
