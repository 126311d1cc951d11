import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/**
 * The JS heap each of `count` values made by `make` keeps: heapUsed after a full GC, before and
 * after making them, divided by `count`. The values are returned, so they are alive at the second
 * GC (and the caller may release them afterwards). For "what does an open stream keep" tests.
 */
export async function heapKeptEach<T>(
  count: number,
  make: (i: number) => T | Promise<T>,
): Promise<{ bytesEach: number; kept: T[] }> {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const kept: T[] = [];
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < count; i++) kept.push(await make(i));
  gc();
  return { bytesEach: (process.memoryUsage().heapUsed - before) / count, kept };
}

/**
 * Like heapKeptEach, counting the memory of ArrayBuffers and Buffers (outside the JS heap) too:
 * what each of `count` values keeps in all, for "does an open stream keep its request" tests.
 * V8 frees the memory of dead ArrayBuffers on a background thread after a GC, which on a busy
 * machine can lag by a while; each reading is taken once it stops falling.
 */
export async function memoryKeptEach<T>(
  count: number,
  make: (i: number) => T | Promise<T>,
): Promise<{ bytesEach: number; kept: T[] }> {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const settled = async () => {
    let last = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 40; i++) {
      gc();
      const m = process.memoryUsage();
      const now = m.heapUsed + m.arrayBuffers;
      if (now > last - 64 * 1024) return Math.min(now, last);
      last = now;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return last;
  };
  const kept: T[] = [];
  const before = await settled();
  for (let i = 0; i < count; i++) kept.push(await make(i));
  return { bytesEach: ((await settled()) - before) / count, kept };
}
