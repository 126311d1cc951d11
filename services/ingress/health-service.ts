import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";
import { GatewayService } from "../../gen/switchyard/gateway/v1/gateway_pb.js";
import { makeMessage } from "../lib/hop/codec.js";

/**
 * The gRPC health checking protocol on the ingress port, for Kubernetes `grpc:` probes,
 * grpc-health-probe and load balancers: `Check` answers SERVING when `/readyz` would answer 200
 * (the router reachable, not draining), for the server as a whole ("") and for GatewayService,
 * and NOT_FOUND for any other service. Like `/readyz` it needs no key. `Watch` is not served
 * (UNIMPLEMENTED, which the protocol's clients take as "health checking not available"): a
 * watch held open would also hold every drain for its whole `drain_timeout_ms`.
 */
export function createHealthService(
  ready: () => Promise<boolean>,
): Partial<ServiceImpl<typeof Health>> {
  const known = new Set(["", GatewayService.typeName]);
  return {
    async check(req): Promise<HealthCheckResponse> {
      if (!known.has(req.service)) {
        throw new ConnectError(`unknown service '${req.service}'`, Code.NotFound);
      }
      const status = (await ready()) ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
      return makeMessage(HealthCheckResponseSchema, { status });
    },
  };
}
