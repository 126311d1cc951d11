import http from "node:http";
import { StringDecoder } from "node:string_decoder";

type Listener = (event: { type: string; target: NodeXhr }) => void;

/**
 * Just enough of a browser's XMLHttpRequest, on node:http, for Google's grpc-web library (which
 * only runs on XHR) to run in tests. It streams as the XHR standard has browsers do, and as
 * grpc-web's text mode relies on: while the answer LOADs, responseText grows with each piece of
 * the body and readystatechange fires for each (the xhr2 package sets responseText only at the
 * end, so a stream would arrive all at once). Plain HTTP/1.1 to loopback only; no cookies.
 */
export class NodeXhr {
  static readonly UNSENT = 0;
  static readonly OPENED = 1;
  static readonly HEADERS_RECEIVED = 2;
  static readonly LOADING = 3;
  static readonly DONE = 4;

  readyState = NodeXhr.UNSENT;
  status = 0;
  statusText = "";
  responseText = "";
  responseType = "";
  withCredentials = false;
  timeout = 0;
  onreadystatechange: Listener | null = null;
  onabort: Listener | null = null;
  onerror: Listener | null = null;
  onload: Listener | null = null;
  ontimeout: Listener | null = null;

  #method = "GET";
  #url = "";
  #headers: Record<string, string> = {};
  #request: http.ClientRequest | undefined;
  #response: http.IncomingMessage | undefined;
  #listeners = new Map<string, Set<Listener>>();

  get response(): string {
    return this.responseText;
  }

  open(method: string, url: string): void {
    this.#method = method;
    this.#url = url;
    this.#headers = {};
    this.#set(NodeXhr.OPENED);
  }

  setRequestHeader(name: string, value: string): void {
    this.#headers[name] = value;
  }

  send(body?: string | Uint8Array | null): void {
    const request = http.request(this.#url, { method: this.#method, headers: this.#headers });
    this.#request = request;
    request.on("response", (response) => {
      this.#response = response;
      this.status = response.statusCode ?? 0;
      this.statusText = response.statusMessage ?? "";
      this.#set(NodeXhr.HEADERS_RECEIVED);
      const text = new StringDecoder("utf8");
      response.on("data", (piece: Buffer) => {
        this.responseText += text.write(piece);
        this.#set(NodeXhr.LOADING);
      });
      response.on("end", () => {
        this.responseText += text.end();
        this.#set(NodeXhr.DONE);
        this.#fire("load");
      });
      response.on("error", () => this.#fail("error"));
    });
    request.on("error", () => this.#fail("error"));
    request.end(body ?? undefined);
  }

  abort(): void {
    if (this.#request === undefined || this.readyState === NodeXhr.DONE) return;
    this.#request.destroy();
    this.#fail("abort");
  }

  getResponseHeader(name: string): string | null {
    const value = this.#response?.headers[name.toLowerCase()];
    if (value === undefined) return null;
    return Array.isArray(value) ? value.join(", ") : value;
  }

  getAllResponseHeaders(): string {
    const headers = this.#response?.headers ?? {};
    return Object.entries(headers)
      .map(([name, value]) => `${name}: ${Array.isArray(value) ? value.join(", ") : value}\r\n`)
      .join("");
  }

  addEventListener(type: string, listener: Listener): void {
    const set = this.#listeners.get(type) ?? new Set();
    set.add(listener);
    this.#listeners.set(type, set);
  }

  removeEventListener(type: string, listener: Listener): void {
    this.#listeners.get(type)?.delete(listener);
  }

  /** A network error or an abort: DONE with status 0, as the standard's request error steps. */
  #fail(type: "error" | "abort"): void {
    if (this.readyState === NodeXhr.DONE) return;
    this.#request = undefined;
    this.status = 0;
    this.#set(NodeXhr.DONE);
    this.#fire(type);
  }

  #set(state: number): void {
    this.readyState = state;
    this.#fire("readystatechange");
  }

  #fire(type: string): void {
    const event = { type, target: this };
    const handler = this[`on${type}` as "onload"];
    if (typeof handler === "function") handler.call(this, event);
    for (const listener of this.#listeners.get(type) ?? []) listener.call(this, event);
  }
}
