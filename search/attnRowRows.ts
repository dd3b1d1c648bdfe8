/**
 * The row work of an attention-row candidate of the norm pass (normTune.ts's row gains),
 * incrementally: a row of wq scales one query head's queries, a row of wk or wv one kv
 * head's keys or values, so only the query heads that read that head are attended again.
 * The attention output then moves by their context's change Δc through wo, and the FFN's
 * pre-activations (before the FFN norm's 1/rms) by Δc through wo, the FFN norm's gain and
 * w1 (w3): products `m1`, `m3` computed once per block. So a candidate costs its heads, thin
 * products of Δc and w2's product: about a third of the block it replaces. A kept row
 * updates the state the same way, so after kept rows the state is float32 round-off apart
 * from a fresh pass (the losses the pass reports are fresh passes). Like normRows.ts, a task
 * covers whole sequences and writes its rows only: how they are split changes no bit.
 */
import { context, headProjection, scatterHeads, type Qkv } from '../core/forwardRows';
import type { Block, F32, ModelConfig } from '../core/model/types';
import { siluMul, type Ops } from '../core/ops';
import type { AttnActs } from './blockState';
import { temp32 } from './temps';

/** The linears whose rows this scores. */
export type AttnRowLinear = 'wq' | 'wk' | 'wv';

/** A llama block's attention side (blockState's AttnActs) and FFN pre-activations on packed rows [N, ·], as the kept rows left them. */
export interface AttnRowState extends AttnActs {
  seqStarts: number[];
  /** (h ∘ ffnNorm) · w1ᵀ and · w3ᵀ [N, H]: the FFN's pre-activations times the FFN norm's rms. */
  u1: F32;
  u3: F32;
  /** w1 · diag(ffnNorm) · wo and w3 · diag(ffnNorm) · wo [H, qDim]. */
  m1: F32;
  m3: F32;
}

/** Sequences [s0, s1) of a candidate with row r of `name` as `w` holds it: their block output rows into `out`, or, with no `out`, kept into the state. */
export interface AttnRowTask {
  cfg: ModelConfig;
  w: Block;
  st: AttnRowState;
  name: AttnRowLinear;
  r: number;
  s0: number;
  s1: number;
  out?: F32;
}

/** The query heads that read row r of `name`: [first, count]. */
export function readingHeads(cfg: ModelConfig, name: AttnRowLinear, r: number): [number, number] {
  const head = Math.floor(r / cfg.headDim);
  if (name === 'wq') return [head, 1];
  const group = cfg.nHeads / cfg.nKvHeads;
  return [head * group, group];
}

/** Columns [c0, c0 + K) of a row-major [rows, width] matrix, as [rows, K]. */
function columnsOf(m: F32, rows: number, width: number, c0: number, K: number, name: string): F32 {
  const out = temp32(name, rows * K);
  for (let i = 0; i < rows; i++) out.set(m.subarray(i * width + c0, i * width + c0 + K), i * K);
  return out;
}

/** Task `t`'s rows of the block output with its row, or, with no `out`, its row kept into the state. */
export function attnRowRows(t: AttnRowTask, ops: Ops): void {
  const { cfg, w, st, name, r, s0, s1 } = t;
  const { dim: d, hiddenDim: H, headDim: hd } = cfg;
  const qDim = cfg.nHeads * hd;
  const kvDim = cfg.nKvHeads * hd;
  const a = st.seqStarts[s0];
  const n = st.seqStarts[s1] - a;
  const seqStarts = st.seqStarts.slice(s0, s1 + 1).map((s) => s - a);
  const rowsOf = (m: F32, width: number) => m.subarray(a * width, (a + n) * width);
  // the changed head's columns, then the reading heads' context
  const head = Math.floor(r / hd);
  const width = name === 'wq' ? qDim : kvDim;
  const key = name === 'wq' ? 'q' : name === 'wk' ? 'k' : 'v';
  const proj = headProjection(cfg, w[name], undefined, [head], rowsOf(st.xa, d), seqStarts, name !== 'wv', ops, temp32('attnRow.proj', n * hd));
  const changed = temp32('attnRow.changed', n * width);
  changed.set(rowsOf(st[key], width));
  scatterHeads(changed, proj, [head], width / hd, hd);
  const qkv: Qkv = { q: rowsOf(st.q, qDim), k: rowsOf(st.k, kvDim), v: rowsOf(st.v, kvDim) };
  qkv[key] = changed;
  const [first, count] = readingHeads(cfg, name, r);
  const ctx = temp32('attnRow.ctx', n * qDim);
  ctx.set(rowsOf(st.ctx, qDim));
  context(cfg, qkv, seqStarts, Array.from({ length: count }, (_, i) => first + i), ops, ctx);
  // Δc through wo into h, and through m1, m3 into the FFN's pre-activations
  const K = count * hd;
  const c0 = first * hd;
  const dc = temp32('attnRow.dc', n * K);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < K; j++) dc[i * K + j] = ctx[i * qDim + c0 + j] - st.ctx[(a + i) * qDim + c0 + j];
  }
  const h = temp32('attnRow.h', n * d);
  h.set(rowsOf(st.h, d));
  ops.matmulT(h, dc, columnsOf(w.wo, d, qDim, c0, K, 'attnRow.wo'), n, K, d, true);
  const u1 = temp32('attnRow.u1', n * H);
  const u3 = temp32('attnRow.u3', n * H);
  u1.set(rowsOf(st.u1, H));
  u3.set(rowsOf(st.u3, H));
  ops.matmulT(u1, dc, columnsOf(st.m1, H, qDim, c0, K, 'attnRow.m1'), n, K, H, true);
  ops.matmulT(u3, dc, columnsOf(st.m3, H, qDim, c0, K, 'attnRow.m3'), n, K, H, true);
  if (!t.out) {
    rowsOf(st[key], width).set(changed);
    rowsOf(st.ctx, qDim).set(ctx);
    rowsOf(st.h, d).set(h);
    rowsOf(st.u1, H).set(u1);
    rowsOf(st.u3, H).set(u3);
    return;
  }
  // the FFN norm's 1/rms of the new h scales the pre-activations (RMSNorm: norm() in core/forward.ts)
  for (let i = 0; i < n; i++) {
    let ss = 0;
    for (let j = 0; j < d; j++) ss += h[i * d + j] * h[i * d + j];
    const inv = 1 / Math.sqrt(ss / d + cfg.normEps);
    for (let j = i * H; j < (i + 1) * H; j++) {
      u1[j] *= inv;
      u3[j] *= inv;
    }
  }
  siluMul(ops, u1, u3, n * H);
  const out = t.out.subarray(a * d, (a + n) * d);
  out.set(h);
  ops.matmulT(out, u1, w.w2, n, H, d, true);
}
