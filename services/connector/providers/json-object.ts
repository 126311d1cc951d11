import { Failure } from "../../lib/errors.js";

// The canonical model carries what it does not name as JSON text (`extra_json`,
// `parameters_json`, …); every adapter reads it back the same way.

/** Whether `value` is a JSON object (not an array, not null). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Parses a JSON object carried as text in the canonical model; "" means an empty object.
 * Anything else is a 400 naming `param`.
 */
export function parseObject(text: string, param: string): Record<string, unknown> {
  if (text === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (!isRecord(value)) {
    throw new Failure({
      status: 400,
      kind: "invalid_request",
      message: `${param} must be a JSON object`,
      param,
    });
  }
  return value;
}
