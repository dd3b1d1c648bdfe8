/**
 * GPTQ with asymmetric calibration: a linear's rounding is fitted so that the quantized
 * linear on the quantized model's inputs X_q reproduces the FP linear on the FP model's
 * inputs X_f, ‖Q X_qᵀ − W X_fᵀ‖², not ‖(Q − W) X_qᵀ‖² as plain GPTQ has it. With
 * D = X_f − X_q that is ‖(Q − W') X_qᵀ‖² plus a constant, for the target
 *
 *   W' = W + W G H⁻¹,   G = 2/N · Dᵀ X_q,   H = 2/N · X_qᵀ X_q (GPTQ's Hessian, damped),
 *
 * so GPTQ run on W' with its own Hessian minimizes it. Only part of the step is taken,
 * W + α W G H⁻¹: the full correction fits the calibration rows' deviations, and on held-out
 * tokens α ≈ 0.5 does best (README, Tuning).
 *
 * Everything is float32 products through the backend's matmulT, whose outputs are
 * row-separable (core/ops.ts): G's rows and columns for some input channels, and the targets
 * of some rows, come out with the bits of computing all of them, so the search's moves
 * (search/baseGptq.ts) score what a full evaluation would.
 */
import type { F32 } from '../model/types';
import { SEPARABLE_MIN_ROWS, type Ops } from '../ops';
import { gptqFactor, type GptqFactor, type GptqOptions } from './gptq';
import { hessianT, transpose } from './hessian';

/** What GPTQ needs of one input of a linear, and (asymmetric) what updates it. */
export interface InputFactor {
  factor: GptqFactor;
  /** X_qᵀ [cols, N]. */
  qT: F32;
  /** With FP inputs: G (crossGram) and the map Mᵀ (asymmetricMap). */
  G?: F32;
  MT?: F32;
}

/**
 * GPTQ's factor of the inputs x_q [N, cols] in sequences `seqStarts` (Hessian by
 * ./hessian.ts) and, given the FP inputs x_f, the asymmetric map: the one computation the
 * whole-model GPTQ (./view.ts) and the search's base (search/baseGptq.ts) share.
 */
export function inputFactor(xq: F32, xf: F32 | undefined, N: number, cols: number, seqStarts: readonly number[], opts: GptqOptions & { ops: Ops }): InputFactor {
  const qT = transpose(xq, N, cols);
  const factor = gptqFactor(hessianT(qT, N, cols, seqStarts, opts.ops), cols, { ...opts, keepInverse: xf !== undefined });
  if (!xf) return { factor, qT };
  const G = crossGram(deviationT(xf, qT, N, cols), qT, N, cols, opts.ops);
  const MT = asymmetricMap(G, factor.inv!, cols, opts.ops);
  delete factor.inv; // cols² float64 that nothing reads again
  return { factor, qT, G, MT };
}

/** Dᵀ = X_fᵀ − X_qᵀ [cols, N] from the FP inputs x_f [N, cols] and the transposed quantized ones qT [cols, N]. */
export function deviationT(xf: F32, qT: F32, N: number, cols: number): F32 {
  const dT = transpose(xf, N, cols);
  for (let i = 0; i < dT.length; i++) dT[i] -= qT[i];
  return dT;
}

/** Rows `rows` of m [·, width] in that order, padded to `minRows` rows with copies of the last. */
export function gatherRows(m: F32, width: number, rows: ArrayLike<number>, minRows = 0): F32 {
  const n = Math.max(rows.length, minRows);
  const g = new Float32Array(n * width);
  for (let i = 0; i < n; i++) {
    const r = rows[Math.min(i, rows.length - 1)];
    g.set(m.subarray(r * width, (r + 1) * width), i * width);
  }
  return g;
}

/** gatherRows padded to the rows matmulT needs to be row-separable, and their count. */
function separableRows(m: F32, width: number, rows: ArrayLike<number>): { g: F32; n: number } {
  const g = gatherRows(m, width, rows, SEPARABLE_MIN_ROWS);
  return { g, n: g.length / width };
}

/** G [cols, cols] = 2/N · Dᵀ X_q from Dᵀ and X_qᵀ (both [cols, N]); entry (i, j) is the product of their rows i and j. */
export function crossGram(dT: F32, qT: F32, N: number, cols: number, ops: Ops): F32 {
  const G = new Float32Array(cols * cols);
  ops.matmulT(G, dT, qT, cols, N, cols);
  const f = 2 / N;
  for (let i = 0; i < G.length; i++) G[i] *= f;
  return G;
}

/**
 * G's rows and columns `changed` (the input channels whose Dᵀ or X_qᵀ rows changed)
 * recomputed in place: the bits of crossGram over the new rows.
 */
export function crossGramRows(G: F32, dT: F32, qT: F32, N: number, cols: number, changed: ArrayLike<number>, ops: Ops): void {
  const k = changed.length;
  if (k === 0) return;
  const f = 2 / N;
  const d = separableRows(dT, N, changed);
  const rows = new Float32Array(d.n * cols);
  ops.matmulT(rows, d.g, qT, d.n, N, cols);
  for (let i = 0; i < k; i++) {
    const o = changed[i] * cols;
    for (let j = 0; j < cols; j++) G[o + j] = rows[i * cols + j] * f;
  }
  const q = separableRows(qT, N, changed);
  const colsOut = new Float32Array(cols * q.n);
  ops.matmulT(colsOut, dT, q.g, cols, N, q.n);
  for (let i = 0; i < cols; i++) for (let j = 0; j < k; j++) G[i * cols + changed[j]] = colsOut[i * q.n + j] * f;
}

/**
 * Mᵀ [cols, cols] for M = G H⁻¹, given H⁻¹ (float64, symmetric; the damped inverse GPTQ's
 * factor came from): the map that takes a row of W to its correction W G H⁻¹.
 */
export function asymmetricMap(G: F32, Hinv: Float64Array, cols: number, ops: Ops): F32 {
  const MT = new Float32Array(cols * cols);
  ops.matmulT(MT, Float32Array.from(Hinv), G, cols, cols, cols);
  return MT;
}

/**
 * The targets W + α W G H⁻¹ of rows `rows` of w [·, cols] (all when omitted), in that order,
 * from the map Mᵀ of asymmetricMap.
 */
export function asymmetricTargets(w: F32, cols: number, MT: F32, alpha: number, ops: Ops, rows?: ArrayLike<number>): F32 {
  const all = w.length / cols;
  const { g, n } = rows ? separableRows(w, cols, rows) : all >= SEPARABLE_MIN_ROWS ? { g: w, n: all } : separableRows(w, cols, Int32Array.from({ length: all }, (_, i) => i));
  const k = rows ? rows.length : all;
  const P = new Float32Array(n * cols);
  ops.matmulT(P, g, MT, n, cols, cols);
  const out = new Float32Array(k * cols);
  for (let i = 0; i < k * cols; i++) out[i] = g[i] + alpha * P[i];
  return out;
}
