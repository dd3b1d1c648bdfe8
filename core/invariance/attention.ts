/**
 * Attention transforms (DESIGN.md §4, last four rows). With G = nHeads/nKvHeads, q head h
 * reads kv head floor(h/G), so kv head g is read by q heads g*G … g*G + G-1. Head dim d of
 * kv head g is row g*headDim + d of wk/wv; of q head h, row h*headDim + d of wq and column
 * h*headDim + d of wo.
 *
 * Why each is exact:
 *  - V/O: context_h = Σ_s softmax_s · v_s(kv head of h) is linear in v, so a map M on v's
 *    head dims gives context_h ← M·context_h for every reading q head; wo ← wo·M⁻¹ on those
 *    columns undoes it (M orthogonal: M⁻¹ = Mᵀ; M diagonal: 1/s).
 *  - Q/K: a score is q·k over a head. Rotating one RoPE pair of q and of k by the same φ
 *    keeps it, before RoPE and after (2D rotations commute); q × s with k ÷ s keeps it too.
 */
import { ropePair } from '../forward';
import type { Block, F32, ModelConfig } from '../model/types';
import { moveCols, moveRows, rotateCols, rotateRows, scaleCol, scaleRow, sortedUnique } from './primitives';
import type { AttnHeadPerm, AttnQkRot, AttnQkScale, AttnVoRot, AttnVoScale, Touched } from './types';

export type AttnTransform = AttnHeadPerm | AttnVoRot | AttnVoScale | AttnQkRot | AttnQkScale;

/** A weight [nRows, dim] with its optional bias, e.g. (wq, bq). */
interface RowsWithBias {
  w: F32;
  bias: F32 | undefined;
}

function rotRows(x: RowsWithBias, dim: number, a: number, b: number, c: number, s: number): void {
  rotateRows(x.w, dim, a, b, c, s);
  if (x.bias) rotateRows(x.bias, 1, a, b, c, s);
}

function scRow(x: RowsWithBias, dim: number, r: number, f: number): void {
  scaleRow(x.w, dim, r, f);
  if (x.bias) scaleRow(x.bias, 1, r, f);
}

/** Head-dim index lists expanded from group lists: kv rows and q rows (= wo columns). */
function expandGroups(cfg: ModelConfig, groups: ArrayLike<number>, from: ArrayLike<number>) {
  const hd = cfg.headDim;
  const G = cfg.nHeads / cfg.nKvHeads;
  const n = groups.length;
  const kvUnits = new Int32Array(n * hd);
  const kvFrom = new Int32Array(n * hd);
  const qUnits = new Int32Array(n * G * hd);
  const qFrom = new Int32Array(n * G * hd);
  for (let k = 0, i = 0, j = 0; k < n; k++) {
    for (let d = 0; d < hd; d++, i++) {
      kvUnits[i] = groups[k] * hd + d;
      kvFrom[i] = from[k] * hd + d;
    }
    for (let r = 0; r < G; r++) {
      for (let d = 0; d < hd; d++, j++) {
        qUnits[j] = (groups[k] * G + r) * hd + d;
        qFrom[j] = (from[k] * G + r) * hd + d;
      }
    }
  }
  return { kvUnits, kvFrom, qUnits, qFrom };
}

