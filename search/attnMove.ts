/**
 * Scoring an attention move head by head. A move touches a few heads: their rows of
 * wq/wk/wv are quantized again (by the base: RTN row by row, GPTQ from the cached factor
 * of norm(x)'s Hessian), their q/k/v columns projected and their context recomputed per
 * sequence (attnSide.ts); wo is quantized again by the base (GPTQ with its Hessian updated
 * in the touched heads' rows and columns), and the FFN side is redone from the new
 * residual stream (fullEval.ts). Every step is the full evaluation's own float computation
 * restricted to the touched heads, so the loss is the full evaluation's bit for bit
 * (test/search/objective.test.ts checks it on both bases and backends).
 */
import { touched, type Transform } from '../core/invariance';
import type { Block } from '../core/model/types';
import { attnResidual, context, headProjection, scatterHeads } from './attnSide';
import { QKV_LINEARS, sortedOf, type BaseQuantizer, type QkvName } from './blockQuant';
import type { BlockSetting, BlockState, Evaluated } from './blockState';
import { withFfn } from './fullEval';

/** The move's transforms are all attention invariances (what this path scores). */
export function isAttnOnly(transforms: readonly Transform[]): boolean {
  return transforms.every((t) => t.kind.startsWith('attn-'));
}

/** The state after an attention move: `b` is the current FP block changed only by `transforms` (attention invariances). */
export function attnMove(s: BlockSetting, base: BaseQuantizer, st: BlockState, b: Block, transforms: readonly Transform[]): Evaluated {
  const rows = { wq: new Set<number>(), wk: new Set<number>(), wv: new Set<number>() };
  for (const t of transforms) {
    const tt = touched(s.cfg, t);
    for (const n of QKV_LINEARS) tt[n]?.rows.forEach((r) => rows[n].add(r));
  }
  return attnRowsMove(s, base, st, b, rows);
}

/**
 * The state after rows `rows` of wq/wk/wv change their quantized values (their FP weights
 * in `b`, or how the base quantizes them), wo quantized again: an attention move, or a clip
 * move on an attention linear (no rows for one on wo).
 */
export function attnRowsMove(s: BlockSetting, base: BaseQuantizer, st: BlockState, b: Block, rows: Record<QkvName, Set<number>>): Evaluated {
  const { cfg, ops } = s;
  const { x, seqStarts } = s.data;
  const { headDim: hd, nHeads, nKvHeads } = cfg;
  const G = nHeads / nKvHeads;
  const c = st.c;
  // The changed rows of wq/wk/wv, quantized again.
  const w = { wq: st.q.wq.slice(), wk: st.q.wk.slice(), wv: st.q.wv.slice() };
  for (const n of QKV_LINEARS) {
    const rs = sortedOf(rows[n]);
    if (rs.length > 0) base.qkvRows(b, n, rs, w[n], c);
  }
  // Heads whose projections change, and every q head whose context does.
  const qProj = sortedOf(new Set(Array.from(rows.wq, (r) => Math.floor(r / hd))));
  const kvHeads = sortedOf(new Set([...rows.wk, ...rows.wv].map((r) => Math.floor(r / hd))));
  const qHeads = sortedOf(new Set([...qProj, ...Array.from(kvHeads).flatMap((g) => Array.from({ length: G }, (_, r) => g * G + r))]));
  const a = { q: c.q.slice(), k: c.k.slice(), v: c.v.slice() };
  if (qProj.length) scatterHeads(a.q, headProjection(cfg, w.wq, b.bq, qProj, c.xa, seqStarts, true, ops), qProj, nHeads, hd);
  if (kvHeads.length) {
    scatterHeads(a.k, headProjection(cfg, w.wk, b.bk, kvHeads, c.xa, seqStarts, true, ops), kvHeads, nKvHeads, hd);
    scatterHeads(a.v, headProjection(cfg, w.wv, b.bv, kvHeads, c.xa, seqStarts, false, ops), kvHeads, nKvHeads, hd);
  }
  const ctx = c.ctx.slice();
  if (qHeads.length) context(cfg, a, seqStarts, qHeads, ops, ctx);
  const { wo, ...woCaches } = base.woAfter(b, ctx, qHeads, c);
  const h = attnResidual(cfg, x, ctx, wo, b.bo, ops);
  return withFfn(s, base, b, { w: { ...w, wo }, xa: c.xa, ...a, ctx, h, factorA: c.gptq?.factorA, asymA: c.gptq?.asymA, ...woCaches }, st.q);
}
