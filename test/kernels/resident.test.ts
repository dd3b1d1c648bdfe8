/**
 * What backends keep in their own memory, for every backend that has it (registered ones and
 * the wasm variants): pinned weights (Ops.pin) and decode attention over resident KV caches
 * (Ops.residentArray + attendCached).
 *  - A matmulT on a pinned weight gives the bits it gives unpinned (both kernels: few rows
 *    and panels), sees a change made after the pin is released, and stays right past the
 *    backend's cap.
 *  - attendCached is bit for bit core's attendCachedRef on the same backend (any number of
 *    query heads per KV head, sequences at any positions, in any order, values transposed
 *    and, where the backend reads them so, by position) and within float32 round-off of
 *    float64 attention.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { attendCachedRef, withResident, type CacheShape, type Ops } from '../../core/ops';
import { Rng } from '../../core/rng';
import { Arena } from '../../kernels/wasm/arena';
import { backendNames, createWasmBackend, getBackend, probeGpu, type Backend } from '../../kernels';
import { byPosition, firstMismatch, randomArray } from './util';

const gpu = probeGpu();
const subjects: Array<{ name: string; make: () => Backend }> = [
  ...backendNames().filter((n) => n !== 'gpu' || gpu.available).map((name) => ({ name, make: () => getBackend(name) })),
  { name: 'wasm, 2 threads', make: () => createWasmBackend({ threads: 2 }) },
  { name: 'wasm, unfused', make: () => createWasmBackend({ fused: false }) },
];

/** The same backend seen without its resident features: what callers fall back to. */
function plain(b: Backend): Ops {
  return { name: `${b.name} (plain)`, matmulT: b.matmulT, softmaxCausal: b.softmaxCausal, siluMul: b.siluMul };
}

function matmul(ops: Ops, x: Float32Array, w: Float32Array, y0: Float32Array, n: number, K: number, N: number, acc: boolean): Float32Array {
  const y = y0.slice();
  ops.matmulT(y, x, w, n, K, N, acc);
  return y;
}

/** A random cache of `batch` sequences with the given shape, and rows at random positions. */
function randomAttention(rng: Rng, shape: CacheShape, batch: number, rows: number) {
  const { nHeads, nKvHeads, headDim: hd, capacity } = shape;
  const size = batch * nKvHeads * capacity * hd;
  const seqs = rng.sample(batch, rows);
  return {
    keys: randomArray(rng, size),
    valuesT: randomArray(rng, size),
    q: randomArray(rng, rows * nHeads * hd, 2),
    seqs: Int32Array.from(seqs),
    pos: Int32Array.from(seqs, () => rng.int(capacity)),
  };
}

/** Float64 attention: ctx of row r, head h = Σ_j softmax_j(q·k_j / √hd) v_j over positions 0…pos[r]; and the scale of the terms. */
function attention64(a: ReturnType<typeof randomAttention>, shape: CacheShape): { ctx: Float64Array; mag: Float64Array } {
  const { nHeads, nKvHeads, headDim: hd, capacity: cap } = shape;
  const group = nHeads / nKvHeads;
  const n = a.seqs.length;
  const ctx = new Float64Array(n * nHeads * hd);
  const mag = new Float64Array(n * nHeads * hd);
  for (let r = 0; r < n; r++) {
    const S = a.pos[r] + 1;
    for (let h = 0; h < nHeads; h++) {
      const base = (a.seqs[r] * nKvHeads + Math.floor(h / group)) * cap * hd;
      const sc = new Float64Array(S);
      for (let j = 0; j < S; j++) {
        let d = 0;
        for (let i = 0; i < hd; i++) d += a.q[(r * nHeads + h) * hd + i] * a.keys[base + j * hd + i];
        sc[j] = d / Math.sqrt(hd);
      }
      const max = Math.max(...sc);
      let sum = 0;
      for (let j = 0; j < S; j++) sum += (sc[j] = Math.exp(sc[j] - max));
      for (let i = 0; i < hd; i++) {
        for (let j = 0; j < S; j++) {
          const t = (sc[j] / sum) * a.valuesT[base + i * cap + j];
          ctx[(r * nHeads + h) * hd + i] += t;
          mag[(r * nHeads + h) * hd + i] += Math.abs(t);
        }
      }
    }
  }
  return { ctx, mag };
}

