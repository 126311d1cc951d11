import { createLogger, type Logger } from "../../services/lib/logger.js";

export interface CapturedLogs {
  /** The production logger (same redaction), writing here instead of stdout. */
  logger: Logger;
  /** Every line written so far, parsed. */
  lines(): Array<Record<string, unknown>>;
  /** Every line written so far, as written. */
  text(): string;
}

export function captureLogs(level = "info"): CapturedLogs {
  const raw: string[] = [];
  const logger = createLogger({
    level,
    destination: {
      write(line: string) {
        raw.push(line);
      },
    },
  });
  return {
    logger,
    lines: () =>
      raw
        .join("")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l)),
    text: () => raw.join(""),
  };
}
