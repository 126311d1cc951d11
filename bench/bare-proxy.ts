/**
 * The Node ceiling for one hop (BENCH.md "bare proxy"): node:http in, undici.Pool out, bytes
 * passed through untouched, no parsing, no logging. Anything the gateway costs above this is
 * the gateway's own work.
 *
 * Run: node --import tsx bench/bare-proxy.ts --port P --upstream http://127.0.0.1:U
 */

import { createServer, type IncomingHttpHeaders } from "node:http";
import { pipeline } from "node:stream/promises";
import { parseArgs } from "node:util";
import { type Dispatcher, Pool } from "undici";

const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "host", "upgrade"]);

function endToEnd(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}

const { values } = parseArgs({
  options: { port: { type: "string" }, upstream: { type: "string" } },
});
if (!values.port || !values.upstream) throw new Error("usage: --port P --upstream URL");
// No connection cap: the open-streams scenario holds one upstream connection per client stream.
const pool = new Pool(values.upstream, { pipelining: 1, keepAliveTimeout: 60_000 });

const server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, async (req, res) => {
  const abort = new AbortController();
  res.on("close", () => abort.abort());
  try {
    const upstream = await pool.request({
      method: (req.method ?? "GET") as Dispatcher.HttpMethod,
      path: req.url ?? "/",
      headers: endToEnd(req.headers),
      body: req.method === "GET" || req.method === "HEAD" ? null : req,
      signal: abort.signal,
      bodyTimeout: 0,
    });
    res.writeHead(upstream.statusCode, endToEnd(upstream.headers as IncomingHttpHeaders));
    await pipeline(upstream.body, res);
  } catch {
    if (!res.headersSent) res.writeHead(502).end();
    else res.destroy();
  }
});
server.listen({ port: Number(values.port), host: "127.0.0.1", backlog: 65_535 }, () => {
  process.stdout.write(`${JSON.stringify({ listening: Number(values.port) })}\n`);
});
process.on("SIGTERM", () => {
  server.closeAllConnections();
  server.close(() => void pool.close().then(() => process.exit(0)));
});
