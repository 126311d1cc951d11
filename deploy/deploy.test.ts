// No Docker engine or cluster runs here, so deploy/ is checked for what can be known without one:
// every file parses, the config passes Switchyard's own validator with the environment each
// container would have, the manifests and the compose file agree with the config (services,
// ports, peers, drain time), upstream keys reach connectors only, and the image holds every
// module and package the CLI loads.

import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { SERVICE_NAMES, type ServiceName } from "../services/fabric.js";
import { parseConfigText } from "../services/lib/config/load.js";
import type { Config } from "../services/lib/config/types.js";

const DEPLOY = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(DEPLOY, "..");
const K8S = join(DEPLOY, "k8s");
const CONFIG_FILE = join(DEPLOY, "switchyard.yaml");
const CONFIG_TEXT = readFileSync(CONFIG_FILE, "utf8");
/** The image name the manifests use; kustomization.yaml's `images` retags it. */
const IMAGE = "switchyard";
/** What a test pod reads from the Secret: a value that is clearly not the placeholder. */
const SECRET_VALUE = "sk-from-the-secret";

// ---------------------------------------------------------------------------------------------
// The shapes read from the manifests (only the fields these tests look at).

type Labels = Record<string, string>;

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name: string; key: string; optional?: boolean };
    fieldRef?: { fieldPath: string };
  };
}

interface Probe {
  httpGet?: { path: string; port: string | number };
}

interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: Array<{ secretRef?: { name: string } }>;
  ports?: Array<{ name?: string; containerPort: number }>;
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  volumeMounts?: Array<{ name: string; mountPath: string }>;
}

interface PodSpec {
  terminationGracePeriodSeconds?: number;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; runAsGroup?: number };
  containers: Container[];
  volumes?: Array<{
    name: string;
    configMap?: { name: string };
    secret?: { secretName: string };
    projected?: { sources: Array<{ secret?: { name: string } }> };
  }>;
}

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Labels };
  spec?: {
    replicas?: number;
    /** A Service's selector is a plain label map; a workload's or a budget's has matchLabels. */
    selector?: Labels | { matchLabels: Labels };
    template?: {
      metadata: { labels: Labels; annotations?: Record<string, string> };
      spec: PodSpec;
    };
    ports?: Array<{ name?: string; port: number; targetPort?: string | number }>;
    clusterIP?: string;
    scaleTargetRef?: { kind: string; name: string };
    minReplicas?: number;
    metrics?: Array<{ type: string; resource?: { name: string } }>;
  };
  stringData?: Record<string, string>;
}

interface Kustomization {
  resources: string[];
  configMapGenerator: Array<{ name: string; files: string[] }>;
  images: Array<{ name: string; newName?: string; newTag?: string }>;
}

interface ComposeService {
  image: string;
  entrypoint?: string[];
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  healthcheck?: { test: string[] };
  stop_grace_period?: string;
  depends_on?: Record<string, { condition: string }>;
}

interface Compose {
  services: Record<string, ComposeService>;
}

// ---------------------------------------------------------------------------------------------
// Reading deploy/

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return yamlFiles(path);
    return /\.ya?ml$/.test(entry.name) ? [path] : [];
  });
}

/** Every document in a YAML file as plain data; throws on any syntax problem. */
function readDocuments(path: string): unknown[] {
  const documents = parseAllDocuments(readFileSync(path, "utf8"), {
    merge: true,
    uniqueKeys: true,
  });
  return documents.map((document, index) => {
    const problems = [...document.errors, ...document.warnings];
    if (problems.length > 0) {
      throw new Error(`${relative(ROOT, path)} document ${index + 1}: ${problems[0]?.message}`);
    }
    return document.toJS();
  });
}

function readOne<T>(path: string): T {
  const [document] = readDocuments(path);
  return document as T;
}