for (const s of subjects) {
  describe(`backend ${s.name}`, () => {
    let b: Backend;
    const get = () => (b ??= s.make());

    it.skipIf(!get().pin)('matmulT on pinned weights: the unpinned bits, on both kernels, with and without accumulate', () => {
      const ops = get();
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 200 }),
          fc.boolean(), fc.integer({ min: 1, max: 1e9 }),
          (n, K, N, acc, seed) => {
            const rng = Rng.fromSeed(seed);
            const x = randomArray(rng, n * K), w = randomArray(rng, N * K), y0 = randomArray(rng, n * N);
            const want = matmul(plain(ops), x, w, y0, n, K, N, acc);
            withResident(ops, [w], () => {
              // the first use makes the copy, the second uses it; the one-row kernel's copy is a different one
              expect(firstMismatch(matmul(ops, x, w, y0, n, K, N, acc), want)).toBe(-1);
              expect(firstMismatch(matmul(ops, x, w, y0, n, K, N, acc), want)).toBe(-1);
              const one = matmul(plain(ops), x, w, y0, 1, K, N, acc);
              expect(firstMismatch(matmul(ops, x, w, y0, 1, K, N, acc), one)).toBe(-1);
            });
          },
        ),
        { numRuns: 30 },
      );
    });

    it.skipIf(!get().pin)('a pin holds until released: a weight changed afterwards is seen; nested pins; released twice is harmless', () => {
      const ops = get();
      const rng = Rng.fromSeed(3);
      const [n, K, N] = [9, 70, 33];
      const x = randomArray(rng, n * K), w = randomArray(rng, N * K), y0 = new Float32Array(n * N);
      const outer = ops.pin!([w, w]);
      const inner = ops.pin!([w]);
      const before = matmul(ops, x, w, y0, n, K, N, false);
      inner.release();
      inner.release();
      // still pinned by `outer`: the copy is the one made before
      expect(firstMismatch(matmul(ops, x, w, y0, n, K, N, false), before)).toBe(-1);
      outer.release();
      w[5] += 1;
      const after = matmul(ops, x, w, y0, n, K, N, false);
      expect(firstMismatch(after, matmul(plain(ops), x, w, y0, n, K, N, false))).toBe(-1);
      expect(firstMismatch(after, before)).not.toBe(-1);
    });

    it.skipIf(!get().attendCached)('attendCached is attendCachedRef bit for bit, and float64 attention within round-off', () => {
      const ops = get();
      fc.assert(
        fc.property(
          fc.constantFrom(1, 2, 3, 4, 5, 8), fc.integer({ min: 1, max: 3 }), fc.constantFrom(2, 8, 16, 64, 66),
          fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 1e9 }),
          (group, nKvHeads, headDim, capacity, batch, seed) => {
            const shape: CacheShape = { nHeads: group * nKvHeads, nKvHeads, headDim, capacity };
            const rng = Rng.fromSeed(seed);
            const a = randomAttention(rng, shape, batch, 1 + rng.int(batch));
            const size = a.keys.length;
            const keys = ops.residentArray!(size)!;
            const values = ops.residentArray!(size)!;
            try {
              keys.data.set(a.keys);
              const qDim = shape.nHeads * headDim;
              const want = new Float32Array(a.seqs.length * qDim);
              const att = new Float32Array(group * capacity), vg = new Float32Array(headDim * capacity);
              attendCachedRef(ops, want, a.q, a.keys, a.valuesT, a.seqs, a.pos, shape, att, vg);
              const ref = attention64(a, shape);
              for (const valuesByPosition of ops.valuesByPosition ? [false, true] : [false]) {
                values.data.set(valuesByPosition ? byPosition(a.valuesT, batch * nKvHeads, headDim, capacity) : a.valuesT);
                const got = new Float32Array(want.length);
                ops.attendCached!(got, a.q, keys.data, values.data, a.seqs, a.pos, { ...shape, valuesByPosition });
                expect(firstMismatch(got, want)).toBe(-1);
                for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - ref.ctx[i])).toBeLessThanOrEqual(1e-5 * (ref.mag[i] + 1e-3) * Math.sqrt(capacity));
              }
            } finally {
              keys.release();
              values.release();
            }
          },
        ),
        { numRuns: 40 },
      );
    });
  });
}

