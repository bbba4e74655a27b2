/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The build goes into the Python package, which serves it at `/` (src/cloudmfa/api/web.py).
const outDir = fileURLToPath(new URL("../src/cloudmfa/web_dist", import.meta.url));

export default defineConfig({
  plugins: [react()],
  build: { outDir, emptyOutDir: true, assetsDir: "assets", sourcemap: false },
  // `vite` (the dev server) sends API calls to a `cloudmfa serve` on port 8000.
  server: {
    proxy: Object.fromEntries(
      ["/api", "/.well-known", "/openapi.json"].map((p) => [p, "http://localhost:8000"]),
    ),
  },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    css: false,
    // jsdom renders a whole Mantine page slowly on two shared cores.
    testTimeout: 30_000,
  },
});
