/**
 * The RTN base quantizer of the search (core/quant/rtn.ts): every linear on its own, each
 * row's groups independent of every other row and of the block's inputs. So an attention
 * move re-quantizes only the rows it touches, an attention-only change keeps the FFN's
 * quantized weights, and an FFN move on units S re-quantizes rows S of w1/w3 and the w2
 * column groups holding S, updating the error by
 *   Δ = Σ_{j ∈ cols(G)} a'_j w2q'[:, j] − a_j w2q[:, j]
 * at a cost of N·dim·(2|S| + 2|cols(G)|) instead of a whole block (the same loss as a
 * full evaluation to float64 round-off; tested in test/search/objective.test.ts).
 *
 * On a ggml format (spec.format) every row is rounded by the format's reference quantizer
 * and dequantized exactly, with llama-quantize's per-tensor fallback for a row length the
 * format's block does not divide (a k-quant's 32-block fallback, else f16): the values the
 * GGUF export holds. Its blocks (32, or 256 for k-quants; 1 for f16) are independent, so
 * they are the w2 column groups an FFN move re-quantizes.
 */
import { f16Round } from '../core/model/halfFloat';
import { blockLinears, linearShape, type Block, type F32, type LinearName, type ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import { formatForRow, type QuantFormat } from '../core/quant/formats';
import { quantizeLinears } from '../core/quant/model';
import { fakeQuantRtnRect, type QuantSpec } from '../core/quant/rtn';
import { range } from './attnSide';
import { commitUnits, QKV_LINEARS, specFormat, type BaseQuantizer, type CodeSink, type QkvName } from './blockQuant';
import type { BlockSetting, BlockState, Caches } from './blockState';
import type { BlockClips } from './clipMoves';
import { unitActs } from './ffnSide';
import { temp32 } from './temps';

/**
 * How a ggml format rounds the rows of a linear whose rows hold `cols` weights: `round`
 * quantizes and dequantizes consecutive whole blocks of `block` weights (any number of
 * them: the blocks are independent), the fallback format's or f16's.
 */
export interface GgmlRows {
  /** The format the rows get (null: f16). */
  format: QuantFormat | null;
  block: number;
  round(x: F32, out: F32): void;
}

export function ggmlRows(fmt: QuantFormat, cols: number): GgmlRows {
  const f = formatForRow(fmt, cols);
  if (!f) return { format: null, block: 1, round: (x, out) => { for (let j = 0; j < x.length; j++) out[j] = f16Round(x[j]); } };
  return { format: f, block: f.blockSize, round: (x, out) => { f.dequantizeRow(f.quantizeRow(x), x.length, out); } };
}

export interface RtnLinearsOptions {
  /** The linears (default: all of the block's). */
  names?: LinearName[];
  /** Receives their integer codes (the int grid only). */
  codes?: CodeSink;
  /** The block's clip codes (clipMoves.ts; the int grid only). */
  clips?: BlockClips;
  /** A backend that rounds the int grid faster, same bits (used when no codes are asked for). */
  ops?: Ops;
}

/** RTN of a block's linears; on a ggml format, no integer codes and no clip codes. */
export function rtnLinears(cfg: ModelConfig, b: Block, spec: QuantSpec, o: RtnLinearsOptions = {}): Partial<Block> {
  const { names, codes, clips, ops } = o;
  const fmt = specFormat(spec);
  if (fmt) return ggmlLinears(cfg, b, fmt, names ?? blockLinears(cfg));
  return quantizeLinears(cfg, b, spec, names ?? blockLinears(cfg), { method: 'rtn', clips, ops, onQuantized: codes && ((n, qz) => (codes[n] = qz)) });
}

/** The named linears rounded row by row by ggml format `fmt` (its per-tensor fallback where its block does not fit). */
function ggmlLinears(cfg: ModelConfig, b: Block, fmt: QuantFormat, names: readonly LinearName[]): Partial<Block> {
  const out: Partial<Block> = {};
  for (const n of names) {
    const w = b[n];
    if (!w) continue;
    const [rows, cols] = linearShape(cfg, n);
    const { round } = ggmlRows(fmt, cols);
    const q = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) round(w.subarray(r * cols, (r + 1) * cols), q.subarray(r * cols, (r + 1) * cols));
    out[n] = q;
  }
  return out;
}