describe('wasm backend: resident memory', () => {
  it('past its cap a pinned weight is copied per call (still right), and the copies go when released', () => {
    const ops = createWasmBackend({ residentWeightBytes: 4 * 1000, native: false }); // the arena's copies (kernels/native has its own)
    const rng = Rng.fromSeed(8);
    const [n, K, N] = [8, 30, 20];
    const small = randomArray(rng, N * K); // 600 floats, packed 24·30 = 720: fits
    const big = randomArray(rng, 2 * N * K); // past the cap once small is in
    const x = randomArray(rng, n * K);
    const pinned = ops.pin([small, big]);
    const want = [matmul(plain(ops), x, small, new Float32Array(n * N), n, K, N, false), matmul(plain(ops), x, big, new Float32Array(2 * n * N), n, K, 2 * N, false)];
    expect(firstMismatch(matmul(ops, x, small, new Float32Array(n * N), n, K, N, false), want[0])).toBe(-1);
    expect(ops.residentWeightBytes).toBe(4 * 720);
    expect(firstMismatch(matmul(ops, x, big, new Float32Array(2 * n * N), n, K, 2 * N, false), want[1])).toBe(-1);
    expect(ops.residentWeightBytes).toBe(4 * 720);
    pinned.release();
    expect(ops.residentWeightBytes).toBe(0);
  });

  it('attendCached refuses caches that are not its own residentArrays', () => {
    const ops = createWasmBackend();
    const shape: CacheShape = { nHeads: 2, nKvHeads: 1, headDim: 4, capacity: 3 };
    const c = new Float32Array(12);
    expect(() => ops.attendCached(new Float32Array(8), new Float32Array(8), c, c, [0], [1], shape)).toThrow(/residentArrays/);
    const k = ops.residentArray(12)!;
    expect(() => ops.attendCached(new Float32Array(8), new Float32Array(8), k.data, k.data, [0], [3], shape)).toThrow(/position 3/);
    expect(() => ops.attendCached(new Float32Array(8), new Float32Array(8), k.data, k.data, [1], [0], shape)).toThrow(/outside the caches/);
    k.release();
  });

  it('the arena reuses freed resident blocks first-fit, merges neighbours, and shrinks the region from its end', () => {
    const a = new Arena();
    const p = [a.allocResident(100), a.allocResident(100), a.allocResident(100)];
    const end = a.residentBytes;
    a.freeResident(p[0], 100);
    expect(a.allocResident(50)).toBe(p[0]); // first fit into the hole
    a.freeResident(p[0], 50);
    a.freeResident(p[1], 100); // merges with the hole before it
    expect(a.allocResident(200)).toBe(p[0]);
    expect(a.residentBytes).toBe(end);
    a.freeResident(p[2], 100);
    a.freeResident(p[0], 200);
    expect(a.residentBytes).toBe(0);
    // scratch starts above the resident region and is reset to it
    const q = a.allocResident(10);
    a.reset();
    expect(a.alloc(1)).toBeGreaterThanOrEqual(q + 40);
    // views into the memory are recognised, others not
    expect(a.offsetOf(a.view(q, 10))).toBe(q);
    expect(a.offsetOf(new Float32Array(10))).toBe(-1);
  });
});
