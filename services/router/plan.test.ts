import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ChatParamsSchema } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { testConfig } from "../../test/helpers/fabric.js";
import type { TargetConfig } from "../lib/config/types.js";
import { Failure } from "../lib/errors.js";
import { type PlannedTarget, planTargets } from "./plan.js";
import { createStrategies } from "./strategies.js";

const config = testConfig(`
providers:
  a: { type: mock }
  b: { type: mock }
  c: { type: mock }
models:
  main:
    targets:
      - { provider: a, model: a1 }
      - { provider: b, model: b1 }
    fallbacks: [backup]
  backup:
    targets:
      - { provider: c, model: c1 }
      - { provider: a, model: a2 }
  other:
    targets: [{ provider: b, model: b2 }]
`);

const everyTarget = () => true;
const strategies = createStrategies();

/** "model:provider/upstream-model" per planned target, to compare orders at a glance. */
function names(plan: PlannedTarget[]): string[] {
  return plan.map((p) => `${p.model}:${p.target.provider}/${p.target.model}`);
}

function thrown(fn: () => unknown): Failure {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(Failure);
    return err as Failure;
  }
  throw new Error("expected a Failure");
}

describe("planTargets", () => {
  it("lists the model's targets in priority order, then each fallback model's", () => {
    const plan = planTargets(config, "main", {}, everyTarget, strategies);
    expect(names(plan)).toEqual(["main:a/a1", "main:b/b1", "backup:c/c1", "backup:a/a2"]);
  });

  it("answers 404 model_not_found for a model the config does not name", () => {
    const f = thrown(() => planTargets(config, "nope", {}, everyTarget, strategies));
    expect(f.status).toBe(404);
    expect(f.kind).toBe("not_found");
    expect(f.code).toBe("model_not_found");
    expect(f.param).toBe("model");
  });

  it("replaces the configured fallbacks with the request's, skipping unknown names", () => {
    const plan = planTargets(
      config,
      "main",
      { fallbacks: ["ghost", "other"] },
      everyTarget,
      strategies,
    );
    expect(names(plan)).toEqual(["main:a/a1", "main:b/b1", "other:b/b2"]);
  });

  it("uses no fallback at all when the request sends an empty list", () => {
    const plan = planTargets(config, "main", { fallbacks: [] }, everyTarget, strategies);
    expect(names(plan)).toEqual(["main:a/a1", "main:b/b1"]);
  });

  it("plans each model once even when fallbacks repeat it or name the model itself", () => {
    const plan = planTargets(
      config,
      "main",
      { fallbacks: ["main", "backup", "backup"] },
      everyTarget,
      strategies,
    );
    expect(names(plan)).toEqual(["main:a/a1", "main:b/b1", "backup:c/c1", "backup:a/a2"]);
  });

  it("skips fallbacks outside the tenant's allow-list, configured or the request's", () => {
    const allowed = new Set(["main", "other"]);
    expect(names(planTargets(config, "main", { allowed }, everyTarget, strategies))).toEqual([
      "main:a/a1",
      "main:b/b1",
    ]);
    const named = { allowed, fallbacks: ["backup", "other"] };
    expect(names(planTargets(config, "main", named, everyTarget, strategies))).toEqual([
      "main:a/a1",
      "main:b/b1",
      "other:b/b2",
    ]);
  });

  it("keeps only the hinted provider's targets, across fallbacks too", () => {
    const plan = planTargets(config, "main", { provider: "a" }, everyTarget, strategies);
    expect(names(plan)).toEqual(["main:a/a1", "backup:a/a2"]);
  });

  it("answers 400 on param provider when the hinted provider serves none of the chain", () => {
    const f = thrown(() =>
      planTargets(config, "other", { provider: "c" }, everyTarget, strategies),
    );
    expect(f.status).toBe(400);
    expect(f.kind).toBe("invalid_request");
    expect(f.param).toBe("provider");
    expect(f.message).toContain("'c'");
  });

  it("moves unusable targets to the end, keeping the order within each group", () => {
    const down = new Set(["a/a1", "c/c1"]);
    const usable = (t: TargetConfig) => !down.has(`${t.provider}/${t.model}`);
    const plan = planTargets(config, "main", {}, usable, strategies);
    expect(names(plan)).toEqual(["main:b/b1", "backup:a/a2", "main:a/a1", "backup:c/c1"]);
  });

  it("still plans every target, in order, when none is usable", () => {
    const plan = planTargets(config, "main", {}, () => false, strategies);
    expect(names(plan)).toEqual(["main:a/a1", "main:b/b1", "backup:c/c1", "backup:a/a2"]);
  });

  it("hands out the configured target objects, with their weights", () => {
    const plan = planTargets(config, "other", {}, everyTarget, strategies);
    expect(plan[0]?.target).toBe(config.models.other?.targets[0]);
    expect(plan[0]?.target.weight).toBe(1);
  });

  describe("with strategies", () => {
    const mixed = testConfig(`
providers:
  a: { type: mock }
  b: { type: mock }
  c: { type: mock }
models:
  main:
    strategy: weighted
    targets:
      - { provider: a, model: a1, weight: 1 }
      - { provider: b, model: b1, weight: 3 }
    fallbacks: [cheap]
  cheap:
    strategy: lowest-cost
    targets:
      - { provider: a, model: a2, price: { input: 10, output: 10 } }
      - { provider: c, model: c2, price: { input: 1, output: 1 } }
`);

    it("orders each model of the chain by that model's own strategy", () => {
      const plan = planTargets(mixed, "main", {}, everyTarget, createStrategies());
      // Smooth WRR with weights 1:3 starts on the heavier target; lowest-cost puts c2 first.
      expect(names(plan)).toEqual(["main:b/b1", "main:a/a1", "cheap:c/c2", "cheap:a/a2"]);
    });

    it("advances the weighted rotation from one plan to the next", () => {
      const s = createStrategies();
      const firsts = Array.from({ length: 4 }, () =>
        names(planTargets(mixed, "main", {}, everyTarget, s)).at(0),
      );
      expect(firsts).toEqual(["main:b/b1", "main:a/a1", "main:b/b1", "main:b/b1"]);
    });

    it("moves unusable targets last after the strategy has ordered them", () => {
      const usable = (t: TargetConfig) => t.model !== "c2";
      const plan = planTargets(mixed, "main", {}, usable, createStrategies());
      expect(names(plan)).toEqual(["main:b/b1", "main:a/a1", "cheap:a/a2", "cheap:c/c2"]);
    });

    it("prices the request it is given: a long answer goes where output is cheap", () => {
      const byOutput = testConfig(`
providers:
  a: { type: mock }
  b: { type: mock }
models:
  m:
    strategy: lowest-cost
    targets:
      - { provider: a, model: cheap-input, price: { input: 1, output: 20 } }
      - { provider: b, model: cheap-output, price: { input: 20, output: 1 } }
`);
      const long = create(ChatParamsSchema, { model: "m", maxTokens: 8000 });
      const short = create(ChatParamsSchema, {
        model: "m",
        maxTokens: 1,
        messages: [{ content: [{ part: { case: "text", value: "x".repeat(4000) } }] }],
      });
      const s = createStrategies();
      expect(names(planTargets(byOutput, "m", { request: long }, everyTarget, s))).toEqual([
        "m:b/cheap-output",
        "m:a/cheap-input",
      ]);
      expect(names(planTargets(byOutput, "m", { request: short }, everyTarget, s))).toEqual([
        "m:a/cheap-input",
        "m:b/cheap-output",
      ]);
    });
  });
});
