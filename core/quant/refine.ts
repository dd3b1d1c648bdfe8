/**
 * Coordinate descent on GPTQ's codes against the layer-wise error GPTQ minimizes,
 * Σ_rows e (H + λI) eᵀ with e = q − w (H the input Hessian, λ its dampening). GPTQ picks
 * each code once, in column order, seeing only the columns after it; a sweep visits every
 * weight of a row in turn and moves it to the code of its group's grid (scale and zero
 * fixed) that lowers the row's error most given all the others, keeping the row's error
 * gradient g = e (H + λI) exact as codes move (a move by d adds d·(row j of H + λ eⱼ)).
 * The error never rises; rows are independent, as in GPTQ, so a row comes out the same
 * whichever rows are refined with it.
 */
import type { F32 } from '../model/types';
import type { Ops } from '../ops';
import type { GptqFactor } from './gptq';
import { numGroups, type Quantized } from './rtn';

/** GPTQ's lazy batch update W[:, i2:] −= Err1 · Hinv[i1 : i1+count, i2:] (./gptq.ts lazyUpdate or a backend's, the same bits). */
export type LazyUpdate = NonNullable<Ops['gptqLazyUpdate']>;

/** What refinement needs of a GPTQ factor; its dead columns are left as GPTQ set them (to 0). */
export type RefineHessian = Pick<GptqFactor, 'cols' | 'H' | 'damp' | 'dead'>;

/**
 * Up to `sweeps` passes over each row of `qz` (its codes and `deq`, the float32 weights they
 * dequantize to, both changed in place) against the original weights `w` (row r of qz is
 * row rowSet[r] of w; default row r); a row stops early when a pass moves nothing. Returns
 * how many codes moved.
 */
export function refineCodes(
  w: F32, qz: Quantized, deq: F32, f: RefineHessian, sweeps: number, update: LazyUpdate, rowSet?: ArrayLike<number>,
): number {
  const { rows, cols, group } = qz;
  if (f.cols !== cols) throw new RangeError(`Hessian is for ${f.cols} columns, not ${cols}`);
  const { H, dead } = f;
  const maxq = 2 ** qz.bits - 1;
  const nG = numGroups(cols, group);
  const chunk = Math.min(rows, REFINE_ROWS);
  const E = new Float64Array(chunk * cols);
  const G = new Float64Array(chunk * cols);
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
    for (let i = 0; i < n; i++) moved += refineRow(qz, deq, f, sweeps, r0 + i, G.subarray(i * cols, (i + 1) * cols), E.subarray(i * cols, (i + 1) * cols), maxq, nG);
  }
  return moved;
}

/**
 * Rows whose errors and gradients are made together: bounds the two float64 work arrays
 * (46 MB each at 5,632 columns) while each product still reads H once for many rows.
 */
const REFINE_ROWS = 1024;

/** Row r's sweeps, from G = −e·H (turned into the gradient here) and its error e. */
function refineRow(qz: Quantized, deq: F32, f: RefineHessian, sweeps: number, r: number, G: Float64Array, e: Float64Array, maxq: number, nG: number): number {
  const { cols, group, q, scale, zero } = qz;
  const { H, damp, dead } = f;
  const o = r * cols;
  let moved = 0;
  for (let j = 0; j < cols; j++) G[j] = damp * e[j] - G[j];
  for (let s = 0; s < sweeps; s++) {
    const before = moved;
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
    if (moved === before) break;
  }
  return moved;
}
