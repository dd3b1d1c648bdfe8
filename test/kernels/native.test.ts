import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { withResident, type CacheShape } from '../../core/ops';
import { Rng } from '../../core/rng';
import { createWasmBackend } from '../../kernels';
import { loadNativeAddon, nativeKernels, NativePins } from '../../kernels/native/native';
import { byPosition, firstMismatch, randomArray } from './util';

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

describe('native decode attention', () => {
  it("gives the wasm kernels' bits (values by position against transposed): dot and chunked orders, fused or not, 1 and 2 threads", () => {
    if (!nativeKernels) return;
    for (const fused of [true, false]) {
      for (const kcMax of [256, 7]) {
        const plain = createWasmBackend({ threads: 1, fused, kcMax, native: false });
        const nat = [createWasmBackend({ threads: 1, fused, kcMax }), createWasmBackend({ threads: 2, fused, kcMax })];
        try {
          expect(plain.valuesByPosition).toBe(false);
          expect(nat.every((b) => b.valuesByPosition)).toBe(true);
          fc.assert(
            fc.property(
              fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 70 }), fc.integer({ min: 1, max: 300 }),
              fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 1e9 }),
              (group, nKvHeads, headDim, capacity, batch, seed) => {
                const rng = Rng.fromSeed(seed);
                const shape: CacheShape = { nHeads: group * nKvHeads, nKvHeads, headDim, capacity };
                const size = batch * nKvHeads * capacity * headDim;
                const keys = randomArray(rng, size), valuesT = randomArray(rng, size);
                const n = 1 + rng.int(batch);
                const seqs = Int32Array.from(rng.sample(batch, n));
                const pos = Int32Array.from(seqs, () => rng.int(capacity));
                const q = randomArray(rng, n * shape.nHeads * headDim, 2);
                const run = (b: typeof plain, values: Float32Array, valuesByPosition: boolean) => {
                  const [k, v] = [b.residentArray(size)!, b.residentArray(size)!];
                  try {
                    k.data.set(keys);
                    v.data.set(values);
                    const ctx = new Float32Array(q.length);
                    b.attendCached(ctx, q, k.data, v.data, seqs, pos, { ...shape, valuesByPosition });
                    return ctx;
                  } finally {
                    k.release();
                    v.release();
                  }
                };
                const want = run(plain, valuesT, false);
                const values = byPosition(valuesT, batch * nKvHeads, headDim, capacity);
                for (const b of nat) {
                  expect(firstMismatch(run(b, values, true), want)).toBe(-1);
                  expect(firstMismatch(run(b, valuesT, false), want)).toBe(-1); // transposed: the wasm path
                }
              },
            ),
            { numRuns: 25 },
          );
          expect(() => plain.attendCached(new Float32Array(4), new Float32Array(4), plain.residentArray(4)!.data, plain.residentArray(4)!.data, [0], [0], {
            nHeads: 1, nKvHeads: 1, headDim: 4, capacity: 1, valuesByPosition: true,
          })).toThrow(/by position need the native kernel/);
        } finally {
          for (const b of [plain, ...nat]) b.dispose?.();
        }
      }
    }
  });

  it('refuses short arrays and rows outside the caches instead of reading past them', () => {
    if (!addon) return;
    const [n, nKv, group, hd, cap] = [2, 2, 1, 8, 4];
    const size = 2 * nKv * cap * hd; // two sequences
    const f = (o: { q?: number; keys?: number; rows?: number[] }) => () =>
      addon.attendCached(
        new Float32Array(n * nKv * group * hd), new Float32Array(o.q ?? n * nKv * group * hd), new Float32Array(o.keys ?? size), new Float32Array(size),
        Int32Array.from(o.rows ?? [0, 0, 1, 3]), n, nKv, group, hd, cap, 256, false, 0.5, true, 2,
      );
    expect(f({})).not.toThrow();
    expect(f({ q: n * nKv * group * hd - 1 })).toThrow(TypeError);
    expect(f({ rows: [0, 0] })).toThrow(TypeError);
    expect(f({ rows: [0, 0, 1, 4] })).toThrow(RangeError); // position past the capacity
    expect(f({ rows: [0, 0, 2, 0] })).toThrow(RangeError); // a third sequence
    expect(f({ keys: size - 1 })).toThrow(RangeError);
    expect(f({ rows: [-1, 0, 1, 0] })).toThrow(RangeError);
  });
});
