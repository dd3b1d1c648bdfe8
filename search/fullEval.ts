/**
 * Full evaluation of a transformed block: its linears quantized by the base quantizer in
 * the block's order (attention, then the FFN on the quantized attention's output), the
 * activations the moves reuse, the error against the FP block output and the loss. The
 * incremental paths (attnMove.ts, the bases' FFN moves) are this computation restricted
 * to what a move changes; `attnSide` and `ffnSide` are the pieces they share with it.
 */
import type { Block, F32 } from '../core/model/types';
import { ffnInput } from '../core/forwardRows';
import { attnInput, attnResidual, context, qkv } from './attnSide';
import type { BaseQuantizer, CodeSink } from './blockQuant';
import type { AttnActs, BlockSetting, BlockState, Change, Evaluated, GptqAttnCaches, GptqCaches } from './blockState';
import { addFfnOutput, errorBeforeW2 } from './ffnSide';

/** The attention side's quantized weights and activations (and GPTQ's caches of it). */
export interface AttnSide extends AttnActs, Partial<GptqAttnCaches> {
  w: Pick<Block, 'wq' | 'wk' | 'wv' | 'wo'>;
}

/**
 * Full evaluation of `b` (FP weights); returns the quantized block and caches without
 * installing them. `change` says what differs from the current state `st`: with 'ffn' the
 * attention sublayer is unchanged and reused; with 'attn' an RTN FFN keeps its quantized
 * weights (GPTQ's depend on the FFN input, so they are redone). `codes` receives the
 * integer codes of the linears this evaluation quantizes.
 */
export function fullEval(s: BlockSetting, base: BaseQuantizer, st: BlockState, b: Block, change: Change = 'all', codes?: CodeSink): Evaluated {
  const a = change === 'ffn' ? currentAttn(st) : attnFull(s, base, b, codes);
  return withFfn(s, base, b, a, change === 'attn' ? st.q : undefined, codes);
}

/** The attention side of the current state. */
function currentAttn(st: BlockState): AttnSide {
  const { q, c } = st;
  const g = c.gptq;
  return {
    w: { wq: q.wq, wk: q.wk, wv: q.wv, wo: q.wo }, xa: c.xa, q: c.q, k: c.k, v: c.v, ctx: c.ctx, h: c.h,
    factorA: g?.factorA, ctxT: g?.ctxT, Hctx: g?.Hctx, asymA: g?.asymA, ctxF: g?.ctxF, Gctx: g?.Gctx,
  };
}

/** The attention sublayer of `b` quantized by the base (GPTQ: true-sequential, wo on the quantized context). */
function attnFull(s: BlockSetting, base: BaseQuantizer, b: Block, codes?: CodeSink): AttnSide {
  const { cfg, N, ops } = s;
  const { x, seqStarts } = s.data;
  const xa = attnInput(cfg, b, x, N);
  const { w, factorA, asymA } = base.qkv(b, xa, codes);
  const a = qkv(cfg, { ...b, ...w }, xa, seqStarts, ops);
  const ctx = new Float32Array(N * cfg.nHeads * cfg.headDim);
  context(cfg, a, seqStarts, null, ops, ctx);
  const { wo, ...woCaches } = base.wo(b, ctx, codes);
  const h = attnResidual(cfg, x, ctx, wo, b.bo, ops);
  return { w: { ...w, wo }, xa, ...a, ctx, h, factorA, asymA, ...woCaches };
}

/**
 * The FFN sublayer on top of attention side `a`: quantized by the base (`keep`: the
 * current quantized block, whose FFN an RTN base keeps), the error and the loss.
 */
export function withFfn(s: BlockSetting, base: BaseQuantizer, b: Block, a: AttnSide, keep: Block | undefined, codes?: CodeSink): Evaluated {
  const q: Block = { ...b, ...a.w };
  const xn = ffnInput(s.cfg, q, a.h, s.N);
  const err = errorBeforeW2(s, q, a.h);
  const f = base.ffn(b, xn, keep, codes, a);
  Object.assign(q, f.w);
  const act: F32 = f.act;
  const gptq: GptqCaches | undefined = f.cache && {
    errBase: err.slice(), factorA: a.factorA!, ctxT: a.ctxT!, Hctx: a.Hctx!, ...f.cache,
    ...(a.ctxF && { asymA: a.asymA, ctxF: a.ctxF, Gctx: a.Gctx }),
  };
  const loss = addFfnOutput(s, err, act, q.w2);
  return { q, c: { xa: a.xa, q: a.q, k: a.k, v: a.v, ctx: a.ctx, h: a.h, xn, act, err, gptq }, loss };
}
