import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { withResident } from '../../core/ops';
import { Rng } from '../../core/rng';
import { createWasmBackend } from '../../kernels';
import { unfuseMadd } from '../../kernels/wasm/module';
import { firstMismatch, randomArray } from './util';

describe('wasm backend', () => {
  it('gives bit-identical matmuls for 1, 2 and 3 threads (rows are split, sums are not)', () => {
    const one = createWasmBackend({ threads: 1 });
    const two = createWasmBackend({ threads: 2 });
    const three = createWasmBackend({ threads: 3 });
    try {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 700 }), fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 300 }),
          fc.boolean(), fc.integer({ min: 1, max: 1e9 }),
          (n, K, N, acc, seed) => {
            const rng = Rng.fromSeed(seed);
            const x = randomArray(rng, n * K), w = randomArray(rng, N * K), y0 = randomArray(rng, n * N);
            const ys = [one, two, three].map((b) => {
              const y = y0.slice();
              b.matmulT(y, x, w, n, K, N, acc);
              return y;
            });
            expect(firstMismatch(ys[1], ys[0])).toBe(-1);
            expect(firstMismatch(ys[2], ys[0])).toBe(-1);
          },
        ),
        { numRuns: 25 },
      );
    } finally {
      two.dispose?.();
      three.dispose?.();
    }
  });

  it('a product of 4–8 rows on a weight not kept packed (its plain rows, matmul_xt) has the bits of the packed kernel, on 1 and 2 threads, fused or not', () => {
    const backends = [createWasmBackend({ threads: 1 }), createWasmBackend({ threads: 2 }), createWasmBackend({ fused: false })];
    try {
      fc.assert(
        fc.property(
          fc.integer({ min: 4, max: 8 }), fc.integer({ min: 1, max: 700 }), fc.integer({ min: 1, max: 1100 }),
          fc.boolean(), fc.integer({ min: 1, max: 1e9 }),
          (n, K, N, acc, seed) => {
            const rng = Rng.fromSeed(seed);
            const x = randomArray(rng, n * K), w = randomArray(rng, N * K), y0 = randomArray(rng, n * N);
            for (const b of backends) {
              const plainRows = y0.slice();
              b.matmulT(plainRows, x, w, n, K, N, acc);
              // pinned, the weight is packed once and the panel kernel runs
              const packed = y0.slice();
              withResident(b, [w], () => b.matmulT(packed, x, w, n, K, N, acc));
              expect(firstMismatch(plainRows, packed)).toBe(-1);
            }
          },
        ),
        { numRuns: 25 },
      );
    } finally {
      for (const b of backends) b.dispose?.();
    }
  });

  it('useThreads caps the threads a matmul is split over within those it has, with the same bits', () => {
    const three = createWasmBackend({ threads: 3 });
    try {
      const rng = Rng.fromSeed(11);
      const [n, K, N] = [300, 256, 200]; // past the size where a matmul is split
      const x = randomArray(rng, n * K), w = randomArray(rng, N * K);
      const run = () => {
        const y = new Float32Array(n * N);
        three.matmulT(y, x, w, n, K, N);
        return y;
      };
      const all = run();
      for (const [asked, used] of [[1, 1], [2, 2], [0, 1], [9, 3]]) {
        three.useThreads(asked);
        expect(three.activeThreads).toBe(used);
        expect(firstMismatch(run(), all)).toBe(-1);
      }
    } finally {
      three.dispose?.();
    }
  });

  it('grows its memory for a large call after small ones and stays correct', () => {
    const b = createWasmBackend();
    const rng = Rng.fromSeed(5);
    const small = randomArray(rng, 16);
    const ys = new Float32Array(16);
    b.matmulT(ys, small, small, 4, 4, 4);
    // 2048×1024 inputs: ~25 MB of arena, well past the initial 1 MiB
    const [n, K, N] = [2048, 1024, 40];
    const x = randomArray(rng, n * K), w = randomArray(rng, N * K), y = new Float32Array(n * N);
    b.matmulT(y, x, w, n, K, N);
    for (const [i, j] of [[0, 0], [2047, 39], [1000, 17]]) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[i * K + k] * w[j * K + k];
      expect(Math.abs(y[i * N + j] - s)).toBeLessThan(1e-3);
    }
    b.matmulT(ys, small, small, 4, 4, 4);
    let s = 0;
    for (let k = 0; k < 4; k++) s += small[k] * small[4 + k];
    expect(ys[1]).toBeCloseTo(s, 5);
  });

  it('matmul over several blocks of panels (past 256 columns at kc 256) and a ragged last panel: float64 within round-off, and any column range alone the same bits', () => {
    const b = createWasmBackend();
    const rng = Rng.fromSeed(21);
    for (const [n, K, N] of [[5, 700, 1001], [8, 300, 2050], [13, 256, 263]]) {
      const x = randomArray(rng, n * K), w = randomArray(rng, N * K), y0 = randomArray(rng, n * N);
      for (const acc of [false, true]) {
        const y = y0.slice();
        b.matmulT(y, x, w, n, K, N, acc);
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < N; j++) {
            let s = acc ? y0[i * N + j] : 0;
            for (let k = 0; k < K; k++) s += x[i * K + k] * w[j * K + k];
            expect(Math.abs(y[i * N + j] - s)).toBeLessThan(1e-4 * Math.sqrt(K));
          }
        }
        // columns [c0, c1) as their own product: other block boundaries, same bits
        for (const [c0, c1] of [[255, N], [3, 261], [N - 9, N]]) {
          const part = new Float32Array(n * (c1 - c0));
          for (let i = 0; i < n; i++) for (let j = c0; j < c1; j++) part[i * (c1 - c0) + j - c0] = y0[i * N + j];
          b.matmulT(part, x, w.subarray(c0 * K, c1 * K), n, K, c1 - c0, acc);
          for (let i = 0; i < n; i++) {
            expect(firstMismatch(part.subarray(i * (c1 - c0), (i + 1) * (c1 - c0)), y.subarray(i * N + c0, i * N + c1))).toBe(-1);
          }
        }
      }
    }
  });

  it('unfuseMadd rewrites nested relaxed_madd into mul + add', () => {
    const src = '(local.set $c (f32x4.relaxed_madd (local.get $a) (v128.load (i32.add (local.get $p) (i32.const 4))) (f32x4.relaxed_madd (local.get $a) (local.get $b) (local.get $c))))';
    expect(unfuseMadd(src)).toBe(
      '(local.set $c (f32x4.add (f32x4.mul (local.get $a) (v128.load (i32.add (local.get $p) (i32.const 4)))) (f32x4.add (f32x4.mul (local.get $a) (local.get $b)) (local.get $c))))',
    );
  });
});
