/**
 * GPTQ on llama.cpp's formats (core/quant/gptqFormat.ts) against a float64 reference
 * written plainly here: the un-batched OBS loop of the GPTQ paper (Algorithm 1 without the
 * Cholesky and lazy-batch reformulations) on an explicitly inverted, damped Hessian, whose
 * inverse loses the quantized column after each step; a block's parameters are taken from
 * the format's reference quantizer on the block's current weights, and each code is the
 * nearest on them.
 */
import { describe, expect, it } from 'vitest';
import { GGML_FORMATS, clippedFormat, intFormat, type QuantFormat } from '../../core/quant/formats';
import { gptqFactor } from '../../core/quant/gptq';
import { gptqFormatRows } from '../../core/quant/gptqFormat';
import { Rng } from '../../core/rng';

const FORMATS = Object.values(GGML_FORMATS);

/** A random SPD Hessian H = 2/n · XᵀX of correlated inputs X [n, cols] (per-column gains), and weights [rows, cols]. */
function layer(seed: number, rows: number, cols: number, n: number): { H: Float64Array; w: Float32Array } {
  const rng = Rng.fromSeed(seed);
  const k = 24;
  const A = Float64Array.from({ length: k * cols }, () => rng.normal());
  const gain = Float64Array.from({ length: cols }, () => Math.exp(0.5 * rng.normal()));
  const H = new Float64Array(cols * cols);
  const x = new Float64Array(cols);
  for (let t = 0; t < n; t++) {
    const z = Array.from({ length: k }, () => rng.normal());
    for (let c = 0; c < cols; c++) {
      let v = 0.5 * rng.normal();
      for (let j = 0; j < k; j++) v += (z[j] * A[j * cols + c]) / Math.sqrt(k);
      x[c] = v * gain[c];
    }
    for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) H[i * cols + j] += (2 / n) * x[i] * x[j];
  }
  const w = Float32Array.from({ length: rows * cols }, () => (rng.float() < 0.02 ? 6 : 1) * rng.normal() * 0.05);
  return { H, w };
}

/** Gauss–Jordan inverse, float64. */
function invert(M: Float64Array, n: number): Float64Array {
  const a = M.slice();
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let p = 0; p < n; p++) {
    const piv = a[p * n + p];
    for (let j = 0; j < n; j++) {
      a[p * n + j] /= piv;
      inv[p * n + j] /= piv;
    }
    for (let i = 0; i < n; i++) {
      if (i === p) continue;
      const fct = a[i * n + p];
      if (fct === 0) continue;
      for (let j = 0; j < n; j++) {
        a[i * n + j] -= fct * a[p * n + j];
        inv[i * n + j] -= fct * inv[p * n + j];
      }
    }
  }
  return inv;
}

interface Params { scale: number[]; zero: number[]; min: number[] }

/** The format's parameters for one packed block of `x`: its reference quantizer's (or the clip search's), read back. */
function blockParams(fmt: QuantFormat, x: ArrayLike<number>, clip: boolean): Params {
  const xb = Float32Array.from(x);
  const q = (clip && clippedFormat(fmt)) || fmt;
  const u = fmt.unpackRow(q.quantizeRow(xb), xb.length);
  return { scale: Array.from(u.scale), zero: Array.from(u.zero), min: u.min ? Array.from(u.min) : Array.from(u.scale, () => 0) };
}

/** Nearest code on (s, z, m), clamped; and its value in float32 as the format dequantizes. */
function nearest(w: number, s: number, z: number, m: number, top: number, withMin: boolean): { q: number; v: number } {
  const q = s === 0 ? Math.min(z, top) : Math.min(top, Math.max(0, Math.round((w - m) / s) + z));
  const v = Math.fround(s * (q - z));
  return { q, v: withMin ? Math.fround(v + m) : v };
}