const kustomization = readOne<Kustomization>(join(K8S, "kustomization.yaml"));
const manifests = kustomization.resources.flatMap(
  (file) => readDocuments(join(K8S, file)) as Manifest[],
);
const compose = readOne<Compose>(join(DEPLOY, "compose.yaml"));

function byKind(kind: string): Manifest[] {
  return manifests.filter((m) => m.kind === kind);
}

/** The switchyard container of a workload, and which service its args start. */
function switchyardContainer(workload: Manifest): { container: Container; service: ServiceName } {
  const name = workload.metadata.name;
  const containers = workload.spec?.template?.spec.containers ?? [];
  const container = containers.find((c) => c.image === IMAGE);
  if (container === undefined) throw new Error(`${name}: no ${IMAGE} container`);
  return { container, service: startedService(name, container.command, container.args) };
}

/** The service of `start --service NAME` arguments, which must name exactly one real service. */
function startedService(
  where: string,
  entrypoint: string[] | undefined,
  args: string[] | undefined,
): ServiceName {
  // The image's entrypoint stays; only the arguments pick the service.
  if (entrypoint !== undefined) throw new Error(`${where}: overrides the image's entrypoint`);
  const [command, flag, service, ...rest] = args ?? [];
  const known = (SERVICE_NAMES as readonly string[]).includes(service ?? "");
  if (command !== "start" || flag !== "--service" || !known || rest.length > 0) {
    throw new Error(`${where}: '${(args ?? []).join(" ")}' is not \`start --service SERVICE\``);
  }
  return service as ServiceName;
}

const workloads = byKind("Deployment").map((deployment) => ({
  deployment,
  ...switchyardContainer(deployment),
}));

function workloadOf(service: ServiceName) {
  const found = workloads.filter((w) => w.service === service);
  expect(found, `one Deployment runs ${service}`).toHaveLength(1);
  return found[0] as (typeof workloads)[number];
}

/** The environment a pod's container starts with; a Secret reference reads as SECRET_VALUE. */
function podEnvironment(container: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const variable of container.env ?? []) {
    if (variable.value !== undefined) env[variable.name] = variable.value;
    else if (variable.valueFrom?.secretKeyRef) env[variable.name] = SECRET_VALUE;
    else if (variable.valueFrom?.fieldRef) env[variable.name] = "from-the-downward-api";
  }
  return env;
}

function secretsReferenced(pod: PodSpec): string[] {
  const names: string[] = [];
  for (const container of pod.containers) {
    for (const variable of container.env ?? []) {
      const ref = variable.valueFrom?.secretKeyRef;
      if (ref) names.push(ref.name);
    }
    for (const source of container.envFrom ?? []) {
      if (source.secretRef) names.push(source.secretRef.name);
    }
  }
  for (const volume of pod.volumes ?? []) {
    if (volume.secret) names.push(volume.secret.secretName);
    for (const source of volume.projected?.sources ?? []) {
      if (source.secret) names.push(source.secret.name);
    }
  }
  return names;
}

/** The deploy config as a container with `env` reads it; throws with every problem. */
function validConfig(env: Record<string, string>, source: string): Config {
  const { config, problems } = parseConfigText(CONFIG_TEXT, env, source);
  if (config === undefined) {
    throw new Error(`${source}: ${problems.map((p) => `${p.path}: ${p.reason}`).join("; ")}`);
  }
  return config;
}

/** The config's services, ports and peers (they do not depend on the environment). */
const config = validConfig({}, "deploy/switchyard.yaml");

/** The names of the variables the config reads upstream keys from. */
function upstreamKeyVariables(): string[] {
  const raw = readOne<{ providers: Record<string, { api_key?: string }> }>(CONFIG_FILE);
  return Object.values(raw.providers).flatMap((provider) =>
    [...(provider.api_key ?? "").matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1] ?? ""),
  );
}

