import { type ChildProcess, spawn } from "node:child_process";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger, LOG_FLUSH_MS, requestLineLogger } from "./logger.js";

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line !== "") lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  return { lines, destination };
}

describe("createLogger", () => {
  it("redacts keys, auth headers and prompt content wherever a logged object holds them", () => {
    const { lines, destination } = capture();
    const logger = createLogger({ service: "ingress", destination });
    logger.info(
      {
        api_key: "sk-1",
        provider: { api_key: "sk-2" },
        headers: { authorization: "Bearer sk-3", "x-api-key": "sk-4" },
        messages: [{ role: "user", content: "secret plan" }],
      },
      "x",
    );
    expect(JSON.stringify(lines)).not.toMatch(/sk-\d|secret plan/);
    expect(lines[0]?.api_key).toBe("[redacted]");
    expect(lines[0]?.service).toBe("ingress");
  });
});

describe("requestLineLogger", () => {
  it("writes to the same place with the same bindings, without redaction", () => {
    const { lines, destination } = capture();
    const logger = createLogger({ service: "ingress", destination }).child({ zone: "a" });
    const line = requestLineLogger(logger);
    line.info(
      { request_id: "r1", inputs: 3, prompt: "what a log_prompts tenant asked" },
      "request",
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      service: "ingress",
      zone: "a",
      request_id: "r1",
      inputs: 3,
      prompt: "what a log_prompts tenant asked",
      msg: "request",
    });
  });
});

describe("stdout, batched", () => {
  const LOGGER = fileURLToPath(new URL("./logger.ts", import.meta.url));
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) c.kill("SIGKILL");
  });

  /** Runs `body` in a child node whose `log` is the production stdout logger; collects stdout. */
  function run(body: string) {
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        `import { createLogger } from ${JSON.stringify(LOGGER)};
         const log = createLogger({ service: "t" });
         ${body}`,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    children.push(child);
    let out = "";
    child.stdout?.on("data", (b: Buffer) => {
      out += b.toString("utf8");
    });
    let err = "";
    child.stderr?.on("data", (b: Buffer) => {
      err += b.toString("utf8");
    });
    const lines = () => out.split("\n").filter((l) => l.startsWith("{"));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    return { lines, exited, stderr: () => err };
  }

  it("writes a quiet process's lines within the flush interval, not when 4 KB have gathered", async () => {
    const { lines } = run(`log.info("ready"); setTimeout(() => {}, 60_000);`);
    // Ten times the interval, plus a child's start-up.
    const deadline = Date.now() + 10 * LOG_FLUSH_MS + 10_000;
    while (lines().length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(lines().map((l) => JSON.parse(l).msg)).toEqual(["ready"]);
  });

  it("makes no write while no line waits", async () => {
    // Counts the child's writes to stdout (sonic-boom writes through fs.write), empty ones apart.
    const { lines, exited, stderr } = run(`
      import fs from "node:fs";
      const write = fs.write;
      const writes = { empty: 0, lines: 0 };
      fs.write = function (fd, data, ...rest) {
        if (fd === 1) data.length === 0 ? writes.empty++ : writes.lines++;
        return write.call(this, fd, data, ...rest);
      };
      setTimeout(() => log.info("one"), 4 * ${LOG_FLUSH_MS});
      setTimeout(() => {
        process.stderr.write(JSON.stringify(writes));
        process.exit(0);
      }, 12 * ${LOG_FLUSH_MS});`);
    expect(await exited).toBe(0);
    expect(lines().map((l) => JSON.parse(l).msg)).toEqual(["one"]);
    expect(JSON.parse(stderr())).toEqual({ empty: 0, lines: 1 });
  });

  it("loses no line when the process exits at once or throws", async () => {
    const exiting = run(`for (let i = 0; i < 2000; i++) log.info({ i }, "line"); process.exit(0);`);
    expect(await exiting.exited).toBe(0);
    expect(exiting.lines().map((l) => JSON.parse(l).i)).toEqual([...Array(2000).keys()]);

    const throwing = run(
      `for (let i = 0; i < 50; i++) log.info({ i }, "line"); throw new Error("boom");`,
    );
    expect(await throwing.exited).toBe(1);
    expect(throwing.lines()).toHaveLength(50);
  });
});