/** The float64 reference: GPTQ Algorithm 1, one column at a time, on the damped inverse Hessian. */
function referenceGptq(fmt: QuantFormat, w: Float32Array, rows: number, cols: number, H: Float64Array, clip = false): { codes: number[]; values: number[] } {
  let meanDiag = 0;
  for (let i = 0; i < cols; i++) meanDiag += H[i * cols + i] / cols;
  const Hd = H.slice();
  for (let i = 0; i < cols; i++) Hd[i * cols + i] += 0.01 * meanDiag;
  const top = 2 ** fmt.codeBits - 1;
  const withMin = fmt.unpackRow(new Uint8Array(fmt.rowBytes(fmt.blockSize)), fmt.blockSize).min !== undefined;
  const codes: number[] = [];
  const values: number[] = [];
  const Hinv0 = invert(Hd, cols);
  for (let r = 0; r < rows; r++) {
    const W = Array.from(w.subarray(r * cols, (r + 1) * cols));
    const Hinv = Hinv0.slice();
    let p: Params = { scale: [], zero: [], min: [] };
    for (let i = 0; i < cols; i++) {
      if (i % fmt.blockSize === 0) p = blockParams(fmt, W.slice(i, i + fmt.blockSize), clip);
      const g = Math.floor((i % fmt.blockSize) / fmt.groupSize);
      const { q, v } = nearest(W[i], p.scale[g], p.zero[g], p.min[g], top, withMin);
      codes.push(q);
      values.push(v);
      // OBS: the error of column i, spread over the columns not yet quantized
      const e = (W[i] - v) / Hinv[i * cols + i];
      for (let j = i + 1; j < cols; j++) W[j] -= e * Hinv[i * cols + j];
      // H⁻¹ of the remaining columns: eliminate column i
      const hii = Hinv[i * cols + i];
      for (let a = i + 1; a < cols; a++) {
        const f = Hinv[a * cols + i] / hii;
        for (let b = i + 1; b < cols; b++) Hinv[a * cols + b] -= f * Hinv[i * cols + b];
      }
    }
  }
  return { codes, values };
}

function codesOf(fmt: QuantFormat, packed: Uint8Array, rows: number, cols: number): number[] {
  const rb = fmt.rowBytes(cols);
  const out: number[] = [];
  for (let r = 0; r < rows; r++) out.push(...fmt.unpackRow(packed.subarray(r * rb, (r + 1) * rb), cols).codes);
  return out;
}

describe('GPTQ on ggml formats against the float64 reference', () => {
  it.each(FORMATS.map((f) => [f.name, f] as const))('%s: same codes, packed bytes dequantize to the values GPTQ used', (name, fmt) => {
    const rows = 3;
    const cols = 512;
    const { H, w } = layer(name.length * 31 + fmt.blockBytes, rows, cols, 200);
    const got = gptqFormatRows(w, cols, gptqFactor(H, cols), fmt, { blockSize: 96 });
    const want = referenceGptq(fmt, w, rows, cols, H);
    expect(got.format).toBe(fmt);
    expect(codesOf(fmt, got.packed!, rows, cols)).toEqual(want.codes);
    expect(Array.from(got.deq)).toEqual(want.values);
    const rb = fmt.rowBytes(cols);
    for (let r = 0; r < rows; r++) {
      const y = fmt.dequantizeRow(got.packed!.subarray(r * rb, (r + 1) * rb), cols);
      expect(y.every((v, j) => Object.is(v, got.deq[r * cols + j]))).toBe(true);
    }
  });

  it.each(['q4_0', 'q4_1', 'q5_0'].map((n) => [n, GGML_FORMATS[n]] as const))('%s with clip: parameters by the clip search, same codes', (_n, fmt) => {
    const { H, w } = layer(77, 3, 256, 300);
    const got = gptqFormatRows(w, 256, gptqFactor(H, 256), fmt, { clip: true });
    const want = referenceGptq(fmt, w, 3, 256, H, true);
    expect(codesOf(fmt, got.packed!, 3, 256)).toEqual(want.codes);
    const plain = gptqFormatRows(w, 256, gptqFactor(H, 256), fmt);
    expect(Buffer.from(plain.packed!).equals(Buffer.from(got.packed!))).toBe(false);
  });

  it('the result does not depend on the lazy batch size, and rowSet picks rows bit for bit', () => {
    const { H, w } = layer(5, 6, 512, 300);
    const factor = gptqFactor(H, 512);
    for (const fmt of [GGML_FORMATS.q4_0, GGML_FORMATS.q4_k]) {
      const a = gptqFormatRows(w, 512, factor, fmt, { blockSize: 128 });
      const b = gptqFormatRows(w, 512, factor, fmt, { blockSize: 37 });
      expect(Buffer.from(a.packed!).equals(Buffer.from(b.packed!))).toBe(true);
      const sub = gptqFormatRows(w, 512, factor, fmt, {}, [4, 1]);
      const rb = fmt.rowBytes(512);
      expect(Buffer.from(sub.packed!.subarray(0, rb)).equals(Buffer.from(a.packed!.subarray(4 * rb, 5 * rb)))).toBe(true);
      expect(Buffer.from(sub.packed!.subarray(rb)).equals(Buffer.from(a.packed!.subarray(rb, 2 * rb)))).toBe(true);
    }
  });
});