/** The container port a probe or Service targets (by name or number). */
function containerPort(container: Container, port: string | number | undefined): number {
  if (typeof port === "number") return port;
  const found = container.ports?.find((p) => p.name === port);
  if (found === undefined) throw new Error(`${container.name}: no port named ${port}`);
  return found.containerPort;
}

/** Whether a selector (either form) picks pods with these labels; an empty one picks nothing. */
function selects(selector: Labels | { matchLabels: Labels } | undefined, labels: Labels): boolean {
  const required =
    selector !== undefined && "matchLabels" in selector ? selector.matchLabels : selector;
  if (required === undefined || Object.keys(required).length === 0) return false;
  return Object.entries(required).every(([key, value]) => labels[key] === value);
}

function serviceNamed(name: string): Manifest {
  const found = byKind("Service").find((s) => s.metadata.name === name);
  if (found === undefined) throw new Error(`no Kubernetes Service named ${name}`);
  return found;
}

function urlPort(url: URL, fallback: number): number {
  return url.port === "" ? fallback : Number(url.port);
}

/** Compose's `${VAR}` / `${VAR:-default}` / `$$`, as `docker compose` reads them from the host. */
function composeInterpolate(text: string, host: Record<string, string>): string {
  return text.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g,
    (match: string, name: string | undefined, fallback: string | undefined) => {
      if (match === "$$" || name === undefined) return "$";
      const value = host[name];
      if (fallback !== undefined) return value === undefined || value === "" ? fallback : value;
      return value ?? "";
    },
  );
}

function composeEnvironment(
  service: ComposeService,
  host: Record<string, string>,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(service.environment ?? {})) {
    env[name] = composeInterpolate(String(value), host);
  }
  return env;
}

/** The Switchyard service a compose service starts, if it runs the image. */
function composeServiceRuns(name: string, service: ComposeService): ServiceName | undefined {
  if (service.image.split(":")[0] !== IMAGE) return undefined;
  return startedService(`compose ${name}`, service.entrypoint, service.command);
}

const composeServices = Object.entries(compose.services).flatMap(([name, service]) => {
  const runs = composeServiceRuns(name, service);
  return runs === undefined ? [] : [{ name, service, runs }];
});

function seconds(duration: string): number {
  const match = /^(?:(\d+)m)?(?:(\d+)s)?$/.exec(duration);
  if (match === null || duration === "") throw new Error(`unsupported duration '${duration}'`);
  return Number(match[1] ?? 0) * 60 + Number(match[2] ?? 0);
}

// ---------------------------------------------------------------------------------------------

describe("deploy/ files", () => {
  it("every YAML file under deploy/ parses, document by document", () => {
    const files = yamlFiles(DEPLOY);
    expect(files.length).toBeGreaterThanOrEqual(9);
    for (const file of files) expect(readDocuments(file).length).toBeGreaterThan(0);
  });

  it("kustomization.yaml lists every manifest in deploy/k8s except the example Secret", () => {
    const manifestsOnDisk = readdirSync(K8S).filter(
      (f) =>
        /\.ya?ml$/.test(f) &&
        !["kustomization.yaml", "switchyard.yaml", "secret.example.yaml"].includes(f),
    );
    expect([...kustomization.resources].sort()).toEqual(manifestsOnDisk.sort());
    expect(byKind("Secret")).toEqual([]);
  });

  it("Kubernetes reads the same config file as compose", () => {
    const generator = kustomization.configMapGenerator.find((g) => g.name === "switchyard-config");
    expect(generator?.files).toEqual(["switchyard.yaml"]);
    // kustomize reads files only below its own folder, so deploy/k8s keeps a copy.
    expect(readFileSync(join(K8S, "switchyard.yaml"), "utf8")).toBe(CONFIG_TEXT);
  });
});

