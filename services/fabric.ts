import { randomBytes } from "node:crypto";
import { get as httpGet, maxHeaderSize } from "node:http";
import { get as httpsGet } from "node:https";
import { hostname, networkInterfaces } from "node:os";
import type { Client, ConnectRouter, Transport } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import type { Registry } from "prom-client";
import { ConnectorService } from "../gen/switchyard/connector/v1/connector_pb.js";
import { RouterService } from "../gen/switchyard/router/v1/router_pb.js";
import { HEARTBEAT_MS, startAnnouncer } from "./connector/announcer.js";
import { buildConnector, type ConnectorBuild } from "./connector/main.js";
import { type Clock, createLimiter } from "./ingress/limits/index.js";
import { buildIngress } from "./ingress/main.js";
import type { Bus } from "./lib/bus/bus.js";
import { createBus } from "./lib/bus/index.js";
import type { Config, ListenAddress } from "./lib/config/types.js";
import { ConnectorPool } from "./lib/connector-pool.js";
import { createHopTransport } from "./lib/hop/client.js";
import { createHopHandler, type HopService, hopService } from "./lib/hop/server.js";
import { createAdminHandler } from "./lib/http/admin.js";
import { createDualServer, type DualHandler, type DualServer } from "./lib/http/dual-server.js";
import { createLocalClient } from "./lib/local-client.js";
import type { Logger } from "./lib/logger.js";
import { followConnectors } from "./lib/membership.js";
import { createProcessRegistry, createRegistry, renderMetrics } from "./lib/metrics.js";
import { listenFailure, StartupError } from "./lib/startup-error.js";
import { useFastUtf8Encoding } from "./lib/utf8.js";
import { buildProber } from "./prober/main.js";
import { buildRouter } from "./router/main.js";

