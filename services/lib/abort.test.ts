import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { request } from "undici";
import { describe, expect, it } from "vitest";
import { heapKeptEach } from "../../test/helpers/heap.js";
import { CallAbort } from "./abort.js";

describe("CallAbort", () => {
  it("aborts its signal once, with the reason, telling every listener", () => {
    const abort = new CallAbort();
    const signal = abort.signal;
    const heard: unknown[] = [];
    signal.addEventListener("abort", () => heard.push(signal.reason), { once: true });
    signal.onabort = () => heard.push("onabort");
    expect(signal.aborted).toBe(false);
    expect(() => signal.throwIfAborted()).not.toThrow();

    const reason = new Error("stop");
    abort.abort(reason);
    abort.abort(new Error("again"));
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(reason);
    expect(heard).toEqual(["onabort", reason]);
    expect(() => signal.throwIfAborted()).toThrow(reason);
  });

  it("gives AbortController's reason when none is given", () => {
    const ours = new CallAbort();
    const theirs = new AbortController();
    ours.abort();
    theirs.abort();
    expect(ours.signal.reason).toBeInstanceOf(DOMException);
    expect(ours.signal.reason.name).toBe(theirs.signal.reason.name);
    expect(ours.signal.reason.message).toBe(theirs.signal.reason.message);
  });

  it("stops a listener that was removed", () => {
    const abort = new CallAbort();
    let heard = 0;
    const listener = () => heard++;
    abort.signal.addEventListener("abort", listener);
    abort.signal.removeEventListener("abort", listener);
    abort.abort();
    expect(heard).toBe(0);
  });

  it("keeps EventTarget's listener rules: handleEvent objects, no duplicates, once, signal", () => {
    const abort = new CallAbort();
    const signal = abort.signal;
    const heard: string[] = [];
    const fn = () => heard.push("fn");
    signal.addEventListener("abort", fn);
    signal.addEventListener("abort", fn); // the same listener twice: added once
    signal.addEventListener("abort", { handleEvent: (e: Event) => heard.push(`obj ${e.type}`) });
    const gone = new AbortController();
    signal.addEventListener("abort", () => heard.push("removed by its signal"), {
      signal: gone.signal,
    });
    gone.abort();
    const late = () => heard.push("removed by an earlier listener");
    signal.addEventListener("abort", () => signal.removeEventListener("abort", late));
    signal.addEventListener("abort", late);
    signal.addEventListener("message", () => heard.push("another event"));
    abort.abort();
    expect(heard).toEqual(["fn", "obj abort"]);
    // A dispatch of its own reaches the listeners still there, once-listeners no more.
    const again = new CallAbort();
    let calls = 0;
    again.signal.addEventListener("abort", () => calls++, { once: true });
    again.signal.dispatchEvent(new Event("abort"));
    again.signal.dispatchEvent(new Event("abort"));
    expect(calls).toBe(1);
  });

  // The request path holds four of these per open stream.
  it("keeps little heap per signal held, with a listener", async () => {
    const make = () => {
      const abort = new CallAbort();
      abort.signal.addEventListener("abort", () => {}, { once: true });
      return abort;
    };
    for (let i = 0; i < 2000; i++) make(); // warm-up: code and feedback are not counted
    const { bytesEach } = await heapKeptEach(20_000, make);
    // ~390 bytes; as an EventTarget (two Maps per target) ~660.
    expect(bytesEach).toBeLessThan(500);
  });

  it("cancels node:timers/promises and node:events waits as an AbortSignal does", async () => {
    const abort = new CallAbort();
    const waits = [
      sleep(60_000, undefined, { signal: abort.signal }),
      once(new http.Server(), "never", { signal: abort.signal }),
    ].map((p) =>
      p.then(
        () => "done",
        (err: Error) => err.name,
      ),
    );
    abort.abort(new Error("bye"));
    expect(await Promise.all(waits)).toEqual(["AbortError", "AbortError"]);
  });

  it("cancels an undici request whose answer has not come, closing its connection", async () => {
    let closed!: () => void;
    const connectionClosed = new Promise<void>((resolve) => {
      closed = resolve;
    });
    const server = http.createServer((req) => {
      req.socket.once("close", closed); // never answers
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    try {
      const { port } = server.address() as AddressInfo;
      const abort = new CallAbort();
      const answer = request(`http://127.0.0.1:${port}/`, { signal: abort.signal });
      await once(server, "request");
      const reason = new Error("client went away");
      abort.abort(reason);
      await expect(answer).rejects.toBe(reason);
      await connectionClosed;
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
