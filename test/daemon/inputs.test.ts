/**
 * Inputs that would block or never end — a FIFO or /dev/zero as the model, tokenizer or a
 * token file — fail their job at once with one clear error, and the queue goes on; error
 * messages about unreadable token files name the file and the place, never its content
 * (/proc/self/environ would otherwise leak the daemon's environment).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DAEMON_CLI, DaemonProc, MODEL_PATH, ROOT, ensureBuilt, jobConfig, submit, tmpHome, waitState } from './harness';

const SECRET = 'IXSECRET=correct-horse-battery';
let dir: string;
let fifo: string;
let home: string;
let daemon: DaemonProc;
/** Another daemon for the message checks, so a blocked queue above cannot hide their result. */
let home2: string;
let daemon2: DaemonProc;

beforeAll(async () => {
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), 'ixi-'));
  fifo = join(dir, 'model.bin');
  execFileSync('mkfifo', [fifo]);
  home = tmpHome();
  daemon = await DaemonProc.start(home);
  home2 = tmpHome();
  daemon2 = await DaemonProc.start(home2, [], { env: { IXSECRET: 'correct-horse-battery' } });
});

afterAll(async () => {
  // Release any thread still blocked opening the FIFO (non-blocking: no reader, no wait).
  try {
    closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
  } catch {
    /* nobody is reading it */
  }
  if (daemon?.alive()) await daemon.kill('SIGKILL');
  if (daemon2?.alive()) await daemon2.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

async function failure(config: Record<string, unknown>, h = home): Promise<{ code: string; message: string }> {
  const id = await submit(h, jobConfig(config));
  const v = await waitState(h, id, ['failed', 'done', 'cancelled'], 60_000);
  expect(v.state, JSON.stringify(config)).toBe('failed');
  return v.error!;
}

describe('inputs that block or never end', () => {
  it('a FIFO or a device as model or token file fails its job with one clear error', async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ model: fifo }, 'bad-model', /model file .*model\.bin is a FIFO \(named pipe\); expected a regular file or a directory/],
      [{ model: '/dev/zero' }, 'bad-model', /model file \/dev\/zero is a character device/],
      [{ calibTokens: fifo }, 'bad-tokens', /token file .*model\.bin is a FIFO/],
      [{ evalTokens: '/dev/zero' }, 'bad-tokens', /token file \/dev\/zero is a character device/],
    ];
    for (const [config, code, message] of cases) {
      const err = await failure(config);
      expect(err.code, JSON.stringify(config)).toBe(code);
      expect(err.message).toMatch(message);
    }
    // The queue went on: a good job after them runs.
    const ok = await submit(home, jobConfig({ steps: 2 }));
    expect((await waitState(home, ok, ['done', 'failed'], 90_000)).state).toBe('done');
  });

  it('the CLI refuses them too, at once', () => {
    const runs = [
      ['eval', '--model', fifo],
      ['eval', '--model', MODEL_PATH, '--tokens', fifo],
      ['eval', '--model', '/dev/zero'],
      ['generate', '--model', MODEL_PATH, '--tokenizer', '/dev/zero', '--steps', '4'],
    ];
    for (const args of runs) {
      const r = spawnSync(process.execPath, [DAEMON_CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(/is a (FIFO|character device)/);
    }
  });
});

describe('error messages do not echo file contents', () => {
  it('calibTokens=/proc/self/environ does not leak the daemon environment', async () => {
    const err = await failure({ calibTokens: '/proc/self/environ' }, home2);
    expect(err.code).toBe('bad-tokens');
    expect(err.message).toContain('/proc/self/environ');
    for (const name of [...Object.keys(process.env), 'IXSECRET']) expect(err.message).not.toContain(`${name}=`);
    expect(err.message).not.toContain('correct-horse');
  });

  it('text, JSON and .npy token files: the file, the line or position and what was expected', async () => {
    const txt = join(dir, 'secret.txt');
    writeFileSync(txt, `1 2 3\n4 ${SECRET} 5\n`);
    const json = join(dir, 'secret.json');
    writeFileSync(json, `[[1, 2],\n [3, ${SECRET}]]`);
    const jsonStr = join(dir, 'secret-str.json');
    writeFileSync(jsonStr, `[[1, "${SECRET}"]]`);
    const npy = join(dir, 'secret.npy');
    const header = `{'descr': '<i4', ${SECRET} }`.padEnd(118) + '\n';
    writeFileSync(npy, Buffer.concat([Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length, 0]), Buffer.from(header, 'latin1')]));
    const cases: [string, RegExp][] = [
      [txt, /secret\.txt: line 2, word 2: expected an integer token id/],
      [json, /secret\.json: not valid JSON: line 2, column 6: expected a value/],
      [jsonStr, /secret-str\.json: sequence 0, position 1: expected a token id \(a number\), found a string/],
      [npy, /secret\.npy: bad \.npy file: header lacks 'fortran_order' and 'shape'/],
    ];
    for (const [file, message] of cases) {
      const err = await failure({ calibTokens: file }, home2);
      expect(err.code).toBe('bad-tokens');
      expect(err.message).toMatch(message);
      expect(err.message).not.toMatch(/IXSECRET|correct-horse/);
    }
  });
});
