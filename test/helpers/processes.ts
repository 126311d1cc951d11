import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import { fileURLToPath } from "node:url";

export const BIN = fileURLToPath(new URL("../../bin/switchyard.js", import.meta.url));

/** Free loopback ports (bound, read, released; the OS does not hand them out again at once). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, async () => {
      const s = net.createServer();
      s.listen(0, "127.0.0.1");
      await once(s, "listening");
      return s;
    }),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export interface ServiceProcess {
  name: string;
  child: ChildProcess;
  /** Every stdout/stderr line so far (JSON log lines and anything else). */
  lines: string[];
  /** Resolves with the first line that matches. */
  waitFor(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | null>;
}

/** Runs `switchyard ARGS` as a child process, collecting its output lines. */
export function runSwitchyard(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): ServiceProcess {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const waiters: Array<{ match: (l: string) => boolean; resolve: (l: string) => void }> = [];
  const onText = (buf: Buffer) => {
    for (const line of buf.toString("utf8").split("\n")) {
      if (!line) continue;
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.match(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  };
  child.stdout?.on("data", onText);
  child.stderr?.on("data", onText);
  const exited = once(child, "exit").then(([code]) => code as number | null);
  return {
    name,
    child,
    lines,
    waitFor(match, timeoutMs = 15_000) {
      const found = lines.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new Error(
                `${name}: no matching line within ${timeoutMs} ms; output:\n${lines.join("\n")}`,
              ),
            ),
          timeoutMs,
        );
        waiters.push({
          match,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
        void exited.then((code) =>
          reject(
            new Error(
              `${name} exited with ${code} before a matching line; output:\n${lines.join("\n")}`,
            ),
          ),
        );
      });
    },
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Fails with a clear message when the shared NATS server is not running. */
export async function requireNats(url = "nats://127.0.0.1:4222"): Promise<void> {
  const { hostname, port } = new URL(url);
  const ok = await new Promise<boolean>((resolve) => {
    const s = net.connect(Number(port), hostname, () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
  if (!ok) {
    throw new Error(
      `This test needs NATS with JetStream at ${url}. Start it with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server`,
    );
  }
}
