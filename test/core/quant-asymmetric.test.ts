import { describe, expect, it } from 'vitest';
import { jsOps, type Ops } from '../../core/ops';
import { asymmetricMap, asymmetricTargets, crossGram, crossGramRows, deviationT, inputFactor } from '../../core/quant/asymmetric';
import { gptqFactor, gptqQuantizeRows } from '../../core/quant/gptq';
import { transpose } from '../../core/quant/hessian';
import { Rng } from '../../core/rng';
import { getBackend } from '../../kernels';
import { layerCase } from './layerCase';

const backends: [string, Ops][] = [['js', jsOps], ['wasm', getBackend('wasm')]];

/** Quantized inputs x_q [n, cols] (a layer case) and FP inputs x_f = x_q + a deviation of relative size `dev`. */
function inputs(seed: number, rows: number, cols: number, n: number, dev: number) {
  const { x, w } = layerCase(seed, rows, cols, n, 0.05, 'mild');
  const rng = Rng.fromSeed(seed + 100);
  const xf = x.map((v) => v + dev * rng.normal() * (v === 0 ? 0 : 1) + dev * 0.5 * v);
  return { xq: x, xf, w };
}

/** float64 reference of G = 2/n · (x_f − x_q)ᵀ x_q. */
function gramRef(xf: Float32Array, xq: Float32Array, n: number, cols: number): Float64Array {
  const G = new Float64Array(cols * cols);
  for (let t = 0; t < n; t++) {
    for (let i = 0; i < cols; i++) {
      const d = xf[t * cols + i] - xq[t * cols + i];
      for (let j = 0; j < cols; j++) G[i * cols + j] += (2 / n) * d * xq[t * cols + j];
    }
  }
  return G;
}

/** Solve A y = b for symmetric positive definite A [n, n] (float64 Gaussian elimination). */
function solve(A: Float64Array, b: Float64Array, n: number): Float64Array {
  const M = A.slice();
  const y = b.slice();
  for (let k = 0; k < n; k++) {
    for (let i = k + 1; i < n; i++) {
      const f = M[i * n + k] / M[k * n + k];
      for (let j = k; j < n; j++) M[i * n + j] -= f * M[k * n + j];
      y[i] -= f * y[k];
    }
  }
  for (let i = n - 1; i >= 0; i--) {
    let s = y[i];
    for (let j = i + 1; j < n; j++) s -= M[i * n + j] * y[j];
    y[i] = s / M[i * n + i];
  }
  return y;
}

/** The ridge objective the full target minimizes: 2/n‖V x_qᵀ − W x_fᵀ‖² + λ‖V − W‖² for one row. */
function ridge(v: ArrayLike<number>, w: ArrayLike<number>, xq: Float32Array, xf: Float32Array, n: number, cols: number, lam: number): number {
  let s = 0;
  for (let t = 0; t < n; t++) {
    let e = 0;
    for (let j = 0; j < cols; j++) e += v[j] * xq[t * cols + j] - w[j] * xf[t * cols + j];
    s += (2 / n) * e * e;
  }
  for (let j = 0; j < cols; j++) s += lam * (v[j] - w[j]) ** 2;
  return s;
}

