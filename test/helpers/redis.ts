// Test support: the real Redis these tests run against, and key prefixes they clean up after.

import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";

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
