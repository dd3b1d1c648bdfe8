// Bundles the TypeScript entry points into dist/ with esbuild (dependencies stay external).
import { build } from 'esbuild';
import { existsSync } from 'node:fs';

const entries = {
  invarx: 'daemon/cli.ts',
  worker: 'search/worker.ts',
  bench: 'bench/index.ts',
};
const entryPoints = Object.fromEntries(Object.entries(entries).filter(([, src]) => existsSync(src)));

await build({
  entryPoints,
  outdir: 'dist',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  packages: 'external',
  sourcemap: true,
  logLevel: 'warning',
  banner: { js: '#!/usr/bin/env node' },
});