export function applyAttn(cfg: ModelConfig, b: Block, t: AttnTransform): void {
  const { dim, headDim: hd } = cfg;
  const G = cfg.nHeads / cfg.nKvHeads;
  const qDim = cfg.nHeads * hd;
  const q: RowsWithBias = { w: b.wq, bias: b.bq };
  const k: RowsWithBias = { w: b.wk, bias: b.bk };
  const v: RowsWithBias = { w: b.wv, bias: b.bv };
  switch (t.kind) {
    case 'attn-head-perm': {
      const e = expandGroups(cfg, t.groups, t.from);
      for (const x of [k, v]) {
        moveRows(x.w, dim, e.kvUnits, e.kvFrom);
        if (x.bias) moveRows(x.bias, 1, e.kvUnits, e.kvFrom);
      }
      moveRows(q.w, dim, e.qUnits, e.qFrom);
      if (q.bias) moveRows(q.bias, 1, e.qUnits, e.qFrom);
      moveCols(b.wo, dim, qDim, e.qUnits, e.qFrom);
      return;
    }
    case 'attn-vo-rot':
      for (let i = 0; i < t.angles.length; i++) {
        const a = t.pairs[2 * i];
        const bb = t.pairs[2 * i + 1];
        const c = Math.cos(t.angles[i]);
        const s = Math.sin(t.angles[i]);
        rotRows(v, dim, a, bb, c, s);
        const g = Math.floor(a / hd);
        for (let h = g * G; h < (g + 1) * G; h++) {
          rotateCols(b.wo, dim, qDim, h * hd + (a % hd), h * hd + (bb % hd), c, s);
        }
      }
      return;
    case 'attn-vo-scale':
      for (let i = 0; i < t.channels.length; i++) {
        const ch = t.channels[i];
        const s = t.scales[i];
        scRow(v, dim, ch, 1 / s);
        const g = Math.floor(ch / hd);
        for (let h = g * G; h < (g + 1) * G; h++) scaleCol(b.wo, dim, qDim, h * hd + (ch % hd), s);
      }
      return;
    case 'attn-qk-rot':
    case 'attn-qk-scale':
      for (let i = 0; i < t.ropePairs.length; i++) {
        const { g, j0, j1 } = ropeRows(cfg, t.ropePairs[i]);
        if (t.kind === 'attn-qk-rot') {
          const c = Math.cos(t.angles[i]);
          const s = Math.sin(t.angles[i]);
          rotRows(k, dim, g * hd + j0, g * hd + j1, c, s);
          for (let h = g * G; h < (g + 1) * G; h++) rotRows(q, dim, h * hd + j0, h * hd + j1, c, s);
        } else {
          const s = t.scales[i];
          for (const j of [j0, j1]) {
            scRow(k, dim, g * hd + j, 1 / s);
            for (let h = g * G; h < (g + 1) * G; h++) scRow(q, dim, h * hd + j, s);
          }
        }
      }
      return;
  }
}

/** RoPE pair index p = g*(headDim/2) + i → kv head g and the pair's two head dims. */
function ropeRows(cfg: ModelConfig, p: number): { g: number; j0: number; j1: number } {
  const half = cfg.headDim / 2;
  const g = Math.floor(p / half);
  const [j0, j1] = ropePair(cfg, p % half);
  return { g, j0, j1 };
}

export function touchedAttn(cfg: ModelConfig, t: AttnTransform): Touched {
  const hd = cfg.headDim;
  const G = cfg.nHeads / cfg.nKvHeads;
  const none = new Int32Array(0);
  /** Head dims `dims` of kv head g, as kv rows and as the rows/columns of its q heads. */
  const kvRows: number[] = [];
  const qRows: number[] = [];
  const add = (g: number, dims: number[]) => {
    for (const d of dims) {
      kvRows.push(g * hd + d);
      for (let h = g * G; h < (g + 1) * G; h++) qRows.push(h * hd + d);
    }
  };
  const all = Array.from({ length: hd }, (_, d) => d);
  switch (t.kind) {
    case 'attn-head-perm':
      for (let i = 0; i < t.groups.length; i++) if (t.groups[i] !== t.from[i]) add(t.groups[i], all);
      break;
    case 'attn-vo-rot':
    case 'attn-vo-scale':
      for (const ch of t.kind === 'attn-vo-rot' ? t.pairs : t.channels) add(Math.floor(ch / hd), [ch % hd]);
      break;
    case 'attn-qk-rot':
    case 'attn-qk-scale':
      for (const p of t.ropePairs) {
        const { g, j0, j1 } = ropeRows(cfg, p);
        add(g, [j0, j1]);
      }
      break;
  }
  if (kvRows.length === 0) return {};
  const kv = sortedUnique(kvRows);
  const qr = sortedUnique(qRows);
  const rows = (r: Int32Array) => ({ rows: r, cols: none });
  switch (t.kind) {
    case 'attn-head-perm':
      return { wq: rows(qr), wk: rows(kv), wv: rows(kv.slice()), wo: { rows: none, cols: qr.slice() } };
    case 'attn-vo-rot':
    case 'attn-vo-scale':
      return { wv: rows(kv), wo: { rows: none, cols: qr } };
    case 'attn-qk-rot':
    case 'attn-qk-scale':
      return { wq: rows(qr), wk: rows(kv) };
  }
}
