/**
 * How the search quantizes a (transformed) block: the run's base quantizer.
 *  - RTN: each linear on its own (core/quant/rtn.ts); FFN moves then only need the rows
 *    and groups they touch re-quantized (objective.ts does that incrementally).
 *  - GPTQ: true-sequential within the block as in core/quant/model.ts — wq/wk/wv from
 *    norm(x), wo from the context of the quantized q/k/v (objective.ts), w1/w3 from norm(h)
 *    after the quantized attention, w2 from the activation of the quantized w1/w3 (here) —
 *    on the block's inputs in the quantized model, so the search scores exactly the
 *    rounding GPTQ would produce for the transformed weights (issue #5: "the rounding of
 *    the transformed block is recomputed"). Hessians are XᵀX products through the
 *    backend's matmul.
 */
import { ffnActivation } from '../core/forward';
import type { Block, F32, LinearName, ModelConfig } from '../core/model/types';
import { SEPARABLE_MIN_ROWS, type Ops } from '../core/ops';
import { gptqFactor, gptqQuantize, gptqQuantizeRows, type GptqFactor, type GptqResult } from '../core/quant/gptq';
import { quantizeBlockLinears } from '../core/quant/model';
import type { QuantSpec, Quantized } from '../core/quant/rtn';

export type BaseMethod = 'rtn' | 'gptq';

/** Where a quantizer leaves the integer codes of the linears it quantized (for packed export). */
export type CodeSink = Partial<Record<LinearName, Quantized>>;

/** xᵀ [cols, N] of x [N, cols], in 32×32 tiles (a plain double loop misses the cache on every write). */
export function transpose(x: F32, N: number, cols: number): F32 {
  const xT = new Float32Array(cols * N);
  const B = 32;
  for (let n0 = 0; n0 < N; n0 += B) {
    const n1 = Math.min(n0 + B, N);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(c0 + B, cols);
      for (let c = c0; c < c1; c++) for (let n = n0; n < n1; n++) xT[c * N + n] = x[n * cols + c];
    }
  }
  return xT;
}

/**
 * H = 2/N · XᵀX (gptq.py's add_batch over all rows) from xT = Xᵀ [cols, N], via one matmul.
 * Entry (i, j) is the backend's dot product of rows i and j of xT, so rows of H can be
 * recomputed alone bit for bit (see `hessianRows` and the Ops contract).
 */
export function hessianT(xT: F32, N: number, cols: number, ops: Ops): Float64Array {
  // At least SEPARABLE_MIN_ROWS rows on the left (zero padding), as hessianRows uses.
  const rows = Math.max(cols, SEPARABLE_MIN_ROWS);
  const left = rows === cols ? xT : copyPadded(xT, rows * N);
  const h32 = new Float32Array(rows * cols);
  ops.matmulT(h32, left, xT, rows, N, cols);
  const H = new Float64Array(cols * cols);
  for (let i = 0; i < H.length; i++) H[i] = (2 / N) * h32[i];
  return H;
}

function copyPadded(x: F32, n: number): F32 {
  const out = new Float32Array(n);
  out.set(x);
  return out;
}

/** H of x [N, cols]. */
export function hessian(x: F32, N: number, cols: number, ops: Ops): Float64Array {
  return hessianT(transpose(x, N, cols), N, cols, ops);
}

/**
 * Rows (and, by symmetry, columns) `rows` of hessianT(xT) written into H in place: the same
 * dot products, so the same bits as recomputing all of H. The product gets at least
 * SEPARABLE_MIN_ROWS rows (zero padding), below which backends may sum differently.
 */
export function hessianRows(H: Float64Array, xT: F32, N: number, cols: number, rows: ArrayLike<number>, ops: Ops): void {
  const k = rows.length;
  const kk = Math.max(k, SEPARABLE_MIN_ROWS);
  const xs = new Float32Array(kk * N); // zero padding rows
  for (let u = 0; u < k; u++) xs.set(xT.subarray(rows[u] * N, (rows[u] + 1) * N), u * N);
  const h32 = new Float32Array(kk * cols);
  ops.matmulT(h32, xs, xT, kk, N, cols);
  for (let u = 0; u < k; u++) {
    const r = rows[u];
    for (let j = 0; j < cols; j++) {
      const v = (2 / N) * h32[u * cols + j];
      H[r * cols + j] = v;
      H[j * cols + r] = v;
    }
  }
}

/** The fake-quantized weights of a GPTQ result, its integer codes left in `codes` under `name`. */
export function keepCodes(name: LinearName, r: GptqResult, codes?: CodeSink): F32 {
  if (codes) codes[name] = r.qz;
  return r.deq;
}

/**
 * What GPTQ of the FFN leaves behind for incremental evaluation of FFN moves: the factor of
 * the w1/w3 input Hessian (FFN moves do not change that input), the quantized activation
 * (transposed) and its Hessian, which a move changes only in the rows and columns of the
 * units it touches.
 */
export interface GptqFfnCache {
  factorX: GptqFactor;
  /** FFN activation of the quantized w1/w3, transposed: [H, N]. */
  actT: F32;
  /** Hessian of the activation (w2's input): [H, H]. */
  Ha: Float64Array;
}

/** GPTQ of w1/w3 (from norm(h) = xn [N, dim]) then w2 (from the quantized activation act [N, H], returned too). */
export function gptqFfn(
  cfg: ModelConfig, b: Block, xn: F32, N: number, spec: QuantSpec, ops: Ops, codes?: CodeSink,
): { q: Partial<Block>; act: F32; cache: GptqFfnCache } {
  const d = cfg.dim;
  const H = cfg.hiddenDim;
  const factorX = gptqFactor(hessian(xn, N, d, ops), d);
  const q: Block = { ...b };
  q.w1 = keepCodes('w1', gptqQuantizeRows(b.w1, d, factorX, spec), codes);
  if (b.w3) q.w3 = keepCodes('w3', gptqQuantizeRows(b.w3, d, factorX, spec), codes);
  const act = ffnActivation(cfg, q, xn, N, ops);
  const actT = transpose(act, N, H);
  const Ha = hessianT(actT, N, H, ops);
  q.w2 = keepCodes('w2', gptqQuantize(b.w2, d, H, Ha, spec), codes);
  return { q: b.w3 ? { w1: q.w1, w3: q.w3, w2: q.w2 } : { w1: q.w1, w2: q.w2 }, act, cache: { factorX, actT, Ha } };
}

/** RTN of the named linears (all of the block's when omitted). */
export function rtnLinears(cfg: ModelConfig, b: Block, spec: QuantSpec, names?: LinearName[], codes?: CodeSink): Partial<Block> {
  const q = quantizeBlockLinears(cfg, b, spec, { method: 'rtn', names, onQuantized: codes && ((n, qz) => (codes[n] = qz)) });
  const out: Partial<Block> = {};
  for (const n of names ?? (['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as LinearName[])) if (q[n]) out[n] = q[n];
  return out;
}