describe("the config in Kubernetes", () => {
  it("passes Switchyard's validator with each pod's environment; only connectors get the key", () => {
    for (const { deployment, container, service } of workloads) {
      const config = validConfig(podEnvironment(container), deployment.metadata.name);
      const key = config.providers.openai?.api_key;
      expect(key, deployment.metadata.name).toBe(
        service === "connector" ? SECRET_VALUE : "unused-outside-connector",
      );
    }
  });

  it("gives upstream keys to connector pods only, from a Secret they cannot start without", () => {
    const keyVariables = upstreamKeyVariables();
    expect(keyVariables).toContain("OPENAI_API_KEY");
    for (const kind of ["Deployment", "StatefulSet"]) {
      for (const workload of byKind(kind)) {
        const pod = workload.spec?.template?.spec as PodSpec;
        const isConnector =
          workload.metadata.labels?.["app.kubernetes.io/component"] === "connector";
        if (!isConnector) {
          expect(secretsReferenced(pod), workload.metadata.name).toEqual([]);
          const names = pod.containers.flatMap((c) => (c.env ?? []).map((e) => e.name));
          for (const variable of keyVariables) expect(names).not.toContain(variable);
        }
      }
    }
    const connector = workloadOf("connector").container;
    const secretExample = readOne<Manifest>(join(K8S, "secret.example.yaml"));
    for (const variable of keyVariables) {
      const ref = connector.env?.find((e) => e.name === variable)?.valueFrom?.secretKeyRef;
      expect(ref?.name).toBe(secretExample.metadata.name);
      expect(ref?.optional).not.toBe(true);
      expect(Object.keys(secretExample.stringData ?? {})).toContain(ref?.key);
    }
  });

  it("mounts the generated ConfigMap where SWITCHYARD_CONFIG points", () => {
    for (const { deployment, container } of workloads) {
      const pod = deployment.spec?.template?.spec as PodSpec;
      const volume = pod.volumes?.find((v) => v.configMap?.name === "switchyard-config");
      const mount = container.volumeMounts?.find((m) => m.name === volume?.name);
      expect(mount, deployment.metadata.name).toBeDefined();
      expect(podEnvironment(container).SWITCHYARD_CONFIG).toBe(
        `${mount?.mountPath}/${kustomization.configMapGenerator[0]?.files[0]}`,
      );
    }
  });
});

