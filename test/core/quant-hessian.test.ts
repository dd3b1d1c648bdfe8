import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { accumulateHessian, newHessian } from '../../core/quant/gptq';
import { hessian, hessianRows, hessianT, transpose } from '../../core/quant/hessian';
import { Rng } from '../../core/rng';

function randomRows(seed: number, N: number, cols: number): Float32Array {
  const rng = Rng.fromSeed(seed);
  return Float32Array.from({ length: N * cols }, () => rng.normal());
}

/** gptq.py's add_batch, one sequence at a time: the definition hessian() must match bit for bit. */
function reference(x: Float32Array, cols: number, seqStarts: number[]): Float64Array {
  const { H, state } = newHessian(cols);
  for (let s = 0; s + 1 < seqStarts.length; s++) {
    accumulateHessian(H, x.subarray(seqStarts[s] * cols, seqStarts[s + 1] * cols), seqStarts[s + 1] - seqStarts[s], cols, state);
  }
  return H;
}

/** Random sequence starts over N rows (some sequences may be empty). */
function randomStarts(rng: Rng, N: number): number[] {
  const cuts = Array.from({ length: rng.int(5) }, () => rng.int(N + 1)).sort((a, b) => a - b);
  return [0, ...cuts, N];
}

describe('GPTQ Hessians (core/quant/hessian.ts)', () => {
  it('transpose swaps rows and columns of any shape (tiles and ragged edges)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 90 }), fc.integer({ min: 1, max: 90 }), (N, cols) => {
        const x = Float32Array.from({ length: N * cols }, (_, i) => i);
        const xT = transpose(x, N, cols);
        for (let n = 0; n < N; n++) for (let c = 0; c < cols; c++) expect(xT[c * N + n]).toBe(x[n * cols + c]);
      }),
      { numRuns: 40 },
    );
  });

  it('hessian is 2/N · XᵀX to float32 round-off', () => {
    const N = 70, cols = 23;
    const x = randomRows(3, N, cols);
    const H = hessian(x, N, cols);
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j < cols; j++) {
        let s = 0;
        for (let n = 0; n < N; n++) s += x[n * cols + i] * x[n * cols + j];
        expect(Math.abs(H[i * cols + j] - (2 / N) * s)).toBeLessThan(1e-5 * (2 / N) * N);
      }
    }
  });

  it('is bit for bit accumulateHessian (gptq.py add_batch) fed one sequence at a time, zeros included', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 120 }), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (N, cols, seed) => {
        const rng = Rng.fromSeed(seed);
        const x = randomRows(seed, N, cols);
        for (let i = 0; i < x.length; i++) if (rng.float() < 0.1) x[i] = rng.float() < 0.5 ? 0 : -0; // ReLU-like zeros
        const starts = randomStarts(rng, N);
        expect(hessian(x, N, cols, starts)).toEqual(reference(x, cols, starts));
        expect(hessianT(transpose(x, N, cols), N, cols, starts)).toEqual(reference(x, cols, starts));
      }),
      { numRuns: 40 },
    );
  });

  it('hessianRows recomputes some rows and columns to exactly the bits of the whole', () => {
    fc.assert(
      fc.property(fc.integer({ min: 4, max: 200 }), fc.integer({ min: 2, max: 60 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (N, cols, seed) => {
        const rng = Rng.fromSeed(seed);
        const x = randomRows(seed, N, cols);
        const starts = randomStarts(rng, N);
        const before = hessian(x, N, cols, starts);
        // Change some columns of x (a move's units), then update only their rows/columns.
        const rows = rng.sample(cols, 1 + rng.int(Math.min(cols, 6)));
        for (const c of rows) for (let n = 0; n < N; n++) x[n * cols + c] = rng.normal();
        const H = before.slice();
        hessianRows(H, transpose(x, N, cols), N, cols, rows, starts);
        expect(H).toEqual(hessian(x, N, cols, starts));
      }),
      { numRuns: 30 },
    );
  });

  it('refuses sequence starts that do not cover the rows', () => {
    const x = randomRows(1, 8, 3);
    expect(() => hessian(x, 8, 3, [0, 4])).toThrow(/sequence starts/);
    expect(() => hessian(x, 8, 3, [1, 8])).toThrow(/sequence starts/);
  });
});
