/**
 * Queue mode on a real redis-server: a job resumes after its worker is SIGKILLed, bit for
 * bit; pause, resume and cancel; malformed jobs put into Redis by hand; a model file that
 * changed after submit; a password in the Redis URL. (The many-workers chaos run is in
 * chaos.test.ts.)
 */
import { copyFileSync, mkdtempSync, openSync, readFileSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { decodeCheckpoint } from '../../daemon/checkpoint';
import { encodeFrame } from '../../daemon/protocol';
import { Conn } from '../daemon/harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SEARCH_EXPORT_FILES } from '../helpers';
import {
  DaemonProc, FAST, RedisProc, WorkerProc, call, ensureBuilt, overlappingStints, queueConfig, readDir, runExport, sleep, status, submit, tmpHome, waitFor, waitState, workerLines,
  type JobOptions,
} from './harness';

const JOB: JobOptions = { bits: 3, base: 'rtn', seed: 1, steps: 60 };
let redis: RedisProc;
let reference: Promise<Map<string, Buffer>>;
const procs: (DaemonProc | WorkerProc)[] = [];

async function daemon(url: string): Promise<DaemonProc> {
  const d = await DaemonProc.start(tmpHome(), ['--queue', url]);
  procs.push(d);
  return d;
}

async function worker(home: string, url: string, args: string[] = []): Promise<WorkerProc> {
  const w = await WorkerProc.start(home, url, [...FAST, '--checkpoint-steps', '2', ...args]);
  procs.push(w);
  return w;
}

async function exported(home: string, job: string): Promise<Map<string, Buffer>> {
  const out = join(mkdtempSync(join(tmpdir(), 'ixq-out-')), 'export');
  await call(home, 'export', { job, out });
  return readDir(out);
}

function expectSameExport(got: Map<string, Buffer>, want: Map<string, Buffer>): void {
  expect([...got.keys()]).toEqual(SEARCH_EXPORT_FILES);
  expect([...got.keys()]).toEqual([...want.keys()]);
  for (const [name, bytes] of want) expect(got.get(name)!.equals(bytes), `${name} differs`).toBe(true);
}

beforeAll(async () => {
  ensureBuilt();
  redis = await RedisProc.start();
  reference = Promise.resolve().then(() => runExport(JOB));
  reference.catch(() => undefined);
});

afterAll(async () => {
  for (const p of procs) if (p.alive()) await p.kill('SIGKILL');
  await redis?.stop();
});

describe('queue mode', () => {
  it('a worker SIGKILLed mid-job: another resumes from the Redis checkpoint and the export equals `invarx run --out`', async () => {
    const url = redis.url(1);
    const d = await daemon(url);
    const wHome = tmpHome();
    const w1 = await worker(wHome, url);
    const id = await submit(d.home, queueConfig(JOB));
    // `watch` streams the job's progress (from BullMQ progress events) until it ends.
    const watcher = await Conn.open(d.socket);
    watcher.write(encodeFrame({ id: 1, verb: 'watch', args: { job: id } }));
    const at = await waitFor('a checkpoint past step 10', async () => {
      const s = await status(d.home, id);
      if (s.state === 'done') throw new Error('the job finished before the kill');
      return (s.lastCheckpoint?.step ?? 0) >= 10 ? s : undefined;
    }, 90_000, 20);
    expect(at.state).toBe('running');
    await w1.kill('SIGKILL');
    await worker(wHome, url);
    const done = await waitState(d.home, id, ['done', 'failed'], 120_000);
    expect(done.error).toBeNull();
    expect(done.step).toBe(JOB.steps);
    const final = await waitFor('the watch to end', () => watcher.replies.find((r) => r.id === 1 && !('event' in r)), 10_000);
    watcher.close();
    expect((final.result as { state: string }).state).toBe('done');
    const events = watcher.replies.filter((r) => 'event' in r).map((r) => r.event as { state: string; step: number });
    expect(events.filter((e) => e.state === 'running' && e.step > 0).length).toBeGreaterThanOrEqual(3);
    const lines = workerLines([wHome]).filter((l) => l.job === id);
    const resumed = lines.filter((l) => l.msg === 'run resumed');
    expect(resumed.length).toBe(1);
    expect(resumed[0].fromStep).toBeGreaterThanOrEqual(10);
    expect(resumed[0].pid).not.toBe(w1.proc.pid);
    expect(overlappingStints(lines)).toEqual([]);
    expectSameExport(await exported(d.home, id), await reference);
    // The report verb works as with the local daemon.
    const r = (await call(d.home, 'report', { job: id })) as { report: { steps: number } };
    expect(r.report.steps).toBe(JOB.steps);
  });

  it('a corrupt newest Redis checkpoint falls back to the previous one with a warning; the export is unchanged', async () => {
    const url = redis.url(5);
    const d = await daemon(url);
    const wHome = tmpHome();
    const w1 = await worker(wHome, url);
    const id = await submit(d.home, queueConfig(JOB));
    await waitFor('two checkpoints past step 8', async () => {
      const s = await status(d.home, id);
      if (s.state === 'done') throw new Error('the job finished before the kill');
      return (s.lastCheckpoint?.step ?? 0) >= 12;
    }, 90_000, 20);
    await w1.kill('SIGKILL');
    const r = new Redis({ host: '127.0.0.1', port: redis.port, db: 5 });
    try {
      const key = `invarx:job:${id}:checkpoints`;
      const list = await r.lrangeBuffer(key, 0, -1);
      expect(list.length).toBe(2);
      const older = decodeCheckpoint(list[1]).step;
      const bytes = Buffer.from(list[0]);
      bytes[bytes.length >> 1] ^= 0xff;
      await r.lset(key, 0, bytes);
      await worker(wHome, url);
      const done = await waitState(d.home, id, ['done', 'failed'], 120_000);
      expect(done.error).toBeNull();
      expect(done.warnings.some((m) => /redis#0 is unusable \(checksum mismatch\); falling back/.test(m))).toBe(true);
      const resumed = workerLines([wHome]).filter((l) => l.job === id && l.msg === 'run resumed');
      expect(resumed.map((l) => l.fromStep)).toEqual([older]);
      expectSameExport(await exported(d.home, id), await reference);
    } finally {
      r.disconnect();
    }
  });

  it('pause parks a running job, resume continues it to the same export; cancel ends a running job', async () => {
    const url = redis.url(2);
    const d = await daemon(url);
    const wHome = tmpHome();
    await worker(wHome, url);
    const id = await submit(d.home, queueConfig(JOB));
    await waitFor('step 5', async () => (await status(d.home, id)).step >= 5, 90_000);
    expect(((await call(d.home, 'pause', { job: id })) as { state: string }).state).toBe('paused');
    await waitFor('the worker to stop the job', () => workerLines([wHome]).some((l) => l.job === id && l.msg === 'run ended: pause'), 30_000);
    const parked = await status(d.home, id);
    await sleep(1500);
    const still = await status(d.home, id);
    expect(still.state).toBe('paused');
    expect(still.step).toBe(parked.step);
    expect(still.step).toBeLessThan(JOB.steps);
    expect(((await call(d.home, 'resume', { job: id })) as { state: string }).state).not.toBe('paused');
    const done = await waitState(d.home, id, ['done', 'failed'], 120_000);
    expect(done.error).toBeNull();
    expect(workerLines([wHome]).filter((l) => l.job === id && l.msg === 'run resumed').length).toBe(1);
    expectSameExport(await exported(d.home, id), await reference);

    const long = await submit(d.home, queueConfig({ ...JOB, steps: 5000 }));
    await waitFor('the long job to step', async () => (await status(d.home, long)).step >= 3, 90_000);
    expect(((await call(d.home, 'cancel', { job: long })) as { state: string }).state).toBe('cancelled');
    await waitFor('the worker to end it', () => workerLines([wHome]).some((l) => l.job === long && l.msg === 'run ended: cancelled'), 30_000);
    const v = await status(d.home, long);
    expect(v.state).toBe('cancelled');
    await expect(call(d.home, 'export', { job: long, out: join(tmpHome(), 'x') })).rejects.toThrow(/not-done/);
  });

  it('SIGTERM: the worker checkpoints its job, puts it back on the queue and exits 0; the next worker finishes it', async () => {
    const url = redis.url(6);
    const d = await daemon(url);
    const wHome = tmpHome();
    const w1 = await worker(wHome, url);
    const id = await submit(d.home, queueConfig(JOB));
    await waitFor('step 6', async () => (await status(d.home, id)).step >= 6, 90_000);
    expect((await w1.kill('SIGTERM')).code).toBe(0);
    const ended = workerLines([wHome]).find((l) => l.job === id && l.msg === 'run ended: shutdown');
    expect(ended).toBeDefined();
    expect((await waitState(d.home, id, ['queued'], 10_000)).state).toBe('queued');
    await worker(wHome, url);
    const done = await waitState(d.home, id, ['done', 'failed'], 120_000);
    expect(done.error).toBeNull();
    const resumed = workerLines([wHome]).filter((l) => l.job === id && l.msg === 'run resumed');
    // from the checkpoint SIGTERM wrote, at the step the run ended (inside a stint or not)
    expect(resumed).toHaveLength(1);
    expect(resumed[0].fromStep).toBeGreaterThan(0);
    expect(resumed[0].fromStep).toBe(ended!.step!);
    expectSameExport(await exported(d.home, id), await reference);
  });

  it('malformed jobs put into Redis by hand fail with a clear reason; the worker and other jobs go on', async () => {
    const url = redis.url(3);
    const d = await daemon(url);
    const wHome = tmpHome();
    const w = await worker(wHome, url);
    const queue = new Queue('invarx', { connection: { host: '127.0.0.1', port: redis.port, db: 3 } });
    try {
      const now = new Date().toISOString();
      const hash = 'a'.repeat(64);
      await queue.add('search', { garbage: true }, { jobId: 'deadbeef' });
      const auto = await queue.add('search', 'not a map');
      await queue.add('search', { v: 1, config: { model: 'relative/model.bin', bits: 3, group: 32 }, modelHash: hash, createdAt: now }, { jobId: 'cafebabe' });
      await queue.add('search', { v: 1, config: { model: '/m.bin', bits: '3', group: 32 }, modelHash: hash, createdAt: now }, { jobId: 'c0ffee00' });
      const good = await submit(d.home, queueConfig({ ...JOB, steps: 8 }));
      const expectFailed = async (id: string, message: RegExp) => {
        const v = await waitState(d.home, id, ['failed', 'done'], 60_000);
        expect(v.state).toBe('failed');
        expect(v.error!.code).toBe('bad-payload');
        expect(v.error!.message).toMatch(message);
      };
      await expectFailed('deadbeef', /unknown job data key "garbage"/);
      await expectFailed('cafebabe', /config\.model must be an absolute path/);
      await expectFailed('c0ffee00', /config\.bits must be a finite number/);
      const a = await waitFor('the auto-id job to fail', async () => ((await queue.getJob(auto.id!))?.failedReason ? queue.getJob(auto.id!) : undefined), 30_000);
      expect(a!.failedReason).toMatch(/^bad-payload: job id "\d+" is not an invarx job id/);
      expect((await waitState(d.home, good, ['done', 'failed'], 90_000)).state).toBe('done');
      expect(w.alive()).toBe(true);
      expect(d.alive()).toBe(true);
    } finally {
      await queue.close();
    }
  });

  it('a worker that finds a different model file at the path fails the job with a clear error', async () => {
    const url = redis.url(4);
    const d = await daemon(url);
    const dir = mkdtempSync(join(tmpdir(), 'ixq-model-'));
    const model = join(dir, 'stories260K.bin');
    copyFileSync(queueConfig(JOB).model!, model);
    copyFileSync(join(queueConfig(JOB).model!, '..', 'tok512.bin'), join(dir, 'tok512.bin'));
    const id = await submit(d.home, queueConfig({ ...JOB, steps: 8, model }));
    // Same size, one weight changed: a file a worker must not mistake for the submitted one.
    const fd = openSync(model, 'r+');
    writeSync(fd, Buffer.from([0x3f, 0x80, 0x00, 0x00]), 0, 4, 4096);
    closeSync(fd);
    await worker(tmpHome(), url);
    const v = await waitState(d.home, id, ['failed', 'done'], 60_000);
    expect(v.state).toBe('failed');
    expect(v.error!.code).toBe('model-changed');
    expect(v.error!.message).toMatch(/is not the one the job was submitted with/);
  });

  it('a Redis URL with a password: jobs run, and the password appears in no log or message', async () => {
    const secret = 'pa55-w0rd-xyz';
    const locked = await RedisProc.start({ password: secret });
    try {
      const bad = DaemonProc.start(tmpHome(), ['--queue', locked.url(0, 'wrong-secret-123')]);
      const err = await bad.then(() => '', (e: Error) => e.message);
      expect(err).toMatch(/cannot use Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:\d+\/0: (WRONGPASS|ERR)/);
      expect(err).not.toContain('wrong-secret-123');
      const url = locked.url(0);
      const d = await DaemonProc.start(tmpHome(), ['--queue', url]);
      procs.push(d);
      const wHome = tmpHome();
      const w = await worker(wHome, url);
      const id = await submit(d.home, queueConfig({ ...JOB, steps: 8 }));
      expect((await waitState(d.home, id, ['done', 'failed'], 90_000)).state).toBe('done');
      const logs = [readFileSync(join(d.home, 'daemon.log'), 'utf8'), d.stderr, w.stderr, JSON.stringify(workerLines([wHome]))];
      expect(logs[0]).toContain('redis://:***@127.0.0.1');
      for (const text of logs) expect(text).not.toContain(secret);
    } finally {
      await locked.stop();
    }
  });
});
