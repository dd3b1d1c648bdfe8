/**
 * Where the built CLI is, for the processes the daemon and queue workers start: its own
 * module, so a command that only needs the path does not load the daemon's server code.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fail } from '../core/errors';

/** dist/invarx.js: beside this bundle's chunk, or (when running from sources) the built one. */
export function cliScript(): string {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return join(dirname(here), 'invarx.js');
  for (let dir = dirname(here); ; dir = dirname(dir)) {
    const p = join(dir, 'dist', 'invarx.js');
    if (existsSync(p)) return p;
    if (dirname(dir) === dir) fail('no-build', 'dist/invarx.js not found: run `npm run build`');
  }
}
