/**
 * Ops.attendRows (causal attention of a sequence's rows over themselves), for every backend
 * that has it: bit for bit core's contextHeads on the same backend's matmulT and softmax
 * (all heads, or a subset in any order, leaving the other columns alone; sequences under and
 * over the one-row kernel's limit; grouped KV heads), and within float32 round-off of
 * float64 attention.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { contextHeads } from '../../core/forward';
import type { ModelConfig } from '../../core/model/types';
import type { HeadShape, Ops } from '../../core/ops';
import { Rng } from '../../core/rng';
import { backendNames, createWasmBackend, getBackend, probeGpu, type Backend } from '../../kernels';
import { firstMismatch, randomArray } from './util';

const gpu = probeGpu();
const subjects: Array<{ name: string; make: () => Backend }> = [
  ...backendNames().filter((n) => n !== 'gpu' || gpu.available).map((name) => ({ name, make: () => getBackend(name) })),
  { name: 'wasm, 2 threads', make: () => createWasmBackend({ threads: 2 }) },
  { name: 'wasm, unfused', make: () => createWasmBackend({ fused: false }) },
];

/** The backend without attendRows: contextHeads' matmulT and softmax calls. */
function plain(b: Backend): Ops {
  return { name: `${b.name} (plain)`, matmulT: b.matmulT, softmaxCausal: b.softmaxCausal, siluMul: b.siluMul };
}

/** Float64 causal attention of row t, head h over rows 0…t; and Σ|terms| per output, for the tolerance. */
function attention64(q: Float32Array, k: Float32Array, v: Float32Array, T: number, sh: HeadShape) {
  const { nHeads, nKvHeads, headDim: hd } = sh;
  const qDim = nHeads * hd, kvDim = nKvHeads * hd, group = nHeads / nKvHeads;
  const ctx = new Float64Array(T * qDim), mag = new Float64Array(T * qDim);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / group);
      const sc = new Float64Array(t + 1);
      for (let j = 0; j <= t; j++) {
        let d = 0;
        for (let i = 0; i < hd; i++) d += q[t * qDim + h * hd + i] * k[j * kvDim + g * hd + i];
        sc[j] = d / Math.sqrt(hd);
      }
      const max = Math.max(...sc);
      let sum = 0;
      for (let j = 0; j <= t; j++) sum += (sc[j] = Math.exp(sc[j] - max));
      for (let i = 0; i < hd; i++) {
        for (let j = 0; j <= t; j++) {
          const term = (sc[j] / sum) * v[j * kvDim + g * hd + i];
          ctx[t * qDim + h * hd + i] += term;
          mag[t * qDim + h * hd + i] += Math.abs(term);
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

    it.skipIf(!get().attendRows)('attendRows is contextHeads bit for bit (all heads or any subset), and float64 attention within round-off', () => {
      const ops = get();
      fc.assert(
        fc.property(
          fc.constantFrom(1, 2, 3, 4, 5), fc.integer({ min: 1, max: 3 }), fc.constantFrom(2, 6, 8, 16, 64),
          fc.oneof(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 6, max: 300 })), fc.boolean(), fc.integer({ min: 1, max: 1e9 }),
          (group, nKvHeads, headDim, T, subset, seed) => {
            const sh: HeadShape = { nHeads: group * nKvHeads, nKvHeads, headDim };
            const cfg = { ...sh } as ModelConfig;
            const rng = Rng.fromSeed(seed);
            const qDim = sh.nHeads * headDim, kvDim = nKvHeads * headDim;
            const q = randomArray(rng, T * qDim, 2), k = randomArray(rng, T * kvDim), v = randomArray(rng, T * kvDim);
            const heads = subset ? rng.sample(sh.nHeads, 1 + rng.int(sh.nHeads)) : null;
            const before = randomArray(rng, T * qDim);
            const got = before.slice();
            ops.attendRows!(got, q, k, v, T, heads, sh);
            const want = before.slice();
            contextHeads(cfg, q, k, v, T, 0, heads, plain(ops), want);
            expect(firstMismatch(got, want)).toBe(-1);
            const ref = attention64(q, k, v, T, sh);
            for (let t = 0; t < T; t++) {
              for (let h = 0; h < sh.nHeads; h++) {
                if (heads && !heads.includes(h)) continue;
                for (let i = 0; i < headDim; i++) {
                  const o = t * qDim + h * headDim + i;
                  expect(Math.abs(got[o] - ref.ctx[o])).toBeLessThanOrEqual(1e-5 * (ref.mag[o] + 1e-3) * Math.sqrt(T));
                }
              }
            }
          },
        ),
        { numRuns: 40 },
      );
    });

    it.skipIf(!get().attendRows)('attendRows refuses heads and sizes that do not fit', () => {
      const ops = get();
      const sh: HeadShape = { nHeads: 4, nKvHeads: 2, headDim: 2 };
      const a = new Float32Array(16);
      expect(() => ops.attendRows!(a, a, a, a, 2, [4], sh)).toThrow(/head 4/);
      expect(() => ops.attendRows!(a, a, a, a, 3, null, sh)).toThrow(/need 3/);
    });
  });
}
