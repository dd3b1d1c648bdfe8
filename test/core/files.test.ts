/**
 * core/files.ts: input files must be regular files (a FIFO fails at once instead of
 * blocking), reads stop at the size a file had when opened, and JSON syntax errors name
 * the line, column and what was expected without quoting the text.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { describeJsonError, inputKind, jsonSyntaxError, readJsonFile, readRegularFile } from '../../core/files';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ixf-'));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function errorOf(fn: () => unknown): InvarxError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(InvarxError);
    return e as InvarxError;
  }
  throw new Error('expected an error');
}

describe('regular files only', () => {
  it('refuses a FIFO without blocking, a device, and a directory where a file is expected', () => {
    const fifo = join(dir, 'p');
    execFileSync('mkfifo', [fifo]);
    expect(errorOf(() => readRegularFile(fifo, 'token file', 'bad-tokens')).message).toBe(`token file ${fifo} is a FIFO (named pipe); expected a regular file`);
    expect(errorOf(() => readRegularFile('/dev/zero', 'token file', 'bad-tokens')).message).toMatch(/is a character device/);
    expect(errorOf(() => inputKind(fifo, 'model file', 'bad-model', { directory: true })).code).toBe('bad-model');
    const sub = join(dir, 'sub');
    mkdirSync(sub);
    expect(inputKind(sub, 'model file', 'bad-model', { directory: true })).toBe('dir');
    expect(errorOf(() => readRegularFile(sub, 'token file', 'bad-tokens')).message).toMatch(/is a directory; expected a regular file/);
    expect(errorOf(() => readRegularFile(join(dir, 'none'), 'token file', 'bad-tokens')).message).toMatch(/cannot read token file .*none: ENOENT/);
  });

  it('reads a regular file whole', () => {
    const f = join(dir, 'f.bin');
    const bytes = Buffer.from(Array.from({ length: 100_000 }, (_, i) => i % 251));
    writeFileSync(f, bytes);
    expect(readRegularFile(f, 'model file', 'bad-model').equals(bytes)).toBe(true);
    expect(inputKind(f, 'model file', 'bad-model')).toBe('file');
  });
});

describe('JSON syntax errors', () => {
  it('name the line, the column and what was expected', () => {
    expect(jsonSyntaxError('[[1, 2],\n [3, secret]]')).toEqual({ line: 2, column: 6, expected: 'a value (number, string, array, object, true, false or null)' });
    expect(jsonSyntaxError('[[1, 2')).toMatchObject({ line: 1, column: 7, expected: "',' or ']'" });
    expect(jsonSyntaxError('{"a": 1,}')).toMatchObject({ expected: 'a property name in double quotes' });
    expect(jsonSyntaxError('{"a" 1}')).toMatchObject({ expected: "':'" });
    expect(jsonSyntaxError('[1] x')).toMatchObject({ expected: 'the end of the input' });
    expect(jsonSyntaxError('"unterminated')).toMatchObject({ expected: 'a valid, closed string' });
    expect(jsonSyntaxError('['.repeat(200_000))).toMatchObject({ line: 1, column: 200_001 });
  });

  it('agree with JSON.parse on what is valid', () => {
    const samples = ['[]', '{}', '[1, -2.5e3, "a\\"b\\u00e9", true, false, null, {"k": [[]]}]', ' 0 ', '[01]', '[1,]', '[.5]', '"\t"', '{"a":1 "b":2}', '[1e]', 'nul', '[-]'];
    for (const s of samples) {
      let valid = true;
      try {
        JSON.parse(s);
      } catch {
        valid = false;
      }
      expect(jsonSyntaxError(s) === null, s).toBe(valid);
    }
  });

  it('readJsonFile reports them without quoting the file', () => {
    const f = join(dir, 'config.json');
    writeFileSync(f, '{"hidden_size": 64,\n "token": "s3cr3t" "x"}');
    const e = errorOf(() => readJsonFile(f, 'model config', 'bad-model'));
    expect(e.message).toBe(`${f}: not valid JSON: line 2, column 20: expected ',' or '}'`);
    expect(e.message).not.toContain('s3cr3t');
    expect(describeJsonError('[1, 2]')).toBe('not valid JSON');
  });
});
