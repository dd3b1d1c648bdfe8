import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { InvarxError } from '../../core/errors';
import { Rng } from '../../core/rng';
import {
  DEFAULT_CLIP_GRID, dequantize, fakeQuantRtn, fakeQuantRtnRect, numGroups, quantizeRtn, validateSpec, type QuantSpec,
} from '../../core/quant/rtn';
import { f16Round } from '../../core/model/halfFloat';

/** A weight [rows, cols] plus a spec whose group may not divide cols. */
const caseArb = fc
  .record({
    rows: fc.integer({ min: 1, max: 6 }),
    cols: fc.integer({ min: 1, max: 70 }),
    bits: fc.integer({ min: 2, max: 8 }),
  })
  .chain(({ rows, cols, bits }) =>
    fc.record({ rows: fc.constant(rows), cols: fc.constant(cols), bits: fc.constant(bits), group: fc.integer({ min: 1, max: cols + 4 }) }),
  )
  .chain(({ rows, cols, bits, group }) =>
    fc.record({
      rows: fc.constant(rows),
      cols: fc.constant(cols),
      spec: fc.constant<QuantSpec>({ bits, group }),
      // fast-check floats include ±0, subnormals, huge and tiny values: the edge cases of min–max.
      w: fc.float32Array({ minLength: rows * cols, maxLength: rows * cols, noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 }),
    }),
  );

/** Each group's range [lo, hi], widened to contain 0 as the quantizer does. */
function groupRanges(w: Float32Array, rows: number, cols: number, group: number): { lo: number; hi: number; off: number; end: number }[] {
  const out = [];
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < numGroups(cols, group); g++) {
      const off = r * cols + g * group;
      const end = r * cols + Math.min(cols, (g + 1) * group);
      let lo = 0, hi = 0;
      for (let j = off; j < end; j++) {
        lo = Math.min(lo, w[j]);
        hi = Math.max(hi, w[j]);
      }
      out.push({ lo, hi, off, end });
    }
  }
  return out;
}

function sqErr(a: Float32Array, b: Float32Array, off: number, end: number): number {
  let s = 0;
  for (let j = off; j < end; j++) s += (a[j] - b[j]) ** 2;
  return s;
}

