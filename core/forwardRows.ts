/**
 * The forward pass over many sequences at once, packed row-wise: rows
 * [seqStarts[s], seqStarts[s+1]) of an activation [N, width] are sequence s at positions
 * 0, 1, …. Every linear layer is one product over all N rows; RoPE and the attention itself
 * run per sequence and per head (core/forward.ts's `rope` and `contextHeads`).
 *
 * Bits: the backends' matmulT is row-separable for ≥ SEPARABLE_MIN_ROWS rows (core/ops.ts),
 * norms, softmax and the SwiGLU gate are row- or element-wise, so a sequence of ≥ 4 tokens
 * gets the same bits here as through `forward` alone, and a head or a subset of rows
 * recomputed alone (the search's incremental moves) the same bits as in the whole pass.
 */
import { contextHeads, ffnActivation, norm, rope } from './forward';
import type { Block, F32, ModelConfig } from './model/types';
import type { Ops } from './ops';
import { buffer, copied, type ScratchBuffers } from './scratchBuffers';

/** Sequences packed row-wise: x [N, width], sequence s in rows seqStarts[s] … seqStarts[s+1]-1. */
export interface Rows {
  x: F32;
  /** Start row of each sequence, then N. */
  seqStarts: number[];
}

/** seqStarts of sequences with these lengths. */
export function seqStartsOf(lengths: readonly number[]): number[] {
  const starts = [0];
  for (const n of lengths) starts.push(starts[starts.length - 1] + n);
  return starts;
}

/** Sequences' activations ([T_s, dim] each) packed row-wise, in order (one part is taken as it is, not copied). */
export function packRows(parts: readonly F32[], dim: number): Rows {
  const seqStarts = seqStartsOf(parts.map((p) => p.length / dim));
  if (parts.length === 1) return { x: parts[0], seqStarts };
  const x = new Float32Array(seqStarts[seqStarts.length - 1] * dim);
  parts.forEach((p, i) => x.set(p, seqStarts[i] * dim));
  return { x, seqStarts };
}

/** Views of the first `count` sequences of packed rows x, one [T, dim] each (no copies). */
export function seqViews(x: F32, seqStarts: readonly number[], dim: number, count = seqStarts.length - 1): F32[] {
  return Array.from({ length: count }, (_, s) => x.subarray(seqStarts[s] * dim, seqStarts[s + 1] * dim));
}

/** 0, 1, …, n − 1. */
export function range(n: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => i);
}

