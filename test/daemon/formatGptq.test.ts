/**
 * A search on the GPTQ base of a ggml format submitted to the daemon: the job runs the
 * config `invarx run` runs, and its export's model.gguf is byte for byte what
 * `invarx run --out` writes for the same config and seed.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DAEMON_CLI, DaemonProc, MODEL_PATH, ROOT, TUNING, ensureBuilt, submit, tmpHome, waitState } from './harness';

let daemon: DaemonProc | undefined;
const home = tmpHome();
const scratch = mkdtempSync(join(tmpdir(), 'ixg-'));

beforeAll(async () => {
  ensureBuilt();
  daemon = await DaemonProc.start(home);
});

afterAll(async () => {
  if (daemon?.alive()) await daemon.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
  rmSync(scratch, { recursive: true, force: true });
});

describe('submit --base gptq --format q4_0', () => {
  it('exports the model.gguf `invarx run --out` writes', async () => {
    const job = await submit(home, { model: MODEL_PATH, bits: 4, group: 32, format: 'q4_0', base: 'gptq', steps: 4, patience: 0, seed: 2 });
    expect((await waitState(home, job, ['done', 'failed'], 120_000)).state).toBe('done');
    const ref = join(scratch, 'run');
    const run = spawnSync(process.execPath, [DAEMON_CLI, 'run', '--model', MODEL_PATH, '--format', 'q4_0', '--base', 'gptq', '--steps', '4', '--patience', '0', '--seed', '2', '--tuning', JSON.stringify(TUNING), '--out', ref], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    expect(run.status, run.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(join(ref, 'export.json'), 'utf8'));
    expect(manifest.gguf.format).toBe('q4_0');
    expect(readFileSync(join(home, 'jobs', job, 'export', 'model.gguf')).equals(readFileSync(join(ref, 'model.gguf')))).toBe(true);
  }, 240_000);
});
