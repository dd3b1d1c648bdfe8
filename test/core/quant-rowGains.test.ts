import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { f16Round } from '../../core/model/halfFloat';
import { gainRows } from '../../core/quant/rowGains';
import { dequantize, numGroups, quantizeRtn } from '../../core/quant/rtn';

const weights = (rows: number, cols: number) => fc.array(fc.float({ min: -4, max: 4, noNaN: true, noDefaultInfinity: true }), { minLength: rows * cols, maxLength: rows * cols }).map((a) => Float32Array.from(a));
const gain = fc.double({ min: 0.85, max: 1.15, noNaN: true });

describe('row gains', () => {
  it('dequantizes to (q − zero) · scale·g in float64, the scale rounded as the quantizer rounds it; codes and zeros kept', () => {
    const rows = 3;
    const cols = 40;
    fc.assert(
      fc.property(weights(rows, cols), fc.array(gain, { minLength: rows, maxLength: rows }), fc.boolean(), fc.integer({ min: 2, max: 4 }), (w, gs, f16, bits) => {
        const spec = { bits, group: 16, clip: true, f16Scales: f16 };
        const qz = quantizeRtn(w, rows, cols, spec);
        const g = Float64Array.from(gs);
        const out = gainRows(qz, g, f16);
        expect(out.q).toBe(qz.q);
        expect(out.zero).toBe(qz.zero);
        const deq = dequantize(out);
        const nG = numGroups(cols, 16);
        for (let r = 0; r < rows; r++) {
          for (let j = 0; j < cols; j++) {
            const k = r * nG + Math.floor(j / 16);
            const s = Math.fround(qz.scale[k] * g[r]);
            const want = (qz.q[r * cols + j] - qz.zero[k]) * (f16 ? Math.min(f16Round(s), 65504) : s);
            expect(deq[r * cols + j]).toBe(Math.fround(want));
            // within the scale's rounding (relative, or fp16's subnormal step) of the gain applied to the weights themselves
            const plain = dequantize(qz)[r * cols + j] * g[r];
            const codes = Math.abs(qz.q[r * cols + j] - qz.zero[k]);
            expect(Math.abs(deq[r * cols + j] - plain)).toBeLessThanOrEqual(Math.abs(plain) * (f16 ? 2 ** -10 : 2 ** -22) + (f16 ? codes * 2 ** -25 : 0));
          }
        }
      }),
      { numRuns: 60 },
    );
  });

  it('leaves a row whose gain is 1 exactly as it was, and refuses a gain that is not a positive number', () => {
    const w = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i * 1.7));
    const qz = quantizeRtn(w, 2, 32, { bits: 3, group: 32, f16Scales: true });
    const out = gainRows(qz, Float64Array.of(1, 1.05), true);
    expect(dequantize(out).subarray(0, 32)).toEqual(dequantize(qz).subarray(0, 32));
    expect(dequantize(out).subarray(32)).not.toEqual(dequantize(qz).subarray(32));
    expect(() => gainRows(qz, Float64Array.of(1, 0), true)).toThrow(/gain 0/);
    expect(() => gainRows(qz, Float64Array.of(1, NaN), true)).toThrow(/not a positive/);
    expect(() => gainRows(qz, Float64Array.of(1), true)).toThrow(/1 gains for 2 rows/);
  });
});
