#!/usr/bin/env node
// Runs the CLI from a plain-JavaScript bundle of the TypeScript sources, which bin/bundle.js
// builds on the first start and again after an edit: a fresh clone needs no build step
// (`npm ci && npx switchyard start`), and no compiler stays loaded in a running process.
import { pathToFileURL } from "node:url";
import { cliBundle } from "./bundle.js";

let bundle;
try {
  bundle = await cliBundle();
} catch (err) {
  const reason = err instanceof Error ? err.message : String(err);
  process.stderr.write(`switchyard: cannot build the CLI from its sources: ${reason}\n`);
  process.exit(1);
}
// Stack traces name the bundle's lines unless Node is asked for source maps
// (NODE_OPTIONS=--enable-source-maps): they would name the .ts sources, at ~5 MB of RSS for the
// loaded map and a source-map lookup for every stack trace an error prints.
await import(pathToFileURL(bundle).href);
