/**
 * Packing the 32-block formats from codes and parameters, and our RTN+clip on them: the
 * clipped rows are rows of the format (packed, read back, the same values), never worse
 * than ggml's reference quantizer block by block, and better where a block has outliers.
 */
import { describe, expect, it } from 'vitest';
import { clippedFormat, clippedKFormat, dequantizeUnpacked, Q2_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K } from '../../core/quant/formats';
import { Rng } from '../../core/rng';

const LEGACY = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0];

/** Rows with a heavy tail (an outlier now and then), as trained weights have. */
function rows(seed: number, count: number, n: number): Float32Array[] {
  const rng = Rng.fromSeed(seed);
  return Array.from({ length: count }, (_, r) => Float32Array.from({ length: n }, () => {
    const g = rng.normal() * 0.05;
    return rng.float() < 0.03 ? g * 8 : r % 5 === 0 ? Math.abs(g) + 0.01 : g;
  }));
}

function blockErrors(x: Float32Array, y: Float32Array): number[] {
  const e: number[] = [];
  for (let b = 0; b < x.length; b += 32) {
    let s = 0;
    for (let j = b; j < b + 32; j++) s += (x[j] - y[j]) ** 2;
    e.push(s);
  }
  return e;
}

describe('32-block formats from codes and parameters', () => {
  it.each(LEGACY.map((f) => [f.name, f] as const))('%s: packRow(unpackRow(bytes)) gives the bytes back', (_n, fmt) => {
    for (const x of rows(1, 20, 256)) {
      const bytes = fmt.quantizeRow(x);
      expect(fmt.packRow!(fmt.unpackRow(bytes, x.length))).toEqual(bytes);
    }
  });

  it('refuses parameters the format cannot hold', () => {
    const u = Q4_0.unpackRow(Q4_0.quantizeRow(rows(2, 1, 64)[0]), 64);
    u.scale[0] = 0.1; // not an fp16 value
    expect(() => Q4_0.packRow!(u)).toThrow(/not an fp16 value/);
    const v = Q4_0.unpackRow(Q4_0.quantizeRow(rows(2, 1, 64)[0]), 64);
    v.codes[3] = 16;
    expect(() => Q4_0.packRow!(v)).toThrow(/out of range/);
  });
});

describe('RTN+clip on ggml formats', () => {
  it.each(LEGACY.map((f) => [f.name, f] as const))('%s: rows of the format, never worse than the reference per block, better on some', (_n, fmt) => {
    const clip = clippedFormat(fmt)!;
    let better = 0;
    for (const x of rows(3, 40, 128)) {
      const bytes = clip.quantizeRow(x);
      const u = fmt.unpackRow(bytes, x.length);
      expect(fmt.packRow!(u)).toEqual(bytes);
      const y = fmt.dequantizeRow(bytes, x.length);
      expect(dequantizeUnpacked(u)).toEqual(y);
      const ref = blockErrors(x, fmt.dequantizeRow(fmt.quantizeRow(x), x.length));
      blockErrors(x, y).forEach((e, b) => {
        expect(e).toBeLessThanOrEqual(ref[b]);
        if (e < ref[b]) better++;
      });
    }
    // at 4 bits clipping the outliers' blocks pays; at 5 and 8 bits it rarely does
    if (fmt.name.startsWith('q4')) expect(better).toBeGreaterThan(10);
  });

  it('k-quants get their super-block clip search (kquantClip.ts)', () => {
    const x = rows(3, 4, 512)[0];
    for (const fmt of [Q4_K, Q2_K]) {
      const clip = clippedFormat(fmt)!;
      expect(clip.name).toBe(`${fmt.name}+clip`);
      expect(clip.quantizeRow(x)).toEqual(clippedKFormat(fmt).quantizeRow(x));
    }
  });
});