describe("Kubernetes manifests", () => {
  it("run each Switchyard service in its own Deployment, connectors scaled by their HPA", () => {
    expect(workloads.map((w) => w.service).sort()).toEqual([...SERVICE_NAMES].sort());
    expect(workloadOf("ingress").deployment.spec?.replicas).toBe(2);
    expect(workloadOf("router").deployment.spec?.replicas).toBe(2);
    expect(workloadOf("prober").deployment.spec?.replicas).toBe(1);
    const connector = workloadOf("connector").deployment;
    // The HPA owns the count; a `replicas` here would reset it on every apply.
    expect(connector.spec?.replicas).toBeUndefined();
    const [hpa, ...others] = byKind("HorizontalPodAutoscaler");
    expect(others).toEqual([]);
    expect(hpa?.spec?.scaleTargetRef).toMatchObject({
      kind: "Deployment",
      name: connector.metadata.name,
    });
    expect(hpa?.spec?.minReplicas).toBe(3);
    expect(hpa?.spec?.metrics?.map((m) => m.resource?.name)).toEqual(["cpu"]);
  });

  it("listen, probe and get scraped on the port the config gives each service", () => {
    for (const { deployment, container, service } of workloads) {
      const port = config.server[service].port;
      const name = deployment.metadata.name;
      expect(
        container.ports?.map((p) => p.containerPort),
        name,
      ).toEqual([port]);
      for (const probe of [
        container.startupProbe,
        container.readinessProbe,
        container.livenessProbe,
      ]) {
        expect(containerPort(container, probe?.httpGet?.port), name).toBe(port);
      }
      expect(container.readinessProbe?.httpGet?.path, name).toBe("/readyz");
      expect(container.livenessProbe?.httpGet?.path, name).toBe("/healthz");
      const annotations = deployment.spec?.template?.metadata.annotations ?? {};
      expect(annotations["prometheus.io/scrape"], name).toBe("true");
      expect(annotations["prometheus.io/port"], name).toBe(String(port));
      expect(annotations["prometheus.io/path"], name).toBe("/metrics");
    }
  });

  it("expose each Service on its service's config port, selecting that service's pods", () => {
    for (const svc of byKind("Service")) {
      const targets = [
        ...workloads,
        ...byKind("StatefulSet").map((deployment) => ({ deployment, container: undefined })),
      ].filter((w) =>
        selects(svc.spec?.selector, w.deployment.spec?.template?.metadata.labels ?? {}),
      );
      expect(targets, `Service ${svc.metadata.name} selects one workload`).toHaveLength(1);
      const [target] = targets;
      const container =
        target?.container ?? (target?.deployment.spec?.template?.spec.containers[0] as Container);
      for (const port of svc.spec?.ports ?? []) {
        expect(containerPort(container, port.targetPort ?? port.port), svc.metadata.name).toBe(
          port.port,
        );
      }
      if (target && "service" in target) {
        const ports = svc.spec?.ports?.map((p) => p.port);
        expect(ports, svc.metadata.name).toEqual([config.server[target.service].port]);
      }
    }
  });

  it("reach the router and NATS at the peers the config names; connectors bind every interface", () => {
    const peer = (url: string, service: ServiceName) => {
      const parsed = new URL(url);
      const svc = serviceNamed(parsed.hostname);
      const labels = workloadOf(service).deployment.spec?.template?.metadata.labels ?? {};
      expect(selects(svc.spec?.selector, labels), url).toBe(true);
      expect(svc.spec?.ports?.map((p) => p.port)).toContain(urlPort(parsed, 80));
    };
    peer(config.peers.router, "router");
    // Connectors announce their pod addresses on NATS; any static entry must still resolve.
    for (const url of config.peers.connectors) peer(url, "connector");
    const connector = workloadOf("connector").container;
    expect(connector.args).toEqual(["start", "--service", "connector"]);
    expect(config.server.connector.host).toBe("0.0.0.0");

    const nats = new URL(config.nats?.url ?? "");
    const natsService = serviceNamed(nats.hostname);
    const [natsSet] = byKind("StatefulSet");
    expect(natsSet?.spec?.template?.spec.containers[0]?.args).toContain("--jetstream");
    expect(
      selects(natsService.spec?.selector, natsSet?.spec?.template?.metadata.labels ?? {}),
    ).toBe(true);
    expect(natsService.spec?.ports?.map((p) => p.port)).toContain(urlPort(nats, 4222));
  });

  it("give pods longer to stop than preStop plus the config's drain timeout", () => {
    for (const { deployment, container } of workloads) {
      const pod = deployment.spec?.template?.spec as PodSpec;
      const preStop = container.lifecycle?.preStop?.exec?.command ?? [];
      const preStopSeconds = preStop[0] === "sleep" ? Number(preStop[1]) : 0;
      expect(
        (pod.terminationGracePeriodSeconds ?? 30) * 1000,
        deployment.metadata.name,
      ).toBeGreaterThan(preStopSeconds * 1000 + config.server.drain_timeout_ms);
    }
  });

  it("keep a PodDisruptionBudget for every Deployment with more than one replica", () => {
    const budgets = byKind("PodDisruptionBudget");
    for (const { deployment, service } of workloads) {
      if (service === "prober") continue;
      const labels = deployment.spec?.template?.metadata.labels ?? {};
      const matching = budgets.filter((b) => selects(b.spec?.selector, labels));
      expect(matching, deployment.metadata.name).toHaveLength(1);
    }
  });

  it("run the image as the non-root user its Dockerfile sets", () => {
    const dockerfile = readFileSync(join(DEPLOY, "Dockerfile"), "utf8");
    const user = /^USER\s+(\d+):(\d+)\s*$/m.exec(dockerfile);
    expect(user, "USER uid:gid, numeric so runAsNonRoot can check it").not.toBeNull();
    for (const { deployment } of workloads) {
      const security = deployment.spec?.template?.spec.securityContext;
      expect(security?.runAsNonRoot).toBe(true);
      expect(security?.runAsUser).toBe(Number(user?.[1]));
      expect(security?.runAsGroup).toBe(Number(user?.[2]));
    }
  });

  const kubectl = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
  it.skipIf(kubectl.status !== 0)("build with kustomize into pods that mount the config", () => {
    const built = spawnSync("kubectl", ["kustomize", K8S], { encoding: "utf8" });
    expect(built.stderr).toBe("");
    expect(built.status).toBe(0);
    const documents = parseAllDocuments(built.stdout).map((d) => d.toJS() as Manifest);
    const configMap = documents.find((d) => d.kind === "ConfigMap");
    expect(configMap?.metadata.name).toMatch(/^switchyard-config-[a-z0-9]+$/);
    for (const deployment of documents.filter((d) => d.kind === "Deployment")) {
      const pod = deployment.spec?.template?.spec as PodSpec;
      expect(pod.volumes?.map((v) => v.configMap?.name)).toContain(configMap?.metadata.name);
      const tag = kustomization.images.find((i) => i.name === IMAGE)?.newTag;
      expect(pod.containers[0]?.image).toBe(`${IMAGE}:${tag}`);
    }
  });
});

