/**
 * The run's base quantizer as the search sees it: one `BaseQuantizer` per method (RTN in
 * baseRtn.ts, GPTQ in baseGptq.ts), chosen once per block objective (objective.ts), so that
 * the full evaluation (fullEval.ts) and the moves (attnMove.ts, each base's FFN move) ask
 * "quantize these weights on this input" without branching on the method. Both quantize a
 * transformed block the way the report's base rows do (core/quant/model.ts): RTN each linear
 * on its own; GPTQ true-sequentially, on the block's inputs in the quantized model, so the
 * search scores exactly the rounding GPTQ would produce for the transformed weights.
 * Also the Hessians GPTQ quantizes with, and small helpers the bases share.
 */
import type { Block, F32, LinearName, ModelConfig } from '../core/model/types';
import { SEPARABLE_MIN_ROWS, type Ops } from '../core/ops';
import type { GptqFactor } from '../core/quant/gptq';
import type { Quantized } from '../core/quant/rtn';
import type { BlockState, Caches, F64, GptqFfnCaches } from './blockState';

export type BaseMethod = 'rtn' | 'gptq';

/** Where a quantizer leaves the integer codes of the linears it quantized (for packed export). */
export type CodeSink = Partial<Record<LinearName, Quantized>>;

export type QkvName = 'wq' | 'wk' | 'wv';
export const QKV_LINEARS = ['wq', 'wk', 'wv'] as const;

/** What an evaluation asks of the base quantizer, in the order of the block (true-sequential for GPTQ). */
export interface BaseQuantizer {
  readonly method: BaseMethod;
  /** wq/wk/wv of `b` quantized on their input xa = norm(x) [N, dim]; GPTQ also returns the factor of xa's Hessian. */
  qkv(b: Block, xa: F32, codes?: CodeSink): { w: Pick<Block, QkvName>; factorA?: GptqFactor };
  /** Rows `rows` (sorted) of linear `name` of `b` quantized again into `w`, a copy of the current quantized weights. */
  qkvRows(b: Block, name: QkvName, rows: Int32Array, w: F32, c: Caches): void;
  /** wo of `b` on the context ctx [N, qDim]; GPTQ also returns ctxᵀ and its Hessian. */
  wo(b: Block, ctx: F32, codes?: CodeSink): { wo: F32; ctxT?: F32; Hctx?: F64 };
  /** wo of `b` after an attention move changed the context `ctx` only in the columns of q heads `heads` (state before: `c`). */
  woAfter(b: Block, ctx: F32, heads: Int32Array, c: Caches): { wo: F32; ctxT?: F32; Hctx?: F64 };
  /**
   * The FFN of `b` on its input xn = norm(h) [N, dim]: quantized w1 (w3) w2 and the hidden
   * activation of the quantized w1/w3, act [N, H]. With `keep`, a base whose FFN rounding
   * does not depend on xn (RTN) keeps those quantized weights.
   */
  ffn(b: Block, xn: F32, keep: Block | undefined, codes?: CodeSink): { w: Partial<Block>; act: F32; cache?: GptqFfnCaches };
  /**
   * Loss after replacing FFN units `units` (RTN: and every w2 column group holding them) by
   * those of `b`, a transformed copy of the current FP block whose other units are
   * unchanged. With `commit`, `st` is updated to the new state.
   */
  ffnMove(st: BlockState, b: Block, units: ArrayLike<number>, commit: boolean): number;
}

/** Row i of src [rows.length, width] into row rows[i] of dst. */
export function setRows(dst: F32, src: F32, rows: ArrayLike<number>, width: number): void {
  for (let i = 0; i < rows.length; i++) dst.set(src.subarray(i * width, (i + 1) * width), rows[i] * width);
}

export function sortedOf(s: Iterable<number>): Int32Array {
  return Int32Array.from(s).sort();
}

/** Rows S of the quantized w1/w3 (given in S's order) and b1 entries S of `b` into the quantized block `q`. */
export function commitUnits(cfg: ModelConfig, q: Block, b: Block, S: Int32Array, w1q: F32, w3q: F32 | undefined): void {
  setRows(q.w1, w1q, S, cfg.dim);
  if (w3q) setRows(q.w3!, w3q, S, cfg.dim);
  if (b.b1) for (const j of S) q.b1![j] = b.b1[j];
}

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
