/**
 * The attention sublayer of one block on its calibration rows, computed head by head so
 * that an attention move can recompute only the heads it touches (objective.ts). The
 * projections run over all N rows at once (row-separable products, see Ops), RoPE and the
 * attention itself per sequence and per head (core's contextHeads), so a head computed
 * alone has the same bits as in a pass over every head.
 */
import { contextHeads, norm, rope } from '../core/forward';
import type { Block, F32, ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';

/** 0, 1, …, n − 1. */
export function range(n: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => i);
}

/** xa[N, dim] = norm(x): the input of wq, wk and wv. */
export function attnInput(cfg: ModelConfig, b: Block, x: F32, N: number): F32 {
  const xa = new Float32Array(N * cfg.dim);
  norm(cfg, xa, x, b.attnNorm, b.attnNormBias, N);
  return xa;
}

/**
 * The columns of heads `heads` (headDim each, in the order given) of xa · wᵀ + bias for
 * w [·, dim], with RoPE applied per sequence when `withRope` (and the model uses it):
 * [N, heads.length · headDim].
 */
export function headProjection(
  cfg: ModelConfig, w: F32, bias: F32 | undefined, heads: ArrayLike<number>, xa: F32, seqStarts: number[], withRope: boolean, ops: Ops,
): F32 {
  const { dim: d, headDim: hd } = cfg;
  const N = xa.length / d;
  const width = heads.length * hd;
  const rows = new Float32Array(width * d);
  for (let x = 0; x < heads.length; x++) rows.set(w.subarray(heads[x] * hd * d, (heads[x] + 1) * hd * d), x * hd * d);
  const out = new Float32Array(N * width);
  ops.matmulT(out, xa, rows, N, d, width);
  if (bias) {
    for (let n = 0; n < N; n++) {
      for (let x = 0; x < heads.length; x++) for (let i = 0; i < hd; i++) out[n * width + x * hd + i] += bias[heads[x] * hd + i];
    }
  }
  if (withRope && cfg.arch === 'llama') {
    for (let s = 0; s + 1 < seqStarts.length; s++) {
      const r0 = seqStarts[s];
      const T = seqStarts[s + 1] - r0;
      rope(cfg, out.subarray(r0 * width, (r0 + T) * width), T, heads.length, 0);
    }
  }
  return out;
}

/** Writes the compact head columns `part` [N, heads.length · hd] into full [N, nH · hd] in place. */
export function scatterHeads(full: F32, part: F32, heads: ArrayLike<number>, nH: number, hd: number): void {
  const width = nH * hd;
  const pw = heads.length * hd;
  const N = full.length / width;
  for (let n = 0; n < N; n++) {
    for (let x = 0; x < heads.length; x++) full.set(part.subarray(n * pw + x * hd, n * pw + (x + 1) * hd), n * width + heads[x] * hd);
  }
}

/** Post-RoPE queries and keys and the values of the quantized attention weights in `qb`. */
export interface Qkv {
  q: F32; // [N, qDim]
  k: F32; // [N, kvDim]
  v: F32; // [N, kvDim]
}

export function qkv(cfg: ModelConfig, qb: Block, xa: F32, seqStarts: number[], ops: Ops): Qkv {
  return {
    q: headProjection(cfg, qb.wq, qb.bq, range(cfg.nHeads), xa, seqStarts, true, ops),
    k: headProjection(cfg, qb.wk, qb.bk, range(cfg.nKvHeads), xa, seqStarts, true, ops),
    v: headProjection(cfg, qb.wv, qb.bv, range(cfg.nKvHeads), xa, seqStarts, false, ops),
  };
}

/** ctx [N, qDim]: the columns of q heads `heads` (all when null) recomputed in place, sequence by sequence. */
export function context(cfg: ModelConfig, a: Qkv, seqStarts: number[], heads: ArrayLike<number> | null, ops: Ops, ctx: F32): void {
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  for (let s = 0; s + 1 < seqStarts.length; s++) {
    const r0 = seqStarts[s];
    const r1 = seqStarts[s + 1];
    const T = r1 - r0;
    contextHeads(
      cfg, a.q.subarray(r0 * qDim, r1 * qDim), a.k.subarray(r0 * kvDim, r1 * kvDim), a.v.subarray(r0 * kvDim, r1 * kvDim),
      T, 0, heads, ops, ctx.subarray(r0 * qDim, r1 * qDim),
    );
  }
}

/** h[N, dim] = x + ctx · woᵀ (+ bo): the residual stream after the attention sublayer. */
export function attnResidual(cfg: ModelConfig, x: F32, ctx: F32, wo: F32, bo: F32 | undefined, ops: Ops): F32 {
  const d = cfg.dim;
  const N = x.length / d;
  const h = x.slice();
  ops.matmulT(h, ctx, wo, N, cfg.nHeads * cfg.headDim, d, true);
  if (bo) for (let n = 0; n < N; n++) for (let i = 0; i < d; i++) h[n * d + i] += bo[i];
  return h;
}
