import { createRouterTransport, type Transport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ConnectorService } from "../../gen/switchyard/connector/v1/connector_pb.js";
import { type ConnectorEndpoint, ConnectorPool, SUSPECT_MS } from "./connector-pool.js";

/** A connector that answers every probe with `latencyMs`, to tell connectors apart. */
function connector(latencyMs: number): Transport {
  return createRouterTransport((router) =>
    router.service(ConnectorService, { probe: () => ({ ok: true, latencyMs }) }),
  );
}

/**
 * A pool of idle connectors and their endpoints by id. Equal loads rotate, so `size` picks
 * reach every endpoint once.
 */
function poolOf(
  ids: string[],
  now?: () => number,
): { pool: ConnectorPool; byId: Map<string, ConnectorEndpoint> } {
  const pool = new ConnectorPool(now);
  for (const [i, id] of ids.entries()) pool.add(id, connector(i));
  const byId = new Map<string, ConnectorEndpoint>();
  for (let i = 0; i < pool.size; i++) {
    const e = pool.pick();
    if (e) byId.set(e.id, e);
  }
  expect([...byId.keys()].sort()).toEqual([...ids].sort());
  return { pool, byId };
}

function setInflight(byId: Map<string, ConnectorEndpoint>, counts: Record<string, number>): void {
  for (const [id, e] of byId) e.inflight = counts[id] ?? 0;
}

describe("ConnectorPool", () => {
  it("has nothing to pick when empty", () => {
    const pool = new ConnectorPool();
    expect(pool.pick()).toBeUndefined();
    expect(pool.size).toBe(0);
  });

  it("picks the connector with the fewest calls in flight", () => {
    const { pool, byId } = poolOf(["a", "b", "c"]);
    setInflight(byId, { a: 3, b: 1, c: 2 });
    for (let i = 0; i < 5; i++) expect(pool.pick()?.id).toBe("b");
  });

  it("spreads picks over connectors with equal load", () => {
    const { pool } = poolOf(["a", "b", "c"]);
    const picked = [pool.pick()?.id, pool.pick()?.id, pool.pick()?.id];
    expect(new Set(picked)).toEqual(new Set(["a", "b", "c"]));
  });

  it("spreads ties among the least loaded only", () => {
    const { pool, byId } = poolOf(["a", "b", "c"]);
    setInflight(byId, { a: 1, b: 0, c: 0 });
    const picked = new Set(Array.from({ length: 6 }, () => pool.pick()?.id));
    expect(picked).toEqual(new Set(["b", "c"]));
  });

  it("passes over a suspected connector for SUSPECT_MS while another exists", () => {
    const clock = { now: 1_000_000 };
    const { pool, byId } = poolOf(["a", "b"], () => clock.now);
    setInflight(byId, { a: 0, b: 5 });
    pool.suspect("a");
    for (let i = 0; i < 4; i++) expect(pool.pick()?.id).toBe("b");
    clock.now += SUSPECT_MS - 1;
    expect(pool.pick()?.id).toBe("b");
    clock.now += 1;
    expect(pool.pick()?.id).toBe("a");
  });

  it("still hands out suspected connectors when every one is suspected, least loaded first", () => {
    const { pool, byId } = poolOf(["a", "b"]);
    setInflight(byId, { a: 2, b: 1 });
    pool.suspect("a");
    pool.suspect("b");
    expect(pool.pick()?.id).toBe("b");
  });

  it("passes over a connector that said it is leaving, even one less loaded or not suspected, until it is back", () => {
    const { pool, byId } = poolOf(["a", "b"]);
    setInflight(byId, { a: 0, b: 5 });
    expect(pool.setLeaving("a", true)).toBe(true);
    expect(pool.setLeaving("a", true)).toBe(false); // said once
    expect(pool.isLeaving("a")).toBe(true);
    pool.suspect("b");
    for (let i = 0; i < 4; i++) expect(pool.pick()?.id).toBe("b");
    // When it is all there is, it is still handed out.
    pool.remove("b");
    expect(pool.pick()?.id).toBe("a");
    expect(pool.setLeaving("a", false)).toBe(true);
    expect(pool.isLeaving("a")).toBe(false);
    expect(pool.setLeaving("ghost", true)).toBe(false);
  });

  it("passes over a leaving connector for no longer than the mark says", () => {
    let t = 1_000;
    const { pool, byId } = poolOf(["a", "b"], () => t);
    setInflight(byId, { a: 0, b: 5 });
    expect(pool.setLeaving("a", true, 30_000)).toBe(true);
    t += 29_999;
    expect(pool.isLeaving("a")).toBe(true);
    expect(pool.pick()?.id).toBe("b");
    t += 1;
    expect(pool.isLeaving("a")).toBe(false);
    expect(pool.pick()?.id).toBe("a");
    // Saying it again marks it again; announcing itself afterwards still counts as a change.
    expect(pool.setLeaving("a", true, 10)).toBe(true);
    t += 10;
    expect(pool.setLeaving("a", false)).toBe(true);
    expect(pool.setLeaving("a", false)).toBe(false);
  });

  it("ignores suspicion of an id it does not have", () => {
    const { pool } = poolOf(["a"]);
    pool.suspect("ghost");
    expect(pool.has("ghost")).toBe(false);
    expect(pool.pick()?.id).toBe("a");
  });

  it("adds an id once, keeping its endpoint and load", () => {
    const { pool, byId } = poolOf(["a"]);
    const first = byId.get("a");
    if (!first) throw new Error("no endpoint");
    first.inflight = 4;
    pool.add("a", connector(99));
    expect(pool.size).toBe(1);
    expect(pool.pick()).toBe(first);
    expect(pool.pick()?.inflight).toBe(4);
  });

  it("stops picking a removed connector", () => {
    const { pool } = poolOf(["a", "b"]);
    pool.remove("a");
    expect(pool.ids()).toEqual(["b"]);
    expect(pool.has("a")).toBe(false);
    for (let i = 0; i < 3; i++) expect(pool.pick()?.id).toBe("b");
    pool.remove("b");
    expect(pool.pick()).toBeUndefined();
  });

  it("tells a caller waiting for a first connector when one joins, or that none did in time", async () => {
    const pool = new ConnectorPool();
    const waited = pool.whenAny(5_000);
    pool.add("late", connector(1));
    expect(await waited).toBe(true);
    expect(await pool.whenAny(0)).toBe(true);
    const empty = new ConnectorPool();
    expect(await empty.whenAny(20)).toBe(false);
  });

  it("gives each endpoint a ConnectorService client over its own transport", async () => {
    const pool = new ConnectorPool();
    pool.add("seven", connector(7));
    const res = await pool.pick()?.client.probe({ target: { provider: "p", model: "m" } });
    expect(res?.ok).toBe(true);
    expect(res?.latencyMs).toBe(7);
  });
});
