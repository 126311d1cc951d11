import { describe, expect, it } from "vitest";
import { testConfig } from "../../test/helpers/fabric.js";
import type { TargetConfig } from "../lib/config/types.js";
import { Failure } from "../lib/errors.js";
import { type PlannedTarget, planTargets } from "./plan.js";

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
    const plan = planTargets(config, "main", {}, everyTarget);
    expect(names(plan)).toEqual(["main:a/a1", "main:b/b1", "backup:c/c1", "backup:a/a2"]);
  });

  it("answers 404 model_not_found for a model the config does not name", () => {
    const f = thrown(() => planTargets(config, "nope", {}, everyTarget));
    expect(f.status).toBe(404);
    expect(f.kind).toBe("not_found");
    expect(f.code).toBe("model_not_found");
    expect(f.param).toBe("model");
  });

  it("replaces the configured fallbacks with the request's, skipping unknown names", () => {
    const plan = planTargets(config, "main", { fallbacks: ["ghost", "other"] }, everyTarget);
    expect(names(plan)).toEqual(["main:a/a1", "main:b/b1", "other:b/b2"]);
  });

  it("uses no fallback at all when the request sends an empty list", () => {
    const plan = planTargets(config, "main", { fallbacks: [] }, everyTarget);
    expect(names(plan)).toEqual(["main:a/a1", "main:b/b1"]);
  });

  it("plans each model once even when fallbacks repeat it or name the model itself", () => {
    const plan = planTargets(
      config,
      "main",
      { fallbacks: ["main", "backup", "backup"] },
      everyTarget,
    );
    expect(names(plan)).toEqual(["main:a/a1", "main:b/b1", "backup:c/c1", "backup:a/a2"]);
  });

  it("keeps only the hinted provider's targets, across fallbacks too", () => {
    const plan = planTargets(config, "main", { provider: "a" }, everyTarget);
    expect(names(plan)).toEqual(["main:a/a1", "backup:a/a2"]);
  });

  it("answers 400 on param provider when the hinted provider serves none of the chain", () => {
    const f = thrown(() => planTargets(config, "other", { provider: "c" }, everyTarget));
    expect(f.status).toBe(400);
    expect(f.kind).toBe("invalid_request");
    expect(f.param).toBe("provider");
    expect(f.message).toContain("'c'");
  });

  it("moves unusable targets to the end, keeping the order within each group", () => {
    const down = new Set(["a/a1", "c/c1"]);
    const usable = (t: TargetConfig) => !down.has(`${t.provider}/${t.model}`);
    const plan = planTargets(config, "main", {}, usable);
    expect(names(plan)).toEqual(["main:b/b1", "backup:a/a2", "main:a/a1", "backup:c/c1"]);
  });

  it("still plans every target, in order, when none is usable", () => {
    const plan = planTargets(config, "main", {}, () => false);
    expect(names(plan)).toEqual(["main:a/a1", "main:b/b1", "backup:c/c1", "backup:a/a2"]);
  });

  it("hands out the configured target objects, with their weights", () => {
    const plan = planTargets(config, "other", {}, everyTarget);
    expect(plan[0]?.target).toBe(config.models.other?.targets[0]);
    expect(plan[0]?.target.weight).toBe(1);
  });
});
