import { create } from "@bufbuild/protobuf";
import pino from "pino";
import { describe, expect, it } from "vitest";
import {
  ConnectorAnnouncementSchema,
  HealthSource,
  type TargetHealth,
  TargetHealthSchema,
  TargetOutcomeBatchSchema,
  TargetState,
} from "../../../gen/switchyard/health/v1/health_pb.js";
import { createBus } from "./index.js";
import { createMemoryBus, Mailbox } from "./memory.js";

function health(provider: string, model: string, ttftEwmaMs: number): TargetHealth {
  return create(TargetHealthSchema, {
    target: { provider, model },
    state: TargetState.HEALTHY,
    ttftEwmaMs,
    source: HealthSource.PROBE,
    updatedMs: BigInt(Date.now()),
  });
}

/** The next value of `iterator`, failing the test if none comes within `ms`. */
async function nextWithin<T>(iterator: AsyncIterator<T>, ms = 1000): Promise<IteratorResult<T>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`nothing arrived within ${ms}ms`)), ms);
  });
  try {
    return await Promise.race([iterator.next(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function iterate<T>(iterable: AsyncIterable<T>): AsyncIterator<T> {
  return iterable[Symbol.asyncIterator]();
}

describe("memory bus", () => {
  it("a watcher sees values stored before it started, then later changes", async () => {
    const bus = createMemoryBus();
    await bus.health.put(health("openai", "gpt-4o", 100));
    const watch = iterate(bus.health.watch(new AbortController().signal));

    const first = await nextWithin(watch);
    expect(first.value?.target?.model).toBe("gpt-4o");
    expect(first.value?.ttftEwmaMs).toBe(100);

    await bus.health.put(health("openai", "gpt-4o", 250));
    expect((await nextWithin(watch)).value?.ttftEwmaMs).toBe(250);
    await bus.close();
  });

  it("a slow watcher gets only the latest value of each target, in first-change order", async () => {
    const bus = createMemoryBus();
    const watch = iterate(bus.health.watch(new AbortController().signal));
    for (let i = 1; i <= 1000; i++) {
      await bus.health.put(health("openai", "gpt-4o", i));
      await bus.health.put(health("anthropic", "claude", i * 2));
    }
    expect((await nextWithin(watch)).value?.ttftEwmaMs).toBe(1000);
    expect((await nextWithin(watch)).value?.ttftEwmaMs).toBe(2000);

    // Nothing else was queued behind them.
    await bus.health.put(health("local", "llama", 7));
    expect((await nextWithin(watch)).value?.target?.provider).toBe("local");
    await bus.close();
  });

  it("all() returns the current value of every target", async () => {
    const bus = createMemoryBus();
    await bus.health.put(health("openai", "gpt-4o", 1));
    await bus.health.put(health("openai", "gpt-4o", 2));
    await bus.health.put(health("anthropic", "claude", 3));
    const all = await bus.health.all();
    expect(all.map((h) => [h.target?.provider, h.ttftEwmaMs]).sort()).toEqual([
      ["anthropic", 3],
      ["openai", 2],
    ]);
    await bus.close();
  });

  it("stored values are copies: later mutation by a writer or reader changes nothing", async () => {
    const bus = createMemoryBus();
    const value = health("openai", "gpt-4o", 1);
    await bus.health.put(value);
    value.ttftEwmaMs = 99;
    const [read] = await bus.health.all();
    if (!read) throw new Error("no value stored");
    read.ttftEwmaMs = 42;
    expect((await bus.health.all())[0]?.ttftEwmaMs).toBe(1);
    await bus.close();
  });

  it("put rejects health without a target", async () => {
    const bus = createMemoryBus();
    await expect(bus.health.put(create(TargetHealthSchema, {}))).rejects.toThrow(/target/);
    await bus.close();
  });

  it("outcomes and announcements reach every current subscriber", async () => {
    const bus = createMemoryBus();
    const signal = new AbortController().signal;
    const outcomeSubs = [iterate(bus.outcomes(signal)), iterate(bus.outcomes(signal))];
    const announceSubs = [iterate(bus.announcements(signal)), iterate(bus.announcements(signal))];

    bus.publishOutcomes(
      create(TargetOutcomeBatchSchema, {
        connectorId: "c1",
        outcomes: [{ target: { provider: "openai", model: "gpt-4o" }, success: true }],
      }),
    );
    bus.announce(create(ConnectorAnnouncementSchema, { id: "c1", address: "http://x:8082" }));

    for (const sub of outcomeSubs) {
      const batch = (await nextWithin(sub)).value;
      expect(batch?.connectorId).toBe("c1");
      expect(batch?.outcomes[0]?.success).toBe(true);
    }
    for (const sub of announceSubs) {
      expect((await nextWithin(sub)).value?.address).toBe("http://x:8082");
    }
    await bus.close();
  });

  it("each outcome subscriber has a batch of its own", async () => {
    const bus = createMemoryBus();
    const signal = new AbortController().signal;
    const subs = [iterate(bus.outcomes(signal)), iterate(bus.outcomes(signal))];
    bus.publishOutcomes(
      create(TargetOutcomeBatchSchema, {
        connectorId: "c1",
        outcomes: [{ target: { provider: "openai", model: "gpt-4o" }, success: true, atMs: 7n }],
      }),
    );
    const [a, b] = await Promise.all(subs.map(async (sub) => (await nextWithin(sub)).value));
    if (!a || !b) throw new Error("a subscriber got nothing");
    expect(a).not.toBe(b);
    const first = a.outcomes[0];
    if (first?.target) first.target.model = "changed";
    expect(b.outcomes[0]?.target?.model).toBe("gpt-4o");
    expect(b.outcomes[0]?.atMs).toBe(7n);
    await bus.close();
  });

  it("a slow subscriber keeps only the newest messages, up to its limit", async () => {
    const box = new Mailbox<number>({ limit: 3 });
    for (let i = 1; i <= 10; i++) box.offer(i);
    const kept = [await box.next(), await box.next(), await box.next()].map((r) => r.value);
    expect(kept).toEqual([8, 9, 10]);
    box.offer(11);
    expect((await box.next()).value).toBe(11);
    box.end();
    expect((await box.next()).done).toBe(true);
  });

  it("aborting a signal ends only that iterator", async () => {
    const bus = createMemoryBus();
    const controller = new AbortController();
    const aborted = iterate(bus.health.watch(controller.signal));
    const kept = iterate(bus.health.watch(new AbortController().signal));
    const pending = aborted.next();
    controller.abort();
    expect((await nextWithin({ next: () => pending })).done).toBe(true);

    await bus.health.put(health("openai", "gpt-4o", 5));
    expect((await nextWithin(kept)).value?.ttftEwmaMs).toBe(5);
    await bus.close();
  });

  it("an already aborted signal gives an iterator that has ended", async () => {
    const bus = createMemoryBus();
    const signal = AbortSignal.abort();
    expect((await nextWithin(iterate(bus.health.watch(signal)))).done).toBe(true);
    expect((await nextWithin(iterate(bus.outcomes(signal)))).done).toBe(true);
    expect((await nextWithin(iterate(bus.announcements(signal)))).done).toBe(true);
    await bus.close();
  });

  it("close() ends every iterator, pending or not, and later ones start ended", async () => {
    const bus = createMemoryBus();
    const signal = new AbortController().signal;
    const watch = iterate(bus.health.watch(signal));
    const outcomes = iterate(bus.outcomes(signal));
    const announcements = iterate(bus.announcements(signal));
    const pending = [watch.next(), outcomes.next(), announcements.next()];

    await bus.close();
    for (const result of await Promise.all(pending)) expect(result.done).toBe(true);
    expect((await nextWithin(iterate(bus.health.watch(signal)))).done).toBe(true);
    expect(() => bus.publishOutcomes(create(TargetOutcomeBatchSchema, {}))).not.toThrow();
    expect(() => bus.announce(create(ConnectorAnnouncementSchema, {}))).not.toThrow();
  });

  it("breaking out of for-await unsubscribes", async () => {
    const bus = createMemoryBus();
    await bus.health.put(health("openai", "gpt-4o", 1));
    for await (const value of bus.health.watch(new AbortController().signal)) {
      expect(value.ttftEwmaMs).toBe(1);
      break;
    }
    const outcomes = bus.outcomes(new AbortController().signal);
    bus.publishOutcomes(create(TargetOutcomeBatchSchema, { connectorId: "c" }));
    for await (const batch of outcomes) {
      expect(batch.connectorId).toBe("c");
      break;
    }
    // Both boxes left their sets: a further publish reaches nobody and the iterators stay ended.
    bus.publishOutcomes(create(TargetOutcomeBatchSchema, { connectorId: "d" }));
    expect((await nextWithin(iterate(outcomes))).done).toBe(true);
    await bus.close();
  });

  it("holds no handles that would keep the process alive", async () => {
    const before = process.getActiveResourcesInfo().length;
    const bus = createMemoryBus();
    const watch = iterate(bus.health.watch(new AbortController().signal));
    const pending = watch.next();
    await bus.health.put(health("openai", "gpt-4o", 1));
    await pending;
    expect(process.getActiveResourcesInfo().length).toBeLessThanOrEqual(before);
    expect(bus.connected()).toBe(true);
    await bus.close();
    expect(process.getActiveResourcesInfo().length).toBeLessThanOrEqual(before);
  });

  it("createBus gives the in-memory bus when no NATS URL is configured", async () => {
    const logger = pino({ level: "silent" });
    for (const natsUrl of [undefined, "", "  "]) {
      const bus = await createBus({ natsUrl, name: "test", logger });
      expect(bus.kind).toBe("memory");
      await bus.close();
    }
  });
});
