/**
 * A daemon whose home fills up: only the writes that hit the full disk fail. Logging
 * degrades (one warning on stderr), submits get a typed error, a job whose export cannot
 * be written fails with a clear reason and leaves no temp files, and a daemon started on
 * the full disk starts and serves. Run on a 2 MiB tmpfs where one can be mounted, and
 * always with injected ENOSPC (test/daemon/faults.mjs).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../../daemon/scheduler';
import { smallDiskDaemons } from './disk';
import { call, ensureBuilt, jobConfig, status, submit, waitFor, waitState } from './harness';

const { disk: newDisk, start } = smallDiskDaemons();

function canMountTmpfs(): boolean {
  if (process.platform !== 'linux' || process.env.INVARX_TEST_NO_TMPFS === '1') return false;
  const dir = mkdtempSync(join(tmpdir(), 'ixm-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'ignore' });
    execFileSync('umount', [dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

beforeAll(() => ensureBuilt());


/** The error reply of a request that must fail. */
async function callError(home: string, verb: string, args: Record<string, unknown>): Promise<{ code: string; message: string }> {
  try {
    await call(home, verb, args);
  } catch (e) {
    const r = (e as { reply?: { error: { code: string; message: string } } }).reply;
    if (r) return r.error;
    throw e;
  }
  throw new Error(`${verb} succeeded on a full disk`);
}

const modes = canMountTmpfs() ? (['tmpfs', 'injected'] as const) : (['injected'] as const);

describe.each(modes)('full disk (%s)', (mode) => {
  it('fails only the writes that hit it; the daemon keeps serving, and starts on the full disk', async () => {
    const disk = newDisk({ injected: mode === 'injected' });
    expect(disk.mode).toBe(mode);
    const home = disk.home;
    let d = await start(disk);
    const id = await submit(home, jobConfig({ steps: 40 }));
    await waitFor('the job to take a step', async () => (await status(home, id)).step >= 1);

    disk.fill();
    for (let i = 0; i < 3; i++) {
      const err = await callError(home, 'submit', { config: jobConfig() });
      expect(err.code).toBe('no-space');
      expect(err.message).toMatch(/no space left/);
    }
    // Its checkpoints fail and then its export (3.4 MB): the job fails, nothing else does.
    const v = await waitState(home, id, ['done', 'failed'], 90_000);
    expect(v.state).toBe('failed');
    expect(v.error?.code).toBe('no-space');
    expect(v.error?.message).toMatch(/no space left/);
    expect(d.alive()).toBe(true);
    expect(((await call(home, 'list')) as JobView[]).map((j) => j.id)).toEqual([id]);

    // Nothing half-written is left behind: no export.tmp-*, no state temp files, no half-made job.
    const jobDir = join(home, 'jobs', id);
    expect(readdirSync(jobDir).filter((n) => n.startsWith('export') || n.endsWith('.tmp'))).toEqual([]);
    expect(readdirSync(join(home, 'jobs')).filter((n) => n !== id)).toEqual([]);
    // Logging degraded with one warning, not one per line.
    expect(d.stderr.match(/cannot write \S*daemon\.log/g)?.length).toBe(1);

    // A daemon started on the full disk starts (its first log line cannot be written) and serves.
    await d.kill('SIGKILL');
    d = await start(disk);
    expect(((await call(home, 'list')) as JobView[]).map((j) => j.id)).toEqual([id]);
    expect((await callError(home, 'submit', { config: jobConfig() })).code).toBe('no-space');
    expect(d.alive()).toBe(true);

    // Space again: new jobs are accepted.
    disk.free();
    const id2 = await submit(home, jobConfig({ steps: 4 }));
    expect((await status(home, id2)).state).toMatch(/queued|running/);
    await d.kill('SIGKILL');
  });
});
