/**
 * Crash safety end to end, on a real daemon process and the real search over the shipped
 * model: SIGKILL at random moments (and one SIGTERM), restart, and the finished job's
 * export is byte-identical to an uninterrupted daemon run and to what `invarx run --out`
 * computes in-process; a corrupt newest checkpoint falls back to the previous one with a
 * warning; checkpoint writes that fail leave the job running and say so in its status.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runConfigFromOptions } from '../../daemon/commands/runOptions';
import { createSearchJob } from '../../search/run';
import { recommendedTuning } from '../../search/config';
import { DaemonProc, TUNING, call, ensureBuilt, jobConfig, jobLog, readDir, sleep, status, submit, tmpHome, waitFor, waitState } from './harness';
import { MODEL_PATH, SEARCH_EXPORT_FILES } from '../helpers';

const STEPS = 60;
const CONFIG = jobConfig({ steps: STEPS });
/** The tests' small tuning with 95 rows a sequence: enough calibration rows for the final norm's tuning, so the kills land before that pass and the resumed job runs it. */
const RESUME_TUNING = { ...TUNING, seqTokens: 96 };
const ARGS = ['--checkpoint-steps', '1'];
const daemons: DaemonProc[] = [];

async function startDaemon(home: string, args = ARGS): Promise<DaemonProc> {
  const d = await DaemonProc.start(home, args);
  daemons.push(d);
  return d;
}

/** The uninterrupted run, in a daemon of its own (started once, shared by the tests). */
let reference: Promise<Map<string, Buffer>>;

beforeAll(() => {
  ensureBuilt();
  reference = (async () => {
    const home = tmpHome();
    await startDaemon(home);
    const id = await submit(home, CONFIG, RESUME_TUNING);
    const v = await waitState(home, id, ['done', 'failed'], 90_000);
    expect(v.error).toBeNull();
    return readDir(join(home, 'jobs', id, 'export'));
  })();
  reference.catch(() => undefined);
});

afterAll(async () => {
  for (const d of daemons) if (d.alive()) await d.kill('SIGKILL');
});

function expectSameExport(got: Map<string, Buffer>, want: Map<string, Buffer>): void {
  expect([...got.keys()]).toEqual(SEARCH_EXPORT_FILES);
  expect([...got.keys()]).toEqual([...want.keys()]);
  for (const [name, bytes] of want) expect(got.get(name)!.equals(bytes), `${name} differs`).toBe(true);
}

