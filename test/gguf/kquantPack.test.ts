/**
 * Packing the k-quants from codes and super-block parameters: packRow(unpackRow(bytes))
 * gives ggml's bytes back, rows assembled from parameters and codes of our own dequantize
 * as the formula says, and what the format cannot hold is refused by name.
 */
import { describe, expect, it } from 'vitest';
import { dequantizeUnpacked, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K } from '../../core/quant/formats';
import { Rng } from '../../core/rng';

const KQUANTS = [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K];
/** Byte offsets of each k-quant block's fp16 fields. */
const F16_AT: Record<string, number[]> = { q2_k: [80, 82], q3_k: [108], q4_k: [0, 2], q5_k: [0, 2], q6_k: [208] };

function rows(seed: number, count: number, n: number): Float32Array[] {
  const rng = Rng.fromSeed(seed);
  return Array.from({ length: count }, (_, r) => Float32Array.from({ length: n }, (_, i) => {
    const g = rng.normal() * (r % 3 === 0 ? 0.02 : 1);
    if (r % 7 === 3 && i % 256 < 40) return 0; // a stretch of zeros (sub-blocks whose scale is 0)
    return r % 5 === 0 ? Math.abs(g) + 0.01 : rng.float() < 0.02 ? g * 10 : g;
  }));
}

describe('k-quants from codes and super-block parameters', () => {
  it.each(KQUANTS.map((f) => [f.name, f] as const))('%s: packRow(unpackRow(bytes)) gives the bytes back', (_n, fmt) => {
    for (const x of rows(11, 24, 512)) {
      const bytes = fmt.quantizeRow(x);
      const u = fmt.unpackRow(bytes, x.length);
      expect(Buffer.from(fmt.packRow!(u)).equals(Buffer.from(bytes))).toBe(true);
      expect(dequantizeUnpacked(u)).toEqual(fmt.dequantizeRow(bytes, x.length));
    }
  });

  it.each(KQUANTS.map((f) => [f.name, f] as const))('%s: other codes on the same parameters pack and unpack exactly', (_n, fmt) => {
    const rng = Rng.fromSeed(5);
    const top = fmt.name === 'q2_k' ? 3 : fmt.name === 'q3_k' ? 7 : fmt.name === 'q4_k' ? 15 : fmt.name === 'q5_k' ? 31 : 63;
    for (const x of rows(12, 8, 256)) {
      const u = fmt.unpackRow(fmt.quantizeRow(x), x.length);
      for (let j = 0; j < u.n; j++) u.codes[j] = Math.floor(rng.float() * (top + 1));
      const back = fmt.unpackRow(fmt.packRow!(u), u.n);
      expect(back).toEqual(u);
      // the values: written here from the definition, scale·(code − zero) then + min, in float32
      const want = Float32Array.from(u.codes, (c, j) => {
        const g = Math.floor(j / u.group);
        const v = Math.fround(Math.fround(u.k!.d[0] * u.k!.sc[g]) * (c - u.zero[g]));
        return u.min ? Math.fround(v - Math.fround(u.k!.dmin![0] * u.k!.m![g])) : v;
      });
      expect(fmt.dequantizeRow(fmt.packRow!(u), u.n)).toEqual(want);
    }
  });

  // every bit of a k-quant block means something, so packRow must give any block back; with
  // unpackRow held to an independent reading of the byte layout (test/core/formats.test.ts)
  // this pins packRow's layout down
  it.each(KQUANTS.map((f) => [f.name, f] as const))('%s: packRow(unpackRow(random bytes)) gives them back', (_n, fmt) => {
    const rng = Rng.fromSeed(17);
    for (let t = 0; t < 20; t++) {
      const bytes = Uint8Array.from({ length: 2 * fmt.blockBytes }, () => Math.floor(rng.float() * 256));
      // finite fp16 fields (d, dmin): clear the top exponent bit
      for (const b of [0, fmt.blockBytes]) for (const at of F16_AT[fmt.name]) bytes[b + at + 1] &= 0xbf;
      expect(Buffer.from(fmt.packRow!(fmt.unpackRow(bytes, 512))).equals(Buffer.from(bytes))).toBe(true);
    }
  });

  it('refuses what the format cannot hold', () => {
    const x = rows(13, 1, 256)[0];
    const fresh = () => Q4_K.unpackRow(Q4_K.quantizeRow(x), 256);
    const noK = fresh();
    delete noK.k;
    expect(() => Q4_K.packRow!(noK)).toThrow(/super-block parameters/);
    const badSc = fresh();
    badSc.k!.sc[2] = 64;
    expect(() => Q4_K.packRow!(badSc)).toThrow(/sub-block scale 64 is out of range/);
    const badScale = fresh();
    badScale.scale[1] *= 1.5;
    expect(() => Q4_K.packRow!(badScale)).toThrow(/scale of group 1 is not d · sc/);
    const badD = fresh();
    badD.k!.d[0] = 0.1;
    expect(() => Q4_K.packRow!(badD)).toThrow(/q4_k: d 0.100\d* is not an fp16 value/);
    const badCode = Q3_K.unpackRow(Q3_K.quantizeRow(x), 256);
    badCode.codes[9] = 8;
    expect(() => Q3_K.packRow!(badCode)).toThrow(/code 8 is out of range/);
  });
});
