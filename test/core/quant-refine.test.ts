import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { InvarxError } from '../../core/errors';
import { Rng } from '../../core/rng';
import { gptqFactor, gptqQuantize, gptqQuantizeRows } from '../../core/quant/gptq';
import { f16BitsToF32, f16Round, f32ToF16Bits } from '../../core/model/halfFloat';
import { dequantize, numGroups, type Quantized, type QuantSpec } from '../../core/quant/rtn';
import { getBackend } from '../../kernels';
import { hessianOf, layerCase, outputError } from './layerCase';

/** The damped Hessian H + λI (dead columns as GPTQ leaves them: zero rows and columns), float64. */
function damped(H: Float64Array, cols: number, percdamp = 0.01): Float64Array {
  let mean = 0;
  for (let i = 0; i < cols; i++) mean += (H[i * cols + i] === 0 ? 1 : H[i * cols + i]) / cols;
  const Hd = H.slice();
  for (let i = 0; i < cols; i++) if (H[i * cols + i] !== 0) Hd[i * cols + i] += percdamp * mean;
  return Hd;
}

/** Row r's error e (H + λI) eᵀ, e = deq − w, straight from the definition in float64. */
function rowError(w: Float32Array, deq: Float32Array, Hd: Float64Array, cols: number, r: number): number {
  let s = 0;
  for (let i = 0; i < cols; i++) {
    const ei = deq[r * cols + i] - w[r * cols + i];
    for (let j = 0; j < cols; j++) s += ei * Hd[i * cols + j] * (deq[r * cols + j] - w[r * cols + j]);
  }
  return s;
}

/**
 * No live weight of row r in columns [j0, j1) lowers the row's error computed from scratch
 * (beyond 1e-9 of it) by taking any other code of its group's grid.
 */
function expectNoBetterCode(w: Float32Array, H: Float64Array, Hd: Float64Array, qz: Quantized, deq: Float32Array, r: number, j0: number, j1: number): void {
  const { cols, group } = qz;
  const nG = numGroups(cols, group);
  const maxq = 2 ** qz.bits - 1;
  const base = rowError(w, deq, Hd, cols, r);
  for (let j = j0; j < j1; j++) {
    if (H[j * cols + j] === 0) continue;
    const g = r * nG + Math.floor(j / group);
    const trial = deq.slice();
    for (let code = 0; code <= maxq; code++) {
      trial[r * cols + j] = Math.fround((code - qz.zero[g]) * qz.scale[g]);
      expect(rowError(w, trial, Hd, cols, r)).toBeGreaterThanOrEqual(base - 1e-9 * Math.max(1, base));
    }
  }
}

const arb = fc.record({
  seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
  rows: fc.integer({ min: 1, max: 6 }),
  cols: fc.integer({ min: 2, max: 36 }),
  nPerCol: fc.double({ min: 0.5, max: 3, noNaN: true }),
  bits: fc.integer({ min: 2, max: 4 }),
  group: fc.integer({ min: 1, max: 40 }),
  deadFrac: fc.constantFrom(0, 0, 0.15),
  clip: fc.boolean(),
});

function layer({ seed, rows, cols, nPerCol, deadFrac }: { seed: number; rows: number; cols: number; nPerCol: number; deadFrac: number }) {
  const n = Math.max(1, Math.round(nPerCol * cols));
  const { x, w } = layerCase(seed, rows, cols, n, deadFrac, 'mild');
  return { x, w, n, H: hessianOf(x, n, cols) };
}