export const SERVICE_NAMES = ["ingress", "router", "connector", "prober"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

export interface Fabric {
  /** Bound ports by service (only services that listen). */
  readonly ports: Partial<Record<ServiceName, number>>;
  /** SIGTERM semantics: stop accepting, let in-flight work finish within `graceMs`, close. */
  stop(graceMs?: number): Promise<void>;
}

export interface FabricOptions {
  config: Config;
  services: ReadonlySet<ServiceName>;
  logger: Logger;
  /** Override listen addresses (tests bind port 0). */
  listen?: Partial<Record<ServiceName, ListenAddress>>;
  /** The time tenant limits count by (tests move it to cross days and months). */
  clock?: Clock;
  /**
   * How services in different processes call each other (default "hop"; the CLI takes it from
   * SWITCHYARD_FABRIC_TRANSPORT): "hop" is the lean Connect client and server in lib/hop,
   * "connect" is connect-node on both ends. Both speak the Connect protocol over h2c, so either
   * end may run either; "connect" is kept for comparison (bench) and as a fallback.
   */
  transport?: FabricTransport;
  /**
   * How long a client's HTTP/2 connection to the ingress port may carry no call before it is
   * closed (default H2_IDLE_TIMEOUT_MS; tests shorten it).
   */
  h2IdleTimeoutMs?: number;
}

export type FabricTransport = "hop" | "connect";

/**
 * HTTP/2 connections a process keeps to each peer. 1, 2 and 4 measured the same through the
 * gateway (bench/README.md); two keep one slow connection from holding up every call.
 */
const HOP_SESSIONS_PER_PEER = 2;

/**
 * How long a client's HTTP/2 connection to the public port may carry no call before it is
 * closed: as long as an idle HTTP/1.1 keep-alive connection (dual-server.ts).
 */
const H2_IDLE_TIMEOUT_MS = 65_000;

/**
 * The largest request head a client may send the public port over HTTP/2: HTTP/1.1's bound
 * (Node's maxHeaderSize, 16 KB of field names and values) in HTTP/2's count, which adds 32 bytes
 * a field, with room for ten fields' worth of it (as Go's HTTP/2 server pads its own bound).
 */
const H2_MAX_HEADER_LIST_SIZE = maxHeaderSize + 10 * 32;
/**
 * Fields a request head may have on the public port over HTTP/2: more than fit in its size bound
 * (each counts at least 32 bytes), so the size is the one bound that counts, as on HTTP/1.1.
 * Node's default, 128, refused a head of 150 small fields that HTTP/1.1 takes.
 */
const H2_MAX_HEADER_LIST_PAIRS = Math.ceil(H2_MAX_HEADER_LIST_SIZE / 32);

/**
 * Composes the services this process runs. Services in the same process call each other
 * through in-process Connect transports; the others are reached over h2c at `peers.*`. With all
 * four in one process only the ingress listens; otherwise each service here listens on its port.
 */
export async function startFabric(opts: FabricOptions): Promise<Fabric> {
  const { config, services, logger } = opts;
  // Every message the services encode goes through it (see utf8.ts).
  useFastUtf8Encoding();
  const has = (s: ServiceName) => services.has(s);
  const oneProcess = SERVICE_NAMES.every(has);
  const processRegistry = createProcessRegistry();
  const registries: Registry[] = [processRegistry];
  const metrics = () => renderMetrics(registries);
  const closers: Array<() => Promise<void>> = [];
  const servers: Array<{
    name: ServiceName;
    server: DualServer;
    onCut?: () => void | Promise<void>;
  }> = [];
  const ports: Partial<Record<ServiceName, number>> = {};

  const needsBus = has("router") || has("prober") || has("connector");
  let bus: Bus | undefined;
  if (needsBus) {
    if (!config.nats && !oneProcess && (has("router") || has("prober"))) {
      throw new StartupError(
        "nats.url is required when services run in separate processes: routers and the prober share target health over NATS",
      );
    }
    // wait:false — a service serves while NATS is unreachable, and joins it when it is back.
    bus = await createBus({
      ...(config.nats ? { natsUrl: config.nats.url, namespace: config.nats.namespace } : {}),
      name: `switchyard-${[...services].join("+")}`,
      logger,
      wait: false,
    });
    const b = bus;
    closers.push(() => b.close());
  }

  const registryFor = (name: ServiceName) => {
    const r = createRegistry(name);
    registries.push(r);
    return r;
  };
  const loggerFor = (name: ServiceName) => logger.child({ service: name });
  const transport = opts.transport ?? "hop";
  const remote = (baseUrl: string): Transport =>
    transport === "connect"
      ? createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true })
      : createHopTransport({ baseUrl, sessions: HOP_SESSIONS_PER_PEER });

  // Connectors the router and prober call: the in-process one, or the static peer list plus
  // every connector that announces itself on the bus.
  const connectorId = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const connectors = new ConnectorPool();
  let connector: ConnectorBuild | undefined;
  if (has("connector")) {
    connector = buildConnector({
      config,
      logger: loggerFor("connector"),
      registry: registryFor("connector"),
      ...(bus ? { outcomes: { bus, connectorId } } : {}),
    });
    const c = connector;
    closers.push(() => c.close());
    connectors.add("local", createLocalClient(ConnectorService, c.impl));
  } else if ((has("router") || has("prober")) && bus) {
    for (const url of config.peers.connectors) connectors.add(url, remote(url));
    const membership = followConnectors({
      bus,
      pool: connectors,
      staticAddresses: config.peers.connectors,
      transportFor: remote,
      logger,
      // A connector's drain lasts its drain_timeout_ms (the fabric's config is shared), and its
      // process then exits; past that and a heartbeat of slack, its address holds a successor.
      leavingMs: config.server.drain_timeout_ms + HEARTBEAT_MS,
    });
    closers.push(async () => membership.stop());
  }

  let routerRoutes: ((r: ConnectRouter) => void) | undefined;
  let routerService: HopService | undefined;
  let router: Transport | Client<typeof RouterService> | undefined;
  /** Answers the router's open calls when a shutdown cuts them (RouterBuild.cutting). */
  let cutRouter: (() => void) | undefined;
  if (has("router") && bus) {
    const r = buildRouter({
      config,
      logger: loggerFor("router"),
      registry: registryFor("router"),
      bus,
      connectors,
    });
    closers.push(() => r.close());
    cutRouter = () => r.cutting();
    routerRoutes = r.routes;
    routerService = hopService(RouterService, r.impl);
    router = createLocalClient(RouterService, r.impl);
  } else if (has("ingress")) {
    router = remote(config.peers.router);
  }

  if (has("prober") && bus) {
    const prober = buildProber({
      config,
      logger: loggerFor("prober"),
      registry: registryFor("prober"),
      bus,
      connectors,
      holder: connectorId,
    });
    prober.start();
    closers.push(() => prober.stop());
  }

  let draining = false;
  if (has("ingress") && router) {
    const routerIsLocal = routerRoutes !== undefined;
    const ingressLogger = loggerFor("ingress");
    const ingressRegistry = registryFor("ingress");
    const limiter = await createLimiter({
      config,
      logger: ingressLogger,
      registry: ingressRegistry,
      ...(opts.clock ? { clock: opts.clock } : {}),
    });
    closers.push(() => limiter.close());
    const ingress = buildIngress({
      config,
      logger: ingressLogger,
      registry: ingressRegistry,
      router,
      limiter,
      ...(opts.clock ? { clock: opts.clock } : {}),
      renderMetrics: metrics,
      ready: async () =>
        !draining && (routerIsLocal ? connectors.size > 0 : await peerReady(config.peers.router)),
    });
    servers.push({
      name: "ingress",
      // Only the public port bounds a connection's streams, its idle time and its request heads:
      // the fabric's own hops keep Node's defaults.
      server: createDualServer(ingress.handler, {
        maxConcurrentStreams: config.server.http2_max_concurrent_streams,
        h2IdleTimeoutMs: opts.h2IdleTimeoutMs ?? H2_IDLE_TIMEOUT_MS,
        maxHeaderListSize: H2_MAX_HEADER_LIST_SIZE,
        maxHeaderListPairs: H2_MAX_HEADER_LIST_PAIRS,
      }),
      // The router in this process answers its calls first: only it knows their attempts.
      onCut: () => {
        cutRouter?.();
        return ingress.cutting(cutRouter !== undefined);
      },
    });
    // Closers run in reverse: this first, before the router and connectors go away, so the
    // requests the drain cut end (and log their line) as cancelled ones do.
    closers.push(() => ingress.settled(CUT_REQUESTS_SETTLE_MS));
  }

  if (!oneProcess) {
    // A router that knows no connector yet (they announce themselves every 2 s) could only
    // answer 503: it is not ready until one has joined.
    const admin = createAdminHandler({
      renderMetrics: metrics,
      ready: async () => !draining && (!has("router") || connectors.size > 0),
    });
    // connect-node serves every protocol (gRPC, gRPC-web, JSON) and the admin paths; with the
    // hop transport, the lean handler takes the fabric's own calls in front of it.
    const internal = (
      routes: ((r: ConnectRouter) => void) | undefined,
      service: HopService | undefined,
      shutdownSignal?: AbortSignal,
    ): DualHandler => {
      const adapter = connectNodeAdapter({
        routes: routes ?? (() => {}),
        fallback: (req, res) => admin(req, res as Parameters<DualHandler>[1]),
        ...(shutdownSignal ? { shutdownSignal } : {}),
      });
      return transport === "hop" && service
        ? createHopHandler({
            services: [service],
            fallback: adapter,
            ...(shutdownSignal ? { shutdownSignal } : {}),
          })
        : adapter;
    };
    if (has("router")) {
      const handler = internal(routerRoutes, routerService);
      servers.push({
        name: "router",
        server: createDualServer(handler),
        ...(cutRouter ? { onCut: cutRouter } : {}),
      });
    }
    if (connector) {
      const c = connector;
      const handler = internal(c.routes, hopService(ConnectorService, c.impl), c.shutdownSignal);
      // Its open calls end with shuttingDown rather than with their connections.
      servers.push({ name: "connector", server: createDualServer(handler), onCut: c.cutting });
    }
    if (has("prober"))
      servers.push({ name: "prober", server: createDualServer(internal(undefined, undefined)) });
  }

  try {
    for (const { name, server } of servers) {
      const addr = opts.listen?.[name] ?? config.server[name];
      ports[name] = await server.listen(addr.port, addr.host).catch((err: unknown) => {
        throw listenFailure(err, `the ${name} (server.${name})`, addr);
      });
      logger.info({ service: name, host: addr.host, port: ports[name] }, "listening");
    }
  } catch (err) {
    await Promise.all(servers.map((s) => s.server.close(0)));
    for (const close of closers.reverse()) await close().catch(() => {});
    throw err;
  }

  // A connector in its own process tells routers and probers where to find it.
  let announcer: { stop(): void } | undefined;
  if (connector && ports.connector !== undefined && !config.nats) {
    // Its bus is this process's memory: nobody would hear an announcement or an outcome.
    logger.warn(
      { service: "connector" },
      "nats.url is not set: this connector announces itself to no router and reports its outcomes to no prober; routers reach it only through peers.connectors",
    );
  } else if (connector && bus && ports.connector !== undefined) {
    const address = advertisedUrl(
      opts.listen?.connector?.host ?? config.server.connector.host,
      ports.connector,
    );
    const c = connector;
    announcer = startAnnouncer({
      bus,
      id: connectorId,
      address,
      providers: c.providers,
      inflight: () => c.load.inflight,
    });
    logger.info({ service: "connector", address, id: connectorId }, "announcing on the bus");
  }

  return {
    ports,
    async stop(graceMs = config.server.drain_timeout_ms) {
      draining = true;
      announcer?.stop();
      await Promise.all(servers.map((s) => s.server.close(graceMs, s.onCut)));
      for (const close of closers.reverse()) {
        await close().catch((err) => logger.warn({ err: String(err) }, "error while closing"));
      }
    },
  };
}

