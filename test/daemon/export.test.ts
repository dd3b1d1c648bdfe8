/**
 * `invarx export JOB --out DIR`: a non-empty DIR is refused unless --force, which replaces
 * the export's entries (never writing through a symlink planted there) and leaves foreign
 * files alone; a DIR that is a file or /dev/null is a clear client error; the files get
 * the modes `invarx run --out` gives them; a failed export (full disk) leaves DIR as it was.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SEARCH_EXPORT_FILES } from '../helpers';
import { SmallDisk } from './disk';
import { DAEMON_CLI, DaemonProc, MODEL_PATH, ROOT, TUNING, call, ensureBuilt, jobConfig, readDir, sameFiles, submit, waitState } from './harness';

let disk: SmallDisk;
let daemon: DaemonProc;
let home: string;
let job: string;
let scratch: string;

beforeAll(async () => {
  ensureBuilt();
  // Injected faults: the export targets below can be made to run out of space.
  disk = SmallDisk.create({ injected: true });
  home = disk.home;
  daemon = await DaemonProc.start(home, [], disk);
  job = await submit(home, jobConfig({ steps: 4 }));
  expect((await waitState(home, job, ['done', 'failed'], 90_000)).state).toBe('done');
  scratch = mkdtempSync(join(disk.root, 'out-'));
});

afterAll(async () => {
  if (daemon?.alive()) await daemon.kill('SIGKILL');
  disk?.dispose();
});

/** `invarx export` through the daemon under test's bundle. */
function exportCli(out: string, ...flags: string[]) {
  const r = spawnSync(process.execPath, [DAEMON_CLI, 'export', job, '--out', out, ...flags, '--home', home], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Relative path → permission bits of everything under dir. */
function modes(dir: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of readdirSync(dir, { recursive: true, encoding: 'utf8' }) as string[]) out[n] = statSync(join(dir, n)).mode & 0o777;
  return out;
}

describe('export directories', () => {
  it('writes into a new directory with the modes of `invarx run --out`', () => {
    const out = join(scratch, 'new', 'nested');
    const r = exportCli(out);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(sameFiles(readDir(out), readDir(join(home, 'jobs', job, 'export')))).toBe(true);
    expect(readdirSync(out).filter((n) => n.startsWith('.invarx'))).toEqual([]);
    const ref = join(mkdtempSync(join(tmpdir(), 'ixr-')), 'run');
    const run = spawnSync(process.execPath, [DAEMON_CLI, 'run', '--model', MODEL_PATH, '--bits', '3', '--group', '32', '--steps', '4', '--patience', '0', '--tuning', JSON.stringify(TUNING), '--out', ref], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    expect(run.status, run.stderr).toBe(0);
    // the phases outside the progress bar are named, the report and the export with their predicted time
    for (const phase of ['tokens', 'calibration', 'report', 'export']) expect(run.stderr).toMatch(new RegExp(`(^|[\\r\\n])${phase}… \\(about `));
    expect(modes(out)).toEqual(modes(ref));
    // The directories it had to create, too.
    expect(statSync(join(scratch, 'new')).mode & 0o777).toBe(statSync(ref).mode & 0o777);
  });

  it('refuses a non-empty directory unless --force, which replaces its own entries and nothing else', () => {
    const out = join(scratch, 'full');
    mkdirSync(out);
    writeFileSync(join(out, 'foreign.txt'), 'mine');
    writeFileSync(join(out, 'export.json'), 'old');
    // A symlink planted where the export writes a directory, pointing somewhere else.
    const elsewhere = join(scratch, 'elsewhere');
    mkdirSync(elsewhere);
    writeFileSync(join(elsewhere, 'canary'), 'untouched');
    symlinkSync(elsewhere, join(out, 'gptq'));

    const refused = exportCli(out);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/--out .*full is not empty \(3 entries\).*--force/);
    expect(readFileSync(join(out, 'export.json'), 'utf8')).toBe('old');

    const r = exportCli(out, '--force');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readFileSync(join(out, 'foreign.txt'), 'utf8')).toBe('mine');
    expect(lstatSync(join(out, 'gptq')).isDirectory()).toBe(true);
    expect(readdirSync(elsewhere)).toEqual(['canary']);
    expect(readFileSync(join(elsewhere, 'canary'), 'utf8')).toBe('untouched');
    const got = readDir(out);
    got.delete('foreign.txt');
    expect([...got.keys()]).toEqual(SEARCH_EXPORT_FILES);
    expect(sameFiles(got, readDir(join(home, 'jobs', job, 'export')))).toBe(true);
    expect(readdirSync(out).filter((n) => n.startsWith('.invarx'))).toEqual([]);
  });

  it('--out naming a file or /dev/null is a client error, not an internal one', async () => {
    const file = join(scratch, 'a-file');
    writeFileSync(file, 'x');
    for (const out of [file, '/dev/null']) {
      const r = exportCli(out);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/exists and is not a directory/);
      const reply = await call(home, 'export', { job, out }).catch((e) => (e as { reply: { error: { code: string } } }).reply);
      expect(reply).toMatchObject({ ok: false, error: { code: 'bad-args' } });
    }
    expect(readFileSync(file, 'utf8')).toBe('x');
  });

  it('a full disk fails the export with no-space and leaves the directory as it was', async () => {
    const out = join(scratch, 'keep');
    mkdirSync(out);
    writeFileSync(join(out, 'export.json'), 'old');
    writeFileSync(join(out, 'foreign.txt'), 'mine');
    disk.fill();
    let r;
    try {
      r = exportCli(out, '--force');
    } finally {
      disk.free();
    }
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot write the export to .*keep: no space left on device \(ENOSPC\)/);
    expect(readdirSync(out).sort()).toEqual(['export.json', 'foreign.txt']);
    expect(readFileSync(join(out, 'export.json'), 'utf8')).toBe('old');
    expect(daemon.alive()).toBe(true);
    expect(existsSync(join(out, 'gptq'))).toBe(false);
    expect(await call(home, 'list')).toHaveLength(1);
  });
});
