import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { request } from "undici";
import { describe, expect, it } from "vitest";
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