/** How long a stop waits for the requests its drain cut to end and log their line. */
const CUT_REQUESTS_SETTLE_MS = 2000;

/** Reads a fabric transport name (e.g. from SWITCHYARD_FABRIC_TRANSPORT); empty means "hop". */
export function parseFabricTransport(value: string | undefined): FabricTransport {
  if (value === undefined || value === "" || value === "hop") return "hop";
  if (value === "connect") return "connect";
  throw new StartupError(`SWITCHYARD_FABRIC_TRANSPORT must be "hop" or "connect", not "${value}"`);
}

/** The URL other processes dial to reach a service bound to `host:port`. */
function advertisedUrl(host: string, port: number): string {
  if (host !== "0.0.0.0" && host !== "::" && host !== "") {
    return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  }
  // Bound to every interface: advertise the first external IPv4 address (a pod IP, say).
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) {
      if (a.family === "IPv4" && !a.internal) return `http://${a.address}:${port}`;
    }
  }
  return `http://${hostname()}:${port}`;
}

/** Whether a peer's /readyz answers 200 (cached for a second so probes stay cheap). */
const readiness = new Map<string, { at: number; ok: boolean }>();
async function peerReady(baseUrl: string): Promise<boolean> {
  const cached = readiness.get(baseUrl);
  if (cached && Date.now() - cached.at < 1000) return cached.ok;
  const ok = await answersOk(new URL("/readyz", baseUrl));
  readiness.set(baseUrl, { at: Date.now(), ok });
  return ok;
}

/**
 * A GET that resolves true on a 200 and false on any other status, error or 2 s timeout.
 * node:http rather than undici: only a connector calls upstreams, and undici loaded into every
 * process for this one request costs ~5 MB of heap and more of RSS (see bench/README.md).
 */
function answersOk(url: URL): Promise<boolean> {
  const get = url.protocol === "https:" ? httpsGet : httpGet;
  return new Promise((resolve) => {
    get(url, { signal: AbortSignal.timeout(2000) }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    }).on("error", () => resolve(false));
  });
}
