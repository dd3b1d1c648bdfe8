// Bundles the TypeScript entry points into dist/ with esbuild (dependencies stay external).
// Code splitting: what a command loads with import() (the search, its kernels, the queue's
// client) is a chunk of its own in dist/, read only by the commands that use it.
import { build } from 'esbuild';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';

const entries = {
  invarx: 'daemon/cli.ts',
  worker: 'search/worker.ts',
  bench: 'bench/index.ts',
};
const entryPoints = Object.fromEntries(Object.entries(entries).filter(([, src]) => existsSync(src)));

const result = await build({
  entryPoints,
  outdir: 'dist',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  splitting: true,
  packages: 'external',
  sourcemap: true,
  logLevel: 'warning',
  banner: { js: '#!/usr/bin/env node' },
  metafile: true,
});

// A chunk's name (name-HASH.js) changes with its contents: remove the chunks this build did
// not write, so old ones do not pile up (dist/ itself stays: tests may be reading it while
// one rebuilds).
const written = new Set(Object.keys(result.metafile.outputs).map((p) => relative('dist', p)));
for (const name of readdirSync('dist')) {
  if (/-[A-Z0-9]{8}\.js(\.map)?$/.test(name) && !written.has(name)) rmSync(join('dist', name), { force: true });
}
