/**
 * Coordinate descent on GPTQ's codes against the layer-wise error GPTQ minimizes,
 * Σ_rows e (H + λI) eᵀ with e = q − w (H the input Hessian, λ its dampening). GPTQ picks
 * each code once, in column order, seeing only the columns after it; a sweep visits every
 * weight of a row in turn and moves it to the code of its group's grid (scale and zero
 * fixed) that lowers the row's error most given all the others, keeping the row's error
 * gradient g = e (H + λI) exact as codes move (a move by d adds d·(row j of H + λ eⱼ)).
 * With `scales`, each sweep ends by moving every group's scale to its best value given
 * the codes (refitScales), so the grid itself fits the inputs, not only the weights.
 * The error never rises (a float32 scale's refit: by at most its weights' rounding); rows
 * are independent, as in GPTQ, so a row comes out the same whichever rows are refined with it.
 */
import type { F32 } from '../model/types';
import type { Ops } from '../ops';
import type { GptqFactor } from './gptq';
import { f16Round } from '../model/halfFloat';
import { F16_MAX, numGroups, type Quantized } from './rtn';

/** GPTQ's lazy batch update W[:, i2:] −= Err1 · Hinv[i1 : i1+count, i2:] (./gptq.ts lazyUpdate or a backend's, the same bits). */
export type LazyUpdate = NonNullable<Ops['gptqLazyUpdate']>;

/** What refinement needs of a GPTQ factor; its dead columns are left as GPTQ set them (to 0). */
export type RefineHessian = Pick<GptqFactor, 'cols' | 'H' | 'damp' | 'dead'>;

/** Scale refitting after each sweep; `f16`: the scales are stored as fp16 (else float32). */
export interface ScaleRefit {
  f16: boolean;
}

/**
 * Up to `sweeps` passes over each row of `qz` (its codes, with `scales` its scales, and
 * `deq`, the float32 weights they dequantize to, all changed in place) against the original
 * weights `w` (row r of qz is row rowSet[r] of w; default row r); a row stops early when a
 * pass moves nothing. Returns how many codes and scales moved.
 */
export function refineCodes(
  w: F32, qz: Quantized, deq: F32, f: RefineHessian, sweeps: number, update: LazyUpdate, rowSet?: ArrayLike<number>, scales?: ScaleRefit,
): number {
  const { rows, cols, group } = qz;
  if (f.cols !== cols) throw new RangeError(`Hessian is for ${f.cols} columns, not ${cols}`);
  const { H, dead, damp } = f;
  const maxq = 2 ** qz.bits - 1;
  const nG = numGroups(cols, group);
  const chunk = Math.min(rows, REFINE_ROWS);
  const E = new Float64Array(chunk * cols);
  const G = new Float64Array(chunk * cols);
  const active = new Uint8Array(chunk);
  const rowMoves = new Int32Array(chunk);
  const refit = scales ? new ScaleRefitter(qz, deq, f, update, chunk, scales.f16) : null;
  let moved = 0;
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const n = Math.min(chunk, rows - r0);
    // G = −E·H by the GPTQ lazy update (W −= Err·Hinv with W = 0, Err = E, Hinv = H), then g = E·H + λE
    for (let i = 0; i < n; i++) {
      const src = (rowSet ? rowSet[r0 + i] : r0 + i) * cols;
      for (let j = 0; j < cols; j++) E[i * cols + j] = dead[j] ? 0 : deq[(r0 + i) * cols + j] - w[src + j];
    }
    G.fill(0);
    update(G, E, H, n, cols, cols, 0, cols, 0);
    for (let k = 0; k < n * cols; k++) G[k] = damp * E[k] - G[k];
    active.fill(1, 0, n);
    for (let s = 0; s < sweeps; s++) {
      rowMoves.fill(0);
      for (let i = 0; i < n; i++) if (active[i]) rowMoves[i] = sweepRow(qz, deq, f, r0 + i, G.subarray(i * cols, (i + 1) * cols), maxq, nG);
      refit?.sweep(r0, n, G, active, rowMoves);
      let left = 0;
      for (let i = 0; i < n; i++) {
        moved += rowMoves[i];
        // a pass that moved nothing leaves the row where the next would start: it is done
        if (rowMoves[i] === 0) active[i] = 0;
        left += active[i];
      }
      if (left === 0) break;
    }
  }
  return moved;
}

/**
 * Rows whose errors and gradients are made together: bounds the two float64 work arrays
 * (46 MB each at 5,632 columns) while each product still reads H once for many rows.
 */
const REFINE_ROWS = 1024;

