/**
 * Every test's temporary files under one directory, removed when the run ends: tests,
 * the daemons and workers they spawn, and the CLI runs they start all take their scratch
 * space from os.tmpdir(), which follows TMPDIR, so a test that forgets to clean up (or is
 * killed mid-way) leaves nothing behind in the system's /tmp.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const before = process.env.TMPDIR;
  const root = mkdtempSync(join(tmpdir(), 'invarx-tests-'));
  process.env.TMPDIR = root;
  return () => {
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
    try {
      rmSync(root, { recursive: true, force: true });
    } catch (e) {
      // (a small-disk test's tmpfs left mounted after a crash is busy): say so, fail nothing
      console.warn(`could not remove the tests' temporary directory ${root}: ${(e as Error).message}`);
    }
  };
}
