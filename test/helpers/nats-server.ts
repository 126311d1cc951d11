import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePorts } from "./processes.js";

const NATS_SERVER = "/usr/sbin/nats-server";

export interface PrivateNats {
  url: string;
  port: number;
  /** Stops the server (SIGKILL: an outage, not a graceful shutdown). */
  stop(): Promise<void>;
  /** Starts it again on the same port and store. */
  start(): Promise<void>;
  /** Empties its store while it is stopped: a restart without a persistent volume. */
  wipe(): void;
  /** Stops it and removes its store. */
  dispose(): Promise<void>;
}

/** A nats-server with JetStream of this test's own, on a free loopback port, so it can be killed. */
export async function startPrivateNats(): Promise<PrivateNats> {
  const [port] = await freePorts(1);
  const store = mkdtempSync(join(tmpdir(), "switchyard-nats-"));
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn(NATS_SERVER, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store], {
      stdio: "ignore",
    });
    for (let i = 0; i < 100; i++) {
      if (await reachable(port as number)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`nats-server on port ${port} did not start`);
  };
  const stop = async () => {
    if (!child || child.exitCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGKILL");
    await exited;
  };
  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    port: port as number,
    start,
    stop,
    wipe() {
      rmSync(store, { recursive: true, force: true });
    },
    async dispose() {
      await stop();
      rmSync(store, { recursive: true, force: true });
    },
  };
}

function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}
