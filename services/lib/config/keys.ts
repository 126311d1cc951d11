// API keys are stored in config only as `sha256:<hex>` digests (`switchyard hash-key` makes them),
// so a leaked config file does not leak working keys.

import { createHash, timingSafeEqual } from "node:crypto";

const KEY_HASH = /^sha256:[0-9a-f]{64}$/i;

/** The config form of an API key: `sha256:` and the hex SHA-256 of its UTF-8 bytes, as given. */
export function hashKey(key: string): string {
  return `sha256:${createHash("sha256").update(key, "utf8").digest("hex")}`;
}

export function isKeyHash(value: string): boolean {
  return KEY_HASH.test(value);
}

/**
 * Whether `presented` hashes to one of `hashes`. Every configured hash is compared, each in
 * constant time, so the answer's timing does not reveal which entry (or how much of it) matched.
 */
export function keyMatches(presented: string, hashes: readonly string[]): boolean {
  const digest = createHash("sha256").update(presented, "utf8").digest();
  let matched = false;
  for (const hash of hashes) {
    if (!isKeyHash(hash)) continue;
    const expected = Buffer.from(hash.slice("sha256:".length), "hex");
    if (timingSafeEqual(digest, expected)) matched = true;
  }
  return matched;
}
