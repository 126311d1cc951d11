import { type SpawnSyncReturns, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// bin/switchyard.js runs the CLI from a bundle that bin/bundle.js builds from the TypeScript
// sources. Each test copies bin/ into a package of its own under the temp dir, so it can edit
// sources and empty caches without touching the repository's.
const REPO = fileURLToPath(new URL("..", import.meta.url));
const UID = process.getuid?.() ?? "user";

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "switchyard-launcher-"));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A package root holding a copy of bin/ and links to the repository's installed packages. */
function packageRoot(name: string, packages: string[]): string {
  const root = join(scratch, name);
  mkdirSync(join(root, "bin"), { recursive: true });
  for (const file of ["switchyard.js", "bundle.js"]) {
    copyFileSync(join(REPO, "bin", file), join(root, "bin", file));
  }
  mkdirSync(join(root, "node_modules"));
  for (const pkg of packages) {
    mkdirSync(join(root, "node_modules", pkg, ".."), { recursive: true });
    symlinkSync(join(REPO, "node_modules", pkg), join(root, "node_modules", pkg));
  }
  return root;
}

/** A small CLI in place of the real one: it prints, through a package, what it was built from. */
function toyPackage(name: string): string {
  const root = packageRoot(name, ["esbuild", "yaml"]);
  mkdirSync(join(root, "services", "cli"), { recursive: true });
  mkdirSync(join(root, "services", "lib"), { recursive: true });
  writeFileSync(
    join(root, "services", "cli", "main.ts"),
    `import { stringify } from "yaml";
import { greeting } from "../lib/greeting.js";

if (process.argv[2] === "throw") throw new Error("thrown in main.ts");
const bundle: string = import.meta.url;
process.stdout.write(stringify({ greeting, bundle }));
`,
  );
  setGreeting(root, "v1");
  return root;
}

function setGreeting(root: string, text: string): void {
  writeFileSync(
    join(root, "services", "lib", "greeting.ts"),
    `export const greeting: string = "${text}";\n`,
  );
}

