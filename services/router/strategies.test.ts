import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ChatParamsSchema, EmbedParamsSchema } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { testConfig } from "../../test/helpers/fabric.js";
import type { ModelConfig, Strategy, TargetConfig } from "../lib/config/types.js";
import {
  createStrategies,
  DEFAULT_COMPLETION_TOKENS,
  estimateTokens,
  InflightTracker,
  LatencyTracker,
  type SharedLatency,
} from "./strategies.js";

/** A model with this strategy over targets written as YAML flow maps, validated like real config. */
function model(strategy: Strategy, ...targets: string[]): ModelConfig {
  const config = testConfig(`
providers:
  a: { type: mock }
  b: { type: mock }
  c: { type: mock }
models:
  m:
    strategy: ${strategy}
    targets:
${targets.map((t) => `      - ${t}`).join("\n")}
`);
  const m = config.models.m;
  if (!m) throw new Error("no model m");
  return m;
}

const names = (targets: TargetConfig[]) => targets.map((t) => t.model);

/** A random source that returns these values in turn and fails the test when it runs out. */
function scripted(...values: number[]): () => number {
  return () => {
    const v = values.shift();
    if (v === undefined) throw new Error("the strategy drew more random numbers than expected");
    return v;
  };
}

/** How often each target came first over `n` orders. */
function firsts(n: number, order: () => TargetConfig[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const first = order()[0]?.model ?? "none";
    counts[first] = (counts[first] ?? 0) + 1;
  }
  return counts;
}

describe("priority", () => {
  it("keeps the configured order, as a copy the caller may change", () => {
    const m = model("priority", "{ provider: a, model: a1 }", "{ provider: b, model: b1 }");
    const order = createStrategies().order("m", m);
    expect(names(order)).toEqual(["a1", "b1"]);
    expect(order).not.toBe(m.targets);
    expect(order[0]).toBe(m.targets[0]);
  });
});

describe("weighted", () => {
  it("gives weights 3:1 exactly 3:1 over a cycle of 4, never bunching the light target", () => {
    const m = model(
      "weighted",
      "{ provider: a, model: heavy, weight: 3 }",
      "{ provider: b, model: light, weight: 1 }",
    );
    const s = createStrategies();
    const cycle = Array.from({ length: 4 }, () => s.order("m", m)[0]?.model);
    expect(cycle).toEqual(["heavy", "heavy", "light", "heavy"]);
    expect(firsts(40, () => s.order("m", m))).toEqual({ heavy: 30, light: 10 });
  });

  it("spreads 5:1:1 as nginx does, the heavy target interleaved with the light ones", () => {
    const m = model(
      "weighted",
      "{ provider: a, model: x, weight: 5 }",
      "{ provider: b, model: y, weight: 1 }",
      "{ provider: c, model: z, weight: 1 }",
    );
    const s = createStrategies();
    const cycle = Array.from({ length: 7 }, () => s.order("m", m)[0]?.model);
    expect(cycle).toEqual(["x", "x", "y", "x", "z", "x", "x"]);
  });

  it("lists the targets not picked after it by weight, heaviest first", () => {
    const m = model(
      "weighted",
      "{ provider: a, model: w1, weight: 1 }",
      "{ provider: b, model: w5, weight: 5 }",
      "{ provider: c, model: w3, weight: 3 }",
    );
    const order = createStrategies().order("m", m);
    expect(names(order)).toEqual(["w5", "w3", "w1"]);
  });

  it("never puts a weight-0 target first, but keeps it last as a fallback", () => {
    const m = model(
      "weighted",
      "{ provider: a, model: spare, weight: 0 }",
      "{ provider: b, model: main, weight: 1 }",
    );
    const s = createStrategies();
    for (let i = 0; i < 10; i++) expect(names(s.order("m", m))).toEqual(["main", "spare"]);
  });

  it("keeps one rotation per model, so another model's traffic does not shift it", () => {
    const m = model(
      "weighted",
      "{ provider: a, model: a1, weight: 1 }",
      "{ provider: b, model: b1, weight: 1 }",
    );
    const other = model(
      "weighted",
      "{ provider: a, model: a1, weight: 1 }",
      "{ provider: b, model: b1, weight: 1 }",
    );
    const s = createStrategies();
    const seen: Array<string | undefined> = [];
    for (let i = 0; i < 4; i++) {
      seen.push(s.order("m", m)[0]?.model);
      s.order("other", other);
      s.order("other", other);
      s.order("other", other);
    }
    expect(seen).toEqual(["a1", "b1", "a1", "b1"]);
  });

  it("starts the rotation afresh when the model's targets are replaced", () => {
    const targets = [
      "{ provider: a, model: a1, weight: 1 }",
      "{ provider: b, model: b1, weight: 1 }",
    ];
    const s = createStrategies();
    expect(s.order("m", model("weighted", ...targets))[0]?.model).toBe("a1");
    // A reloaded config: new target objects, so the old scores no longer apply.
    expect(s.order("m", model("weighted", ...targets))[0]?.model).toBe("a1");
  });
});

