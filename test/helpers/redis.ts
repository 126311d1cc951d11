// Test support: the real Redis these tests run against, and key prefixes they clean up after.

import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { Redis } from "ioredis";
import { freePorts } from "./processes.js";

export const TEST_REDIS_URL = "redis://127.0.0.1:6379";

/** A Redis client for a test file; fails with a plain reason when no Redis is running. */
export async function connectTestRedis(): Promise<Redis> {
  const redis = new Redis(TEST_REDIS_URL, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on("error", () => {});
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    throw new Error(
      `These tests need a real Redis at ${TEST_REDIS_URL} and could not reach it (${(err as Error).message}). Start one: redis-server --port 6379 --daemonize yes`,
    );
  }
  return redis;
}

/** A key prefix no other test uses. */
export function uniquePrefix(): string {
  return `switchyard-test-${randomUUID().slice(0, 8)}`;
}

/** Deletes every key under `prefix`. */
export async function dropPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 500);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== "0");
}

/** A port nothing listens on, for "Redis is down" tests. */
export const CLOSED_REDIS_URL = "redis://127.0.0.1:1";

/** A redis-server of this test's own, on a free loopback port, so it can be stalled. */
export interface PrivateRedis {
  url: string;
  /** Freezes the server (SIGSTOP): it keeps its connections but answers nothing. */
  pause(): void;
  /** Lets a paused server go on (SIGCONT); it then runs what it was sent meanwhile. */
  resume(): void;
  stop(): Promise<void>;
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const [port] = await freePorts(1);
  const child = spawn(
    "/usr/bin/redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdio: "ignore" },
  );
  const url = `redis://127.0.0.1:${port}`;
  const probe = new Redis(url, { lazyConnect: true, retryStrategy: () => null });
  probe.on("error", () => {});
  try {
    for (let i = 0; ; i++) {
      try {
        await probe.connect();
        await probe.ping();
        break;
      } catch (err) {
        if (i >= 100) throw new Error(`redis-server on port ${port} did not start: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } finally {
    probe.disconnect();
  }
  return {
    url,
    pause: () => child.kill("SIGSTOP"),
    resume: () => child.kill("SIGCONT"),
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGCONT");
      const exited = once(child, "exit");
      child.kill("SIGKILL");
      await exited;
    },
  };
}
