/**
 * One conformance suite, run against every registered backend (tfjs-core style) plus the
 * wasm variants (2 threads, unfused): backends may differ only in speed.
 *  - matmulT: within 1e-4·√K of a float64 reference, relative to the size of the terms
 *    summed (√Σ_k (x_ik·w_jk)²), on random and odd shapes, with and without accumulate;
 *  - quantDequant: bit-identical to core's fakeQuantRtnRect;
 *  - sqErr: bit-identical to sqErrRef and within 1e-12 of a plain float64 sum;
 *  - hessianEntries (where a backend has it): bit-identical to core's hessianEntriesRef;
 *  - choleskyLower, choleskyInverse, gptqLazyUpdate (where a backend has them): bit-identical to core's
 *    (gptqLazyUpdate's dense mode: up to the sign of zeros);
 *  - softmaxCausal, siluMul (where a backend has them): within float32 round-off of
 *    float64, row or element separable;
 *  - matmulT's row-separability contract (core/ops.ts).
 * The gpu backend runs only where the probe finds a GL context (under `xvfb-run -a`);
 * elsewhere its block is reported as skipped with the probe's reason.
 */
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SEPARABLE_MIN_ROWS, siluMul, softmaxCausal } from '../../core/ops';
import { hessianEntriesRef, hessianRows, hessianT } from '../../core/quant/hessian';
import { choleskyInverse, choleskyLower } from '../../core/quant/cholesky';
import { lazyUpdate } from '../../core/quant/gptq';
import { Rng } from '../../core/rng';
import { CLIP_AUTO, CLIP_RATIOS, fakeQuantRtnRect, type QuantSpec } from '../../core/quant/rtn';
import {
  backendNames, createWasmBackend, getBackend, probeGpu, sqErrRef, relaxedSimd, type Backend,
} from '../../kernels';
import { firstMismatch, randomArray } from './util';

interface Subject {
  name: string;
  make: () => Backend;
  /** Why the block is skipped, if it is. */
  skip?: string;
  /** Cap on n·K·N per random case (the gpu runs on a software rasterizer here). */
  maxMacs: number;
  runs: number;
}

const gpu = probeGpu();
const subjects: Subject[] = [
  ...backendNames().map((name) => ({
    name,
    make: () => getBackend(name),
    skip: name === 'gpu' && !gpu.available ? gpu.reason : undefined,
    maxMacs: name === 'gpu' ? 2e6 : 2e7,
    runs: name === 'gpu' ? 12 : 40,
  })),
  { name: 'wasm, 2 threads', make: () => createWasmBackend({ threads: 2 }), maxMacs: 2e7, runs: 40 },
  { name: 'wasm, unfused', make: () => createWasmBackend({ fused: false }), maxMacs: 2e7, runs: 25 },
];

/**
 * A random positive definite H [n, n] like a damped GPTQ Hessian: X Xᵀ + I/10 over three
 * groups of columns that never meet (exact zeros between them, in H, its factor and its
 * inverse), with a few all-zero rows of X.
 */
function positiveDefinite(rng: Rng, n: number): Float64Array {
  const m = n + 8;
  const group = Array.from({ length: n }, () => rng.int(3));
  const x = randomArray(rng, n * m);
  for (let i = 0; i < n; i++) if (rng.float() < 0.05) x.fill(0, i * m, (i + 1) * m);
  const H = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (group[i] !== group[j]) continue;
      let s = i === j ? 0.1 : 0;
      for (let t = 0; t < m; t++) s += x[i * m + t] * x[j * m + t];
      H[i * n + j] = s;
    }
  }
  return H;
}

/** max over outputs of |y − ref| / (√Σ_k (x_ik w_jk)² · √K), ref in float64. */
function matmulError(y: Float32Array, y0: Float32Array | null, x: Float32Array, w: Float32Array, n: number, K: number, N: number): number {
  let worst = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < N; j++) {
      let s = y0 ? y0[i * N + j] : 0;
      let mag = y0 ? y0[i * N + j] ** 2 : 0;
      for (let k = 0; k < K; k++) {
        const t = x[i * K + k] * w[j * K + k];
        s += t;
        mag += t * t;
      }
      const err = Math.abs(y[i * N + j] - s) / ((Math.sqrt(mag) + 1e-30) * Math.sqrt(Math.max(K, 1)));
      if (!(err <= worst)) worst = err; // NaN-propagating max
    }
  }
  return worst;
}

