import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { jsOps } from '../../core/ops';
import { Rng } from '../../core/rng';
import { getBackend } from '../../kernels';
import { hessian, hessianRows, transpose } from '../../search/blockQuant';

const backends = [['js', jsOps], ['wasm', getBackend('wasm')]] as const;

function randomRows(seed: number, N: number, cols: number): Float32Array {
  const rng = Rng.fromSeed(seed);
  return Float32Array.from({ length: N * cols }, () => rng.normal());
}

describe('search Hessians', () => {
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

  it.each(backends)('hessian is 2/N · XᵀX to float32 round-off (%s)', (_name, ops) => {
    const N = 70, cols = 23;
    const x = randomRows(3, N, cols);
    const H = hessian(x, N, cols, ops);
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j < cols; j++) {
        let s = 0;
        for (let n = 0; n < N; n++) s += x[n * cols + i] * x[n * cols + j];
        expect(Math.abs(H[i * cols + j] - (2 / N) * s)).toBeLessThan(1e-5 * (2 / N) * N);
      }
    }
  });

  it.each(backends)('hessianRows recomputes some rows and columns to exactly the bits of the whole (%s)', (_name, ops) => {
    fc.assert(
      fc.property(fc.integer({ min: 4, max: 200 }), fc.integer({ min: 2, max: 60 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (N, cols, seed) => {
        const rng = Rng.fromSeed(seed);
        const x = randomRows(seed, N, cols);
        const before = hessian(x, N, cols, ops);
        // Change some columns of x (a move's units), then update only their rows/columns.
        const rows = rng.sample(cols, 1 + rng.int(Math.min(cols, 6)));
        for (const c of rows) for (let n = 0; n < N; n++) x[n * cols + c] = rng.normal();
        const H = before.slice();
        hessianRows(H, transpose(x, N, cols), N, cols, rows, ops);
        expect(H).toEqual(hessian(x, N, cols, ops));
      }),
      { numRuns: 30 },
    );
  });
});