describe('asymmetric GPTQ (core/quant/asymmetric.ts)', () => {
  it.each(backends)('G = 2/N · Dᵀ X_q against a float64 reference (%s)', (_n, ops) => {
    const n = 96, cols = 24;
    const { xq, xf } = inputs(1, 8, cols, n, 0.2);
    const qT = transpose(xq, n, cols);
    const G = crossGram(deviationT(xf, qT, n, cols), qT, n, cols, ops);
    const ref = gramRef(xf, xq, n, cols);
    const scale = Math.max(...ref.map(Math.abs));
    for (let i = 0; i < ref.length; i++) expect(Math.abs(G[i] - ref[i])).toBeLessThan(1e-5 * scale);
  });

  it.each(backends)("G's rows and columns for changed channels are the whole computation's bits (%s)", (_n, ops) => {
    const n = 80, cols = 20;
    const a = inputs(2, 8, cols, n, 0.2);
    const b = inputs(3, 8, cols, n, 0.3);
    for (const changed of [[5], [0, 19], [3, 4, 9], [1, 2, 7, 8, 15, 16, 17]]) {
      // channels `changed` of both inputs replaced by another case's
      const xq = a.xq.slice(), xf = a.xf.slice();
      for (let t = 0; t < n; t++) for (const c of changed) (xq[t * cols + c] = b.xq[t * cols + c]), (xf[t * cols + c] = b.xf[t * cols + c]);
      const qT0 = transpose(a.xq, n, cols);
      const G = crossGram(deviationT(a.xf, qT0, n, cols), qT0, n, cols, ops);
      const qT = transpose(xq, n, cols);
      const dT = deviationT(xf, qT, n, cols);
      crossGramRows(G, dT, qT, n, cols, changed, ops);
      expect(G).toEqual(crossGram(dT, qT, n, cols, ops));
    }
  });

  it.each(backends)('the full target is the minimum of the ridge objective GPTQ sees, against a float64 solve (%s, act order too)', (_n, ops) => {
    const n = 128, cols = 16, rows = 5;
    const { xq, xf, w } = inputs(4, rows, cols, n, 0.3);
    for (const actOrder of [false, true]) {
      const f = inputFactor(xq, xf, n, cols, [0, 64, n], { ops, actOrder });
      const V = asymmetricTargets(w, cols, f.MT!, 1, ops);
      // reference: V = W + W G (H + λI)⁻¹ with GPTQ's damped Hessian
      const Hd = f.factor.H.slice();
      for (let i = 0; i < cols; i++) Hd[i * cols + i] += f.factor.damp;
      const G = gramRef(xf, xq, n, cols);
      for (let r = 0; r < rows; r++) {
        const wr = w.subarray(r * cols, (r + 1) * cols);
        const wg = new Float64Array(cols);
        for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) wg[j] += wr[i] * G[i * cols + j];
        const corr = solve(Hd, wg, cols);
        const vr = V.subarray(r * cols, (r + 1) * cols);
        for (let j = 0; j < cols; j++) expect(Math.abs(vr[j] - (wr[j] + corr[j]))).toBeLessThan(1e-4 * (Math.abs(wr[j]) + 0.01));
        // the reference is the ridge minimum: any step away costs
        const ref = Float64Array.from(wr, (v, j) => v + corr[j]);
        const J = ridge(ref, wr, xq, xf, n, cols, f.factor.damp);
        const rng = Rng.fromSeed(r);
        for (let k = 0; k < 5; k++) expect(ridge(ref.map((v) => v + 1e-3 * rng.normal()), wr, xq, xf, n, cols, f.factor.damp)).toBeGreaterThan(J);
        // and it reproduces the FP output better than W itself
        expect(ridge(vr, wr, xq, xf, n, cols, 0)).toBeLessThan(ridge(wr, wr, xq, xf, n, cols, 0));
      }
    }
  });

  it.each(backends)('targets of some rows are the rows of all targets, bit for bit; α scales the step (%s)', (_n, ops) => {
    const n = 64, cols = 16, rows = 9;
    const { xq, xf, w } = inputs(5, rows, cols, n, 0.2);
    const f = inputFactor(xq, xf, n, cols, [0, n], { ops });
    const all = asymmetricTargets(w, cols, f.MT!, 0.5, ops);
    for (const sel of [[4], [0, 8], [1, 2, 3], [0, 2, 4, 6, 8]]) {
      const part = asymmetricTargets(w, cols, f.MT!, 0.5, ops, sel);
      sel.forEach((r, i) => expect(part.subarray(i * cols, (i + 1) * cols)).toEqual(all.subarray(r * cols, (r + 1) * cols)));
    }
    const full = asymmetricTargets(w, cols, f.MT!, 1, ops);
    for (let i = 0; i < w.length; i++) expect(all[i] - w[i]).toBeCloseTo((full[i] - w[i]) / 2, 6);
    // no deviation: the target is W
    const same = inputFactor(xq, xq, n, cols, [0, n], { ops });
    expect(asymmetricTargets(w, cols, same.MT!, 1, ops)).toEqual(w);
  });

  it('the factor keeps the damped inverse in column order (act order too)', () => {
    const n = 100, cols = 12;
    const { xq } = inputs(6, 4, cols, n, 0);
    for (const actOrder of [false, true]) {
      const f = inputFactor(xq, undefined, n, cols, [0, n], { ops: jsOps, actOrder });
      const g = gptqFactor(f.factor.H, cols, { actOrder, keepInverse: true });
      expect(g.U).toEqual(f.factor.U); // keeping it changes nothing else
      expect(g.dead.some((d) => d === 1)).toBe(true);
      for (let i = 0; i < cols; i++) {
        for (let j = 0; j < cols; j++) {
          let s = 0;
          // (a dead column's zero diagonal counts as 1, as GPTQ sets it)
          for (let k = 0; k < cols; k++) s += g.inv![i * cols + k] * (f.factor.H[k * cols + j] + (k === j ? g.damp + g.dead[k] : 0));
          expect(s).toBeCloseTo(i === j ? 1 : 0, 8);
        }
      }
    }
  });

  it('GPTQ on the target reproduces the FP output better than GPTQ on W (3 bits, inputs deviating)', () => {
    const n = 256, cols = 64, rows = 16;
    const { xq, xf, w } = inputs(7, rows, cols, n, 0.3);
    const spec = { bits: 3, group: 32 };
    const f = inputFactor(xq, xf, n, cols, [0, n], { ops: jsOps });
    const plain = gptqQuantizeRows(w, cols, f.factor, spec).deq;
    const asym = gptqQuantizeRows(asymmetricTargets(w, cols, f.MT!, 1, jsOps), cols, f.factor, spec).deq;
    let ePlain = 0, eAsym = 0;
    for (let r = 0; r < rows; r++) {
      const wr = w.subarray(r * cols, (r + 1) * cols);
      ePlain += ridge(plain.subarray(r * cols, (r + 1) * cols), wr, xq, xf, n, cols, 0);
      eAsym += ridge(asym.subarray(r * cols, (r + 1) * cols), wr, xq, xf, n, cols, 0);
    }
    expect(eAsym).toBeLessThan(0.8 * ePlain);
  });

  it('the map is Mᵀ for M = G H⁻¹', () => {
    const cols = 6;
    const rng = Rng.fromSeed(9);
    const G = Float32Array.from({ length: cols * cols }, () => rng.normal());
    const Hinv = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++) for (let j = 0; j <= i; j++) Hinv[i * cols + j] = Hinv[j * cols + i] = (i === j ? 2 : 0) + 0.1 * rng.normal();
    const MT = asymmetricMap(G, Hinv, cols, jsOps);
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j < cols; j++) {
        let m = 0;
        for (let k = 0; k < cols; k++) m += G[i * cols + k] * Hinv[k * cols + j];
        expect(MT[j * cols + i]).toBeCloseTo(m, 5);
      }
    }
  });
});
