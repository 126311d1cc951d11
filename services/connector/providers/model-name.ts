// The model an upstream says answered travels to the client in the `x-switchyard-model` header
// as well as in the body. A header refuses control characters and lone surrogates, and clients
// refuse headers past 16 KB, so what the upstream sends is taken only if a header can carry it.

const MAX_MODEL_NAME = 256;
/** Visible ASCII, inner spaces allowed: every model id providers and local servers use. */
const HEADER_SAFE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

/** The model an upstream's answer names, or undefined when it names none a header can carry. */
export function reportedModel(value: unknown): string | undefined {
  return typeof value === "string" && value.length <= MAX_MODEL_NAME && HEADER_SAFE.test(value)
    ? value
    : undefined;
}
