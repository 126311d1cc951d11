import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import pino from "pino";
import { request as undiciRequest } from "undici";
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
import { rpcProtocols } from "./helpers/rpc-transports.js";

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

const address = () => new URL(gw.url).host;

describe("grpc.health.v1.Health on the ingress port", () => {
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

describe("a health request whose service name is not valid UTF-8", () => {
  // 0xff is never UTF-8. protobuf-es writes a message's unknown fields as they are: one numbered
  // as `service` (1, length-delimited) puts these bytes on the wire as the service name.
  const INVALID = Buffer.concat([Buffer.from("grpc."), Buffer.from([0xff]), Buffer.from("!")]);
  const MESSAGE = `service is not valid UTF-8 (an invalid byte sequence starts at byte offset 5 of the field); proto3 string fields must be UTF-8`;
  const invalidRequest = () => {
    const req = create(HealthCheckRequestSchema);
    req.$unknown = [
      { no: 1, wireType: 2, data: Buffer.concat([Buffer.from([INVALID.length]), INVALID]) },
    ];
    return req;
  };
  /** The code and message a Check, then a Watch, ended with; a valid Check must still pass. */
  async function refusals(transport: Transport) {
    const client = createClient(Health, transport);
    expect((await client.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    const check = await client.check(invalidRequest()).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    const watch = await (async () => {
      for await (const _ of client.watch(invalidRequest())) {
        // nothing is expected
      }
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    return [check, watch].map((e) => ({ code: e?.code, message: e?.rawMessage }));
  }
  it.each(rpcProtocols(() => gw.url))(
    "is refused over %s with INVALID_ARGUMENT naming the field, compressed or not, by Check and Watch",
    async (_name, transport) => {
      for (const gzip of [false, true]) {
        expect([gzip, await refusals(transport(gzip))]).toEqual([
          gzip,
          [
            { code: Code.InvalidArgument, message: MESSAGE },
            { code: Code.InvalidArgument, message: MESSAGE },
          ],
        ]);
      }
    },
  );

  it("is refused with INVALID_ARGUMENT by @grpc/grpc-js, by Check and Watch", async () => {
    const client = new grpc.Client(address(), grpc.credentials.createInsecure());
    const bytes = Buffer.concat([Buffer.from([0x0a, INVALID.length]), INVALID]);
    try {
      const check = await new Promise<grpc.ServiceError | null>((resolve) => {
        client.makeUnaryRequest(
          "/grpc.health.v1.Health/Check",
          (b: Buffer) => b,
          (b: Buffer) => b,
          bytes,
          (err: grpc.ServiceError | null) => resolve(err),
        );
      });
      const watch = await new Promise<grpc.ServiceError | null>((resolve) => {
        const call = client.makeServerStreamRequest(
          "/grpc.health.v1.Health/Watch",
          (b: Buffer) => b,
          (b: Buffer) => b,
          bytes,
        );
        call.on("data", () => {});
        call.on("error", (err: grpc.ServiceError) => resolve(err));
        call.on("end", () => resolve(null));
      });
      for (const err of [check, watch]) {
        expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
        // Whole: its ";" and "(" reach grpc-js as they are (trailers-only.ts, respellMessage).
        expect(err?.details).toBe(MESSAGE);
      }
    } finally {
      client.close();
    }
  });

  it("is refused over Connect's unary protocol with a 400, not a 500", async () => {
    const res = await undiciRequest(`${gw.url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/proto", "connect-protocol-version": "1" },
      body: Buffer.concat([Buffer.from([0x0a, INVALID.length]), INVALID]),
    });
    expect(res.statusCode).toBe(400);
    expect(await res.body.json()).toEqual({ code: "invalid_argument", message: MESSAGE });
  });
});