function runMatmul(b: Backend, seed: number, n: number, K: number, N: number, accumulate: boolean): number {
  const rng = Rng.fromSeed(seed);
  const x = randomArray(rng, n * K);
  const w = randomArray(rng, N * K, 0.5);
  const y0 = randomArray(rng, n * N);
  const y = y0.slice();
  b.matmulT(y, x, w, n, K, N, accumulate);
  return matmulError(y, accumulate ? y0 : null, x, w, n, K, N);
}

const ODD = [1, 7, 63, 65, 172, 1023];
const dimArb = fc.oneof(fc.constantFrom(1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 172, 1023), fc.integer({ min: 1, max: 300 }));

for (const s of subjects) {
  describe.skipIf(s.skip !== undefined)(`backend ${s.name}${s.skip ? ` (skipped: ${s.skip})` : ''}`, () => {
    let b: Backend;
    const get = () => (b ??= s.make());
    afterAll(() => {
      if (s.name.startsWith('wasm,')) b?.dispose?.();
    });

    it('matmulT matches float64 on every odd size in every position', () => {
      const others = s.name === 'gpu' ? [7, 9] : [63, 65];
      let seed = 1;
      for (const d of ODD) {
        for (const [n, K, N] of [[d, others[0], others[1]], [others[1], d, others[0]], [others[0], others[1], d]]) {
          for (const acc of [false, true]) {
            const e = runMatmul(get(), seed++, n, K, N, acc);
            expect(e, `${n}×${K}×${N} accumulate=${acc}`).toBeLessThanOrEqual(1e-4);
          }
        }
      }
    });

    it('matmulT matches float64 on random shapes', () => {
      fc.assert(
        fc.property(
          fc.tuple(dimArb, dimArb, dimArb).filter(([n, K, N]) => n * K * N <= s.maxMacs),
          fc.boolean(), fc.integer({ min: 1, max: 2 ** 31 - 1 }),
          ([n, K, N], acc, seed) => {
            expect(runMatmul(get(), seed, n, K, N, acc)).toBeLessThanOrEqual(1e-4);
          },
        ),
        { numRuns: s.runs },
      );
    });

    it('matmulT reads SharedArrayBuffer and offset views, writes nothing past n·out, and handles empty sizes', () => {
      const rng = Rng.fromSeed(7);
      const [n, K, N] = [37, 70, 45];
      const x = new Float32Array(new SharedArrayBuffer(4 * (n * K + 3)), 12, n * K);
      x.set(randomArray(rng, n * K));
      const wBuf = new Float32Array(N * K + 10);
      wBuf.set(randomArray(rng, N * K), 5);
      const w = wBuf.subarray(5, 5 + N * K);
      const y = new Float32Array(n * N + 4).fill(123);
      get().matmulT(y, x, w, n, K, N);
      expect(matmulError(y, null, x, w, n, K, N)).toBeLessThanOrEqual(1e-4);
      expect(Array.from(y.subarray(n * N))).toEqual([123, 123, 123, 123]);
      const z = new Float32Array(6).fill(5);
      get().matmulT(z, new Float32Array(0), new Float32Array(0), 2, 0, 3);
      expect(Array.from(z)).toEqual([0, 0, 0, 0, 0, 0]);
      get().matmulT(z, new Float32Array(0), new Float32Array(0), 2, 0, 3, true);
      expect(Array.from(z)).toEqual([0, 0, 0, 0, 0, 0]);
      get().matmulT(z, new Float32Array(0), new Float32Array(9), 0, 3, 3);
      expect(() => get().matmulT(new Float32Array(5), new Float32Array(6), new Float32Array(9), 2, 3, 3)).toThrow(RangeError);
    });

    it('matmulT keeps the Ops contract: for ≥ SEPARABLE_MIN_ROWS rows, any sub-product and XᵀX rows give the same bits', () => {
      const big = s.name === 'gpu' ? 40 : 1200;
      fc.assert(
        fc.property(
          fc.integer({ min: SEPARABLE_MIN_ROWS, max: 60 }), fc.integer({ min: 1, max: big }), fc.integer({ min: 1, max: 60 }),
          fc.integer({ min: 1, max: 2 ** 31 - 1 }),
          (n, K, N, seed) => {
            const rng = Rng.fromSeed(seed);
            const x = randomArray(rng, n * K);
            const w = randomArray(rng, N * K, 0.5);
            const y = new Float32Array(n * N);
            get().matmulT(y, x, w, n, K, N);
            // Any SEPARABLE_MIN_ROWS..n rows of x (in any order) against any rows of w.
            const rows = rng.sample(n, SEPARABLE_MIN_ROWS + rng.int(n - SEPARABLE_MIN_ROWS + 1));
            const cols = rng.sample(N, 1 + rng.int(N));
            const xs = new Float32Array(rows.length * K);
            rows.forEach((r, i) => xs.set(x.subarray(r * K, (r + 1) * K), i * K));
            const ws = new Float32Array(cols.length * K);
            cols.forEach((c, j) => ws.set(w.subarray(c * K, (c + 1) * K), j * K));
            const part = new Float32Array(rows.length * cols.length);
            get().matmulT(part, xs, ws, rows.length, K, cols.length);
            rows.forEach((r, i) => cols.forEach((c, j) => expect(Object.is(part[i * cols.length + j], y[r * N + c])).toBe(true)));
            // XᵀX-style products are symmetric: x against itself.
            const g = new Float32Array(n * n);
            get().matmulT(g, x, x, n, K, n);
            for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) expect(Object.is(g[i * n + j], g[j * n + i])).toBe(true);
          },
        ),
        { numRuns: s.runs },
      );
    });

    it('quantDequant is bit-identical to core fakeQuantRtnRect (ragged groups, rectangles, clip, ties, fp16 scales, clip codes)', () => {
      const caseArb = fc
        .record({
          rows: fc.integer({ min: 1, max: 12 }),
          cols: fc.integer({ min: 1, max: 130 }),
          bits: fc.integer({ min: 2, max: 8 }),
          groupFrac: fc.double({ min: 0, max: 1.2, noNaN: true }),
          kind: fc.constantFrom('uniform', 'grid', 'positive', 'wild', 'tiny'),
          clip: fc.constantFrom<QuantSpec['clip']>(undefined, false, true, [0.9, 0.7]),
          f16Scales: fc.boolean(),
          codes: fc.constantFrom('none', 'auto', 'mixed'),
          seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        })
        .chain((c) => {
          const group = Math.max(1, Math.round(c.groupFrac * c.cols));
          const nG = Math.ceil(c.cols / group);
          return fc.record({
            c: fc.constant({ ...c, group }),
            rows: fc.tuple(fc.integer({ min: 0, max: c.rows }), fc.integer({ min: 0, max: c.rows })),
            groups: fc.tuple(fc.integer({ min: 0, max: nG }), fc.integer({ min: 0, max: nG })),
            wild: fc.float32Array({ minLength: c.rows * c.cols, maxLength: c.rows * c.cols, noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 }),
          });
        });
      fc.assert(
        fc.property(caseArb, ({ c, rows: [ra, rb], groups: [ga, gb], wild }) => {
          const rng = Rng.fromSeed(c.seed);
          const size = c.rows * c.cols;
          let w: Float32Array;
          if (c.kind === 'wild') w = wild;
          else {
            w = randomArray(rng, size);
            // 'grid': multiples of 1/8, so w/scale lands exactly on .5 ties
            if (c.kind === 'grid') for (let i = 0; i < size; i++) w[i] = Math.round(w[i] * 16) / 8;
            if (c.kind === 'positive') for (let i = 0; i < size; i++) w[i] = Math.abs(w[i]) + 0.5;
            // 'tiny': scales in fp16's subnormal range
            if (c.kind === 'tiny') for (let i = 0; i < size; i++) w[i] = Math.fround(w[i] * 1e-6);
          }
          const spec: QuantSpec = { bits: c.bits, group: c.group, clip: c.clip, f16Scales: c.f16Scales };
          const nG = Math.ceil(c.cols / c.group);
          const clips = c.codes === 'none' ? undefined : new Uint8Array(c.rows * nG).fill(CLIP_AUTO);
          if (clips && c.codes === 'mixed') for (let i = 0; i < clips.length; i++) if (rng.float() < 0.6) clips[i] = Math.floor(rng.float() * CLIP_RATIOS.length);
          const [r0, r1] = [Math.min(ra, rb), Math.max(ra, rb)];
          const [g0, g1] = [Math.min(ga, gb), Math.max(ga, gb)];
          const want = new Float32Array(size).fill(NaN);
          fakeQuantRtnRect(w, c.cols, spec, want, r0, r1, g0, g1, clips);
          const got = new Float32Array(size).fill(NaN);
          get().quantDequant(w, c.cols, spec, got, r0, r1, g0, g1, clips);
          const at = firstMismatch(got, want);
          expect(at, at < 0 ? '' : `at ${at}: got ${got[at]}, core ${want[at]}`).toBe(-1);
        }),
        { numRuns: 300 },
      );
    });

    it('quantDequant of whole model-sized matrices matches core', () => {
      const rng = Rng.fromSeed(3);
      const cases: [number, number, number, number, boolean][] = [
        [172, 64, 32, 3, false], [64, 172, 32, 2, true], [512, 512, 128, 4, false], [33, 1023, 64, 8, true],
      ];
      for (const [rows, cols, group, bits, clipOn] of cases) {
        // the search's spec: fp16 scales with the clip search
        const spec = { bits, group, clip: clipOn, f16Scales: clipOn };
        const w = randomArray(rng, rows * cols, 0.1);
        const want = new Float32Array(rows * cols);
        const got = new Float32Array(rows * cols);
        const nG = Math.ceil(cols / group);
        fakeQuantRtnRect(w, cols, spec, want, 0, rows, 0, nG);
        get().quantDequant(w, cols, spec, got, 0, rows, 0, nG);
        expect(firstMismatch(got, want)).toBe(-1);
      }
    });

    // Backends without their own softmax/SiLU run core's reference (the same dispatch core uses).
    it('softmaxCausal is within float32 round-off of a float64 softmax, row by row, with exact zeros past the causal mask', () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 70 }), fc.integer({ min: 0, max: 40 }), fc.double({ min: 0.05, max: 3, noNaN: true }),
          fc.double({ min: 0.1, max: 30, noNaN: true }), fc.integer({ min: 1, max: 2 ** 31 - 1 }),
          (T, past, scale, spread, seed) => {
            const S = past + T;
            const rng = Rng.fromSeed(seed);
            const att = Float32Array.from({ length: T * S }, () => spread * rng.normal());
            const x = att.slice();
            softmaxCausal(get(), att, T, S, past, scale);
            for (let t = 0; t < T; t++) {
              const vis = past + t + 1;
              let max = -Infinity;
              for (let j = 0; j < vis; j++) max = Math.max(max, x[t * S + j]);
              let sum = 0;
              for (let j = 0; j < vis; j++) sum += Math.exp((x[t * S + j] - max) * scale);
              for (let j = 0; j < S; j++) {
                const got = att[t * S + j];
                if (j >= vis) {
                  expect(got).toBe(0);
                  continue;
                }
                const arg = (x[t * S + j] - max) * scale;
                const ref = Math.exp(arg) / sum;
                // a float32 argument, rounded up to three times (x − max, the scale, their
                // product), carries up to 3·|arg|·2⁻²⁴ absolute error into exp's relative error
                expect(Math.abs(got - ref)).toBeLessThanOrEqual((16 + 2 * Math.abs(arg)) * 2 ** -23 * ref + 1e-37);
              }
            }
            // Row-separable: the last rows alone (as their own [T', S] problem) give the same bits.
            const from = rng.int(T);
            const part = x.slice(from * S);
            softmaxCausal(get(), part, T - from, S, past + from, scale);
            expect(firstMismatch(part, att.subarray(from * S))).toBe(-1);
          },
        ),
        // the first: an argument near −80 where the bound for one rounding of it was exceeded
        { numRuns: s.runs, examples: [[36, 19, 0.516021639108658, 23.042177772274446, 122984229]] },
      );
    });

    it('siluMul is within 4e-6 (relative) of float64 silu(a)·g, element by element', () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (n, seed) => {
          const rng = Rng.fromSeed(seed);
          const a = Float32Array.from({ length: n }, () => 6 * rng.normal());
          if (n > 2) (a[0] = -120), (a[1] = 95); // exp(−a) past float32's range either way
          const g = randomArray(rng, n);
          const x = a.slice();
          siluMul(get(), a, g, n);
          for (let i = 0; i < n; i++) {
            const ref = (x[i] / (1 + Math.exp(-x[i]))) * g[i];
            expect(Math.abs(a[i] - ref)).toBeLessThanOrEqual(4e-6 * Math.abs(ref) + 1e-30);
          }
          // element by element: any slice alone gives the same bits
          const from = rng.int(n + 1);
          const part = x.slice(from);
          siluMul(get(), part, g.slice(from), n - from);
          expect(firstMismatch(part, a.subarray(from))).toBe(-1);
        }),
        { numRuns: s.runs },
      );
    });

    it('hessianEntries (GPTQ Hessians) is bit-identical to core\'s reference: whole, some rows, any sequences and zeros', () => {
      const ops = get();
      if (!ops.hessianEntries) return;
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 1, max: 70 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (N, cols, seed) => {
          const rng = Rng.fromSeed(seed);
          const xT = randomArray(rng, cols * N);
          for (let i = 0; i < xT.length; i++) if (rng.float() < 0.1) xT[i] = rng.float() < 0.5 ? 0 : -0;
          const starts = [0, ...Array.from({ length: rng.int(6) }, () => rng.int(N + 1)).sort((a, b) => a - b), N];
          const ref = new Float64Array(cols * cols);
          hessianEntriesRef(ref, xT, N, cols, null, starts);
          expect(hessianT(xT, N, cols, starts, ops)).toEqual(ref);
          const rows = rng.sample(cols, 1 + rng.int(Math.min(cols, 8)));
          const before = ref.map((v) => v + 1);
          const want = before.slice();
          hessianEntriesRef(want, xT, N, cols, rows, starts);
          hessianRows(before, xT, N, cols, rows, starts, ops);
          expect(before).toEqual(want);
        }),
        { numRuns: s.runs },
      );
    });

    it('hessianEntries at sizes a backend splits over its threads is bit-identical to core\'s reference', () => {
      const ops = get();
      if (!ops.hessianEntries) return;
      fc.assert(
        fc.property(fc.integer({ min: 400, max: 900 }), fc.integer({ min: 100, max: 180 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (N, cols, seed) => {
          const rng = Rng.fromSeed(seed);
          const xT = randomArray(rng, cols * N);
          for (let i = 0; i < xT.length; i++) if (rng.float() < 0.05) xT[i] = 0;
          const starts = [0, ...Array.from({ length: 1 + rng.int(8) }, () => rng.int(N + 1)).sort((a, b) => a - b), N];
          const ref = new Float64Array(cols * cols);
          hessianEntriesRef(ref, xT, N, cols, null, starts);
          const got = hessianT(xT, N, cols, starts, ops);
          expect(got.every((v, i) => Object.is(v, ref[i]))).toBe(true);
        }),
        { numRuns: 4 },
      );
    });

    it('choleskyLower and choleskyInverse (GPTQ\'s factor) are bit-identical to core\'s: panel edges, exact zeros, sizes split over threads', () => {
      const ops = get();
      if (!ops.choleskyLower || !ops.choleskyInverse) return;
      const sizes = fc.oneof(fc.constantFrom(1, 2, 3, 4, 5, 31, 32, 33, 63, 64, 65, 97, 191, 192, 257), fc.integer({ min: 1, max: 300 }));
      fc.assert(
        fc.property(sizes, fc.integer({ min: 1, max: 2 ** 31 - 1 }), (n, seed) => {
          const H = positiveDefinite(Rng.fromSeed(seed), n);
          const ref = H.slice();
          const got = H.slice();
          expect(choleskyLower(ref, n)).toBe(true);
          expect(ops.choleskyLower!(got, n)).toBe(true);
          expect(firstMismatch(got, ref)).toBe(-1);
          expect(firstMismatch(ops.choleskyInverse!(ref, n), choleskyInverse(ref, n))).toBe(-1);
        }),
        { numRuns: 14 },
      );
    });

    it('choleskyLower says false, as core\'s does, for a matrix that is not positive definite (early or late in the factor)', () => {
      const ops = get();
      if (!ops.choleskyLower) return;
      for (const [n, bad] of [[5, 0], [100, 3], [260, 200]]) {
        const H = positiveDefinite(Rng.fromSeed(n), n);
        H[bad * n + bad] = -H[bad * n + bad];
        expect(choleskyLower(H.slice(), n)).toBe(false);
        expect(ops.choleskyLower(H.slice(), n)).toBe(false);
      }
    });

    it('gptqLazyUpdate (GPTQ\'s batch update) is bit-identical to core\'s: zero errors skipped, −0 weights kept, sizes split over threads', () => {
      const ops = get();
      if (!ops.gptqLazyUpdate) return;
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 260 }), fc.integer({ min: 1, max: 400 }), fc.integer({ min: 1, max: 128 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (rows, width, count, seed) => {
          const rng = Rng.fromSeed(seed);
          const blocksize = count + rng.int(4);
          const i1 = rng.int(40);
          const cols = i1 + count + width;
          const W = Float64Array.from(randomArray(rng, rows * cols), (v) => (rng.float() < 0.02 ? -0 : v));
          const Err1 = Float64Array.from(randomArray(rng, rows * blocksize), (v) => (rng.float() < 0.002 ? 0 : v));
          const Hinv = Float64Array.from(randomArray(rng, cols * cols), (v) => (rng.float() < 0.05 ? 0 : v));
          // row 0's errors are all zero (a dead input's row) over −0 weights: core leaves them −0
          Err1.fill(0, 0, count);
          for (let j = i1 + count; j < cols; j += 2) W[j] = -0;
          const want = W.slice();
          const dense = W.slice();
          lazyUpdate(want, Err1, Hinv, rows, cols, blocksize, i1, count, i1 + count);
          ops.gptqLazyUpdate!(W, Err1, Hinv, rows, cols, blocksize, i1, count, i1 + count);
          expect(firstMismatch(W, want)).toBe(-1);
          // dense: zero errors multiplied in, so only the sign of a zero may differ (=== does not see it)
          ops.gptqLazyUpdate!(dense, Err1, Hinv, rows, cols, blocksize, i1, count, i1 + count, true);
          expect(dense.findIndex((v, i) => v !== want[i])).toBe(-1);
        }),
        { numRuns: 16 },
      );
    });

    it('sqErr is bit-identical to sqErrRef and matches a float64 sum', () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (n, seed) => {
          const rng = Rng.fromSeed(seed);
          const a = randomArray(rng, n);
          const bb = randomArray(rng, n);
          const got = get().sqErr(a, bb, n);
          expect(got).toBe(sqErrRef(a, bb, n));
          let plain = 0;
          for (let i = 0; i < n; i++) plain += (a[i] - bb[i]) ** 2;
          expect(Math.abs(got - plain)).toBeLessThanOrEqual(1e-12 * plain);
        }),
        { numRuns: 60 },
      );
      const big = 300_001;
      const rng = Rng.fromSeed(11);
      const a = randomArray(rng, big), c = randomArray(rng, big);
      expect(get().sqErr(a, c, big)).toBe(sqErrRef(a, c, big));
    });
  });
}

describe('test setup', () => {
  it('reports what ran', () => {
    // visible in the vitest output when a reporter shows console lines
    console.log(`gpu probe: ${gpu.reason}; relaxed SIMD: ${relaxedSimd}`);
    expect(backendNames()).toEqual(expect.arrayContaining(['js', 'wasm', 'gpu']));
  });
});
