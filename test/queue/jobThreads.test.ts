/**
 * A queue worker's job threads are kept for the next job: the second job runs on the first
 * job's thread and gives the same result as on a fresh one; a terminated thread is not reused.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobThreads, startJobThread, type QueueThreadData, type ThreadOwner } from '../../daemon/queue/jobThread';
import { DEFAULT_CONFIG } from '../../search/config';
import { CLI, ensureBuilt, MODEL_PATH, TUNING } from './harness';

const dirs: string[] = [];

function data(id: string, seed: number, steps = 6): QueueThreadData {
  const jobDir = mkdtempSync(join(tmpdir(), 'ixjt-'));
  dirs.push(jobDir);
  return {
    init: { id, jobDir, config: { ...DEFAULT_CONFIG, model: MODEL_PATH, bits: 3, group: 32, steps, seed }, tuning: TUNING, checkpointSteps: 0, checkpointSeconds: 0 },
    checkpoints: [],
    results: 'port',
  };
}

const owner: ThreadOwner = { onMessage: () => undefined, saveCheckpoint: async () => undefined, discardCheckpoint: () => undefined };

describe('queue job threads', () => {
  beforeAll(() => ensureBuilt());
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('runs the next job on a finished job\'s thread, with the result a fresh thread gives', async () => {
    const threads = new JobThreads(CLI);
    try {
      const a = await threads.start(data('a1', 1), owner).outcome;
      const b = await threads.start(data('b2', 2), owner).outcome;
      expect(threads.spawned).toBe(1);
      const fresh = await startJobThread(CLI, data('b3', 2), owner).outcome;
      expect(a.kind).toBe('done');
      expect(b.kind).toBe('done');
      expect(fresh.kind).toBe('done');
      if (b.kind !== 'done' || fresh.kind !== 'done' || a.kind !== 'done') return;
      // everything but the timings
      const { candidatesPerSec: _c, phases: _p, ...same } = b.report!;
      const { candidatesPerSec: _fc, phases: _fp, ...sameFresh } = fresh.report!;
      expect(same).toEqual(sameFresh);
      // a different seed, so the reused thread did run the second job, not replay the first
      expect(b.report!.searched.ppl).not.toBe(a.report!.searched.ppl);
    } finally {
      await threads.close();
    }
  });

  it('prewarmed threads take the first jobs; one that died while idle is never handed a job', async () => {
    const threads = new JobThreads(CLI);
    try {
      threads.prewarm(2);
      expect(threads.spawned).toBe(2);
      const [a, b] = await Promise.all([threads.start(data('p1', 1), owner).outcome, threads.start(data('p2', 2), owner).outcome]);
      expect([a.kind, b.kind]).toEqual(['done', 'done']);
      expect(threads.spawned).toBe(2);
    } finally {
      await threads.close();
    }
    const broken = new JobThreads(join(tmpdir(), 'no-such-invarx-bundle.js'));
    try {
      broken.prewarm(1);
      // the thread fails to load its script and exits while idle
      await new Promise((r) => setTimeout(r, 1000));
      const outcome = await broken.start(data('p3', 1), owner).outcome;
      expect(outcome.kind).toBe('failed');
      expect(broken.spawned).toBe(2);
    } finally {
      await broken.close();
    }
  });

  it('starts a new thread after one was terminated mid-job', async () => {
    const threads = new JobThreads(CLI);
    try {
      const first = threads.start(data('t1', 1, 400), owner);
      await new Promise((r) => setTimeout(r, 300));
      await first.terminate();
      expect((await first.outcome).kind).toBe('failed');
      const next = await threads.start(data('t2', 1), owner).outcome;
      expect(next.kind).toBe('done');
      expect(threads.spawned).toBe(2);
    } finally {
      await threads.close();
    }
  });
});