describe('GPTQ code refinement (coordinate descent)', () => {
  it('never raises a row’s layer error, keeps every grid, and its codes are its weights', () => {
    fc.assert(
      fc.property(arb, (c) => {
        const { w, H } = layer(c);
        const spec: QuantSpec = { bits: c.bits, group: c.group, clip: c.clip };
        const plain = gptqQuantize(w, c.rows, c.cols, H, spec);
        const refined = gptqQuantize(w, c.rows, c.cols, H, spec, { refineSweeps: 3 });
        const Hd = damped(H, c.cols);
        for (let r = 0; r < c.rows; r++) {
          const before = rowError(w, plain.deq, Hd, c.cols, r);
          expect(rowError(w, refined.deq, Hd, c.cols, r)).toBeLessThanOrEqual(before + 1e-12 * Math.max(1, before));
        }
        expect(refined.qz.scale).toEqual(plain.qz.scale);
        expect(refined.qz.zero).toEqual(plain.qz.zero);
        expect(refined.deq).toEqual(dequantize(refined.qz));
      }),
      { numRuns: 150 },
    );
  });

  // With enough sweeps every row stops where no single code can move down: checked against
  // the error computed from scratch, this holds only if the gradient kept along the way is right.
  it('ends at a coordinate-wise minimum of the error computed from scratch', () => {
    fc.assert(
      fc.property(arb, (c) => {
        const { w, H } = layer(c);
        const spec: QuantSpec = { bits: c.bits, group: c.group, clip: c.clip };
        const { qz, deq } = gptqQuantize(w, c.rows, c.cols, H, spec, { refineSweeps: 200 });
        const Hd = damped(H, c.cols);
        for (let r = 0; r < c.rows; r++) expectNoBetterCode(w, H, Hd, qz, deq, r, 0, c.cols);
      }),
      { numRuns: 60 },
    );
  });

  it('lowers the output error on its calibration inputs below GPTQ’s on a correlated layer', () => {
    const rows = 32, cols = 64, n = 512;
    const { x, w } = layerCase(11, rows, cols, n, 0, 'mild');
    const H = hessianOf(x, n, cols);
    for (const bits of [2, 3, 4]) {
      const spec = { bits, group: 16 };
      const plain = outputError(x, n, cols, w, gptqQuantize(w, rows, cols, H, spec).deq, rows);
      const refined = outputError(x, n, cols, w, gptqQuantize(w, rows, cols, H, spec, { refineSweeps: 4 }).deq, rows);
      expect(refined, `W${bits}`).toBeLessThan(0.97 * plain);
    }
  });

  it('refines any subset of rows from a shared factor exactly as the whole matrix', () => {
    fc.assert(
      fc.property(arb, fc.integer({ min: 1, max: 2 ** 31 - 1 }), (c, pick) => {
        const { w, H } = layer(c);
        const spec: QuantSpec = { bits: c.bits, group: c.group, clip: c.clip };
        const factor = gptqFactor(H, c.cols);
        const whole = gptqQuantizeRows(w, c.cols, factor, spec, { refineSweeps: 3 });
        const rng = Rng.fromSeed(pick);
        const subset = rng.sample(c.rows, 1 + rng.int(c.rows));
        const part = gptqQuantizeRows(w, c.cols, factor, spec, { refineSweeps: 3 }, subset);
        subset.forEach((r, i) => {
          expect(part.qz.q.subarray(i * c.cols, (i + 1) * c.cols)).toEqual(whole.qz.q.subarray(r * c.cols, (r + 1) * c.cols));
          expect(part.deq.subarray(i * c.cols, (i + 1) * c.cols)).toEqual(whole.deq.subarray(r * c.cols, (r + 1) * c.cols));
        });
      }),
      { numRuns: 80 },
    );
  });

  it('refines a matrix of more rows than it works on at once (1,024) exactly as each row alone', () => {
    const rows = 1100, cols = 12;
    const { w, H } = layer({ seed: 21, rows, cols, nPerCol: 3, deadFrac: 0 });
    const spec = { bits: 2, group: 4 };
    const factor = gptqFactor(H, cols);
    const whole = gptqQuantizeRows(w, cols, factor, spec, { refineSweeps: 3 });
    expect(whole.qz.q).not.toEqual(gptqQuantizeRows(w, cols, factor, spec).qz.q);
    for (const r of [0, 1023, 1024, 1099]) {
      const one = gptqQuantizeRows(w, cols, factor, spec, { refineSweeps: 3 }, [r]);
      expect(one.deq, `row ${r}`).toEqual(whole.deq.subarray(r * cols, (r + 1) * cols));
    }
  });

  it('gives the same bits on the wasm backend as in plain JS', () => {
    const ops = getBackend('wasm');
    for (const [seed, rows, cols, bits] of [[3, 24, 96, 3], [4, 40, 200, 2], [5, 7, 33, 4]]) {
      const n = 2 * cols;
      const { x, w } = layerCase(seed, rows, cols, n, 0.05, 'mild');
      const H = hessianOf(x, n, cols);
      const spec = { bits, group: 32, clip: true };
      const js = gptqQuantize(w, rows, cols, H, spec, { refineSweeps: 4 });
      const wasm = gptqQuantize(w, rows, cols, H, spec, { refineSweeps: 4, ops });
      expect(wasm.qz.q).toEqual(js.qz.q);
      expect(wasm.deq).toEqual(js.deq);
    }
  });

  it('with no sweeps is GPTQ as published; a sweep count that is not an integer ≥ 0 is one clear error', () => {
    const { w, H } = layer({ seed: 9, rows: 4, cols: 20, nPerCol: 2, deadFrac: 0 });
    const spec = { bits: 3, group: 8 };
    expect(gptqQuantize(w, 4, 20, H, spec, { refineSweeps: 0 }).qz.q).toEqual(gptqQuantize(w, 4, 20, H, spec).qz.q);
    expect(gptqQuantize(w, 4, 20, H, spec, { refineSweeps: 2 }).qz.q).not.toEqual(gptqQuantize(w, 4, 20, H, spec).qz.q);
    for (const bad of [-1, 1.5, NaN]) expect(() => gptqQuantize(w, 4, 20, H, spec, { refineSweeps: bad })).toThrow(InvarxError);
  });
});

