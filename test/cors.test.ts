import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningFabric, startOneProcess, testConfig } from "./helpers/fabric.js";

// Browsers calling the ingress from another origin (server.cors_origins): preflights, the headers
// that let a page read an answer, and nothing for origins not listed or when none is.
const APP = "https://app.example.com";
const CHAT = "/switchyard.gateway.v1.GatewayService/Chat";
const CHAT_BODY = `${JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }] })}`;

let gw: RunningFabric;
let closed: RunningFabric;

beforeAll(async () => {
  const models = `
providers: { demo: { type: mock, tokens: 3 } }
models: { demo: { targets: [{ provider: demo, model: m }] } }`;
  gw = await startOneProcess(testConfig(`server: { cors_origins: ["${APP}"] }${models}`));
  closed = await startOneProcess(testConfig(models));
});

afterAll(async () => {
  await gw?.stop();
  await closed?.stop();
});

const preflight = (base: string, path: string, origin: string) =>
  request(`${base}${path}`, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization,content-type,connect-protocol-version",
    },
  });

describe("an allowed origin", () => {
  it.each([CHAT, "/v1/chat/completions"])("gets its preflight to %s answered", async (path) => {
    const res = await preflight(gw.url, path, APP);
    await res.body.dump();
    expect(res.statusCode).toBe(204);
    expect(res.headers["access-control-allow-origin"]).toBe(APP);
    expect(res.headers["access-control-allow-methods"]).toContain("POST");
    expect(res.headers["access-control-allow-headers"]).toBe(
      "authorization,content-type,connect-protocol-version",
    );
    expect(res.headers.vary).toBe("Origin");
  });

  it("may read a GatewayService answer and its headers", async () => {
    const res = await request(`${gw.url}${CHAT}`, {
      method: "POST",
      headers: { origin: APP, "content-type": "application/json", "connect-protocol-version": "1" },
      body: JSON.stringify({
        params: {
          model: "demo",
          messages: [{ role: "ROLE_USER", content: [{ text: "hi" }] }],
        },
      }),
    });
    const body = (await res.body.json()) as { completion?: unknown };
    expect(res.statusCode).toBe(200);
    expect(body.completion).toBeDefined();
    expect(res.headers["access-control-allow-origin"]).toBe(APP);
    const exposed = String(res.headers["access-control-expose-headers"]).toLowerCase();
    for (const name of ["grpc-status", "x-request-id", "x-switchyard-provider"]) {
      expect(exposed).toContain(name);
    }
  });

  it("may read a REST answer", async () => {
    const res = await request(`${gw.url}/v1/chat/completions`, {
      method: "POST",
      headers: { origin: APP, "content-type": "application/json" },
      body: CHAT_BODY,
    });
    await res.body.dump();
    expect(res.statusCode).toBe(200);
    expect(res.headers["access-control-allow-origin"]).toBe(APP);
  });
});

describe("an origin not listed, or a gateway that lists none", () => {
  it.each([
    ["another origin", () => gw.url, "https://evil.example.com"],
    ["no cors_origins", () => closed.url, APP],
  ])("%s: no preflight answer, and the request itself refused", async (_, base, origin) => {
    const pre = await preflight(base(), CHAT, origin);
    await pre.body.dump();
    expect(pre.statusCode).not.toBe(204);
    expect(pre.headers["access-control-allow-origin"]).toBeUndefined();
    // A "simple" request, which a browser sends without a preflight: CORS alone would only keep
    // the page from reading the answer, and the gateway would still run it.
    const res = await request(`${base()}/v1/chat/completions`, {
      method: "POST",
      headers: { origin, "content-type": "text/plain;charset=UTF-8" },
      body: CHAT_BODY,
    });
    expect(res.statusCode).toBe(403);
    expect(await res.body.json()).toMatchObject({ error: { code: "origin_not_allowed" } });
    expect(res.headers["access-control-allow-origin"]).toBeUndefined();
  });

  it("serves clients that send no Origin, and a page of the gateway's own address", async () => {
    const plain = await request(`${closed.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: CHAT_BODY,
    });
    await plain.body.dump();
    expect(plain.statusCode).toBe(200);
    const own = await request(`${closed.url}/v1/chat/completions`, {
      method: "POST",
      headers: { origin: closed.url, "content-type": "application/json" },
      body: CHAT_BODY,
    });
    await own.body.dump();
    expect(own.statusCode).toBe(200);
  });
});
