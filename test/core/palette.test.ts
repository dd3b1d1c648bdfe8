import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { packPalette, paletteBytes, unpackPalette } from '../../core/quant/palette';
import { fakeQuantRtn } from '../../core/quant/rtn';

const sameBits = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('palette-packed quantized weights', () => {
  it('fake-quantized weights of any grid round-trip bit for bit in 1/2 (≤ 4 bits) or 1 + 4·2^bits/group bytes a weight', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 70 }), fc.integer({ min: 2, max: 8 }), fc.integer({ min: 1, max: 80 }), fc.boolean(), fc.integer(),
        (rows, cols, bits, group, clip, seed) => {
          let s = seed >>> 0;
          const w = Float32Array.from({ length: rows * cols }, () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 3);
          const q = fakeQuantRtn(w, rows, cols, { bits, group, clip });
          const p = packPalette(q, rows, cols, group, 2 ** bits);
          expect(p).not.toBeNull();
          expect(sameBits(unpackPalette(p!), q)).toBe(true);
          const indexBytes = bits <= 4 ? Math.ceil((rows * cols) / 2) : rows * cols;
          expect(paletteBytes(p!)).toBe(indexBytes + 4 * 2 ** bits * rows * Math.ceil(cols / group));
        },
      ),
    );
  });

  it('keeps -0 apart from +0, unpacks into a given array, and says null for values off any small grid', () => {
    const w = Float32Array.from([0, -0, 1.5, -0, 0, 1.5]);
    const p = packPalette(w, 2, 3, 3, 2);
    expect(p).toBeNull(); // row 0 holds 0, -0 and 1.5: three values
    const p3 = packPalette(w, 2, 3, 3, 4)!;
    const out = new Float32Array(6).fill(7);
    expect(unpackPalette(p3, out)).toBe(out);
    expect(sameBits(out, w)).toBe(true);
    expect(Object.is(out[1], -0) && Object.is(out[4], 0)).toBe(true);
    expect(packPalette(Float32Array.from({ length: 64 }, (_, i) => i), 1, 64, 64, 16)).toBeNull();
    expect(() => packPalette(w, 2, 2, 3, 4)).toThrow(RangeError);
    expect(() => packPalette(w, 2, 3, 3, 257)).toThrow(RangeError);
  });
});
