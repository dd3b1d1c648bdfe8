/**
 * Packing the 32-block formats from codes and parameters, and our RTN+clip on them: the
 * clipped rows are rows of the format (packed, read back, the same values), never worse
 * than ggml's reference quantizer block by block, and better where a block has outliers.
 */
import { describe, expect, it } from 'vitest';
import { clippedFormat, clippedKFormat, dequantizeUnpacked, Q2_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K } from '../../core/quant/formats';
import { blockErrors, heavyTailRows } from './heavyTail';

const LEGACY = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0];



describe('32-block formats from codes and parameters', () => {
  it.each(LEGACY.map((f) => [f.name, f] as const))('%s: packRow(unpackRow(bytes)) gives the bytes back', (_n, fmt) => {
    for (const x of heavyTailRows(1, 20, 256)) {
      const bytes = fmt.quantizeRow(x);
      expect(fmt.packRow!(fmt.unpackRow(bytes, x.length))).toEqual(bytes);
    }
  });

  it('refuses parameters the format cannot hold', () => {
    const u = Q4_0.unpackRow(Q4_0.quantizeRow(heavyTailRows(2, 1, 64)[0]), 64);
    u.scale[0] = 0.1; // not an fp16 value
    expect(() => Q4_0.packRow!(u)).toThrow(/not an fp16 value/);
    const v = Q4_0.unpackRow(Q4_0.quantizeRow(heavyTailRows(2, 1, 64)[0]), 64);
    v.codes[3] = 16;
    expect(() => Q4_0.packRow!(v)).toThrow(/out of range/);
  });
});

describe('RTN+clip on ggml formats', () => {
  it.each(LEGACY.map((f) => [f.name, f] as const))('%s: rows of the format, never worse than the reference per block, better on some', (_n, fmt) => {
    const clip = clippedFormat(fmt)!;
    let better = 0;
    for (const x of heavyTailRows(3, 40, 128)) {
      const bytes = clip.quantizeRow(x);
      const u = fmt.unpackRow(bytes, x.length);
      expect(fmt.packRow!(u)).toEqual(bytes);
      const y = fmt.dequantizeRow(bytes, x.length);
      expect(dequantizeUnpacked(u)).toEqual(y);
      const ref = blockErrors(x, fmt.dequantizeRow(fmt.quantizeRow(x), x.length), 32);
      blockErrors(x, y, 32).forEach((e, b) => {
        expect(e).toBeLessThanOrEqual(ref[b]);
        if (e < ref[b]) better++;
      });
    }
    // at 4 bits clipping the outliers' blocks pays; at 5 and 8 bits it rarely does
    if (fmt.name.startsWith('q4')) expect(better).toBeGreaterThan(10);
  });

  it('k-quants get their super-block clip search (kquantClip.ts)', () => {
    const x = heavyTailRows(3, 4, 512)[0];
    for (const fmt of [Q4_K, Q2_K]) {
      const clip = clippedFormat(fmt)!;
      expect(clip.name).toBe(`${fmt.name}+clip`);
      expect(clip.quantizeRow(x)).toEqual(clippedKFormat(fmt).quantizeRow(x));
    }
  });
});