/** xa[N, dim] = norm(x): the input of wq, wk and wv. */
export function attnInput(cfg: ModelConfig, b: Block, x: F32, N: number, scratch?: ScratchBuffers): F32 {
  const xa = buffer(scratch, 'xa', N * cfg.dim);
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
  out?: F32,
): F32 {
  const { dim: d, headDim: hd } = cfg;
  const N = xa.length / d;
  const width = heads.length * hd;
  const all = heads.length * hd * d === w.length && Array.prototype.every.call(heads, (h: number, i: number) => h === i);
  let rows = w;
  if (!all) {
    rows = new Float32Array(width * d);
    for (let x = 0; x < heads.length; x++) rows.set(w.subarray(heads[x] * hd * d, (heads[x] + 1) * hd * d), x * hd * d);
  }
  out ??= new Float32Array(N * width);
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

/** Post-RoPE queries and keys and the values of a block's attention weights. */
export interface Qkv {
  q: F32; // [N, qDim]
  k: F32; // [N, kvDim]
  v: F32; // [N, kvDim]
}

export function qkv(cfg: ModelConfig, b: Block, xa: F32, seqStarts: number[], ops: Ops, scratch?: ScratchBuffers): Qkv {
  const N = xa.length / cfg.dim;
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  return {
    q: headProjection(cfg, b.wq, b.bq, range(cfg.nHeads), xa, seqStarts, true, ops, scratch?.take('q', N * qDim)),
    k: headProjection(cfg, b.wk, b.bk, range(cfg.nKvHeads), xa, seqStarts, true, ops, scratch?.take('k', N * kvDim)),
    v: headProjection(cfg, b.wv, b.bv, range(cfg.nKvHeads), xa, seqStarts, false, ops, scratch?.take('v', N * kvDim)),
  };
}

/**
 * ctx [N, qDim]: the columns of q heads `heads` (all when null) computed in place, sequence
 * by sequence: the backend's attendRows when it has one (it reads each sequence's q, k and v
 * once, not per head; the same bits), else contextHeads.
 */
export function context(cfg: ModelConfig, a: Qkv, seqStarts: number[], heads: ArrayLike<number> | null, ops: Ops, ctx: F32): void {
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  for (let s = 0; s + 1 < seqStarts.length; s++) {
    const r0 = seqStarts[s];
    const r1 = seqStarts[s + 1];
    const [q, k, v, c] = [a.q.subarray(r0 * qDim, r1 * qDim), a.k.subarray(r0 * kvDim, r1 * kvDim), a.v.subarray(r0 * kvDim, r1 * kvDim), ctx.subarray(r0 * qDim, r1 * qDim)];
    if (ops.attendRows) ops.attendRows(c, q, k, v, r1 - r0, heads, cfg);
    else contextHeads(cfg, q, k, v, r1 - r0, 0, heads, ops, c);
  }
}

/** h[N, dim] = x + ctx · woᵀ (+ bo): the residual stream after the attention sublayer. */
export function attnResidual(cfg: ModelConfig, x: F32, ctx: F32, wo: F32, bo: F32 | undefined, ops: Ops, scratch?: ScratchBuffers): F32 {
  const d = cfg.dim;
  const N = x.length / d;
  const h = copied(scratch, 'h', x);
  ops.matmulT(h, ctx, wo, N, cfg.nHeads * cfg.headDim, d, true);
  if (bo) for (let n = 0; n < N; n++) for (let i = 0; i < d; i++) h[n * d + i] += bo[i];
  return h;
}

/** Everything one block computes on packed rows (the inputs of each linear, for GPTQ Hessians). */
export interface RowsTrace {
  /** norm(x): input of wq, wk, wv. [N, dim] */
  xnAttn: F32;
  /** attention context: input of wo. [N, nHeads·headDim] */
  ctx: F32;
  /** x + attention. [N, dim] */
  h: F32;
}

/** h = x + Attention(norm(x)) over packed rows, with the intermediate activations. */
export function attnRows(cfg: ModelConfig, b: Block, x: Rows, ops: Ops, scratch?: ScratchBuffers): RowsTrace {
  const N = x.x.length / cfg.dim;
  const xnAttn = attnInput(cfg, b, x.x, N, scratch);
  const ctx = buffer(scratch, 'ctx', N * cfg.nHeads * cfg.headDim);
  context(cfg, qkv(cfg, b, xnAttn, x.seqStarts, ops, scratch), x.seqStarts, null, ops, ctx);
  return { xnAttn, ctx, h: attnResidual(cfg, x.x, ctx, b.wo, b.bo, ops, scratch) };
}

/** norm(h): the input of w1 (and w3). [N, dim] */
export function ffnInput(cfg: ModelConfig, b: Block, h: F32, N: number, scratch?: ScratchBuffers): F32 {
  const xn = buffer(scratch, 'xn', N * cfg.dim);
  norm(cfg, xn, h, b.ffnNorm, b.ffnNormBias, N);
  return xn;
}

/** y = h + FFN(norm(h)) over N rows (the FFN is row-wise: no sequence boundaries needed). */
export function ffnRows(cfg: ModelConfig, b: Block, h: F32, ops: Ops, scratch?: ScratchBuffers): F32 {
  const N = h.length / cfg.dim;
  const act = ffnActivation(cfg, b, ffnInput(cfg, b, h, N, scratch), N, ops, scratch);
  return ffnResidual(cfg, h, act, b, ops, scratch);
}

/** y[N, dim] = h + act · w2ᵀ (+ b2). */
export function ffnResidual(cfg: ModelConfig, h: F32, act: F32, b: Block, ops: Ops, scratch?: ScratchBuffers): F32 {
  const d = cfg.dim;
  const N = h.length / d;
  const y = copied(scratch, 'y', h);
  ops.matmulT(y, act, b.w2, N, cfg.hiddenDim, d, true);
  if (b.b2) for (let n = 0; n < N; n++) for (let i = 0; i < d; i++) y[n * d + i] += b.b2[i];
  return y;
}

/** One block over packed rows: the same bits, sequence by sequence, as core's blockForward (for ≥ 4 tokens). */
export function blockForwardRows(cfg: ModelConfig, b: Block, x: Rows, ops: Ops): Rows {
  return { x: ffnRows(cfg, b, attnRows(cfg, b, x, ops).h, ops), seqStarts: x.seqStarts };
}
