/**
 * Small things a user sees: many `watch`es on one connection print no listener-leak
 * warning, and a resumed job's status shows the step it resumes from with its speed
 * unknown (not the step it was paused at and 0.0 candidates/s).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../../daemon/scheduler';
import { Conn, DaemonProc, call, ensureBuilt, jobConfig, status, submit, tmpHome, waitFor, waitState } from './harness';

let home: string;
let daemon: DaemonProc;
let job: string;

beforeAll(async () => {
  ensureBuilt();
  home = tmpHome();
  daemon = await DaemonProc.start(home, ['--checkpoint-steps', '5']);
  job = await submit(home, jobConfig({ steps: 100_000 }));
});

afterAll(async () => {
  if (daemon?.alive()) await daemon.kill('SIGKILL');
});

describe('watch and resume', () => {
  it('20 watches on one connection: no MaxListenersExceededWarning', async () => {
    const c = await Conn.open(daemon.socket);
    for (let i = 0; i < 20; i++) c.write(`{"id":${i},"verb":"watch","args":{"job":"${job}"}}\n`);
    // Each watch answers at once with the job's status as its first event.
    await waitFor('20 first events', () => c.raw.split('\n').filter((l) => l.includes('"event"')).length >= 20);
    await call(home, 'list'); // a round trip after the listeners were added: a warning would be out by now
    c.close();
    await call(home, 'list');
    expect(daemon.stderr).not.toMatch(/MaxListenersExceeded|memory leak/);
  });

  it('after a resume, status shows the checkpoint step it resumes from and no speed until one is measured', async () => {
    await waitFor('the job to pass step 12 with a measured speed', async () => {
      const v = await status(home, job);
      return v.step >= 12 && (v.candidatesPerSec ?? 0) > 0;
    });
    await call(home, 'pause', { job });
    const paused = await waitState(home, job, ['paused']);
    expect(paused.candidatesPerSec).toBeGreaterThan(0);
    expect(paused.lastCheckpoint).not.toBeNull();
    const v = (await call(home, 'resume', { job })) as JobView;
    expect(['queued', 'running']).toContain(v.state);
    expect(v.step).toBe(v.lastCheckpoint!.step);
    expect(v.candidatesPerSec).toBeNull();
    expect(v.etaSeconds).toBeNull();
    // Then real figures arrive.
    const later = await waitFor('a measured speed after the resume', async () => {
      const s = await status(home, job);
      return s.candidatesPerSec !== null && s.candidatesPerSec > 0 ? s : undefined;
    });
    expect(later.state).toBe('running');
    await call(home, 'cancel', { job });
  });
});
