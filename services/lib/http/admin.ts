import type { DualHandler } from "./dual-server.js";

/**
 * /healthz, /readyz and /metrics for an internal service's own port. Anything else is a 404 in
 * plain JSON (Connect handlers are matched before this runs).
 */
export function createAdminHandler(opts: {
  renderMetrics: () => Promise<{ contentType: string; body: string }>;
  ready?: () => Promise<boolean>;
}): DualHandler {
  return (req, res) => {
    const path = (req.url ?? "/").split("?", 1)[0];
    const send = (status: number, body: string, type = "application/json") => {
      res.writeHead(status, {
        "content-type": type,
        "content-length": String(Buffer.byteLength(body)),
      });
      res.end(body);
    };
    if (req.method === "GET" && path === "/healthz") return send(200, '{"status":"ok"}');
    if (req.method === "GET" && path === "/readyz") {
      void (opts.ready?.() ?? Promise.resolve(true)).then((ok) =>
        send(ok ? 200 : 503, JSON.stringify({ status: ok ? "ready" : "not ready" })),
      );
      return;
    }
    if (req.method === "GET" && path === "/metrics") {
      opts.renderMetrics().then(
        (m) => send(200, m.body, m.contentType),
        (err) => send(500, JSON.stringify({ error: String(err) })),
      );
      return;
    }
    send(404, JSON.stringify({ error: `no route for ${req.method} ${path}` }));
  };
}
