import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: [
      "services/**/*.test.ts",
      "test/**/*.test.ts",
      "deploy/**/*.test.ts",
      "bench/**/*.test.ts",
    ],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
    // Two cores: end-to-end files start several processes each, so keep files from piling up.
    maxWorkers: 2,
  },
});
