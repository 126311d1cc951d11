#!/usr/bin/env node
// Runs the TypeScript sources directly (tsx compiles them on load), so a fresh clone needs no
// build step: `npm ci && npx switchyard start`.
import { register } from "tsx/esm/api";

register();
await import("../services/cli/main.ts");
