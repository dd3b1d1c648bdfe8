import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { drawToken, softmaxWeights } from '../../core/data';
import { Rng } from '../../core/rng';
import { createWasmBackend } from '../../kernels';
import { WA } from '../../kernels/wasm/api';
import { instantiate, kernelsModule } from '../../kernels/wasm/module';

const memory = new WA.Memory({ initial: 1, maximum: 65536, shared: true });
const kernels = instantiate(kernelsModule(), memory);

/** The doubles at and beside each branch point of e_exp.c (high words 0x3E300000, 0x3FD62E42, 0x3FF0A2B2, 0x40862E42; ±1; the thresholds). */
function edges(): number[] {
  const dv = new DataView(new ArrayBuffer(8));
  const word = (hi: number, lo: number) => (dv.setUint32(0, hi), dv.setUint32(4, lo), dv.getFloat64(0));
  const out: number[] = [0, -0, 1, -1, Infinity, -Infinity, NaN, 709.782712893384, 709.7827128933841, -745.1332191019411, -745.1332191019412, 707, -707, 1e-300, -1e-300, 5e-324];
  for (const hi of [0x3e300000, 0x3fd62e42, 0x3ff0a2b2, 0x40862e42]) {
    for (const lo of [0, 1, 0xffffffff]) for (const d of [-1, 0]) for (const sign of [0, 0x80000000]) out.push(word(((hi + d) | sign) >>> 0, lo));
  }
  return out;
}

describe('the wasm draw kernels', () => {
  it('exp_f64 is Math.exp bit for bit: every branch, the edges between them, and any double', () => {
    for (const x of edges()) expect(Object.is(kernels.exp_f64(x), Math.exp(x)), `exp(${x})`).toBe(true);
    fc.assert(fc.property(fc.double(), (x) => Object.is(kernels.exp_f64(x), Math.exp(x))), { numRuns: 20000 });
    // the range softmax weights come from, densely
    const rng = Rng.fromSeed(7);
    for (let i = 0; i < 200000; i++) {
      const x = (rng.float() - 0.95) * 60 * (i % 2 ? 1 : rng.float());
      if (!Object.is(kernels.exp_f64(x), Math.exp(x))) expect.fail(`exp(${x}): ${kernels.exp_f64(x)} vs ${Math.exp(x)}`);
    }
  });

  it('draw_weights gives softmaxWeights\' float64 weights bit for bit, and their sum in order', () => {
    const rng = Rng.fromSeed(11);
    const cases: [Float32Array, number][] = [];
    for (const V of [1, 2, 3, 7, 64, 513]) {
      for (const spread of [1e-9, 0.5, 3, 40, 2000]) {
        for (const T of [0.05, 1, 3.7]) cases.push([Float32Array.from({ length: V }, () => (rng.float() - 0.7) * spread), T]);
      }
    }
    cases.push([Float32Array.from([NaN, 1, -0, 0, NaN, -1e38, 3e38]), 1]);
    for (const [l, T] of cases) {
      const V = l.length;
      // a 4-byte offset for the logits, as rows of an odd width start
      const lp = 1028, wp = 4096 + 8 * V;
      new Float32Array(memory.buffer, lp, V).set(l);
      const sum = kernels.draw_weights(lp, V, T, wp);
      const want = softmaxWeights(l, T, new Float64Array(V));
      const got = new Float64Array(memory.buffer, wp, V);
      for (let i = 0; i < V; i++) if (!Object.is(got[i], want[i])) expect.fail(`V=${V} T=${T} i=${i}: ${got[i]} vs ${want[i]} (logit ${l[i]})`);
      expect(Object.is(sum, want.reduce((s, x) => s + x, 0))).toBe(true);
    }
  });

  it('drawTokens draws what drawToken draws in JS, on 1 and 2 threads: ties, NaNs, huge and tiny ranges, odd widths, any temperature', () => {
    const backends = [createWasmBackend({ threads: 1 }), createWasmBackend({ threads: 2 })];
    const row = fc.oneof(
      fc.array(fc.float({ min: -30, max: 30, noNaN: true }), { minLength: 1, maxLength: 40 }),
      fc.array(fc.float({ noDefaultInfinity: true }), { minLength: 1, maxLength: 40 }),
      fc.array(fc.constantFrom(0, -0, 1, -1, 2, NaN, -1e30), { minLength: 1, maxLength: 9 }),
    );
    const draws = fc.array(fc.tuple(fc.double({ min: 0.05, max: 4, noNaN: true }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })), { minLength: 1, maxLength: 6 });
    fc.assert(fc.property(row, draws, (values, rows) => {
      const V = values.length;
      const logits = new Float32Array(rows.length * V);
      rows.forEach((_, r) => logits.set(values.map((v, i) => (r % 2 && i % 3 === 0 ? v / 2 : v)), r * V));
      const w = new Float64Array(V);
      const want = rows.map(([T, u], r) => drawToken(logits.subarray(r * V, (r + 1) * V), T, u, w));
      for (const b of backends) {
        const out = new Int32Array(rows.length);
        b.drawTokens!(out, logits, rows.length, V, rows.map(([T]) => T), rows.map(([, u]) => u));
        expect(Array.from(out)).toEqual(want);
      }
    }), { numRuns: 3000 });
    // a vocabulary's worth of rows, u spread so every part of the walk is reached
    const V = 32001;
    const rng = Rng.fromSeed(3);
    const logits = Float32Array.from({ length: 8 * V }, () => (rng.float() - 0.5) * 24);
    const T = Array.from({ length: 8 }, (_, r) => 0.5 + r / 4);
    const u = Array.from({ length: 8 }, (_, r) => (r + rng.float()) / 8);
    const w = new Float64Array(V);
    const want = T.map((t, r) => drawToken(logits.subarray(r * V, (r + 1) * V), t, u[r], w));
    for (const b of backends) {
      const out = new Int32Array(8);
      b.drawTokens!(out, logits, 8, V, T, u);
      expect(Array.from(out)).toEqual(want);
      b.dispose?.();
    }
  });

  it('refuses a temperature of 0 and short arrays', () => {
    const b = createWasmBackend({ threads: 1 });
    const logits = new Float32Array(8);
    expect(() => b.drawTokens!(new Int32Array(2), logits, 2, 4, [1, 0], [0.5, 0.5])).toThrow(/temperature 1 must be > 0/);
    expect(() => b.drawTokens!(new Int32Array(2), logits, 3, 4, [1, 1, 1], [0.5, 0.5, 0.5])).toThrow(/logits hold 8 values, need 3 × 4/);
    b.dispose?.();
  });
});
