import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../gen/switchyard/chat/v1/chat_pb.js";
import { GatewayService } from "../gen/switchyard/gateway/v1/gateway_pb.js";
import { DEMO_CONFIG_YAML } from "../services/lib/config/demo.js";
import { BIN, freePorts, runSwitchyard } from "./helpers/processes.js";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "switchyard-cli-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cli(args: string[], opts: { input?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    input: opts.input ?? "",
    cwd: opts.cwd ?? dir,
    env: { ...process.env, SWITCHYARD_CONFIG: "", ...opts.env },
    encoding: "utf8",
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * `switchyard start` in `cwd` (which holds its switchyard.yaml), with its output collected, once
 * its ingress listens: the port it logged, and its exit code once it exits.
 */
async function startIn(cwd: string) {
  const child = spawn(process.execPath, [BIN, "start"], {
    cwd,
    env: { ...process.env, SWITCHYARD_CONFIG: "", LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (b: Buffer) => {
    out += b.toString();
  });
  child.stderr.on("data", (b: Buffer) => {
    out += b.toString();
  });
  const exit = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  let port = 0;
  for (let i = 0; i < 200 && port === 0; i++) {
    const m = /"service":"ingress","host":"127.0.0.1","port":(\d+)/.exec(out);
    if (m) port = Number(m[1]);
    else await new Promise((r) => setTimeout(r, 50));
  }
  expect(port, out).toBeGreaterThan(0);
  return { child, port, exit, output: () => out };
}

describe("switchyard hash-key", () => {
  const expected = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  it("hashes a key given as an argument", () => {
    expect(cli(["hash-key", "test"])).toMatchObject({ code: 0, stdout: `${expected}\n` });
  });
  it("hashes a key read from stdin, without its trailing newline", () => {
    expect(cli(["hash-key"], { input: "test\n" })).toMatchObject({
      code: 0,
      stdout: `${expected}\n`,
    });
  });
  it("hashes the key a client can present: the gateway trims the spaces around it", () => {
    expect(cli(["hash-key", " test\t"])).toMatchObject({ code: 0, stdout: `${expected}\n` });
    expect(cli(["hash-key"], { input: "  test  \r\n" })).toMatchObject({ stdout: `${expected}\n` });
    expect(cli(["hash-key", "   "])).toMatchObject({ code: 2 });
  });
});

describe("switchyard hash-key's options", () => {
  it("shows usage for --help instead of hashing it, and refuses other options", () => {
    const help = cli(["hash-key", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("Usage:");
    expect(help.stdout).not.toContain("sha256:");
    const flag = cli(["hash-key", "--verbose"]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain("hash-key takes no options");
  });
});

describe("a start that cannot succeed", () => {
  it("names the cause in one line, without a stack trace, and exits 1", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const cwd = mkdtempSync(join(dir, "busy-"));
      writeFileSync(
        join(cwd, "switchyard.yaml"),
        `server: { ingress: { host: 127.0.0.1, port: ${port} } }\n${DEMO_CONFIG_YAML}`,
      );
      const busy = cli(["start"], { cwd, env: { LOG_LEVEL: "silent" } });
      expect(busy.code).toBe(1);
      expect(busy.stderr).toBe(
        `switchyard: cannot listen on 127.0.0.1:${port} for the ingress (server.ingress): the address is already in use (is another switchyard or server running?)\n`,
      );
      const level = cli(["start"], { cwd, env: { LOG_LEVEL: "loud" } });
      expect(level.code).toBe(1);
      expect(level.stderr).toMatch(/^switchyard: LOG_LEVEL must be one of .*; got 'loud'\n$/);
      const nats = cli(["start", "--service", "router"], { cwd, env: { LOG_LEVEL: "silent" } });
      expect(nats.code).toBe(1);
      expect(nats.stderr).toMatch(
        /^switchyard: nats.url is required when services run in separate processes/,
      );
      expect(nats.stderr).not.toContain("    at ");
    } finally {
      blocker.close();
    }
  });
});

describe("a connector started alone without nats.url", () => {
  it("says that no router will hear of it, instead of claiming to announce itself", async () => {
    const [port] = await freePorts(1);
    const file = join(dir, "connector-no-nats.yaml");
    writeFileSync(
      file,
      `server: { connector: { host: 127.0.0.1, port: ${port} } }\n${DEMO_CONFIG_YAML}`,
    );
    const connector = runSwitchyard("connector", [
      "start",
      "--config",
      file,
      "--service",
      "connector",
    ]);
    try {
      const warning = await connector.waitFor((l) => l.includes("nats.url is not set"));
      expect(JSON.parse(warning)).toMatchObject({ level: 40, service: "connector" });
      expect(connector.lines.join("\n")).not.toContain("announcing on the bus");
    } finally {
      expect(await connector.stop()).toBe(0);
    }
  });
});

describe("switchyard check-config", () => {
  it("prints every problem as path: reason and exits 1", () => {
    const file = join(dir, "bad.yaml");
    writeFileSync(
      file,
      `providers:
  up: { type: openai, base_url: "not a url" }
models:
  chat:
    stratgy: priority
    targets: [{ provider: missing, model: x }]
`,
    );
    const r = cli(["check-config", "--config", file]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toContain("models.chat.stratgy: unknown key, did you mean 'strategy'?");
    expect(lines.some((l) => l.startsWith("providers.up.base_url: "))).toBe(true);
    expect(lines.some((l) => l.startsWith("models.chat.targets[0].provider: "))).toBe(true);
  });

  it("accepts a valid file and the built-in demo", () => {
    const file = join(dir, "good.yaml");
    writeFileSync(file, DEMO_CONFIG_YAML);
    expect(cli(["check-config", "--config", file]).code).toBe(0);
    expect(cli(["check-config"], { cwd: mkdtempSync(join(dir, "empty-")) })).toMatchObject({
      code: 0,
      stdout: "built-in demo: ok\n",
    });
  });

  it("reports an unknown command with usage and exit code 2", () => {
    const r = cli(["frobnicate"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("Usage:");
  });
});

describe("switchyard start", () => {
  it("serves ./switchyard.yaml, and drains in-flight streams on SIGTERM before exiting 0", async () => {
    const cwd = mkdtempSync(join(dir, "start-"));
    writeFileSync(
      join(cwd, "switchyard.yaml"),
      `${DEMO_CONFIG_YAML}
server:
  ingress: { host: 127.0.0.1, port: 0 }
  drain_timeout_ms: 10000
`,
    );
    const { child, port, exit, output } = await startIn(cwd);
    expect(output()).toContain("the gateway is open");

    const client = new OpenAI({
      baseURL: `http://127.0.0.1:${port}/v1`,
      apiKey: "x",
      maxRetries: 0,
    });
    // `demo` streams 24 tokens 25 ms apart: SIGTERM lands mid-stream.
    const stream = await client.chat.completions.create({
      model: "demo",
      messages: [{ role: "user", content: "hello" }],
      stream: true,
    });
    let text = "";
    let chunks = 0;
    let finish: string | null | undefined;
    for await (const c of stream) {
      if (++chunks === 3) child.kill("SIGTERM");
      text += c.choices[0]?.delta.content ?? "";
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe("stop");
    expect(text.split(" ").length).toBe(24);
    expect(await exit).toBe(0);
    expect(output()).toContain('"draining"');
  }, 30_000);

  it("exits 0 at once on SIGTERM with nothing in flight, though clients keep connections open", async () => {
    const cwd = mkdtempSync(join(dir, "start-"));
    writeFileSync(
      join(cwd, "switchyard.yaml"),
      `${DEMO_CONFIG_YAML}
server:
  ingress: { host: 127.0.0.1, port: 0 }
`,
    );
    const { child, port, exit, output } = await startIn(cwd);
    // An HTTP/1.1 connection kept alive, and an HTTP/2 one (gRPC), both idle once answered.
    const agent = new http.Agent({ keepAlive: true });
    const status = await new Promise<number | undefined>((resolve, reject) => {
      http
        .get({ host: "127.0.0.1", port, path: "/v1/models", agent }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode));
        })
        .on("error", reject);
    });
    expect(status).toBe(200);
    const grpc = createClient(
      GatewayService,
      createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }),
    );
    expect((await grpc.listModels({})).models.length).toBeGreaterThan(0);
    try {
      const started = performance.now();
      child.kill("SIGTERM");
      const late = new Promise((r) => setTimeout(r, 10_000, "still running after 10 s"));
      expect(await Promise.race([exit, late])).toBe(0);
      // It takes tens of ms: nothing waits for requests that are not there, nor for the
      // clients to close their connections.
      expect(performance.now() - started, output()).toBeLessThan(1_000);
    } finally {
      agent.destroy();
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  }, 30_000);

  it("stops at once on a second signal during the drain, with exit code 1", async () => {
    const cwd = mkdtempSync(join(dir, "start-"));
    writeFileSync(
      join(cwd, "switchyard.yaml"),
      `server:
  ingress: { host: 127.0.0.1, port: 0 }
  drain_timeout_ms: 60000
providers: { slow: { type: mock, token_interval_ms: 100, tokens: 600 } }
models: { slow: { targets: [{ provider: slow, model: m }] } }
`,
    );
    const { child, port, exit, output } = await startIn(cwd);
    // A minute-long stream in flight: the first signal's drain would wait for it.
    const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "slow",
        stream: true,
        messages: [{ role: "user", content: "x" }],
      }),
    });
    const reader = res.body?.getReader();
    await reader?.read();
    const started = performance.now();
    child.kill("SIGINT");
    for (let i = 0; i < 100 && !output().includes('"draining"'); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGINT");
    expect(await exit).toBe(1);
    expect(performance.now() - started).toBeLessThan(6_000);
    expect(output()).toContain("second signal");
    await reader?.cancel().catch(() => {});
  }, 30_000);

  it("answers and logs the requests a drain that ran out cut, then exits 0", async () => {
    const cwd = mkdtempSync(join(dir, "start-"));
    writeFileSync(
      join(cwd, "switchyard.yaml"),
      `server:
  ingress: { host: 127.0.0.1, port: 0 }
  drain_timeout_ms: 300
providers: { slow: { type: mock, token_interval_ms: 100, tokens: 100 } }
models: { slow: { targets: [{ provider: slow, model: m }] } }
`,
    );
    const { child, port, exit, output } = await startIn(cwd);
    // A 10 s stream and a 10 s whole answer, in flight when SIGTERM comes.
    const ask = (id: string, stream: boolean) =>
      fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": id },
        body: JSON.stringify({ model: "slow", stream, messages: [{ role: "user", content: "x" }] }),
      });
    const streamed = ask("cut-stream", true);
    const whole = ask("cut-whole", false).then(
      async (r) => ({ status: r.status, body: await r.text() }),
      (e: unknown) => ({ status: 0, body: String(e) }),
    );
    // And a gRPC stream over HTTP/2.
    const grpc = createClient(
      GatewayService,
      createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }),
    )
      .chatStream(
        {
          params: {
            model: "slow",
            messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "x" } }] }],
          },
        },
        { headers: { "x-request-id": "cut-grpc" } },
      )
      [Symbol.asyncIterator]();
    const reader = (await streamed).body?.getReader();
    await reader?.read(); // the streams have begun
    await grpc.next();
    child.kill("SIGTERM");
    const drain = async (next: () => Promise<{ done?: boolean }>) => {
      try {
        for (let r = await next(); !r.done; r = await next()) {}
        return undefined;
      } catch (e) {
        return e;
      }
    };
    let sse = "";
    const rest = Promise.all([
      drain(async () => {
        const r = await reader?.read();
        sse += new TextDecoder().decode(r?.value ?? new Uint8Array());
        return r ?? { done: true };
      }),
      drain(() => grpc.next()),
    ]);
    expect(await exit).toBe(0);
    const [sseError, grpcError] = await rest;
    // Each was answered before its connection went: the gateway is shutting down.
    expect(sseError).toBeUndefined();
    expect(sse).toContain('"code":"shutting_down"');
    expect(sse).not.toContain("[DONE]");
    expect(grpcError).toBeInstanceOf(ConnectError);
    expect((grpcError as ConnectError).code).toBe(Code.Unavailable);
    const answered = await whole;
    expect(answered.status).toBe(503);
    expect(answered.body).toContain("the gateway is shutting down");
    const lines = output()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const id of ["cut-stream", "cut-whole", "cut-grpc"]) {
      expect(lines.filter((l) => l.request_id === id && l.service === "ingress")).toEqual([
        expect.objectContaining({ status: 503, outcome: "shutdown", attempts: 1 }),
      ]);
    }
  }, 30_000);
});
