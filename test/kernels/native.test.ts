import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { withResident } from '../../core/ops';
import { Rng } from '../../core/rng';
import { createWasmBackend } from '../../kernels';
import { loadNativeAddon, nativeKernels, NativePins } from '../../kernels/native/native';
import { firstMismatch, randomArray } from './util';

// scripts/setup.sh and .ci/run build the addon; INVARX_NATIVE=0 turns it off on purpose
const addon = process.env.INVARX_NATIVE === '0' ? null : loadNativeAddon();

describe('native product', () => {
  it('is built and loads (scripts/setup.sh builds it with node-gyp)', () => {
    if (process.env.INVARX_NATIVE === '0') return;
    expect(addon).not.toBeNull();
  });

  it('gives the wasm kernel its bits, pinned or not: fused or not, 1 and 2 threads, any chunking, accumulating or not', () => {
    if (!nativeKernels) return; // not vectorized here: the backend never calls it (the scalar build is tested below)
    for (const fused of [true, false]) {
      for (const kcMax of [256, 7]) {
        const plain = createWasmBackend({ threads: 1, fused, kcMax, native: false });
        const nat = [createWasmBackend({ threads: 1, fused, kcMax }), createWasmBackend({ threads: 2, fused, kcMax })];
        try {
          expect(nat.every((b) => b.native)).toBe(true);
          fc.assert(
            fc.property(
              fc.integer({ min: 4, max: 40 }), fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 70 }),
              fc.boolean(), fc.integer({ min: 1, max: 1e9 }),
              (n, K, N, acc, seed) => {
                const rng = Rng.fromSeed(seed);
                const x = randomArray(rng, n * K), w = randomArray(rng, N * K), y0 = randomArray(rng, n * N);
                const want = y0.slice();
                withResident(plain, [w], () => plain.matmulT(want, x, w, n, K, N, acc));
                for (const b of nat) {
                  const got = y0.slice();
                  withResident(b, [w], () => b.matmulT(got, x, w, n, K, N, acc));
                  expect(firstMismatch(got, want)).toBe(-1);
                  // not pinned: packed for the call past 8 rows, matmul_xt's plain rows up to it
                  const loose = y0.slice();
                  b.matmulT(loose, x, w, n, K, N, acc);
                  expect(firstMismatch(loose, want)).toBe(-1);
                }
              },
            ),
            { numRuns: 30 },
          );
        } finally {
          for (const b of [plain, ...nat]) b.dispose?.();
        }
      }
    }
  });

  it('the addon itself (vectorized or not) gives the wasm kernel its bits', () => {
    if (!addon) return;
    for (const fused of [true, false]) {
      const plain = createWasmBackend({ threads: 1, fused, kcMax: 64, native: false });
      fc.assert(
        fc.property(
          fc.integer({ min: 4, max: 20 }), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 40 }), fc.boolean(), fc.integer({ min: 1, max: 1e9 }),
          (n, K, N, acc, seed) => {
            const rng = Rng.fromSeed(seed);
            const x = randomArray(rng, n * K), w = randomArray(rng, N * K), y0 = randomArray(rng, n * N);
            const want = y0.slice();
            withResident(plain, [w], () => plain.matmulT(want, x, w, n, K, N, acc));
            const wp = new Float32Array(addon.packedLength(N, K));
            addon.pack(w, N, K, 64, wp, 2);
            const got = y0.slice();
            addon.matmulT(got, x, wp, n, K, N, 64, acc, plain.fused, 2);
            expect(firstMismatch(got, want)).toBe(-1);
          },
        ),
        { numRuns: 20 },
      );
    }
  });

  it('agrees with a float64 reference, every column of a ragged last panel written and none past it', () => {
    if (!addon) return;
    const rng = Rng.fromSeed(7);
    for (const [n, K, N, kcMax] of [[5, 300, 37, 64], [4, 1, 1, 256], [9, 513, 16, 256], [6, 40, 17, 3]]) {
      const x = randomArray(rng, n * K), w = randomArray(rng, N * K);
      const y0 = randomArray(rng, n * N + 3);
      const wp = new Float32Array(addon.packedLength(N, K));
      addon.pack(w, N, K, kcMax, wp, 2);
      for (const beta of [false, true]) {
        const y = y0.slice();
        addon.matmulT(y, x, wp, n, K, N, kcMax, beta, true, 2);
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < N; j++) {
            let ref = beta ? y0[i * N + j] : 0;
            for (let k = 0; k < K; k++) ref += x[i * K + k] * w[j * K + k];
            expect(Math.abs(y[i * N + j] - ref)).toBeLessThan(1e-5 * (K + 1));
          }
        }
        expect(Array.from(y.subarray(n * N))).toEqual(Array.from(y0.subarray(n * N)));
      }
    }
  });

  it('refuses short arrays and bad sizes with a TypeError instead of reading past them', () => {
    if (!addon) return;
    const wp = new Float32Array(addon.packedLength(16, 8));
    expect(() => addon.matmulT(new Float32Array(4 * 16), new Float32Array(4 * 8 - 1), wp, 4, 8, 16, 256, false, true, 1)).toThrow(TypeError);
    expect(() => addon.matmulT(new Float32Array(4 * 16), new Float32Array(4 * 8), wp, 4, 8, 16, 0, false, true, 1)).toThrow(TypeError);
    expect(() => addon.pack(new Float32Array(10), 16, 8, 256, wp, 1)).toThrow(TypeError);
  });

  it('a released copy\'s array serves the next weight of its shape, repacked; past the cap no copy is made', () => {
    if (!addon) return;
    const rng = Rng.fromSeed(11);
    const [K, N] = [40, 20];
    const pins = new NativePins(addon, 16, 4 * addon.packedLength(N, K));
    const w1 = randomArray(rng, N * K), w2 = randomArray(rng, N * K), w3 = randomArray(rng, N * K);
    const p1 = pins.pin([w1]);
    const a1 = pins.packed(w1, K, N, 2)!;
    expect(pins.packed(w1, K, N, 2)).toBe(a1);
    const p3 = pins.pin([w3]);
    expect(pins.packed(w3, K, N, 1)).toBeNull(); // the cap holds one copy
    expect(pins.packed(w2, K, N, 1)).toBeNull(); // not pinned
    p1.release();
    p1.release();
    const p2 = pins.pin([w2]);
    const a2 = pins.packed(w2, K, N, 1)!;
    expect(a2).toBe(a1);
    const fresh = new Float32Array(addon.packedLength(N, K));
    addon.pack(w2, N, K, 16, fresh, 1);
    expect(firstMismatch(a2, fresh)).toBe(-1);
    expect(pins.bytes).toBe(a2.byteLength);
    p2.release();
    p3.release();
    expect(pins.bytes).toBe(0);
  });
});
