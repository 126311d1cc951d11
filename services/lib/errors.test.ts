import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { UpstreamErrorSchema } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { ConnectorService } from "../../gen/switchyard/connector/v1/connector_pb.js";
import {
  codeForStatus,
  Failure,
  type FailureInit,
  modelNotFound,
  statusForCode,
} from "./errors.js";

const FULL: FailureInit = {
  status: 429,
  kind: "rate_limited",
  message: "provider openai is rate limiting the gateway (429): slow down",
  retryable: true,
  retryAfterMs: 2000,
  upstreamStatus: 429,
  provider: "openai",
  param: "messages",
  code: "rate_limit_exceeded",
};

function fields(f: Failure): FailureInit {
  return {
    status: f.status,
    kind: f.kind,
    message: f.message,
    retryable: f.retryable,
    retryAfterMs: f.retryAfterMs,
    upstreamStatus: f.upstreamStatus,
    provider: f.provider,
    param: f.param,
    code: f.code,
  };
}

describe("Failure", () => {
  it("defaults to not retryable, with empty optional fields", () => {
    const f = new Failure({ status: 400, kind: "invalid_request", message: "bad" });
    expect(fields(f)).toEqual({
      status: 400,
      kind: "invalid_request",
      message: "bad",
      retryable: false,
      retryAfterMs: 0,
      upstreamStatus: 0,
      provider: "",
      param: "",
      code: "",
    });
    expect(f).toBeInstanceOf(Error);
    expect(f.name).toBe("Failure");
  });

  it("survives the proto form unchanged", () => {
    expect(fields(Failure.fromProto(new Failure(FULL).toProto()))).toEqual(FULL);
  });

  it("becomes a ConnectError with the status's code and an UpstreamError detail", () => {
    const ce = new Failure(FULL).toConnectError();
    expect(ce.code).toBe(Code.ResourceExhausted);
    expect(ce.rawMessage).toBe(FULL.message);
    const detail = ce.findDetails(UpstreamErrorSchema)[0];
    expect(detail?.kind).toBe("rate_limited");
    expect(detail?.retryAfterMs).toBe(2000);
  });

  it("comes back whole from its own ConnectError", () => {
    expect(fields(Failure.from(new Failure(FULL).toConnectError()))).toEqual(FULL);
  });

  it("crosses a real Connect hop (binary protobuf) with every field intact", async () => {
    const transport = createRouterTransport((router) =>
      router.service(ConnectorService, {
        probe() {
          throw new Failure(FULL).toConnectError();
        },
      }),
    );
    const client = createClient(ConnectorService, transport);
    const err = await client.probe({}).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    expect(fields(Failure.from(err))).toEqual(FULL);
  });

  it("hands a Failure back as is", () => {
    const f = new Failure(FULL);
    expect(Failure.from(f)).toBe(f);
  });

  it.each([
    [Code.Canceled, 499, "cancelled", false],
    [Code.DeadlineExceeded, 504, "timeout", true],
    [Code.InvalidArgument, 400, "invalid_request", false],
    [Code.NotFound, 404, "not_found", false],
    [Code.Unauthenticated, 401, "auth", false],
    [Code.PermissionDenied, 403, "auth", false],
    [Code.ResourceExhausted, 429, "rate_limited", true],
    [Code.Unimplemented, 400, "unsupported", false],
    [Code.Unavailable, 503, "upstream_unavailable", true],
    [Code.Internal, 502, "upstream_error", true],
    [Code.Unknown, 502, "upstream_error", true],
  ] as const)(
    "reads a bare ConnectError with code %s as %s %s",
    (code, status, kind, retryable) => {
      const ce = new ConnectError("transport trouble", code);
      const f = Failure.from(ce);
      expect(f.status).toBe(status);
      expect(f.kind).toBe(kind);
      expect(f.retryable).toBe(retryable);
      expect(f.message).toBe("transport trouble");
      expect(f.cause).toBe(ce);
      expect(statusForCode(code)).toBe(status);
    },
  );

  it("reads an aborted fetch as a cancellation and anything else as an upstream error", () => {
    const abort = new AbortController();
    abort.abort();
    expect(Failure.from(abort.signal.reason).kind).toBe("cancelled");
    const f = Failure.from(new Error("boom"));
    expect(f.status).toBe(502);
    expect(f.kind).toBe("upstream_error");
    expect(f.message).toBe("boom");
  });
});

describe("codeForStatus", () => {
  it.each([
    [400, Code.InvalidArgument],
    [401, Code.Unauthenticated],
    [403, Code.PermissionDenied],
    [404, Code.NotFound],
    [408, Code.DeadlineExceeded],
    [413, Code.InvalidArgument],
    [422, Code.InvalidArgument],
    [429, Code.ResourceExhausted],
    [499, Code.Canceled],
    [501, Code.Unimplemented],
    [502, Code.Internal],
    [503, Code.Unavailable],
    [504, Code.DeadlineExceeded],
    [500, Code.Internal],
  ])("maps HTTP %i to gRPC code %s", (status, code) => {
    expect(codeForStatus(status)).toBe(code);
  });

  it("gives back the client-facing status for every status the router emits", () => {
    for (const status of [400, 401, 403, 404, 429, 499, 502, 503, 504]) {
      expect(statusForCode(codeForStatus(status))).toBe(status);
    }
  });
});

describe("modelNotFound", () => {
  it("is a 404 model_not_found on param model that names the model", () => {
    const f = modelNotFound("gpt-9");
    expect(f.status).toBe(404);
    expect(f.kind).toBe("not_found");
    expect(f.code).toBe("model_not_found");
    expect(f.param).toBe("model");
    expect(f.message).toContain("'gpt-9'");
    expect(f.toConnectError().code).toBe(Code.NotFound);
  });
});
