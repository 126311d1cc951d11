import { expect, it } from "vitest";
import { headerPairs, headersOf, headersOfPairs } from "./protocol.js";

// Held streams keep their headers as pairs (headerPairs); a header lost or doubled on the way
// would change what a handler or a caller reads.
it("keeps every real header as name/value pairs, repeated ones too, and no pseudo-header", () => {
  const raw = {
    ":status": "200",
    ":path": "/switchyard.connector.v1.ConnectorService/Chat",
    "content-type": "application/connect+proto",
    "set-cookie": ["a=1", "b=2"],
    "x-absent": undefined,
    "x-request-id": "req-1",
  };
  const pairs = headerPairs(raw);
  expect(pairs).toEqual([
    "content-type",
    "application/connect+proto",
    "set-cookie",
    "a=1",
    "set-cookie",
    "b=2",
    "x-request-id",
    "req-1",
  ]);
  // Exactly their size: no holes left for later.
  expect(Object.keys(pairs)).toHaveLength(pairs.length);
  const h = headersOfPairs(pairs);
  expect(h.get("content-type")).toBe("application/connect+proto");
  expect(h.getSetCookie()).toEqual(["a=1", "b=2"]);
  expect(h.get("x-request-id")).toBe("req-1");
  // Headers iterates set-cookie once per value, the rest once each.
  expect([...h.keys()]).toEqual(["content-type", "set-cookie", "set-cookie", "x-request-id"]);
  expect([...headersOf(raw)]).toEqual([...h]);
  expect(headerPairs({ ":status": "204" })).toEqual([]);
});