describe("least-latency", () => {
  const m = model(
    "least-latency",
    "{ provider: a, model: a1 }",
    "{ provider: b, model: b1 }",
    "{ provider: c, model: c1 }",
  );
  const noExploring = () => 0.99;

  it("orders targets by ascending time to first token", () => {
    const s = createStrategies({ random: noExploring });
    s.latency.observe("a", "a1", 300);
    s.latency.observe("b", "b1", 100);
    s.latency.observe("c", "c1", 200);
    expect(names(s.order("m", m))).toEqual(["b1", "c1", "a1"]);
  });

  it("tries targets with no latency data yet first, in configured order", () => {
    const s = createStrategies({ random: noExploring });
    s.latency.observe("b", "b1", 10);
    expect(names(s.order("m", m))).toEqual(["a1", "c1", "b1"]);
  });

  it("follows live traffic as an EWMA, so one slow answer does not outweigh a history", () => {
    const latency = new LatencyTracker(undefined);
    latency.observe("a", "a1", 100);
    latency.observe("a", "a1", 200);
    expect(latency.estimate("a", "a1")).toBeCloseTo(130);
    expect(latency.estimate("b", "b1")).toBeUndefined();
  });

  it("reads shared health's ttft for targets this router has not measured", () => {
    const shared = new Map([["c/c1", { ttftEwmaMs: 50 }]]);
    const health: SharedLatency = { get: (p, model) => shared.get(`${p}/${model}`) };
    const s = createStrategies({ random: noExploring, health });
    s.latency.observe("a", "a1", 80);
    s.latency.observe("b", "b1", 40);
    expect(names(s.order("m", m))).toEqual(["b1", "c1", "a1"]);
  });

  it("prefers its own recent measurement to shared health, and shared health to an old one", () => {
    const clock = { now: 1_000_000 };
    const health: SharedLatency = { get: () => ({ ttftEwmaMs: 500 }) };
    const latency = new LatencyTracker(health, () => clock.now);
    expect(latency.estimate("a", "a1")).toBe(500);
    latency.observe("a", "a1", 20);
    expect(latency.estimate("a", "a1")).toBe(20);
    clock.now += 10 * 60_000;
    expect(latency.estimate("a", "a1")).toBe(500);
  });

  it("ignores a shared ttft of 0, which means nobody measured it", () => {
    const latency = new LatencyTracker({ get: () => ({ ttftEwmaMs: 0 }) });
    expect(latency.estimate("a", "a1")).toBeUndefined();
  });

  it("moves a random target to the front with probability ε, so a recovered one is retried", () => {
    // 0.01 < ε = 0.05 explores; 0.9 picks the last of three targets, the slowest.
    const s = createStrategies({ random: scripted(0.01, 0.9) });
    s.latency.observe("a", "a1", 300);
    s.latency.observe("b", "b1", 100);
    s.latency.observe("c", "c1", 200);
    expect(names(s.order("m", m))).toEqual(["a1", "b1", "c1"]);
  });

  it("explores at the configured rate only", () => {
    const measured = (random: () => number, explorationRate: number) => {
      const s = createStrategies({ random, explorationRate });
      s.latency.observe("a", "a1", 300);
      s.latency.observe("b", "b1", 100);
      s.latency.observe("c", "c1", 200);
      return s;
    };
    expect(names(measured(scripted(0.19, 0.99), 0.2).order("m", m))).toEqual(["a1", "b1", "c1"]);
    expect(names(measured(scripted(0.2), 0.2).order("m", m))).toEqual(["b1", "c1", "a1"]);
    expect(names(measured(scripted(0), 0).order("m", m))).toEqual(["b1", "c1", "a1"]);
  });

  it("draws no exploration for a single target", () => {
    const one = model("least-latency", "{ provider: a, model: a1 }");
    expect(names(createStrategies({ random: scripted() }).order("m", one))).toEqual(["a1"]);
  });
});

