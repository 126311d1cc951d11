// @ts-check
/**
 * Bundles the CLI's TypeScript sources into one plain ESM file, so a `switchyard` process runs
 * JavaScript with no compiler (and no loader thread) in it, while a fresh clone still needs no
 * build step: the first start builds the bundle, later starts reuse it until a source changes.
 *
 * esbuild strips the types and joins services/ and gen/ into one file; packages stay outside it.
 * The file is named by a hash of its inputs' paths, sizes and mtimes, and lives in
 * node_modules/.cache/switchyard/, or in a private directory under the system temp dir when that
 * is read-only (the container image runs with a read-only root and a writable /tmp).
 *
 * A start that finds no bundle builds it in a child process: esbuild in the gateway's own process
 * left its heap and malloc arenas behind, and that process then idled 8–12 MB above one that found
 * the bundle ready (83–87 MB against 75, three starts each on an empty cache).
 *
 * Run directly (`node bin/bundle.js`), it builds the bundle and prints its path: the image does
 * that while it is built, so a container finds the bundle ready.
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const ENTRY = join(ROOT, "services", "cli", "main.ts");
/** Directories whose files (tests aside) may end up in the bundle. */
const SOURCE_DIRS = ["services", "gen"];
/** Files that change how the sources are bundled: compiler settings, this module, the packages. */
const BUILD_FILES = [
  "tsconfig.json",
  "package.json",
  "bin/bundle.js",
  "node_modules/.package-lock.json",
];
/** Bundles of other sources (an earlier edit, another checkout) are removed after this long. */
const STALE_MS = 10 * 60_000;

/**
 * The path of the CLI bundle for the sources as they are now, built first when no cache has it.
 * @returns {Promise<string>}
 */
export async function cliBundle() {
  return cached(sourceKey()) ?? (await buildInChild());
}

/**
 * The bundle of these sources, if a cache directory this process trusts holds it.
 * @param {string} key
 * @returns {string | undefined}
 */
function cached(key) {
  for (const dir of cacheDirs()) {
    const file = join(dir, `${key}.mjs`);
    if (existsSync(file) && trusted(dir)) return file;
  }
  return undefined;
}

/**
 * Runs this module as a child (`node bin/bundle.js`), which builds the bundle and prints its path;
 * its error message, if it fails, becomes this promise's.
 * @returns {Promise<string>}
 */
function buildInChild() {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (text) => {
      out += text;
    });
    child.stderr.setEncoding("utf8").on("data", (text) => {
      err += text;
    });
    child.on("error", reject);
    child.on("close", (code) => {
      const file = out.trim();
      if (code === 0 && existsSync(file) && trusted(dirname(file))) resolve(file);
      else reject(new Error(err.trim() || `the bundler exited with code ${code}`));
    });
  });
}

/**
 * Builds the bundle in this process, unless another process has just built it.
 * @returns {Promise<string>}
 */
async function buildHere() {
  const key = sourceKey();
  const ready = cached(key);
  if (ready !== undefined) return ready;
  const dirs = cacheDirs();
  const dir = dirs.find(writable);
  if (dir === undefined) {
    throw new Error(`no private, writable directory for the bundle (tried ${dirs.join(", ")})`);
  }
  const file = join(dir, `${key}.mjs`);
  await build(file);
  prune(dir, key);
  return file;
}

function cacheDirs() {
  return [
    join(ROOT, "node_modules", ".cache", "switchyard"),
    join(tmpdir(), `switchyard-${process.getuid?.() ?? "user"}`),
  ];
}

/** A hash of every input's path, size and mtime: an edit (or a git checkout) changes it. */
function sourceKey() {
  const files = [...BUILD_FILES];
  for (const dir of SOURCE_DIRS.filter((d) => existsSync(join(ROOT, d)))) {
    for (const name of readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })) {
      if (!name.endsWith(".test.ts")) files.push(join(dir, name));
    }
  }
  const hash = createHash("sha256").update(`${ROOT}\n`);
  for (const file of files.sort()) {
    const stat = statSync(join(ROOT, file), { bigint: true, throwIfNoEntry: false });
    if (stat === undefined || stat.isDirectory()) continue;
    hash.update(`${file}\0${stat.size}\0${stat.mtimeNs}\n`);
  }
  return hash.digest("hex").slice(0, 20);
}

/**
 * Writes the bundle and its source map under temporary names, then renames them into place, the
 * map first: processes starting together may all build, and none reads a half-written file.
 * @param {string} file
 */
async function build(file) {
  const esbuild = await import("esbuild");
  try {
    const { outputFiles } = await esbuild.build({
      entryPoints: [ENTRY],
      absWorkingDir: ROOT,
      outfile: file,
      bundle: true,
      plugins: [packagesByUrl],
      platform: "node",
      format: "esm",
      target: "node20",
      // Stack traces name the .ts files; they are on disk, so the map need not carry them.
      sourcemap: "linked",
      sourcesContent: false,
      write: false,
      logLevel: "silent",
    });
    const suffix = `.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
    const mapFirst = outputFiles.sort(
      (a, b) => Number(b.path.endsWith(".map")) - Number(a.path.endsWith(".map")),
    );
    for (const output of mapFirst) writeFileSync(output.path + suffix, output.contents);
    for (const output of mapFirst) renameSync(output.path + suffix, output.path);
  } finally {
    // esbuild's service process would otherwise stay alive beside the gateway.
    await esbuild.stop();
  }
}

/**
 * Leaves packages and Node built-ins out of the bundle, each imported by the URL it resolves to
 * from here: a bundle under the temp dir has no node_modules above it to find them by name.
 * @type {import("esbuild").Plugin}
 */
const packagesByUrl = {
  name: "packages-by-url",
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, ({ path }) => ({
      path: import.meta.resolve(path),
      external: true,
    }));
  },
};

/**
 * Removes other keys' bundles and leftover temporary files once they are old enough that no
 * starting process can still be about to load them.
 * @param {string} dir
 * @param {string} key
 */
function prune(dir, key) {
  const now = Date.now();
  for (const name of readdirSync(dir)) {
    if (name.startsWith(`${key}.`) && !name.endsWith(".tmp")) continue;
    const path = join(dir, name);
    const stat = statSync(path, { throwIfNoEntry: false });
    if (stat !== undefined && now - stat.mtimeMs > STALE_MS) rmSync(path, { force: true });
  }
}

/**
 * Whether the directory exists or can be made, is trusted, and takes a new file.
 * @param {string} dir
 */
function writable(dir) {
  try {
    mkdirSync(dir, { recursive: true, ...(inPackage(dir) ? {} : { mode: 0o700 }) });
    if (!trusted(dir)) return false;
    const probe = join(dir, `.probe.${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
    writeFileSync(probe, "");
    rmSync(probe);
    return true;
  } catch {
    return false;
  }
}

/**
 * Code is loaded from a directory outside the package only if this user owns it and nobody else
 * can write to it: otherwise another local user could plant a bundle there.
 * @param {string} dir
 */
function trusted(dir) {
  if (inPackage(dir)) return true;
  const stat = statSync(dir, { throwIfNoEntry: false });
  const uid = process.getuid?.();
  return (
    stat?.isDirectory() && (uid === undefined || stat.uid === uid) && (stat.mode & 0o022) === 0
  );
}

/** @param {string} dir */
function inPackage(dir) {
  return dir.startsWith(ROOT);
}

const main = process.argv[1];
if (main !== undefined && import.meta.url === pathToFileURL(realpathSync(main)).href) {
  try {
    process.stdout.write(`${await buildHere()}\n`);
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
