/**
 * `cancel` frees a job's slot in any phase — even when its thread is blocked in a system
 * call that terminating the thread cannot interrupt (here: opening a FIFO nobody writes).
 * The scheduler runs in-process with a stand-in job script, so only the slot logic is
 * under test.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Scheduler } from '../../daemon/scheduler';
import { JobStore } from '../../daemon/store';
import type { RunConfig } from '../../search/contract';
import { waitFor } from './harness';

let dir: string;
let fifo: string;
let script: string;

/** A job thread that blocks reading its "model" when that is the FIFO, and otherwise finishes at once. */
const WORKER = `
import { parentPort, workerData } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
const progress = { step: 1, totalSteps: 1, bestLoss: 1, validationLoss: null, acceptRate: 0, candidatesPerSec: 1, etaSeconds: 0, done: true };
parentPort.postMessage({ type: 'started', resumedFromStep: null, modelHash: 'x' });
if (workerData.config.model.endsWith('fifo')) readFileSync(workerData.config.model);
parentPort.postMessage({ type: 'done', progress });
`;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ixq-'));
  fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  script = join(dir, 'job.mjs');
  writeFileSync(script, WORKER);
});

afterAll(() => {
  // Unblock the abandoned thread, if it is still waiting, so this process can exit.
  try {
    closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
  } catch {
    /* no reader left */
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('job slots', () => {
  it('cancel frees the slot of a job whose thread is stuck in a system call', async () => {
    const home = mkdtempSync(join(dir, 'home-'));
    const lines: string[] = [];
    const s = new Scheduler(new JobStore(home), {
      concurrency: 1,
      checkpointSteps: 0,
      checkpointSeconds: 0,
      stopTimeoutMs: 60_000,
      workerScript: script,
      log: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }),
    });
    s.load();
    s.start();
    const config = (model: string) => ({ model, bits: 3, group: 32, steps: 1 }) as unknown as RunConfig;
    const stuck = s.submit(config(fifo));
    const next = s.submit(config(join(dir, 'model.bin')));
    expect(s.view(stuck.id).state).toBe('running');
    expect(s.view(next.id).state).toBe('queued');
    // Its thread said `started` and went straight into the blocking open.
    await waitFor('the stuck job to start', () => lines.some((l) => l.includes(stuck.id) && l.includes('search started')));
    s.cancel(stuck.id);
    expect(s.view(stuck.id).state).toBe('cancelled');
    const v = await waitFor('the next job to finish', () => (s.view(next.id).state === 'done' ? s.view(next.id) : undefined), 20_000);
    expect(v.state).toBe('done');
    // the finished job's thread exits just after its state is written; the stuck one's slot must not stay taken
    await waitFor('every slot free', () => s.runningCount() === 0 || undefined, 10_000);
  });
});
