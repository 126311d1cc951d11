import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

/** A request handler that works for both HTTP/1.1 and HTTP/2 (Node's compatibility API). */
export type DualHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

export interface DualServer {
  /** Resolves with the bound port once listening. */
  listen(port: number, host: string): Promise<number>;
  /** Stops accepting connections; lets open requests finish until `graceMs`, then cuts them. */
  close(graceMs: number): Promise<void>;
  readonly server: net.Server;
}

// Every HTTP/2 connection opens with this preface (RFC 9113 §3.4); no HTTP/1 method starts with
// "PRI", so three bytes are enough to tell the protocols apart.
const H2_PREFACE_START = Buffer.from("PRI");

/**
 * Serves HTTP/1.1 and cleartext HTTP/2 (prior knowledge, as gRPC clients speak it) on one port.
 * Node's http2.createServer only accepts HTTP/1.1 on TLS (`allowHTTP1`), so the first bytes of
 * each connection pick the server that gets it.
 */
export function createDualServer(handler: DualHandler): DualServer {
  const h1 = http.createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, handler);
  const h2 = http2.createServer({}, handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  const sockets = new Set<net.Socket>();

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // An idle connection must not keep a draining server alive, nor leak on errors.
    socket.on("error", () => socket.destroy());
    let head: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      if (
        head.length < H2_PREFACE_START.length &&
        H2_PREFACE_START.subarray(0, head.length).equals(head)
      ) {
        return; // too few bytes to tell yet
      }
      socket.off("data", onData);
      socket.pause();
      socket.unshift(head);
      const isH2 = head.subarray(0, H2_PREFACE_START.length).equals(H2_PREFACE_START);
      (isH2 ? h2 : h1).emit("connection", socket);
      // The HTTP/1 parser reads through the stream API; HTTP/2 reads the native handle and must
      // not have the stream flowing under it.
      if (!isH2) socket.resume();
    };
    socket.on("data", onData);
  });

  return {
    server,
    listen(port, host) {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          const addr = server.address();
          resolve(typeof addr === "object" && addr ? addr.port : port);
        });
      });
    },
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      h1.closeIdleConnections();
      for (const s of sessions) s.close();
      const deadline = setTimeout(() => {
        h1.closeAllConnections();
        for (const s of sessions) s.destroy();
        for (const s of sockets) s.destroy();
      }, graceMs);
      // Sockets still in the protocol sniff or idle between requests close now.
      const idleSweep = setInterval(() => h1.closeIdleConnections(), 100);
      await closed;
      clearTimeout(deadline);
      clearInterval(idleSweep);
    },
  };
}