describe("compose.yaml", () => {
  it("runs each Switchyard service once, and publishes only the ingress port", () => {
    expect(composeServices.map((s) => s.runs).sort()).toEqual([...SERVICE_NAMES].sort());
    for (const { name, service, runs } of composeServices) {
      expect(service.build).toEqual({ context: "..", dockerfile: "deploy/Dockerfile" });
      const ingressPort = config.server.ingress.port;
      expect(service.ports ?? [], name).toEqual(
        runs === "ingress" ? [`${ingressPort}:${ingressPort}`] : [],
      );
    }
    const published = Object.entries(compose.services).filter(([, s]) => s.ports !== undefined);
    expect(published.map(([name]) => name)).toEqual(["switchyard-ingress"]);
  });

  it("passes Switchyard's validator in every container, with or without a host key", () => {
    const hosts: Array<Record<string, string>> = [{}, { OPENAI_API_KEY: "sk-from-the-host" }];
    for (const host of hosts) {
      for (const { name, service, runs } of composeServices) {
        const env = composeEnvironment(service, host);
        const key = validConfig(env, `compose ${name}`).providers.openai?.api_key;
        const expected =
          runs === "connector"
            ? (host.OPENAI_API_KEY ?? "unused-outside-connector")
            : "unused-outside-connector";
        expect(key, name).toBe(expected);
        if (runs !== "connector") {
          for (const variable of upstreamKeyVariables())
            expect(Object.keys(env)).not.toContain(variable);
        }
      }
    }
  });

  it("mounts the config where SWITCHYARD_CONFIG points and names peers by service", () => {
    for (const { name, service } of composeServices) {
      const target = composeEnvironment(service, {}).SWITCHYARD_CONFIG;
      expect(service.volumes, name).toContain(`./switchyard.yaml:${target}:ro`);
    }
    const hosts = [config.peers.router, ...config.peers.connectors, config.nats?.url ?? ""].map(
      (url) => new URL(url).hostname,
    );
    for (const host of hosts) expect(Object.keys(compose.services)).toContain(host);
    const router = new URL(config.peers.router);
    expect(urlPort(router, 80)).toBe(config.server.router.port);
    for (const url of config.peers.connectors) {
      expect(urlPort(new URL(url), 80)).toBe(config.server.connector.port);
    }
    const nats = compose.services[new URL(config.nats?.url ?? "").hostname];
    expect(nats?.command).toContain("--jetstream");
  });

  it("health-checks each service's own /readyz and waits out the drain on stop", () => {
    for (const { name, service, runs } of composeServices) {
      const check = service.healthcheck?.test.join(" ") ?? "";
      const port = /http:\/\/127\.0\.0\.1:(\d+)\/readyz/.exec(check)?.[1];
      expect(Number(port), name).toBe(config.server[runs].port);
      expect(seconds(service.stop_grace_period ?? "10s") * 1000, name).toBeGreaterThan(
        config.server.drain_timeout_ms,
      );
    }
  });
});