/** One pass over row r's codes, given its gradient g = e (H + λI) (kept exact here). Returns the codes moved. */
function sweepRow(qz: Quantized, deq: F32, f: RefineHessian, r: number, G: Float64Array, maxq: number, nG: number): number {
  const { cols, group, q, scale, zero } = qz;
  const { H, damp, dead } = f;
  const o = r * cols;
  let moved = 0;
  for (let j = 0; j < cols; j++) {
    if (dead[j]) continue;
    const gi = r * nG + Math.floor(j / group);
    const sc = scale[gi];
    const h = H[j * cols + j] + damp;
    const cur = q[o + j];
    // (Math.round gives −0 just below 0; the code 0 must dequantize to +0, as dequantize does)
    let c = Math.round(cur - G[j] / (h * sc));
    c = c > 0 ? (c > maxq ? maxq : c) : 0;
    if (c === cur) continue;
    const v = Math.fround((c - zero[gi]) * sc);
    const d = v - deq[o + j];
    // the row's error changes by 2·d·g_j + d²·h
    if (!(d * (2 * G[j] + d * h) < 0)) continue;
    q[o + j] = c;
    deq[o + j] = v;
    const hj = j * cols;
    for (let k = 0; k < cols; k++) G[k] += d * H[hj + k];
    G[j] += d * damp;
    moved++;
  }
  return moved;
}

/**
 * Moves each group's scale to the minimum of its row's error over that scale, the codes and
 * zero fixed: a parabola, as the group's error changes by 2δ·g·u + δ²·u(H + λI)uᵀ for a scale
 * change δ (u_j = q_j − zero), so δ = −g·u / u(H + λI)uᵀ. The new scale is rounded as the grid
 * stores it (fp16 or float32) and kept when the parabola says it lowers the error. With fp16
 * scales that is exact: (q − zero)·s needs at most 4 + 11 significant bits, so the float32
 * weights are the parabola's; float32 scales round the weights, which can cost that rounding.
 * Groups go in order, each row's gradient following every change; the rows of a chunk take
 * each group together, so the gradients' updates are one product per group (by `update`,
 * each row's entries in the same order whatever rows share it).
 */
class ScaleRefitter {
  private readonly nG: number;
  /** −(the change of the dequantized weights) of the current group, [rows, group] (`update` subtracts). */
  private readonly negD: Float64Array;
  private readonly u: Float64Array;

  constructor(private qz: Quantized, private deq: F32, private f: RefineHessian, private update: LazyUpdate, chunk: number, private f16: boolean) {
    this.nG = numGroups(qz.cols, qz.group);
    this.negD = new Float64Array(chunk * qz.group);
    this.u = new Float64Array(qz.group);
  }

  /** One pass over the groups of the active rows of the chunk from row r0 (n rows, gradients G); adds the scales moved to rowMoves. */
  sweep(r0: number, n: number, G: Float64Array, active: Uint8Array, rowMoves: Int32Array): void {
    const { cols, group } = this.qz;
    const { H, damp } = this.f;
    const negD = this.negD;
    for (let g = 0; g < this.nG; g++) {
      const j0 = g * group;
      const len = Math.min(group, cols - j0);
      let any = false;
      for (let i = 0; i < n; i++) {
        const rowD = negD.subarray(i * group, i * group + len);
        if (active[i] && this.refitGroup(r0 + i, g, j0, len, G.subarray(i * cols, (i + 1) * cols), rowD)) {
          rowMoves[i]++;
          any = true;
        } else rowD.fill(0);
      }
      if (!any) continue;
      // g += d·(H + λI): W −= Err·Hinv with W = G, Err = −d, Hinv = H's rows of the group
      // (dense: a zero of g changing sign changes no decision and no other value)
      this.update(G, negD, H, n, cols, group, j0, len, 0, true);
      for (let i = 0; i < n; i++) for (let a = 0; a < len; a++) G[i * cols + j0 + a] -= negD[i * group + a] * damp;
    }
  }

  /** Row r's group g (columns [j0, j0+len), gradient G): its new scale and weights when they lower the error, with −(their change) in negD. */
  private refitGroup(r: number, g: number, j0: number, len: number, G: Float64Array, negD: Float64Array): boolean {
    const { cols, q, scale, zero } = this.qz;
    const { H, damp, dead } = this.f;
    const { deq, u } = this;
    const o = r * cols;
    const gi = r * this.nG + g;
    const z = zero[gi];
    let num = 0;
    for (let a = 0; a < len; a++) {
      const j = j0 + a;
      u[a] = dead[j] ? 0 : q[o + j] - z;
      num += G[j] * u[a];
    }
    const den = quadratic(H, damp, cols, j0, len, u);
    if (!(den > 0)) return false;
    const s0 = scale[gi];
    const s1 = this.f16 ? f16Round(s0 - num / den) : Math.fround(s0 - num / den);
    const step = s1 - s0;
    if (!(s1 > 0 && s1 <= F16_MAX) || !(step * (2 * num + step * den) < 0)) return false;
    scale[gi] = s1;
    for (let a = 0; a < len; a++) {
      const j = o + j0 + a;
      const v = u[a] === 0 ? deq[j] : Math.fround(u[a] * s1);
      negD[a] = deq[j] - v;
      deq[j] = v;
    }
    return true;
  }
}

/** v (H + λI) vᵀ over the columns [j0, j0+len), v given on them. */
function quadratic(H: Float64Array, damp: number, cols: number, j0: number, len: number, v: Float64Array): number {
  let sum = 0;
  for (let a = 0; a < len; a++) {
    if (v[a] === 0) continue;
    const hr = (j0 + a) * cols + j0;
    let t = damp * v[a];
    for (let b = 0; b < len; b++) t += H[hr + b] * v[b];
    sum += v[a] * t;
  }
  return sum;
}