/** The int grid's rounding of a rectangle: the backend's (same bits, faster) when it has one. */
function rectRounding(ops: Ops): typeof fakeQuantRtnRect {
  return ops.quantDequant ? (...a) => ops.quantDequant!(...a) : fakeQuantRtnRect;
}

/** Fake-quantize row `r` of linear w [·, cols] (groups along it) into out, with the row's clip codes from `clips` [rows, nGroups]. */
function fakeQuantRtnRow(ops: Ops, w: F32, r: number, cols: number, spec: QuantSpec, out: F32, clips?: Uint8Array): void {
  const row = w.subarray(r * cols, (r + 1) * cols);
  const fmt = specFormat(spec);
  if (fmt) return ggmlRows(fmt, cols).round(row, out);
  const nG = Math.ceil(cols / spec.group);
  rectRounding(ops)(row, cols, spec, out, 0, 1, 0, nG, clips?.subarray(r * nG, (r + 1) * nG));
}

/** Column groups `gi` (each `g` wide) of every row of w [rows, cols] quantized into the same places of out. */
function quantizeColumnGroups(ops: Ops, w: F32, rows: number, cols: number, spec: QuantSpec, g: number, groups: readonly number[], out: F32, clips?: Uint8Array): void {
  const fmt = specFormat(spec);
  if (!fmt) {
    const rect = rectRounding(ops);
    for (const gi of groups) rect(w, cols, spec, out, 0, rows, gi, gi + 1, clips);
    return;
  }
  const { round } = ggmlRows(fmt, cols);
  for (let i = 0; i < rows; i++) {
    for (const gi of groups) {
      const a = i * cols + gi * g;
      const e = i * cols + Math.min(cols, (gi + 1) * g);
      round(w.subarray(a, e), out.subarray(a, e));
    }
  }
}

/** Width of the w2 column groups RTN quantizes together (w2's rows hold `hidden` weights). */
function w2Group(spec: QuantSpec, hidden: number): number {
  const fmt = specFormat(spec);
  return fmt ? ggmlRows(fmt, hidden).block : spec.group;
}

export class RtnBase implements BaseQuantizer {
  readonly method = 'rtn';

  constructor(private s: BlockSetting) {}

  qkv(b: Block, _xa: F32, codes?: CodeSink): { w: Pick<Block, QkvName> } {
    const w = rtnLinears(this.s.cfg, b, this.s.spec, { names: [...QKV_LINEARS], codes, clips: this.s.clips, ops: this.s.ops });
    return { w: { wq: w.wq!, wk: w.wk!, wv: w.wv! } };
  }

  qkvRows(b: Block, name: QkvName, rows: Int32Array, w: F32, _c: Caches): void {
    const d = this.s.cfg.dim;
    for (const row of rows) fakeQuantRtnRow(this.s.ops, b[name], row, d, this.s.spec, w.subarray(row * d, (row + 1) * d), this.s.clips?.[name]);
  }

  wo(b: Block, _ctx: F32, codes?: CodeSink): { wo: F32 } {
    return { wo: rtnLinears(this.s.cfg, b, this.s.spec, { names: ['wo'], codes, clips: this.s.clips, ops: this.s.ops }).wo! };
  }

  woAfter(b: Block, ctx: F32): { wo: F32 } {
    return this.wo(b, ctx);
  }

