/**
 * A job's terminal state survives a restart even when its state.json could not be written
 * at the time (read-only job directory, full disk), and a job whose directory cannot be
 * written is failed on start with that reason instead of being run again.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { smallDiskDaemons } from './disk';
import { call, ensureBuilt, jobConfig, status, submit, waitFor } from './harness';

const { disk: newDisk, start } = smallDiskDaemons();

beforeAll(() => ensureBuilt());


function stateOnDisk(home: string, id: string): string {
  return (JSON.parse(readFileSync(join(home, 'jobs', id, 'state.json'), 'utf8')) as { state: string }).state;
}

async function runningJob(home: string): Promise<string> {
  const id = await submit(home, jobConfig({ steps: 100_000 }));
  await waitFor(`job ${id} to take a step`, async () => (await status(home, id)).step >= 1);
  return id;
}

describe('durable job states', () => {
  it('a state written while the job directory is read-only survives a restart; an unwritable job fails on start', async () => {
    const disk = newDisk({ injected: true });
    const home = disk.home;
    let d = await start(disk);

    // Cancelled while its directory refuses writes: on disk it still says running.
    const a = await runningJob(home);
    disk.readOnly(join(home, 'jobs', a));
    expect(((await call(home, 'cancel', { job: a })) as { state: string }).state).toBe('cancelled');
    expect(stateOnDisk(home, a)).toBe('running');
    await d.kill('SIGKILL');
    d = await start(disk);
    expect((await status(home, a)).state).toBe('cancelled');

    // Running when the daemon died; its directory read-only by the restart: failed, not run.
    disk.writable();
    const b = await runningJob(home);
    await d.kill('SIGKILL');
    disk.readOnly(join(home, 'jobs', b));
    d = await start(disk);
    const vb = await status(home, b);
    expect(vb.state).toBe('failed');
    expect(vb.error?.code).toBe('permission-denied');
    expect(vb.error?.message).toContain(join(home, 'jobs', b));
    expect((await status(home, a)).state).toBe('cancelled');

    // Writable again: both states reach their own state.json and stay as they are.
    disk.writable();
    await waitFor('the pending states to be written', () => stateOnDisk(home, a) === 'cancelled' && stateOnDisk(home, b) === 'failed');
    await d.kill('SIGKILL');
    d = await start(disk);
    expect((await status(home, a)).state).toBe('cancelled');
    expect((await status(home, b)).state).toBe('failed');
    await d.kill('SIGKILL');
  });

  it('a state that could not be written on a full disk is written once there is space', async () => {
    const disk = newDisk();
    const home = disk.home;
    let d = await start(disk);
    const id = await runningJob(home);
    disk.fill();
    expect(((await call(home, 'cancel', { job: id })) as { state: string }).state).toBe('cancelled');
    expect(stateOnDisk(home, id)).toBe('running');
    disk.free();
    await waitFor('state.json to say cancelled', () => stateOnDisk(home, id) === 'cancelled');
    await d.kill('SIGKILL');
    d = await start(disk);
    expect((await status(home, id)).state).toBe('cancelled');
    await d.kill('SIGKILL');
  });
});