function run(root: string, args: string[] = [], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [join(root, "bin", "switchyard.js"), ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
}

/** What the toy CLI printed: its greeting and the file URL of the bundle that ran. */
function printed(r: SpawnSyncReturns<string>): { greeting: string; bundle: string } {
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  const [, greeting = ""] = /^greeting: (.*)$/m.exec(r.stdout) ?? [];
  const [, bundle = ""] = /^bundle: (.*)$/m.exec(r.stdout) ?? [];
  return { greeting, bundle: fileURLToPath(bundle) };
}

function cacheOf(root: string): string {
  return join(root, "node_modules", ".cache", "switchyard");
}

describe("bin/switchyard.js", () => {
  it("builds the real CLI into an empty cache, then runs it with no compiler (nor undici) loaded", () => {
    const installed = readdirSync(join(REPO, "node_modules")).filter((n) => n !== ".cache");
    const root = packageRoot("real", installed);
    for (const name of ["services", "gen", "tsconfig.json", "package.json"]) {
      symlinkSync(join(REPO, name), join(root, name));
    }
    const env = { SWITCHYARD_CONFIG: "", NODE_DEBUG: "esm" };

    // NODE_DEBUG=esm names every ES module and CommonJS file the loader translates.
    const loaded = (r: SpawnSyncReturns<string>) =>
      [...r.stderr.matchAll(/Translating \w+ (file:\/\/\S+)/g)].map((m) => m[1] ?? "");
    const first = run(root, ["check-config"], env);
    expect(first.stdout, first.stderr.slice(-2000)).toBe("built-in demo: ok\n");
    expect(first.status).toBe(0);
    const built = readdirSync(cacheOf(root)).sort();
    expect(built).toEqual([expect.stringMatching(/^[0-9a-f]+\.mjs$/), expect.any(String)]);
    expect(built[1]).toBe(`${built[0]}.map`);
    // The start that built the bundle ran the compiler in a child: esbuild's heap and the malloc
    // arenas its work left would otherwise stay with the process for its whole life.
    expect(loaded(first)).toContain(`file://${join(cacheOf(root), built[0] ?? "")}`);
    expect(loaded(first).filter((url) => /\/node_modules\/(tsx|esbuild)\//.test(url))).toEqual([]);

    const second = run(root, ["check-config"], env);
    expect(second.stdout).toBe("built-in demo: ok\n");
    expect(loaded(second)).toContain(`file://${join(cacheOf(root), built[0] ?? "")}`);
    expect(loaded(second).filter((url) => url.endsWith(".ts"))).toEqual([]);
    expect(loaded(second).filter((url) => /\/node_modules\/(tsx|esbuild)\//.test(url))).toEqual([]);
    // undici is imported by a connector's first upstream call, not by the bundle at start: the
    // router, prober and ingress processes never load it (~5 MB of heap, ~7 MB of RSS each).
    expect(loaded(second).filter((url) => /\/node_modules\/undici\//.test(url))).toEqual([]);
  });

  it("rebuilds after a source edit and runs the new code", () => {
    const root = toyPackage("edit");
    const before = printed(run(root));
    expect(before.greeting).toBe("v1");
    expect(printed(run(root))).toEqual(before);

    setGreeting(root, "v2");
    const after = printed(run(root));
    expect(after.greeting).toBe("v2");
    expect(after.bundle).not.toBe(before.bundle);
  });

  it("starts from a bundle built beforehand (`node bin/bundle.js`) and writes nothing", () => {
    const root = toyPackage("prebuilt");
    const build = spawnSync(process.execPath, [join(root, "bin", "bundle.js")], {
      encoding: "utf8",
    });
    expect(build.status, build.stderr).toBe(0);
    const bundle = build.stdout.trim();
    const listing = readdirSync(cacheOf(root));
    const modified = statSync(cacheOf(root)).mtimeMs;

    expect(printed(run(root)).bundle).toBe(bundle);
    expect(readdirSync(cacheOf(root))).toEqual(listing);
    expect(statSync(cacheOf(root)).mtimeMs).toBe(modified);
  });

  it("runs every process that starts at once on an empty cache, leaving one bundle", async () => {
    const root = toyPackage("together");
    const children = Array.from({ length: 6 }, () => {
      const child = spawn(process.execPath, [join(root, "bin", "switchyard.js")], { cwd: root });
      let out = "";
      child.stdout.on("data", (b: Buffer) => {
        out += b.toString();
      });
      child.stderr.on("data", (b: Buffer) => {
        out += b.toString();
      });
      return once(child, "exit").then(([code]) => ({ code, out }));
    });
    for (const { code, out } of await Promise.all(children)) {
      expect(out).toContain("greeting: v1");
      expect(code).toBe(0);
    }
    const files = readdirSync(cacheOf(root)).sort();
    expect(files).toHaveLength(2);
    expect(files[1]).toBe(`${files[0]}.map`);
  });

  it("builds in a private directory under TMPDIR when node_modules/.cache is not writable", () => {
    const root = toyPackage("read-only");
    writeFileSync(join(root, "node_modules", ".cache"), "not a directory");
    const tmp = mkdtempSync(join(scratch, "tmp-"));

    // The bundle imports the yaml package by URL: nothing above TMPDIR could resolve its name.
    const { greeting, bundle } = printed(run(root, [], { TMPDIR: tmp }));
    expect(greeting).toBe("v1");
    const dir = join(tmp, `switchyard-${UID}`);
    expect(bundle.startsWith(`${dir}/`)).toBe(true);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });

  it("never loads a bundle from a temp directory that other users can write to", () => {
    const root = toyPackage("planted");
    writeFileSync(join(root, "node_modules", ".cache"), "not a directory");
    const own = mkdtempSync(join(scratch, "tmp-"));
    const name =
      printed(run(root, [], { TMPDIR: own }))
        .bundle.split("/")
        .pop() ?? "";

    const shared = mkdtempSync(join(scratch, "tmp-"));
    const dir = join(shared, `switchyard-${UID}`);
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    writeFileSync(join(dir, name), 'process.stdout.write("planted");\n');

    const r = run(root, [], { TMPDIR: shared });
    expect(r.stdout).not.toContain("planted");
    expect(r.stderr).toContain("switchyard: cannot build the CLI from its sources");
    expect(r.status).toBe(1);
    expect(existsSync(join(dir, `${name}.map`))).toBe(false);
  });

  it("reports errors with stack traces that name the TypeScript source, with source maps on", () => {
    const root = toyPackage("stack");
    const r = run(root, ["throw"], { NODE_OPTIONS: "--enable-source-maps" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("thrown in main.ts");
    expect(r.stderr).toContain(`${join(root, "services", "cli", "main.ts")}:4:`);
    // Off by default (the map costs memory): the trace names the bundle.
    const plain = run(root, ["throw"]);
    expect(plain.status).toBe(1);
    expect(plain.stderr).toContain("thrown in main.ts");
    expect(plain.stderr).not.toContain(`${join(root, "services", "cli", "main.ts")}:4:`);
    expect(plain.stderr).toMatch(/\.mjs:\d+:\d+/);
  });
});