describe("the image", () => {
  /** Top-level paths the Dockerfile copies from the build context. */
  function copiedPaths(): string[] {
    const dockerfile = readFileSync(join(DEPLOY, "Dockerfile"), "utf8");
    return [...dockerfile.matchAll(/^COPY\s+(?!--from)(.+)$/gm)].flatMap((m) => {
      const words = (m[1] ?? "").trim().split(/\s+/);
      return words.slice(0, -1);
    });
  }

  /** Patterns of .dockerignore that would drop a file, in the simple forms the file uses. */
  function ignored(path: string): boolean {
    const lines = readFileSync(join(ROOT, ".dockerignore"), "utf8")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    return lines.some((pattern) => {
      const glob = pattern.replace(/^\*\*\//, "");
      const regex = new RegExp(
        `^${glob.replace(/[.+^$()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*")}$`,
      );
      const anyDepth = pattern.startsWith("**/");
      const segments = path.split("/");
      return anyDepth
        ? segments.some((_, i) => regex.test(segments.slice(i).join("/")))
        : segments.some((_, i) => regex.test(segments.slice(0, i + 1).join("/")));
    });
  }

  /**
   * Every module the CLI needs at run time: the launcher's, and those bin/bundle.js bundles from
   * services/cli/main.ts (following relative imports, not type-only ones).
   */
  function runtimeGraph(): { files: string[]; packages: Set<string> } {
    const files = new Set<string>();
    const packages = new Set<string>();
    const visit = (file: string) => {
      if (files.has(file)) return;
      files.add(file);
      // TypeScript's own scanner: regexes trip over `import`/`from` inside strings and comments.
      // Type-only imports are listed too; they name packages the runtime has anyway.
      const { importedFiles } = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
      const specifiers = importedFiles.map((f) => f.fileName);
      for (const specifier of specifiers) {
        if (specifier.startsWith("node:")) continue;
        if (specifier.startsWith(".")) {
          const target = resolve(dirname(file), specifier);
          const ts = target.replace(/\.js$/, ".ts");
          visit(existsSync(target) ? target : ts);
        } else {
          const parts = specifier.split("/");
          packages.add(specifier.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] ?? ""));
        }
      }
    };
    visit(join(ROOT, "bin", "switchyard.js"));
    visit(join(ROOT, "services", "cli", "main.ts"));
    return { files: [...files].map((f) => relative(ROOT, f)), packages };
  }

  it("holds every module the CLI loads", () => {
    const copied = copiedPaths();
    expect(copied).toEqual(expect.arrayContaining(["bin", "services", "gen", "package.json"]));
    const { files } = runtimeGraph();
    expect(files).toContain("services/cli/main.ts");
    expect(files).toContain("services/fabric.ts");
    for (const file of files) {
      expect(existsSync(join(ROOT, file)), file).toBe(true);
      const top = file.split("/")[0] ?? "";
      expect(copied, `${file} is copied into the image`).toContain(top);
      expect(ignored(file), `${file} is not in .dockerignore`).toBe(false);
    }
  });

  it("installs every package the CLI loads with `npm ci --omit=dev`, esbuild included", () => {
    const manifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
      dependencies: Record<string, string>;
    };
    const { packages } = runtimeGraph();
    expect(packages).toContain("esbuild");
    for (const name of packages) expect(Object.keys(manifest.dependencies), name).toContain(name);
  });
});