/** The float32 value `step` (±1) units in the last place from the positive float32 x. */
function nextF32(x: number, step: number): number {
  const f = new Float32Array([x]);
  new Uint32Array(f.buffer)[0] += step;
  return f[0];
}

describe('GPTQ scale refitting (with the code refinement)', () => {
  const arbRefit = fc.record({ c: arb, f16: fc.boolean() });

  // One sweep refits the scales after the codes' sweep, which is then the same: the refit
  // can only lower the error from there. (Over more sweeps the two take different paths.)
  it('never raises a row’s layer error; keeps zeros and the storage type of its scales; dequantizes to its weights', () => {
    fc.assert(
      fc.property(arbRefit, ({ c, f16 }) => {
        const { w, H } = layer(c);
        const spec: QuantSpec = { bits: c.bits, group: c.group, clip: c.clip, f16Scales: f16 };
        const plain = gptqQuantize(w, c.rows, c.cols, H, spec);
        const codes = gptqQuantize(w, c.rows, c.cols, H, spec, { refineSweeps: 1 });
        const refit = gptqQuantize(w, c.rows, c.cols, H, spec, { refineSweeps: 1, refitScales: true });
        const more = gptqQuantize(w, c.rows, c.cols, H, spec, { refineSweeps: 3, refitScales: true });
        const Hd = damped(H, c.cols);
        // (float32 scales round the weights they give, which the refit may pay)
        const tol = f16 ? 1e-12 : 1e-6;
        for (let r = 0; r < c.rows; r++) {
          const before = rowError(w, codes.deq, Hd, c.cols, r);
          const after = rowError(w, refit.deq, Hd, c.cols, r);
          expect(after).toBeLessThanOrEqual(before + tol * Math.max(1, before));
          expect(rowError(w, more.deq, Hd, c.cols, r)).toBeLessThanOrEqual(after + tol * Math.max(1, after));
          expect(after).toBeLessThanOrEqual(rowError(w, plain.deq, Hd, c.cols, r) + tol * Math.max(1, before));
        }
        expect(refit.qz.q).toEqual(codes.qz.q);
        expect(refit.qz.zero).toEqual(plain.qz.zero);
        expect(more.qz.zero).toEqual(plain.qz.zero);
        for (const s of more.qz.scale) {
          expect(s).toBeGreaterThan(0);
          expect(s).toBe(f16 ? f16Round(s) : Math.fround(s));
        }
        expect(refit.deq).toEqual(dequantize(refit.qz));
        expect(more.deq).toEqual(dequantize(more.qz));
      }),
      { numRuns: 150 },
    );
  });

  // Checked against the error computed from scratch: a scale step the refit missed, or a
  // gradient it kept wrong after moving a scale, leaves a neighbour that does better.
  it('ends where neither a code nor a step of a scale to the next stored value lowers the error computed from scratch', () => {
    fc.assert(
      fc.property(arbRefit, ({ c, f16 }) => {
        const { w, H } = layer(c);
        const spec: QuantSpec = { bits: c.bits, group: c.group, clip: c.clip, f16Scales: f16 };
        const { qz, deq } = gptqQuantize(w, c.rows, c.cols, H, spec, { refineSweeps: 200, refitScales: true });
        const Hd = damped(H, c.cols);
        const nG = numGroups(c.cols, c.group);
        for (let r = 0; r < c.rows; r++) {
          const base = rowError(w, deq, Hd, c.cols, r);
          for (let g = 0; g < nG; g++) {
            const gi = r * nG + g;
            const end = Math.min(c.cols, (g + 1) * c.group);
            for (const step of [-1, 1]) {
              const s = f16 ? f16BitsToF32(f32ToF16Bits(qz.scale[gi]) + step) : nextF32(qz.scale[gi], step);
              if (!(s > 0 && Number.isFinite(s))) continue;
              const trial = deq.slice();
              for (let j = g * c.group; j < end; j++) if (H[j * c.cols + j] !== 0) trial[r * c.cols + j] = Math.fround((qz.q[r * c.cols + j] - qz.zero[gi]) * s);
              // (a float32 step moves the weights by about their own rounding, which the parabola does not see)
              const tol = f16 ? 1e-9 : 1e-6;
              expect(rowError(w, trial, Hd, c.cols, r)).toBeGreaterThanOrEqual(base - tol * Math.max(1, base));
            }
            expectNoBetterCode(w, H, Hd, qz, deq, r, g * c.group, end);
          }
        }
      }),
      { numRuns: 60 },
    );
  });

  it('lowers the output error on its calibration inputs below the codes’ refinement alone on a correlated layer', () => {
    const rows = 32, cols = 64, n = 512;
    const { x, w } = layerCase(11, rows, cols, n, 0, 'mild');
    const H = hessianOf(x, n, cols);
    for (const bits of [2, 3, 4]) {
      const spec = { bits, group: 16, f16Scales: true };
      const codes = outputError(x, n, cols, w, gptqQuantize(w, rows, cols, H, spec, { refineSweeps: 4 }).deq, rows);
      const refit = outputError(x, n, cols, w, gptqQuantize(w, rows, cols, H, spec, { refineSweeps: 4, refitScales: true }).deq, rows);
      expect(refit, `W${bits}`).toBeLessThan(0.99 * codes);
    }
  });

  it('refits any subset of rows from a shared factor exactly as the whole matrix, and the same bits on the wasm backend', () => {
    const ops = getBackend('wasm');
    fc.assert(
      fc.property(arb, fc.integer({ min: 1, max: 2 ** 31 - 1 }), (c, pick) => {
        const { w, H } = layer(c);
        const spec: QuantSpec = { bits: c.bits, group: c.group, clip: c.clip, f16Scales: true };
        const factor = gptqFactor(H, c.cols);
        const opts = { refineSweeps: 3, refitScales: true };
        const whole = gptqQuantizeRows(w, c.cols, factor, spec, opts);
        expect(gptqQuantizeRows(w, c.cols, gptqFactor(H, c.cols, { ops }), spec, { ...opts, ops }).deq).toEqual(whole.deq);
        const rng = Rng.fromSeed(pick);
        const subset = rng.sample(c.rows, 1 + rng.int(c.rows));
        const part = gptqQuantizeRows(w, c.cols, factor, spec, opts, subset);
        const nG = numGroups(c.cols, c.group);
        subset.forEach((r, i) => {
          expect(part.qz.scale.subarray(i * nG, (i + 1) * nG)).toEqual(whole.qz.scale.subarray(r * nG, (r + 1) * nG));
          expect(part.deq.subarray(i * c.cols, (i + 1) * c.cols)).toEqual(whole.deq.subarray(r * c.cols, (r + 1) * c.cols));
        });
      }),
      { numRuns: 60 },
    );
  });

  it('without code refinement changes nothing', () => {
    const { w, H } = layer({ seed: 9, rows: 4, cols: 20, nPerCol: 2, deadFrac: 0 });
    const spec = { bits: 3, group: 8, f16Scales: true };
    expect(gptqQuantize(w, 4, 20, H, spec, { refitScales: true }).deq).toEqual(gptqQuantize(w, 4, 20, H, spec).deq);
  });
});