/** Σ_r (w − q)_r H (w − q)_rᵀ: the layer's output error ‖X(W − Q)ᵀ‖² up to H's 2/n. */
function outputError(H: Float64Array, w: Float32Array, q: Float32Array, rows: number, cols: number): number {
  let s = 0;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) {
      const di = w[r * cols + i] - q[r * cols + i];
      for (let j = 0; j < cols; j++) s += di * H[i * cols + j] * (w[r * cols + j] - q[r * cols + j]);
    }
  }
  return s;
}

describe('GPTQ on ggml formats with correlated inputs', () => {
  it.each(FORMATS.map((f) => [f.name, f] as const))('%s: a lower layer output error than the reference quantizer', (_n, fmt) => {
    const rows = 4;
    const cols = 512;
    const { H, w } = layer(21, rows, cols, 200);
    const got = gptqFormatRows(w, cols, gptqFactor(H, cols), fmt);
    const ref = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) fmt.dequantizeRow(fmt.quantizeRow(w.subarray(r * cols, (r + 1) * cols)), cols, ref.subarray(r * cols, (r + 1) * cols));
    expect(outputError(H, w, got.deq, rows, cols)).toBeLessThan(0.9 * outputError(H, w, ref, rows, cols));
  });
});

describe('GPTQ on ggml formats with an uncorrelated (diagonal) Hessian', () => {
  it.each(FORMATS.map((f) => [f.name, f] as const))('%s: fixed-parameter rounding of the weights, no worse than the reference quantizer per block', (_n, fmt) => {
    const rng = Rng.fromSeed(9);
    const rows = 5;
    const cols = 512;
    const w = Float32Array.from({ length: rows * cols }, () => rng.normal() * 0.05);
    const H = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++) H[i * cols + i] = 0.5 + rng.float();
    const got = gptqFormatRows(w, cols, gptqFactor(H, cols), fmt);
    const top = 2 ** fmt.codeBits - 1;
    for (let r = 0; r < rows; r++) {
      const x = w.subarray(r * cols, (r + 1) * cols);
      const ref = fmt.unpackRow(fmt.quantizeRow(x), cols);
      const refY = fmt.dequantizeRow(fmt.quantizeRow(x), cols);
      for (let b = 0; b < cols; b += fmt.blockSize) {
        let eGot = 0;
        let eRef = 0;
        for (let j = b; j < b + fmt.blockSize; j++) {
          const g = Math.floor(j / fmt.groupSize);
          const { v } = nearest(x[j], ref.scale[g], ref.zero[g], ref.min ? ref.min[g] : 0, top, ref.min !== undefined);
          expect(got.deq[r * cols + j]).toBe(v);
          eGot += (got.deq[r * cols + j] - x[j]) ** 2;
          eRef += (refY[j] - x[j]) ** 2;
        }
        expect(eGot).toBeLessThanOrEqual(eRef * (1 + 1e-6) + 1e-18);
      }
    }
  });
});

describe('what GPTQ on a format cannot take', () => {
  it('the int grid is refused by name; a row length the format cannot hold takes its fallback (with clip, clipped like any row of the fallback), or f16', () => {
    const { H, w } = layer(3, 2, 64, 100);
    expect(() => gptqFormatRows(w, 64, gptqFactor(H, 64), intFormat(3, 32))).toThrow(/GPTQ on format int/);
    const fb = gptqFormatRows(w, 64, gptqFactor(H, 64), GGML_FORMATS.q4_k);
    expect(fb.format!.name).toBe('q5_0');
    const fbClip = gptqFormatRows(w, 64, gptqFactor(H, 64), GGML_FORMATS.q4_k, { clip: true });
    const q5Clip = gptqFormatRows(w, 64, gptqFactor(H, 64), GGML_FORMATS.q5_0, { clip: true });
    expect(Buffer.from(fbClip.packed!).equals(Buffer.from(q5Clip.packed!))).toBe(true);
    const { H: H2, w: w2 } = layer(4, 2, 40, 100);
    const f16 = gptqFormatRows(w2, 40, gptqFactor(H2, 40), GGML_FORMATS.q4_0);
    expect(f16.format).toBeNull();
    expect(f16.packed).toBeNull();
    for (let j = 0; j < 80; j++) {
      expect(Math.abs(f16.deq[j] - w2[j])).toBeLessThanOrEqual(Math.abs(w2[j]) * 2 ** -11);
    }
  });
});
