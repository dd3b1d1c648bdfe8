import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { MODEL_PATH, TOKENIZER_PATH } from '../helpers';
import { ensureBuilt, expectUserError, invarx } from './cli';

const model = 'models/stories260K.bin';

beforeAll(() => ensureBuilt());

describe('invarx generate', () => {
  it('greedy from BOS prints the story llama2.c run.c prints (keeping the first leading space)', () => {
    const r = invarx('generate', '--model', model, '--steps', '60', '--temperature', '0');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout.startsWith(' Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.')).toBe(true);
    expect(r.stdout.endsWith('\n')).toBe(true);
  });

  it('continues a prompt, forcing its tokens first', () => {
    const r = invarx('generate', '--model', model, '--steps', '40', '--temperature', '0', '--prompt', 'Tom had a dog');
    expect(r.code).toBe(0);
    expect(r.stdout.startsWith(' Tom had a dog named Max. He loved to play with his toys')).toBe(true);
  });

  it('samples reproducibly from the seed', () => {
    const a = invarx('generate', '--model', model, '--steps', '40', '--seed', '3');
    const b = invarx('generate', '--model', model, '--steps', '40', '--seed', '3');
    const c = invarx('generate', '--model', model, '--steps', '40', '--seed', '4');
    expect(a.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
    expect(a.stdout).not.toBe(c.stdout);
    expect(a.stdout.length).toBeGreaterThan(20);
  });

  it('quantizes first with --bits (RTN, and GPTQ on calibration tokens)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'invarx-gen-'));
    const calib = join(dir, 'calib.json');
    writeFileSync(calib, JSON.stringify([[1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]]));
    const rtn = invarx('generate', '--model', model, '--steps', '30', '--temperature', '0', '--bits', '4', '--group', '32');
    expect(rtn.code).toBe(0);
    expect(rtn.stdout.trim().length).toBeGreaterThan(10);
    const gptq = invarx('generate', '--model', model, '--steps', '30', '--temperature', '0', '--bits', '4', '--method', 'gptq', '--calib-tokens', calib);
    expect(gptq.code).toBe(0);
    expect(gptq.stdout.trim().length).toBeGreaterThan(10);
  });

  it('reports user mistakes in one line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'invarx-gen-'));
    const bytes = readFileSync(MODEL_PATH);
    const truncated = join(dir, 'cut.bin');
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 100));
    copyFileSync(TOKENIZER_PATH, join(dir, 'tok512.bin'));
    const lonely = mkdtempSync(join(tmpdir(), 'invarx-gen-'));
    copyFileSync(MODEL_PATH, join(lonely, 'm.bin'));
    const cases: Array<[string[], RegExp]> = [
      [['--model', join(dir, 'missing.bin')], /cannot read model file .*missing\.bin: ENOENT/],
      [['--model', truncated], /cut\.bin: truncated/],
      [['--model', TOKENIZER_PATH], /not a llama2\.c model/],
      [['--model', join(lonely, 'm.bin')], /no tokenizer beside .*--tokenizer/],
      [['--model', model, '--tokenizer', MODEL_PATH], /not a llama2\.c tokenizer/],
      [['--model', model, '--bits', '9'], /--bits must be an integer from 2 to 8, got 9/],
      [['--model', model, '--bits', '2.5'], /--bits must be an integer/],
      [['--model', model, '--bits', '3', '--group', '0'], /--group must be an integer ≥ 1, got 0/],
      [['--model', model, '--bits', '3', '--method', 'awq'], /unknown method "awq"/],
      [['--model', model, '--group', '64'], /only apply with --bits/],
      [['--model', model, '--steps', '-1'], /--steps must be an integer ≥ 1/],
      [['--model', model, '--temperature', 'NaN'], /--temperature must be a number, got "NaN"/],
      [['--model', model, '--temperature', '-0.5'], /--temperature must be ≥ 0/],
      [['--model', model, '--seed', 'x'], /--seed must be a number/],
    ];
    for (const [args, re] of cases) expectUserError(invarx('generate', ...args), re);
  });
});