describe('RTN', () => {
  it('matches a hand-computed 2-bit group', () => {
    const w = Float32Array.from([-0.9, 0, 0.4, 1.2]);
    const qz = quantizeRtn(w, 1, 4, { bits: 2, group: 4 });
    // scale = 2.1/3 = 0.7, zero = round(0.9/0.7) = 1
    expect(qz.scale[0]).toBe(Math.fround(0.7));
    expect(Array.from(qz.zero)).toEqual([1]);
    expect(Array.from(qz.q)).toEqual([0, 1, 2, 3]);
    const s = Math.fround(0.7);
    expect(Array.from(dequantize(qz))).toEqual([-s, 0, s, 2 * s].map(Math.fround));
  });

  it('keeps every weight within half a step of its value (ragged groups, bits 2–8)', () => {
    fc.assert(
      fc.property(caseArb, ({ rows, cols, spec, w }) => {
        const deq = fakeQuantRtn(w, rows, cols, spec);
        const maxq = 2 ** spec.bits - 1;
        for (const { lo, hi, off, end } of groupRanges(w, rows, cols, spec.group)) {
          const halfStep = (hi - lo) / maxq / 2;
          const slack = 1e-6 * (hi - lo) + 1e-38; // float32 scale and products; subnormal ranges
          for (let j = off; j < end; j++) {
            expect(Number.isFinite(deq[j])).toBe(true);
            expect(Math.abs(deq[j] - w[j])).toBeLessThanOrEqual(halfStep + slack);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('gives integer codes in range that dequantize exactly to the fake-quant weights', () => {
    fc.assert(
      fc.property(caseArb, fc.boolean(), ({ rows, cols, spec, w }, clip) => {
        const s = { ...spec, clip };
        const qz = quantizeRtn(w, rows, cols, s);
        const nG = numGroups(cols, s.group);
        expect(qz.q.length).toBe(rows * cols);
        expect(qz.scale.length).toBe(rows * nG);
        expect(qz.zero.length).toBe(rows * nG);
        const maxq = 2 ** s.bits - 1;
        for (const c of qz.q) expect(c).toBeLessThanOrEqual(maxq);
        for (const z of qz.zero) expect(z).toBeLessThanOrEqual(maxq);
        for (const sc of qz.scale) expect(sc).toBeGreaterThan(0);
        expect(dequantize(qz)).toEqual(fakeQuantRtn(w, rows, cols, s));
      }),
      { numRuns: 200 },
    );
  });

  it('with fp16 scales: every scale is an fp16 value, codes are chosen on it, and weights stay within half a step of the fp16 grid', () => {
    fc.assert(
      fc.property(caseArb, fc.boolean(), ({ rows, cols, spec, w }, clip) => {
        const s = { ...spec, clip, f16Scales: true };
        const qz = quantizeRtn(w, rows, cols, s);
        const maxq = 2 ** s.bits - 1;
        for (const sc of qz.scale) expect(f16Round(sc)).toBe(sc);
        expect(dequantize(qz)).toEqual(fakeQuantRtn(w, rows, cols, s));
        if (clip) return;
        const deq = dequantize(qz);
        for (const { lo, hi, off, end } of groupRanges(w, rows, cols, s.group)) {
          // The grid s·(k − z), k = 0..maxq, with s = fp16(range / maxq) (clamped to fp16's
          // largest value) reaches within s/2 of lo; where s came out below range / maxq its
          // top falls short of hi by the rest. A range whose fp16 scale underflows maps to 0.
          const s16 = Math.min(f16Round(Math.fround((hi - lo) / maxq)), 65504);
          const slack = 1e-6 * (hi - lo) + 1e-38;
          const bound = s16 > 0 ? s16 / 2 + Math.max(0, hi - lo - maxq * s16) + slack : Math.max(-lo, hi);
          for (let j = off; j < end; j++) expect(Math.abs(deq[j] - w[j])).toBeLessThanOrEqual(bound);
        }
      }),
      { numRuns: 300 },
    );
    // A scale that is not an fp16 value without the option.
    const w = Float32Array.of(0.1, -0.3, 0.77, 0.05);
    expect(f16Round(quantizeRtn(w, 1, 4, { bits: 3, group: 4 }).scale[0])).not.toBe(quantizeRtn(w, 1, 4, { bits: 3, group: 4 }).scale[0]);
  });

  it('re-quantizes a rectangle of rows × groups exactly like the whole matrix, touching nothing else', () => {
    const rectArb = caseArb.chain((c) => {
      const nG = numGroups(c.cols, c.spec.group);
      return fc.record({
        c: fc.constant(c),
        rows: fc.tuple(fc.integer({ min: 0, max: c.rows }), fc.integer({ min: 0, max: c.rows })),
        groups: fc.tuple(fc.integer({ min: 0, max: nG }), fc.integer({ min: 0, max: nG })),
        clip: fc.boolean(),
      });
    });
    fc.assert(
      fc.property(rectArb, ({ c, rows: [ra, rb], groups: [ga, gb], clip }) => {
        const { cols, spec, w } = c;
        const s = { ...spec, clip };
        const [r0, r1] = [Math.min(ra, rb), Math.max(ra, rb)];
        const [g0, g1] = [Math.min(ga, gb), Math.max(ga, gb)];
        const full = fakeQuantRtn(w, c.rows, cols, s);
        const out = new Float32Array(w.length).fill(NaN);
        fakeQuantRtnRect(w, cols, s, out, r0, r1, g0, g1);
        for (let r = 0; r < c.rows; r++) {
          for (let j = 0; j < cols; j++) {
            const g = Math.floor(j / s.group);
            const inside = r >= r0 && r < r1 && g >= g0 && g < g1;
            const v = out[r * cols + j];
            if (inside) expect(v).toBe(full[r * cols + j]);
            else expect(v).toBeNaN();
          }
        }
      }),
      { numRuns: 200 },
    );
  });

  it('clip search never increases a group’s squared error, and helps on Gaussian groups', () => {
    fc.assert(
      fc.property(caseArb, fc.option(fc.array(fc.double({ min: 0.05, max: 1, noNaN: true }), { maxLength: 6 })), ({ rows, cols, spec, w }, grid) => {
        const plain = fakeQuantRtn(w, rows, cols, spec);
        const clipped = fakeQuantRtn(w, rows, cols, { ...spec, clip: grid ?? true });
        for (const { off, end } of groupRanges(w, rows, cols, spec.group)) {
          expect(sqErr(clipped, w, off, end)).toBeLessThanOrEqual(sqErr(plain, w, off, end));
        }
      }),
      { numRuns: 300 },
    );
    // On Gaussian weights at 3 bits the best shrink ratio beats min–max clearly (~0.8×).
    const rng = Rng.fromSeed(7);
    const cols = 64;
    const w = Float32Array.from({ length: 4 * cols }, () => rng.normal());
    const spec = { bits: 3, group: 32 };
    const plain = fakeQuantRtn(w, 4, cols, spec);
    const clipped = fakeQuantRtn(w, 4, cols, { ...spec, clip: true });
    expect(sqErr(clipped, w, 0, w.length)).toBeLessThan(0.9 * sqErr(plain, w, 0, w.length));
  });

  it('handles constant and all-zero groups without NaN', () => {
    const w = Float32Array.from([0, 0, 0, 0, 3, 3, 3, 3, -2, -2, -2, -2]);
    for (const bits of [2, 4, 8]) {
      const deq = fakeQuantRtn(w, 1, 12, { bits, group: 4, clip: true });
      for (let j = 0; j < 12; j++) expect(Math.abs(deq[j] - w[j])).toBeLessThan(1e-6);
    }
  });

  it('rejects impossible specs with one clear bad-config sentence', () => {
    const bad: QuantSpec[] = [
      { bits: 1, group: 8 }, { bits: 9, group: 8 }, { bits: 3.5, group: 8 }, { bits: NaN, group: 8 },
      { bits: 4, group: 0 }, { bits: 4, group: -32 }, { bits: 4, group: 2.5 },
      { bits: 4, group: 8, clip: [0] }, { bits: 4, group: 8, clip: [1.5] },
    ];
    for (const spec of bad) {
      let err: unknown;
      try {
        validateSpec(spec, 64);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvarxError);
      expect((err as InvarxError).code).toBe('bad-config');
      expect((err as InvarxError).message).not.toContain('\n');
      expect(() => fakeQuantRtn(new Float32Array(64), 1, 64, spec)).toThrow(InvarxError);
    }
    // A group wider than the row is one group per row.
    expect(() => validateSpec({ bits: 4, group: 128 }, 64)).not.toThrow();
    expect(DEFAULT_CLIP_GRID[0]).toBe(1);
  });
});
