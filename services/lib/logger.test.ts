import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger, requestLineLogger } from "./logger.js";

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