describe("lowest-cost", () => {
  const chat = (text: string, maxTokens?: number) =>
    create(ChatParamsSchema, {
      model: "m",
      messages: [{ content: [{ part: { case: "text", value: text } }] }],
      ...(maxTokens === undefined ? {} : { maxTokens }),
    });

  it("orders targets by the configured price of this request", () => {
    const m = model(
      "lowest-cost",
      "{ provider: a, model: pricey, price: { input: 5, output: 15 } }",
      "{ provider: b, model: cheap, price: { input: 0.5, output: 1.5 } }",
      "{ provider: c, model: middle, price: { input: 2, output: 6 } }",
    );
    expect(names(createStrategies().order("m", m, chat("hello")))).toEqual([
      "cheap",
      "middle",
      "pricey",
    ]);
  });

  it("uses the built-in list price for a target without price, and config over it", () => {
    const m = model(
      "lowest-cost",
      "{ provider: a, model: claude-opus-4-1 }",
      "{ provider: b, model: gpt-4o }",
      "{ provider: c, model: gpt-4o-mini }",
      "{ provider: a, model: gpt-4.1, price: { input: 100, output: 100 } }",
    );
    expect(names(createStrategies().order("m", m, chat("hi")))).toEqual([
      "gpt-4o-mini",
      "gpt-4o",
      "claude-opus-4-1",
      "gpt-4.1",
    ]);
  });

  it("puts targets with no price anywhere last, keeping configured order on ties", () => {
    const m = model(
      "lowest-cost",
      "{ provider: a, model: my-finetune }",
      "{ provider: b, model: same-1, price: { input: 1, output: 1 } }",
      "{ provider: c, model: local-llama }",
      "{ provider: c, model: same-2, price: { input: 1, output: 1 } }",
    );
    expect(names(createStrategies().order("m", m, chat("hi")))).toEqual([
      "same-1",
      "same-2",
      "my-finetune",
      "local-llama",
    ]);
  });

  it("weighs prompt against completion: max_tokens decides between input- and output-cheap", () => {
    const m = model(
      "lowest-cost",
      "{ provider: a, model: cheap-input, price: { input: 1, output: 10 } }",
      "{ provider: b, model: cheap-output, price: { input: 10, output: 1 } }",
    );
    const s = createStrategies();
    const longPrompt = "x".repeat(40_000); // about 10k tokens
    expect(names(s.order("m", m, chat(longPrompt, 10)))[0]).toBe("cheap-input");
    expect(names(s.order("m", m, chat("hi", 4000)))[0]).toBe("cheap-output");
    // No max_tokens: DEFAULT_COMPLETION_TOKENS against the 10k prompt tokens.
    expect(names(s.order("m", m, chat(longPrompt)))[0]).toBe("cheap-input");
  });
});

