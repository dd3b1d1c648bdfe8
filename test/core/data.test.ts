import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import {
  DEFAULT_CALIB, DEFAULT_HELD_OUT, defaultCalibTokens, defaultHeldOutTokens, loadTextFile, loadTokenFile, overlapCount,
  parseTokenFile, sampleSets, sampleTokens,
} from '../../core/data';
import { loadTokenizer } from '../../core/tokenizer';
import { getBackend } from '../../kernels/registry';
import { shippedModel, TOKENIZER_PATH } from '../helpers';

const GREEDY = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];
const dir = mkdtempSync(join(tmpdir(), 'invarx-data-'));
const cfg = { vocabSize: 512, seqLen: 8 };

function file(name: string, content: string | Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

function expectError(f: () => unknown, re: RegExp): void {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(InvarxError);
    expect((e as Error).message).toMatch(re);
    return;
  }
  throw new Error('expected an InvarxError');
}

/** A .npy file (format 1.0, or 2.0 with a uint32 header length) holding `values`. */
function npy(descr: string, shape: number[], values: number[], opts: { fortran?: boolean; version?: 1 | 2 } = {}): Buffer {
  const version = opts.version ?? 1;
  const dict = `{'descr': '${descr}', 'fortran_order': ${opts.fortran ? 'True' : 'False'}, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const pre = 6 + 2 + (version === 1 ? 2 : 4);
  const total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  const header = dict.padEnd(total - pre - 1, ' ') + '\n';
  const head = Buffer.alloc(pre);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]).copy(head);
  if (version === 1) head.writeUInt16LE(header.length, 8);
  else head.writeUInt32LE(header.length, 8);
  const size = Number(descr.slice(2));
  const le = descr[0] !== '>';
  const data = Buffer.alloc(values.length * size);
  values.forEach((v, i) => {
    const o = i * size;
    if (descr.slice(1) === 'i4') le ? data.writeInt32LE(v, o) : data.writeInt32BE(v, o);
    else if (descr.slice(1) === 'i8') le ? data.writeBigInt64LE(BigInt(v), o) : data.writeBigInt64BE(BigInt(v), o);
    else if (descr.slice(1) === 'u2') data.writeUInt16LE(v, o);
    else if (descr.slice(1) === 'f4') data.writeFloatLE(v, o);
    else throw new Error(descr);
  });
  return Buffer.concat([head, Buffer.from(header, 'latin1'), data]);
}

describe('sampleTokens', () => {
  const m = shippedModel();

  it('draws reproducible sequences from BOS, within the vocabulary', () => {
    const a = sampleTokens(m, { count: 3, length: 20, seed: 7 });
    expect(a).toEqual(sampleTokens(m, { count: 3, length: 20, seed: 7 }));
    expect(a).toHaveLength(3);
    for (const s of a) {
      expect(s).toHaveLength(20);
      expect(s[0]).toBe(1);
      for (const id of s) expect(Number.isInteger(id) && id >= 0 && id < 512).toBe(true);
    }
    expect(a[0]).not.toEqual(a[1]);
    expect(sampleTokens(m, { count: 3, length: 20, seed: 8 })).not.toEqual(a);
    // One Rng, sequence after sequence: a smaller count is a prefix of the larger set.
    expect(sampleTokens(m, { count: 2, length: 20, seed: 7 })).toEqual(a.slice(0, 2));
  });

  it('several sets decoded together are each the set sampled alone (own seed, own order; lengths may differ)', () => {
    const sets = [{ count: 5, length: 24, seed: 3 }, { count: 4, length: 24, seed: 9 }, { count: 6, length: 12, seed: 3 }];
    for (const ops of [undefined, getBackend('wasm')]) {
      const together = sampleSets(m, sets, { ops });
      expect(together).toEqual(sets.map((s) => sampleTokens(m, { ...s, ops })));
    }
  });

  it('a set with a temperature of its own is, among others, the set sampled alone at that temperature', () => {
    const sets = [{ count: 3, length: 20, seed: 5, temperature: 0.6 }, { count: 3, length: 20, seed: 6 }];
    const [cool, plain] = sampleSets(m, sets);
    expect(cool).toEqual(sampleTokens(m, { count: 3, length: 20, seed: 5, temperature: 0.6 }));
    expect(plain).toEqual(sampleTokens(m, { count: 3, length: 20, seed: 6 }));
    expect(cool).not.toEqual(sampleTokens(m, { count: 3, length: 20, seed: 5 }));
    expectError(() => sampleSets(m, [{ count: 1, length: 4, seed: 1, temperature: -0.5 }]), /temperature/);
  });

  it('is greedy at temperature 0', () => {
    const [s] = sampleTokens(m, { count: 1, length: 16, seed: 1, temperature: 0 });
    expect(s).toEqual([1, ...GREEDY]);
  });

  it('a backend\'s own draws (drawTokens) sample the sets its logits give with the JS draw; greedy sets take argmax', () => {
    const ops = getBackend('wasm');
    expect(ops.drawTokens).toBeDefined();
    let calls = 0;
    const counted = { ...ops, drawTokens: (...a: Parameters<NonNullable<typeof ops.drawTokens>>) => (calls++, ops.drawTokens!(...a)) };
    const sets = [{ count: 6, length: 48, seed: 21 }, { count: 5, length: 48, seed: 22, temperature: 0.7 }];
    const own = sampleSets(m, sets, { ops: counted });
    expect(calls).toBe(47);
    expect(own).toEqual(sampleSets(m, sets, { ops: { ...ops, drawTokens: undefined } }));
    calls = 0;
    const greedy = sampleSets(m, [...sets, { count: 4, length: 48, seed: 23, temperature: 0 }], { ops: counted });
    expect(calls).toBe(0);
    expect(greedy.slice(0, 2)).toEqual(own);
  });

  it('rejects impossible options', () => {
    expectError(() => sampleTokens(m, { count: 0, length: 4, seed: 1 }), /count/);
    expectError(() => sampleTokens(m, { count: 1, length: 513, seed: 1 }), /length .* seqLen 512/);
    expectError(() => sampleTokens(m, { count: 1, length: 4, seed: 1, temperature: -1 }), /temperature/);
  });

  it('default calibration and held-out sets use different seeds and share no sequence', () => {
    expect(DEFAULT_CALIB.seed).not.toBe(DEFAULT_HELD_OUT.seed);
    // Sampled with the wasm backend, as the CLI does (only for speed; results match js).
    const ops = getBackend('wasm');
    const calib = defaultCalibTokens(m, ops);
    const held = defaultHeldOutTokens(m, ops);
    expect(calib).toHaveLength(DEFAULT_CALIB.count);
    expect(held).toHaveLength(DEFAULT_HELD_OUT.count);
    expect(held[0]).toHaveLength(DEFAULT_HELD_OUT.length);
    expect(overlapCount(calib, held)).toBe(0);
    expect(overlapCount(calib, [calib[3], held[0]])).toBe(1);
  });
});

describe('token files', () => {
  it('reads JSON arrays of arrays, and a flat array as one sequence', () => {
    expect(loadTokenFile(file('a.json', '[[1, 2, 3], [4, 5]]'), cfg)).toEqual([[1, 2, 3], [4, 5]]);
    expect(loadTokenFile(file('flat.json', ' [1, 2, 3]\n'), cfg)).toEqual([[1, 2, 3]]);
  });

  it('reads whitespace-separated ids, one sequence per line', () => {
    expect(loadTokenFile(file('a.txt', '1 2  3\r\n\n  4\t5\n'), cfg)).toEqual([[1, 2, 3], [4, 5]]);
  });

  it('reads .npy int32/int64 arrays, 1-D and 2-D, C and Fortran order, format 1 and 2', () => {
    expect(loadTokenFile(file('a.npy', npy('<i4', [2, 3], [1, 2, 3, 4, 5, 6])), cfg)).toEqual([[1, 2, 3], [4, 5, 6]]);
    expect(loadTokenFile(file('b.npy', npy('<i8', [4], [1, 9, 8, 7])), cfg)).toEqual([[1, 9, 8, 7]]);
    expect(loadTokenFile(file('c.npy', npy('<i4', [2, 3], [1, 4, 2, 5, 3, 6], { fortran: true })), cfg)).toEqual([[1, 2, 3], [4, 5, 6]]);
    expect(loadTokenFile(file('d.npy', npy('>i4', [1, 2], [300, 1], { version: 2 })), cfg)).toEqual([[300, 1]]);
    expect(loadTokenFile(file('e.npy', npy('<u2', [1, 2], [511, 0])), cfg)).toEqual([[511, 0]]);
  });

  it('recognises the format by content, not by extension', () => {
    expect(parseTokenFile(Buffer.from('[[7]]'), 'x.txt')).toEqual([[7]]);
    expect(parseTokenFile(npy('<i4', [1], [7]), 'x.json')).toEqual([[7]]);
  });

  it('cuts sequences longer than seqLen', () => {
    expect(loadTokenFile(file('long.json', JSON.stringify([[...Array(12).keys()]])), cfg)).toEqual([[0, 1, 2, 3, 4, 5, 6, 7]]);
  });

  it('names the file and the problem for malformed input', () => {
    expectError(() => loadTokenFile(join(dir, 'missing.json'), cfg), /cannot read token file .*missing\.json: ENOENT/);
    expectError(() => loadTokenFile(file('oov.json', '[[1, 2], [3, 512]]'), cfg), /oov\.json: sequence 1, position 1: token id 512 is outside the vocabulary \[0, 512\)/);
    expectError(() => loadTokenFile(file('neg.txt', '1 -4'), cfg), /neg\.txt: sequence 0, position 1: token id -4/);
    expectError(() => loadTokenFile(file('frac.json', '[[1.5]]'), cfg), /token id 1\.5/);
    expectError(() => loadTokenFile(file('empty.json', '[]'), cfg), /empty\.json: no token sequences/);
    expectError(() => loadTokenFile(file('blank.txt', '\n \n'), cfg), /blank\.txt: no token sequences/);
    expectError(() => loadTokenFile(file('emptyseq.json', '[[1], []]'), cfg), /emptyseq\.json: sequence 1 is empty/);
    expectError(() => loadTokenFile(file('bad.json', '[[1, 2'), cfg), /bad\.json: not valid JSON: line 1, column 7: expected ',' or '\]'/);
    expectError(() => loadTokenFile(file('obj.json', '[{"a": 1}]'), cfg), /obj\.json: element 0 is not an array/);
    expectError(() => loadTokenFile(file('str.json', '[["a"]]'), cfg), /str\.json: sequence 0, position 0: expected a token id \(a number\), found a string/);
    expectError(() => loadTokenFile(file('word.txt', '1 2\n3 x4\n'), cfg), /word\.txt: line 2, word 2: expected an integer token id/);
    expectError(() => loadTokenFile(file('f.npy', npy('<f4', [2], [1, 2])), cfg), /f\.npy: bad \.npy file: dtype '<f4' is not an integer type/);
    expectError(() => loadTokenFile(file('cut.npy', npy('<i4', [2, 3], [1, 2, 3, 4, 5, 6]).subarray(0, 140)), cfg), /cut\.npy: bad \.npy file: truncated/);
    expectError(() => loadTokenFile(file('hdr.npy', npy('<i4', [2], [1, 2]).subarray(0, 30)), cfg), /hdr\.npy: bad \.npy file: truncated header/);
    expectError(() => loadTokenFile(file('3d.npy', npy('<i4', [1, 1, 2], [1, 2])), cfg), /expected a 1-D or 2-D array/);
    expectError(() => loadTokenFile(file('oov.npy', npy('<i8', [2], [1, 2 ** 40])), cfg), /oov\.npy: sequence 0, position 1: token id 1099511627776/);
  });
});

describe('text files', () => {
  const tok = loadTokenizer(TOKENIZER_PATH, 512);

  it('encodes each non-blank line with BOS and cuts it to seqLen', () => {
    const p = file('t.txt', 'Once upon a time, there was a little girl named Lily.\r\n\n  \nHello\n');
    const seqs = loadTextFile(p, tok, { vocabSize: 512, seqLen: 512 });
    expect(seqs).toEqual([[1, ...GREEDY], tok.encode('Hello')]);
    expect(loadTextFile(p, tok, cfg)[0]).toEqual([1, ...GREEDY.slice(0, 7)]);
  });

  it('is an error for a missing or blank file', () => {
    expectError(() => loadTextFile(join(dir, 'nope.txt'), tok, cfg), /cannot read text file .*nope\.txt/);
    expectError(() => loadTextFile(file('blank2.txt', '\n\n'), tok, cfg), /blank2\.txt: no text/);
  });
});
