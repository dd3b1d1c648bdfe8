import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { choleskyInverse, choleskyLower } from '../../core/quant/cholesky';

// The textbook loops, in the order the module's header states: the kernels must give their bits.
function plainCholesky(A: Float64Array, n: number): boolean {
  for (let j = 0; j < n; j++) {
    let d = A[j * n + j];
    for (let k = 0; k < j; k++) d -= A[j * n + k] * A[j * n + k];
    if (!(d > 0)) return false;
    const ljj = Math.sqrt(d);
    A[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = A[i * n + j];
      for (let k = 0; k < j; k++) s -= A[i * n + k] * A[j * n + k];
      A[i * n + j] = s / ljj;
    }
    for (let i = 0; i < j; i++) A[i * n + j] = 0;
  }
  return true;
}

function plainInverse(L: Float64Array, n: number): Float64Array {
  const Linv = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    Linv[j * n + j] = 1 / L[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s -= L[i * n + k] * Linv[k * n + j];
      Linv[i * n + j] = s / L[i * n + i];
    }
  }
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = j; k < n; k++) s += Linv[k * n + i] * Linv[k * n + j];
      inv[i * n + j] = s;
      inv[j * n + i] = s;
    }
  }
  return inv;
}

/** XᵀX + damp·I of random rows X [N, n] (some columns all zero when `dead`), float64. */
function gram(n: number, N: number, seed: number, damp: number, dead: boolean): Float64Array {
  let s = seed >>> 0;
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) - 0.5;
  const x = Float64Array.from({ length: N * n }, (_, i) => (dead && (i % n) % 5 === 3 ? 0 : rnd()));
  const H = new Float64Array(n * n);
  for (let r = 0; r < N; r++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) H[i * n + j] += x[r * n + i] * x[r * n + j];
  for (let i = 0; i < n; i++) H[i * n + i] += damp;
  return H;
}

const sameBits = (a: Float64Array, b: Float64Array) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

describe('float64 Cholesky factor and inverse', () => {
  it('give the textbook loops\' bits at every size (the 4-wide blocks and their remainders)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 41 }), fc.integer({ min: 0, max: 2 ** 31 }), fc.boolean(), (n, seed, dead) => {
        // rank-deficient Gram matrices made definite by a small damping, as GPTQ's are
        const H = gram(n, Math.max(2, n >> 1), seed, 1e-3, dead);
        const a = H.slice();
        const b = H.slice();
        expect(choleskyLower(a, n)).toBe(true);
        expect(plainCholesky(b, n)).toBe(true);
        expect(sameBits(a, b)).toBe(true);
        expect(sameBits(choleskyInverse(a, n), plainInverse(b, n))).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('are a factor and an inverse (float64 reference products)', () => {
    const n = 37;
    const H = gram(n, 80, 7, 0.5, false);
    const L = H.slice();
    expect(choleskyLower(L, n)).toBe(true);
    const inv = choleskyInverse(L, n);
    let errLLt = 0;
    let errInv = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        if (j > i) expect(L[i * n + j]).toBe(0);
        let llt = 0;
        let hi = 0;
        for (let k = 0; k < n; k++) {
          llt += L[i * n + k] * L[j * n + k];
          hi += H[i * n + k] * inv[k * n + j];
        }
        errLLt = Math.max(errLLt, Math.abs(llt - H[i * n + j]));
        errInv = Math.max(errInv, Math.abs(hi - (i === j ? 1 : 0)));
      }
    }
    expect(errLLt).toBeLessThan(1e-12);
    expect(errInv).toBeLessThan(1e-10);
  });

  it('report a matrix that is not positive definite', () => {
    const n = 6;
    const A = gram(n, 10, 3, 0, false);
    A[4 * n + 4] = -1;
    expect(choleskyLower(A, n)).toBe(false);
  });
});
