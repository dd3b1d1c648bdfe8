/**
 * Running the built CLI (`node dist/invarx.js`) from tests. `npm test` builds first; when
 * dist is missing or older than the sources (a bare `npx vitest run`), the first test file
 * to need it builds it, under a lock directory so parallel test files never read a
 * half-written bundle.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { ROOT } from '../helpers';

export const CLI = join(ROOT, 'dist', 'invarx.js');
const SOURCE_DIRS = ['core', 'search', 'kernels', 'daemon'];

function newestSource(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newestSource(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

function fresh(): boolean {
  if (!existsSync(CLI)) return false;
  const built = statSync(CLI).mtimeMs;
  return SOURCE_DIRS.every((d) => !existsSync(join(ROOT, d)) || newestSource(join(ROOT, d)) <= built);
}

export function ensureBuilt(): void {
  if (fresh()) return;
  mkdirSync(join(ROOT, 'dist'), { recursive: true });
  const lock = join(ROOT, 'dist', '.build-lock');
  const start = Date.now();
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // Another test file is building; a lock older than a minute is left from a crash.
      if (Date.now() - statSync(lock, { throwIfNoEntry: false })!.mtimeMs > 60_000) rmSync(lock, { recursive: true, force: true });
      if (Date.now() - start > 120_000) throw new Error('timed out waiting for the dist build lock');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
  try {
    if (!fresh()) execFileSync(process.execPath, [join(ROOT, 'scripts', 'build.mjs')], { cwd: ROOT, stdio: 'pipe' });
  } catch (e) {
    // A source tree that does not build fails `npm test` at its build step anyway; here, with
    // an older bundle at hand, test that one rather than fail for someone else's edit.
    if (!existsSync(CLI)) throw e;
    console.warn(`build failed, testing the existing ${CLI}:\n${String((e as { stderr?: unknown }).stderr ?? e)}`);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function invarx(...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A user mistake: exit 1, nothing on stdout, one `invarx: …` line on stderr, no stack trace. */
export function expectUserError(r: CliResult, message: RegExp): void {
  expect(r.code).toBe(1);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^invarx: /);
  expect(lines[0]).toMatch(message);
}
