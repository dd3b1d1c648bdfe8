/**
 * FFN hidden-unit transforms (DESIGN.md §4, first four rows). Unit j is row j of w1 and w3
 * (and b1) — the producing side — and column j of w2 — the consuming side:
 *   llama: y = w2 · ( silu(w1 x) ⊙ (w3 x) )
 *   opt:   y = w2 · relu(w1 x + b1) + b2
 */
import { fail } from '../errors';
import type { Block, F32, ModelConfig } from '../model/types';
import { moveCols, moveRows, rotateCols, rotateRows, scaleCol, scaleRow, sortedUnique } from './primitives';
import type { FfnPerm, FfnRot, FfnScale, LinearTouch, Touched } from './types';

export type FfnTransform = FfnPerm | FfnScale | FfnRot;

/** The producing rows that move together with a unit: w1, w3 (llama) and b1 (when present). */
function producers(cfg: ModelConfig, b: Block): { w: F32; nCols: number }[] {
  const out = [{ w: b.w1, nCols: cfg.dim }];
  if (cfg.arch === 'llama') {
    if (!b.w3) fail('bad-transform', 'llama block has no w3');
    out.push({ w: b.w3, nCols: cfg.dim });
  }
  // b1 is part of w1's output, so it goes wherever w1's row goes (llama ignores b1).
  if (b.b1) out.push({ w: b.b1, nCols: 1 });
  return out;
}

export function applyFfn(cfg: ModelConfig, b: Block, t: FfnTransform): void {
  const { dim, hiddenDim: H } = cfg;
  switch (t.kind) {
    case 'ffn-perm':
      for (const p of producers(cfg, b)) moveRows(p.w, p.nCols, t.units, t.from);
      moveCols(b.w2, dim, H, t.units, t.from);
      return;
    case 'ffn-scale': {
      // Divide the side the activation is positively homogeneous in: the linear gate w3x for
      // SwiGLU, the whole ReLU pre-activation w1x + b1 for opt.
      const scaled = cfg.arch === 'llama' ? producers(cfg, b).filter((p) => p.w === b.w3) : producers(cfg, b);
      for (let k = 0; k < t.units.length; k++) {
        const u = t.units[k];
        const s = t.scales[k];
        for (const p of scaled) scaleRow(p.w, p.nCols, u, 1 / s);
        scaleCol(b.w2, dim, H, u, s);
      }
      return;
    }
    case 'ffn-rot': {
      const prod = producers(cfg, b);
      for (let k = 0; k < t.angles.length; k++) {
        const u = t.pairs[2 * k];
        const v = t.pairs[2 * k + 1];
        const c = Math.cos(t.angles[k]);
        const s = Math.sin(t.angles[k]);
        for (const p of prod) rotateRows(p.w, p.nCols, u, v, c, s);
        rotateCols(b.w2, dim, H, u, v, c, s);
      }
      return;
    }
  }
}

export function touchedFfn(cfg: ModelConfig, t: FfnTransform): Touched {
  let units: Int32Array;
  if (t.kind === 'ffn-perm') {
    const moved: number[] = [];
    for (let k = 0; k < t.units.length; k++) if (t.units[k] !== t.from[k]) moved.push(t.units[k]);
    units = sortedUnique(moved);
  } else {
    units = sortedUnique(t.kind === 'ffn-scale' ? t.units : t.pairs);
  }
  if (units.length === 0) return {};
  const none = new Int32Array(0);
  const rows: LinearTouch = { rows: units, cols: none };
  const out: Touched = { w2: { rows: none, cols: units.slice() } };
  if (t.kind === 'ffn-scale' && cfg.arch === 'llama') {
    out.w3 = rows; // SwiGLU scaling leaves w1 alone
  } else {
    out.w1 = rows;
    if (cfg.arch === 'llama') out.w3 = { rows: units.slice(), cols: none };
  }
  return out;
}