describe("estimateTokens", () => {
  it("counts a quarter token per character of message text and tool definitions", () => {
    const params = create(ChatParamsSchema, {
      model: "m",
      maxTokens: 50,
      messages: [
        { content: [{ part: { case: "text", value: "a".repeat(400) } }] },
        {
          content: [{ part: { case: "image", value: { url: "https://example.com/x.png" } } }],
          toolCalls: [{ id: "call_1", name: "lookup", arguments: '{"q":"weather"}' }],
        },
      ],
      tools: [{ name: "lookup", description: "Looks up", parametersJson: '{"type":"object"}' }],
    });
    const toolCall = "lookup".length + '{"q":"weather"}'.length;
    const tool = "lookup".length + "Looks up".length + '{"type":"object"}'.length;
    expect(estimateTokens(params)).toEqual({
      prompt: Math.ceil((400 + toolCall + tool) / 4),
      completion: 50,
    });
  });

  it("assumes DEFAULT_COMPLETION_TOKENS when the request sets no max_tokens", () => {
    const params = create(ChatParamsSchema, { model: "m" });
    expect(estimateTokens(params)).toEqual({ prompt: 0, completion: DEFAULT_COMPLETION_TOKENS });
    expect(DEFAULT_COMPLETION_TOKENS).toBe(256);
  });

  it("counts embedding inputs as prompt, with no completion", () => {
    const params = create(EmbedParamsSchema, { model: "e", inputs: ["abcd", "efghijkl"] });
    expect(estimateTokens(params)).toEqual({ prompt: 3, completion: 0 });
  });
});

describe("least-inflight", () => {
  const m = model(
    "least-inflight",
    "{ provider: a, model: a1 }",
    "{ provider: b, model: b1 }",
    "{ provider: c, model: c1 }",
  );

  /** Strategies with these in-flight counts per target model. */
  function loaded(random: () => number, counts: Record<string, number>) {
    const s = createStrategies({ random });
    for (const t of m.targets)
      for (let i = 0; i < (counts[t.model] ?? 0); i++) s.inflight.begin(t.provider, t.model);
    return s;
  }

  it("puts the less loaded of two random targets first, then the rest by in-flight", () => {
    // Draws a1 (0.0), then c1 (0.5 of the two left); c1 has fewer in flight than a1. b1 is
    // idle but was not drawn: that is power of two choices, not a global minimum.
    const s = loaded(scripted(0.0, 0.5), { a1: 2, b1: 0, c1: 1 });
    expect(names(s.order("m", m))).toEqual(["c1", "b1", "a1"]);
  });

  it("gives a tie between the two drawn to the first drawn, so idle traffic spreads", () => {
    const s = loaded(scripted(0.9, 0.0), {});
    expect(names(s.order("m", m))).toEqual(["c1", "a1", "b1"]);
  });

  it("never draws the same target twice", () => {
    // 0.4 draws b1 (index 1 of three); 0.6 of the two others is index 1 once b1 is skipped: c1.
    const s = loaded(scripted(0.4, 0.6), { a1: 0, b1: 5, c1: 3 });
    expect(names(s.order("m", m))).toEqual(["c1", "a1", "b1"]);
  });

  it("spreads sequential traffic across an idle model's targets", () => {
    const s = createStrategies();
    const counts = firsts(300, () => s.order("m", m));
    for (const t of ["a1", "b1", "c1"]) expect(counts[t]).toBeGreaterThan(50);
  });
});

describe("InflightTracker", () => {
  it("counts attempts per target until each one's release, released once only", () => {
    const inflight = new InflightTracker();
    const first = inflight.begin("a", "a1");
    const second = inflight.begin("a", "a1");
    inflight.begin("b", "b1");
    expect(inflight.get("a", "a1")).toBe(2);
    first();
    first();
    expect(inflight.get("a", "a1")).toBe(1);
    second();
    expect(inflight.get("a", "a1")).toBe(0);
    expect(inflight.get("b", "b1")).toBe(1);
  });
});
