/**
 * The run's base quantizer as the search sees it: one `BaseQuantizer` per method (RTN in
 * baseRtn.ts, GPTQ in baseGptq.ts), chosen once per block objective (objective.ts), so that
 * the full evaluation (fullEval.ts) and the moves (attnMove.ts, each base's FFN move) ask
 * "quantize these weights on this input" without branching on the method. Both quantize a
 * transformed block the way the report's base rows do (core/quant/model.ts): RTN each linear
 * on its own; GPTQ true-sequentially, on the block's inputs in the quantized model, so the
 * search scores exactly the rounding GPTQ would produce for the transformed weights.
 * Also small helpers the bases share.
 */
import type { Block, F32, LinearName, ModelConfig } from '../core/model/types';
import { formatByName, type QuantFormat } from '../core/quant/formats';
import type { GptqFactor, GptqOptions } from '../core/quant/gptq';
import type { Ops } from '../core/ops';
import type { FormatGptqResult } from '../core/quant/gptqFormat';
import type { Quantized, QuantSpec } from '../core/quant/rtn';
import type { BlockState, Caches, F64, GptqAttnCaches, GptqFfnCaches } from './blockState';

export type BaseMethod = 'rtn' | 'gptq';

/**
 * The search's quantization setting: the int grid's spec and, on a ggml format, the
 * format's name (a name, not the object, so the setting crosses to worker threads).
 */
export interface SearchSpec extends QuantSpec {
  format?: string;
  /** GPTQ base on the int grid: refinement sweeps after each GPTQ (core/quant/refine.ts); absent, none. */
  gptqRefine?: number;
  /** With gptqRefine: the refinement also refits the groups' scales; absent, codes only. */
  gptqRefitScales?: boolean;
  /** GPTQ base on the int grid: columns in act order (core/quant/gptq.ts); absent, in column order. */
  gptqActOrder?: boolean;
  /** GPTQ base on the int grid: the share α of the asymmetric correction (core/quant/asymmetric.ts); absent or 0, none. */
  gptqAsym?: number;
}

/** GPTQ's refinement options (core/quant/gptq.ts) as a search's spec sets them. */
export function refineOptions(spec: SearchSpec, ops?: Ops): Pick<GptqOptions, 'ops' | 'refineSweeps' | 'refitScales'> {
  return { ops, refineSweeps: spec.gptqRefine, refitScales: spec.gptqRefitScales };
}

/** Whether the base reads the blocks' FP inputs (BlockData.xf): asymmetric GPTQ. */
export function needsFpInputs(spec: QuantSpec): boolean {
  return ((spec as SearchSpec).gptqAsym ?? 0) !== 0;
}

/** The ggml format of a search's spec, or null for the int grid. */
export function specFormat(spec: QuantSpec): QuantFormat | null {
  const name = (spec as SearchSpec).format;
  return name === undefined || name === 'int' ? null : formatByName(name);
}

/**
 * Where a quantizer leaves the codes of the linears it quantized (for packed export): the
 * int grid's integer codes, or GPTQ's packed rows on a ggml format.
 */
export type CodeSink = Partial<Record<LinearName, Quantized | FormatGptqResult>>;

export type QkvName = 'wq' | 'wk' | 'wv';
export const QKV_LINEARS = ['wq', 'wk', 'wv'] as const;

/** What an evaluation asks of the base quantizer, in the order of the block (true-sequential for GPTQ). */
export interface BaseQuantizer {
  readonly method: BaseMethod;
  /** wq/wk/wv of `b` quantized on their input xa = norm(x) [N, dim]; GPTQ also returns the factor of xa's Hessian. */
  qkv(b: Block, xa: F32, codes?: CodeSink): { w: Pick<Block, QkvName>; factorA?: GptqFactor; asymA?: F32 };
  /** Rows `rows` (sorted) of linear `name` of `b` quantized again into `w`, a copy of the current quantized weights. */
  qkvRows(b: Block, name: QkvName, rows: Int32Array, w: F32, c: Caches): void;
  /** wo of `b` on the context ctx [N, qDim]; GPTQ also returns ctxᵀ and its Hessian. */
  wo(b: Block, ctx: F32, codes?: CodeSink): { wo: F32 } & Partial<Pick<GptqAttnCaches, 'ctxT' | 'Hctx' | 'ctxF' | 'Gctx'>>;
  /** wo of `b` after an attention move changed the context `ctx` only in the columns of q heads `heads` (state before: `c`). */
  woAfter(b: Block, ctx: F32, heads: Int32Array, c: Caches): { wo: F32 } & Partial<Pick<GptqAttnCaches, 'ctxT' | 'Hctx' | 'ctxF' | 'Gctx'>>;
  /**
   * The FFN of `b` on its input xn = norm(h) [N, dim]: quantized w1 (w3) w2 and the hidden
   * activation of the quantized w1/w3, act [N, H]. With `keep`, a base whose FFN rounding
   * does not depend on xn (RTN) keeps those quantized weights. `attn`: GPTQ's caches of the
   * attention side (asymmetric GPTQ reads its FP context).
   */
  ffn(b: Block, xn: F32, keep: Block | undefined, codes?: CodeSink, attn?: Partial<GptqAttnCaches>): { w: Partial<Block>; act: F32; cache?: GptqFfnCaches };
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