describe('daemon crash safety', () => {
  it('SIGKILL at random points, restart each time: the export is byte-identical to an uninterrupted run', async () => {
    const seed = Number(process.env.INVARX_TEST_SEED ?? Date.now() % 1e6);
    // Where to interrupt: one kill at a random moment early on (job start, token sampling,
    // scale initialisation), then kills once the job passes random steps (plus jitter, to
    // land anywhere in a step, a checkpoint write or a stint boundary), then a SIGTERM.
    const [plan] = fc.sample(
      fc.record({
        earlyMs: fc.integer({ min: 0, max: 1500 }),
        steps: fc.uniqueArray(fc.integer({ min: 2, max: STEPS - 6 }), { minLength: 3, maxLength: 3 }).map((a) => a.sort((x, y) => x - y)),
        jitterMs: fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 4, maxLength: 4 }),
        termAt: fc.integer({ min: 4, max: STEPS - 4 }),
      }),
      { seed, numRuns: 1 },
    );
    const where = `seed ${seed}, plan ${JSON.stringify(plan)}`;
    const home = tmpHome();
    const resumedSteps = () => jobLog(home, id).filter((l) => l.msg === 'resumed from checkpoint').map((l) => l.step as number);
    let d = await startDaemon(home);
    const id = await submit(home, CONFIG, RESUME_TUNING);

    const restart = async () => {
      d = await startDaemon(home);
    };
    // 1. Early.
    await sleep(plan.earlyMs);
    await d.kill('SIGKILL');
    await restart();
    // 2. At random steps.
    let kills = 1;
    for (let i = 0; i < plan.steps.length; i++) {
      const v = await waitFor('the job to reach the kill step', async () => {
        const s = await status(home, id);
        return s.step >= plan.steps[i] || s.state === 'done' ? s : undefined;
      }, 60_000, 5);
      if (v.state === 'done') break;
      await sleep(plan.jitterMs[i]);
      await d.kill('SIGKILL');
      kills++;
      // The socket file outlives a SIGKILLed daemon: the next start must clear it.
      expect(existsSync(join(home, 'daemon.sock'))).toBe(true);
      const before = resumedSteps().length;
      await restart();
      // A checkpoint after every step, inside a stint too: the kill cost at most the step in
      // progress (step v.step had ended, so the checkpoint of the one before it was written).
      const from = await waitFor('the resume', () => {
        const r = resumedSteps();
        return r.length > before ? r[r.length - 1] : undefined;
      }, 60_000, 20);
      expect(from, where).toBeGreaterThanOrEqual(v.step - 1);
    }
    // 3. A graceful stop: checkpoint, exit 0, socket removed; the job stays `running` on disk.
    const before = await waitFor('the SIGTERM step', async () => {
      const s = await status(home, id);
      return s.step >= plan.termAt || s.state === 'done' ? s : undefined;
    }, 60_000, 5);
    if (before.state !== 'done') {
      const exit = await d.kill('SIGTERM');
      expect(exit.code, where).toBe(0);
      expect(existsSync(join(home, 'daemon.sock'))).toBe(false);
      const onDisk = JSON.parse(readFileSync(join(home, 'jobs', id, 'state.json'), 'utf8'));
      expect(['running', 'done']).toContain(onDisk.state);
      await restart();
    }
    const done = await waitState(home, id, ['done', 'failed'], 60_000);
    expect(done.error, where).toBeNull();
    expect(done.step).toBe(STEPS);
    expect(kills, where).toBeGreaterThanOrEqual(2);
    // The restarts really resumed from checkpoints (not from scratch every time).
    const resumed = jobLog(home, id).filter((l) => l.msg === 'resumed from checkpoint');
    expect(resumed.length, where).toBeGreaterThanOrEqual(1);
    expect(jobLog(home, id).some((l) => l.msg === 'final norm gain tuned'), where).toBe(true);
    expectSameExport(readDir(join(home, 'jobs', id, 'export')), await reference);
  });

  it('the daemon export equals what `invarx run --out` computes for the same options', async () => {
    // `invarx run` builds its RunConfig with runConfigFromOptions and runs createSearchJob in
    // its own process on the tests' small tuning with what recommendedTuning adds to it, as
    // the daemon's submit does.
    const config = runConfigFromOptions({
      model: MODEL_PATH, bits: '3', group: '32', base: 'rtn', steps: String(STEPS), timeBudget: '0', seed: '1',
      invariances: 'all', candidates: '4', workers: '1', patience: '0',
    });
    const job = await createSearchJob(config, { tuning: recommendedTuning(config, RESUME_TUNING) });
    while (!job.done) await job.step();
    await job.report();
    const dir = mkdtempSync(join(tmpdir(), 'ixr-'));
    await job.exportTo(dir);
    await job.close();
    expectSameExport(readDir(dir), await reference);
  });

  it('a corrupt newest checkpoint falls back to the previous one with a warning, and the result is unchanged', async () => {
    const home = tmpHome();
    let d = await startDaemon(home);
    const id = await submit(home, CONFIG, RESUME_TUNING);
    const ckdir = join(home, 'jobs', id, 'checkpoints');
    await waitFor('three checkpoints', async () => {
      const s = await status(home, id);
      if (s.state === 'done') throw new Error('job finished before it could be killed');
      return (s.lastCheckpoint?.step ?? 0) >= 12;
    }, 60_000, 5);
    await d.kill('SIGKILL');
    const files = readDir(ckdir);
    const names = [...files.keys()].filter((n) => n.endsWith('.msgpack')).sort();
    // two kept; three when the kill landed after a new one was renamed into place and before the oldest was pruned
    expect(names.length).toBeGreaterThanOrEqual(2);
    expect(names.length).toBeLessThanOrEqual(3);
    const newest = join(ckdir, names[names.length - 1]);
    const bytes = readFileSync(newest);
    bytes[bytes.length >> 1] ^= 0xff;
    writeFileSync(newest, bytes);

    d = await startDaemon(home);
    const done = await waitState(home, id, ['done', 'failed'], 60_000);
    expect(done.error).toBeNull();
    const warn = jobLog(home, id).find((l) => l.level === 40 && /unusable \(checksum mismatch\).*falling back/.test(String(l.msg)));
    expect(warn, 'warning in job.log').toBeDefined();
    expect(done.warnings.some((w) => w.includes(names[names.length - 1]))).toBe(true);
    const resumed = jobLog(home, id).filter((l) => l.msg === 'resumed from checkpoint');
    expect(resumed.at(-1)!.file).toBe(join(ckdir, names[names.length - 2]));
    expectSameExport(readDir(join(home, 'jobs', id, 'export')), await reference);
    await d.kill('SIGTERM');
  });

  it('failing checkpoint writes are reported in the job state; the job and the daemon go on', async () => {
    const home = tmpHome();
    const d = await startDaemon(home);
    const id = await submit(home, CONFIG, RESUME_TUNING);
    await call(home, 'pause', { job: id });
    await waitFor('the job thread to stop', () => jobLog(home, id).some((l) => l.msg === 'stopped'), 30_000);
    // The checkpoint directory becomes a plain file: every write now fails (as root too).
    const ckdir = join(home, 'jobs', id, 'checkpoints');
    rmSync(ckdir, { recursive: true, force: true });
    writeFileSync(ckdir, 'not a directory');
    await call(home, 'resume', { job: id });
    const failing = await waitFor('a checkpoint error in the status', async () => {
      const s = await status(home, id);
      return s.checkpointError ? s : undefined;
    }, 60_000);
    expect(failing.checkpointError!.message).toMatch(/ENOTDIR|EEXIST|not a directory|file already exists/i);
    const done = await waitState(home, id, ['done', 'failed'], 60_000);
    expect(done.state).toBe('done');
    expect(statSync(ckdir).isFile()).toBe(true);
    expect(d.alive()).toBe(true);
    expectSameExport(readDir(join(home, 'jobs', id, 'export')), await reference);
    await d.kill('SIGTERM');
  });
});
