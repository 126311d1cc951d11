import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Health,
  HealthCheckRequestSchema,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../gen/grpc/health/v1/health_pb.js";
import { startFabric } from "../services/fabric.js";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";
import { freePorts } from "./helpers/processes.js";

// The gRPC health checking protocol on the ingress port, as Kubernetes `grpc:` probes and
// grpc-health-probe call it: @grpc/grpc-js with no key, and connect-node.

/** One Health/Check through @grpc/grpc-js: the status, or the call's gRPC error code. */
function grpcJsCheck(address: string, service: string): Promise<ServingStatus | grpc.status> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise<ServingStatus | grpc.status>((resolve) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      (req: { service: string }) =>
        Buffer.from(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, req))),
      (b: Buffer) => fromBinary(HealthCheckResponseSchema, b),
      { service },
      (err: grpc.ServiceError | null, res?: HealthCheckResponse) =>
        resolve(err ? err.code : (res?.status ?? ServingStatus.UNKNOWN)),
    );
  }).finally(() => client.close());
}

let gw: RunningFabric;
beforeAll(async () => {
  gw = await startOneProcess(
    testConfig(`
providers: { demo: { type: mock } }
models: { demo: { targets: [{ provider: demo, model: m }] } }
tenants: { acme: { keys: ["sha256:${"0".repeat(64)}"] } }
`),
  );
});
afterAll(async () => {
  await gw?.stop();
});

describe("grpc.health.v1.Health on the ingress port", () => {
  const address = () => new URL(gw.url).host;

  it("answers SERVING for the server and for GatewayService, without a key", async () => {
    expect(await grpcJsCheck(address(), "")).toBe(ServingStatus.SERVING);
    expect(await grpcJsCheck(address(), "switchyard.gateway.v1.GatewayService")).toBe(
      ServingStatus.SERVING,
    );
  });

  it("answers NOT_FOUND for a service it does not have, and UNIMPLEMENTED for Watch", async () => {
    expect(await grpcJsCheck(address(), "no.such.Service")).toBe(grpc.status.NOT_FOUND);
    const client = createClient(Health, createGrpcTransport({ baseUrl: gw.url }));
    const code = await (async () => {
      for await (const _ of client.watch({ service: "" })) {
      }
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e).code,
    );
    expect(code).toBe(Code.Unimplemented);
  });

  it("answers NOT_SERVING when /readyz would answer 503: the router away", async () => {
    const [routerPort] = await freePorts(1);
    const fabric = await startFabric({
      config: testConfig(`
peers: { router: "http://127.0.0.1:${routerPort}" }
providers: { demo: { type: mock } }
models: { demo: { targets: [{ provider: demo, model: m }] } }
`),
      services: new Set(["ingress"] as const),
      logger: pino({ level: "silent" }),
      listen: { ingress: { host: "127.0.0.1", port: 0 } },
    });
    try {
      const address = `127.0.0.1:${fabric.ports.ingress}`;
      expect(await grpcJsCheck(address, "")).toBe(ServingStatus.NOT_SERVING);
    } finally {
      await fabric.stop(1000);
    }
  });
});