  ffn(b: Block, xn: F32, keep: Block | undefined, codes?: CodeSink): { w: Partial<Block>; act: F32 } {
    const { cfg, N, spec } = this.s;
    const names: LinearName[] = b.w3 ? ['w1', 'w3', 'w2'] : ['w1', 'w2'];
    const got: Partial<Block> = keep ? { w1: keep.w1, w3: keep.w3, w2: keep.w2 } : rtnLinears(cfg, b, spec, { names, codes, clips: this.s.clips, ops: this.s.ops });
    const w: Partial<Block> = {};
    for (const n of names) w[n] = got[n]!;
    const act = new Float32Array(N * cfg.hiddenDim);
    unitActs(this.s, act, xn, w.w1!, w.w3, b.b1, range(cfg.hiddenDim));
    return { w, act };
  }

  ffnMove(st: BlockState, b: Block, units: ArrayLike<number>, commit: boolean): number {
    const { cfg, N, spec, ops, clips } = this.s;
    const d = cfg.dim;
    const H = cfg.hiddenDim;
    const g = w2Group(spec, H);
    const { q, c } = st;
    const S = Int32Array.from(units).sort();
    const k = S.length;
    // New quantized rows of w1/w3 for the touched units (each row is quantized on its own).
    const w1q = temp32('rtnFfnMove.w1q', k * d);
    const w3q = cfg.arch === 'llama' ? temp32('rtnFfnMove.w3q', k * d) : undefined;
    for (const [w, out, cl] of [[b.w1, w1q, clips?.w1], [b.w3, w3q, clips?.w3]] as const) {
      if (!w || !out) continue;
      for (let u = 0; u < k; u++) fakeQuantRtnRow(ops, w, S[u], d, spec, out.subarray(u * d, (u + 1) * d), cl);
    }
    // New quantized w2 columns of every group that holds a touched unit.
    const groups = [...new Set(Array.from(S, (j) => Math.floor(j / g)))].sort((a, c) => a - c);
    const cols: number[] = [];
    for (const gi of groups) for (let j = gi * g; j < Math.min(H, (gi + 1) * g); j++) cols.push(j);
    const nc = cols.length;
    const w2new = temp32('rtnFfnMove.w2new', d * H); // only the touched groups' columns are written and read
    quantizeColumnGroups(ops, b.w2, d, H, spec, g, groups, w2new, clips?.w2);
    const actS = temp32('rtnFfnMove.actS', N * k);
    unitActs(this.s, actS, c.xn, w1q, w3q, b.b1, S);
    // Δ = [a' | a] · [w2q' | −w2q]ᵀ over the touched columns: one matmul.
    const slot = new Int32Array(H).fill(-1);
    S.forEach((j, u) => (slot[j] = u));
    const aCat = temp32('rtnFfnMove.aCat', N * 2 * nc);
    for (let n = 0; n < N; n++) {
      const o = n * 2 * nc;
      for (let ci = 0; ci < nc; ci++) {
        const j = cols[ci];
        const old = c.act[n * H + j];
        aCat[o + ci] = slot[j] >= 0 ? actS[n * k + slot[j]] : old;
        aCat[o + nc + ci] = old;
      }
    }
    const wCat = temp32('rtnFfnMove.wCat', d * 2 * nc);
    for (let i = 0; i < d; i++) {
      for (let ci = 0; ci < nc; ci++) {
        wCat[i * 2 * nc + ci] = w2new[i * H + cols[ci]];
        wCat[i * 2 * nc + nc + ci] = -q.w2[i * H + cols[ci]];
      }
    }
    const delta = temp32('rtnFfnMove.delta', N * d);
    ops.matmulT(delta, aCat, wCat, N, 2 * nc, d);
    let loss = 0;
    const err = c.err;
    for (let i = 0; i < N * d; i++) {
      const e = err[i] + delta[i];
      loss += e * e;
    }
    if (commit) {
      for (let i = 0; i < N * d; i++) err[i] += delta[i];
      for (let n = 0; n < N; n++) for (let u = 0; u < k; u++) c.act[n * H + S[u]] = actS[n * k + u];
      commitUnits(cfg, q, b, S, w1q, w3q);
      for (let i = 0; i < d; i++) for (const j of cols) q.w2[i * H + j] = w2new[i * H + j];
      st.loss = loss;
    }
    return loss;
  }
}
