/**
 * The queue mode's promise under fire: a queue daemon, three worker processes and eight
 * jobs (stories260K, bits 2/3/4, RTN and GPTQ bases, several seeds). Workers are SIGKILLed
 * at random moments ten times in all (each restarted at once), and Redis itself is
 * restarted once mid-run (AOF on, same port and directory). Every job must end `done`, each
 * export byte-identical to `invarx run --out` with the same options, and the workers' logs
 * must show no job ever stepping in two workers at once.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DaemonProc, FAST, RedisProc, WorkerProc, cli, ensureBuilt, runsCheckpointedJob, overlappingStints, queueConfig, readDir, runExportAsync, sleep, status, submit, TUNING, tmpHome, waitFor, workerLines,
  type JobOptions,
} from './harness';

const STEPS = 80;
/** The tests' small search, without the scale initialisation each (re)start would redo: more kills per minute. */
const CHAOS_TUNING = { ...TUNING, scaleInit: false };
const JOBS: JobOptions[] = [
  { bits: 2, base: 'rtn', seed: 0 },
  { bits: 3, base: 'rtn', seed: 1 },
  { bits: 4, base: 'rtn', seed: 2 },
  { bits: 2, base: 'gptq', seed: 1 },
  { bits: 3, base: 'gptq', seed: 0 },
  { bits: 4, base: 'gptq', seed: 2 },
  { bits: 3, base: 'rtn', seed: 5 },
  { bits: 2, base: 'gptq', seed: 3 },
].map((j) => ({ ...j, steps: STEPS, tuning: CHAOS_TUNING }) as JobOptions);
const KILLS = 10;


let redis: RedisProc;
const procs: (DaemonProc | WorkerProc)[] = [];

beforeAll(async () => {
  ensureBuilt();
  redis = await RedisProc.start({ aof: true });
});

afterAll(async () => {
  for (const p of procs) if (p.alive()) await p.kill('SIGKILL');
  await redis?.stop();
});

describe('queue mode under chaos', () => {
  it('ten worker SIGKILLs and a Redis restart: every job done, every export equals `invarx run --out`, no job in two workers at once', async () => {
    const seed = Number(process.env.INVARX_TEST_SEED ?? Date.now() % 1e6);
    const [plan] = fc.sample(
      fc.record({
        waitMs: fc.array(fc.integer({ min: 500, max: 2500 }), { minLength: KILLS, maxLength: KILLS }),
        victim: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: KILLS, maxLength: KILLS }),
        redisAfterKill: fc.integer({ min: 3, max: 7 }),
      }),
      { seed, numRuns: 1 },
    );
    const where = `seed ${seed}, plan ${JSON.stringify(plan)}`;
    const url = redis.url(0);
    const d = await DaemonProc.start(tmpHome(), ['--queue', url]);
    procs.push(d);
    const homes = [tmpHome(), tmpHome(), tmpHome()];
    const startWorker = async (i: number) => {
      const w = await WorkerProc.start(homes[i], url, [...FAST, '--checkpoint-steps', '2']);
      procs.push(w);
      return w;
    };
    const workers = await Promise.all(homes.map((_, i) => startWorker(i)));
    const ids: string[] = [];
    for (const j of JOBS) ids.push(await submit(d.home, queueConfig(j), j.tuning));
    // The references, one after another beside the run (they use the cores the hand-overs leave idle).
    const references: Promise<Map<string, Buffer>>[] = [];
    for (const j of JOBS) references.push((references.at(-1) ?? Promise.resolve(new Map())).catch(() => undefined).then(() => runExportAsync(j)));
    references.forEach((r) => r.catch(() => undefined));

    // Each kill: a random wait, then a random one of the workers running a job that has a
    // checkpoint (a kill of an idle worker, or of one still starting, would test nothing).
    const t0 = Date.now();
    const timeline: string[] = [];
    const ended = (v: { state: string }) => ['done', 'failed', 'cancelled'].includes(v.state);
    /** The workers running a job that has a checkpoint, or 'all ended' once no kill can land. */
    const busyWorkers = (k: number) => waitFor(`a worker running a checkpointed job, for kill ${k + 1} (${where}; ${timeline.join(', ')})`, async (): Promise<number[] | 'all ended' | undefined> => {
      const lines = workerLines(homes);
      const b = workers.map((w, i) => (runsCheckpointedJob(lines, w.proc.pid!) ? i : -1)).filter((i) => i >= 0);
      if (b.length > 0) return b;
      const vs = await Promise.all(ids.map((id) => status(d.home, id)));
      return vs.every(ended) ? 'all ended' : undefined;
    }, 120_000, 100);
    for (let k = 0; k < KILLS; k++) {
      await sleep(plan.waitMs[k]);
      const busy = await busyWorkers(k);
      if (busy === 'all ended') throw new Error(`every job ended after ${k} of ${KILLS} kills (${where}; ${timeline.join(', ')})`);
      const i = busy[plan.victim[k] % busy.length];
      const states = await Promise.all(ids.map((id) => status(d.home, id).then((v) => v.state, () => '?')));
      timeline.push(`kill ${k + 1} at ${((Date.now() - t0) / 1000).toFixed(1)} s, ${states.filter((s) => s === 'done').length} jobs done`);
      await workers[i].kill('SIGKILL');
      workers[i] = await startWorker(i);
      if (k + 1 === plan.redisAfterKill) await redis.restart();
    }
    const finals = await waitFor('every job to end', async () => {
      const vs = await Promise.all(ids.map((id) => status(d.home, id)));
      return vs.every(ended) ? vs : undefined;
    }, 300_000, 500);
    for (const v of finals) {
      expect(v.error, where).toBeNull();
      expect(v.state, where).toBe('done');
      expect(v.step, where).toBe(STEPS);
    }
    const lines = workerLines(homes);
    expect(overlappingStints(lines), where).toEqual([]);
    // The kills landed on running jobs, which resumed from Redis checkpoints.
    const resumed = lines.filter((l) => l.msg === 'run resumed' && (l.fromStep ?? 0) > 0);
    expect(resumed.length, where).toBeGreaterThanOrEqual(2);

    for (const [n, id] of ids.entries()) {
      // Through the CLI (its own 60 s limit): rebuilding an export replays the job's last stint.
      const out = join(mkdtempSync(join(tmpdir(), 'ixq-chaos-')), 'export');
      const r = cli(d.home, 'export', id, '--out', out);
      expect(r.code, r.stderr).toBe(0);
      const got = readDir(out);
      const want = await references[n];
      expect([...got.keys()], where).toEqual([...want.keys()]);
      for (const [name, bytes] of want) expect(got.get(name)!.equals(bytes), `job ${n} ${JSON.stringify(JOBS[n])}: ${name} differs (${where})`).toBe(true);
    }
  }, 600_000);
});
