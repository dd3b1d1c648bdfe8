/**
 * Round-to-nearest (RTN) weight quantization, DESIGN.md §3.
 *
 * A linear weight is row-major [rows = out, cols = in]. Each row is cut into groups of
 * `group` consecutive columns (the last group of a row may be shorter), and each group gets
 * its own asymmetric b-bit grid with an integer zero point:
 *
 *     maxq  = 2^b − 1
 *     scale = (max − min) / maxq                  (stored as float32)
 *     zero  = clamp(round(−min / scale), 0, maxq) (stored as uint8)
 *     q     = clamp(round(w / scale) + zero, 0, maxq)
 *     deq   = (q − zero) · scale                  (rounded to float32)
 *
 * [min, max] is widened to contain 0 (as gptq.py's Quantizer does): with an integer zero
 * point the grid always contains 0.0, so a group that did not span 0 could not be covered and
 * its far end would be clamped by many steps. With the widening every weight is within half a
 * step of the grid.
 *
 * Rounding is Math.round (ties toward +∞; torch.round ties to even). Ties are measure-zero
 * for real weights; fast backends that use round-half-even agree except exactly at ties.
 *
 * Clip search (optional): try shrinking the range to [r·min, r·max] for each ratio r of a
 * grid and keep the r with the least squared error of the group. r = 1 is always tried first
 * and a ratio replaces it only when strictly better, so clipping never increases the error.
 */
import { InvarxError } from '../errors';
import type { F32 } from '../model/types';
import { f16Round } from '../model/halfFloat';

export interface QuantSpec {
  /** Bits per weight, an integer 2..8. */
  bits: number;
  /** Consecutive input columns sharing one (scale, zero); the last group of a row may be shorter. group ≥ cols means one group per row. */
  group: number;
  /** Clip-ratio search: true = DEFAULT_CLIP_GRID; an array = ratios in (0, 1]. 1.0 is always tried. */
  clip?: boolean | number[];
  /**
   * Round every scale to fp16 before the codes are chosen, so the fake-quant weights are
   * exactly what a packed GPTQ checkpoint (fp16 scales) holds.
   */
  f16Scales?: boolean;
}

/** Integer codes of a quantized weight [rows, cols] and their per-group grids. */
export interface Quantized {
  rows: number;
  cols: number;
  bits: number;
  group: number;
  /** Codes in [0, 2^bits − 1], row-major [rows, cols]. */
  q: Uint8Array;
  /** [rows, nGroups] */
  scale: Float32Array;
  /** [rows, nGroups], integer zero points in [0, 2^bits − 1]. */
  zero: Uint8Array;
}

/** Shrink ratios tried when `clip: true`: 1.0, 0.95, …, 0.5. */
export const DEFAULT_CLIP_GRID: readonly number[] = Object.freeze(
  Array.from({ length: 11 }, (_, i) => Math.round((1 - 0.05 * i) * 100) / 100),
);

/**
 * Per-group clip codes (the search's clip moves): CLIP_AUTO leaves the group to the spec's
 * clip search (or plain min–max); code k fixes its range to [r·min, r·max] with
 * r = CLIP_RATIOS[k], whatever the spec's search would pick. A finer grid than the search's,
 * which it contains (even codes), so a move can start from the search's choice.
 */
export const CLIP_AUTO = 255;
export const CLIP_RATIOS: readonly number[] = Object.freeze(
  Array.from({ length: 21 }, (_, i) => Math.round((1 - 0.025 * i) * 1000) / 1000),
);

export const MIN_BITS = 2;
export const MAX_BITS = 8;

/** Groups per row. */
export function numGroups(cols: number, group: number): number {
  return Math.ceil(cols / group);
}

/** Throws InvarxError('bad-config') with one sentence if `spec` cannot quantize a weight with `inDim` input columns. */
export function validateSpec(spec: QuantSpec, inDim: number): void {
  const { bits, group, clip } = spec;
  if (!(Number.isInteger(bits) && bits >= MIN_BITS && bits <= MAX_BITS)) {
    throw new InvarxError('bad-config', `bits must be an integer from ${MIN_BITS} to ${MAX_BITS}, got ${bits}`);
  }
  if (!(Number.isInteger(group) && group >= 1)) {
    throw new InvarxError('bad-config', `group size must be a positive integer (use the input dimension ${inDim} for one group per row), got ${group}`);
  }
  if (!(Number.isInteger(inDim) && inDim >= 1)) {
    throw new InvarxError('bad-config', `a weight to quantize needs at least one input column, got ${inDim}`);
  }
  if (Array.isArray(clip)) {
    for (const r of clip) {
      if (!(typeof r === 'number' && r > 0 && r <= 1)) {
        throw new InvarxError('bad-config', `clip ratios must lie in (0, 1], got ${r}`);
      }
    }
  } else if (clip !== undefined && typeof clip !== 'boolean') {
    throw new InvarxError('bad-config', `clip must be true, false or a list of ratios in (0, 1]`);
  }
}

/** The clip ratios a spec asks for, or null for plain min–max. Allocation-free. */
export function clipGrid(spec: QuantSpec): readonly number[] | null {
  if (spec.clip === true) return DEFAULT_CLIP_GRID;
  if (Array.isArray(spec.clip) && spec.clip.length > 0) return spec.clip;
  return null;
}

/** The code of x on the grid (scale, zero). The one place rounding happens. */
export function quantCode(x: number, scale: number, zero: number, maxq: number): number {
  const q = Math.round(x / scale) + zero;
  return q < 0 ? 0 : q > maxq ? maxq : q;
}

/** Largest finite fp16 value: an fp16 scale is clamped to it rather than become Inf. */
export const F16_MAX = 65504;

/**
 * Grid of the range [lo, hi] (lo ≤ 0 ≤ hi) into out[0] = scale (float32, or fp16 with
 * `f16`), out[1] = zero. A zero range (an all-zero group, or one too small for an fp16
 * scale) gets scale 1, zero 0: every weight maps to 0.0 exactly and nothing divides by zero.
 */
function rangeParams(lo: number, hi: number, maxq: number, out: Float64Array, f16: boolean): void {
  let scale = Math.fround((hi - lo) / maxq);
  if (f16) scale = Math.min(f16Round(scale), F16_MAX);
  if (!(scale > 0)) {
    out[0] = 1;
    out[1] = 0;
    return;
  }
  const z = Math.round(-lo / scale);
  out[0] = scale;
  out[1] = z < 0 ? 0 : z > maxq ? maxq : z;
}

/**
 * Squared error of fake-quantizing w[off, off+len) on the grid (scale, zero), float64.
 * Stops as soon as the running sum reaches `bound` (a sum of squares only grows, so such a
 * grid can no longer be strictly better); the returned value is then ≥ bound, not exact.
 */
function groupError(
  w: Float32Array | Float64Array, off: number, len: number, scale: number, zero: number, maxq: number, bound: number,
): number {
  let err = 0;
  for (let j = off; j < off + len; j++) {
    const d = Math.fround((quantCode(w[j], scale, zero, maxq) - zero) * scale) - w[j];
    err += d * d;
    if (err >= bound) return err;
  }
  return err;
}

const trial = new Float64Array(2);

/**
 * (scale, zero) of the group w[off, off+len) into out[0], out[1]: min–max, widened to
 * contain 0, then optionally the clip ratio with the least squared error; with a clip code
 * other than CLIP_AUTO, that code's ratio instead. Returns the ratio used.
 * Shared by RTN and GPTQ (which passes its float64 working weights).
 */
export function groupParams(
  w: Float32Array | Float64Array, off: number, len: number, maxq: number, grid: readonly number[] | null, out: Float64Array,
  f16 = false, code = CLIP_AUTO,
): number {
  let lo = 0;
  let hi = 0;
  for (let j = off; j < off + len; j++) {
    const x = w[j];
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  if (code !== CLIP_AUTO) {
    const r = CLIP_RATIOS[code];
    if (r === undefined) throw new RangeError(`clip code ${code} is not one of 0..${CLIP_RATIOS.length - 1} or CLIP_AUTO`);
    rangeParams(r * lo, r * hi, maxq, out, f16);
    return r;
  }
  rangeParams(lo, hi, maxq, out, f16);
  if (grid === null || lo === hi) return 1;
  let best = groupError(w, off, len, out[0], out[1], maxq, Infinity);
  let bestR = 1;
  for (let k = 0; k < grid.length; k++) {
    const r = grid[k];
    if (r === 1) continue;
    rangeParams(r * lo, r * hi, maxq, trial, f16);
    const err = groupError(w, off, len, trial[0], trial[1], maxq, best);
    if (err < best) {
      best = err;
      bestR = r;
      out[0] = trial[0];
      out[1] = trial[1];
    }
  }
  return bestR;
}

const params = new Float64Array(2);

/** Integer codes and grids of w [rows, cols]; `clips` [rows, nGroups]: each group's clip code (all CLIP_AUTO when absent). */
export function quantizeRtn(w: F32, rows: number, cols: number, spec: QuantSpec, clips?: Uint8Array): Quantized {
  validateSpec(spec, cols);
  checkSize(w, rows, cols);
  const { bits, group } = spec;
  const maxq = 2 ** bits - 1;
  const grid = clipGrid(spec);
  const nG = numGroups(cols, group);
  const q = new Uint8Array(rows * cols);
  const scale = new Float32Array(rows * nG);
  const zero = new Uint8Array(rows * nG);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < nG; g++) {
      const off = r * cols + g * group;
      const len = Math.min(group, cols - g * group);
      groupParams(w, off, len, maxq, grid, params, spec.f16Scales, clips ? clips[r * nG + g] : CLIP_AUTO);
      const s = params[0];
      const z = params[1];
      scale[r * nG + g] = s;
      zero[r * nG + g] = z;
      for (let j = off; j < off + len; j++) q[j] = quantCode(w[j], s, z, maxq);
    }
  }
  return { rows, cols, bits, group, q, scale, zero };
}

/** Float32 weights [rows, cols] of integer codes: (q − zero) · scale. */
export function dequantize(qz: Quantized, out?: F32): F32 {
  const { rows, cols, group, q, scale, zero } = qz;
  const nG = numGroups(cols, group);
  const w = out ?? new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < nG; g++) {
      const s = scale[r * nG + g];
      const z = zero[r * nG + g];
      const end = r * cols + Math.min(cols, (g + 1) * group);
      for (let j = r * cols + g * group; j < end; j++) w[j] = (q[j] - z) * s;
    }
  }
  return w;
}

/** dequantize(quantizeRtn(w)) without the integer codes: the fake-quant weights. */
export function fakeQuantRtn(w: F32, rows: number, cols: number, spec: QuantSpec, out?: F32, clips?: Uint8Array): F32 {
  checkSize(w, rows, cols);
  const dst = out ?? new Float32Array(rows * cols);
  if (dst.length < rows * cols) throw new RangeError(`out holds ${dst.length} values, need ${rows * cols}`);
  fakeQuantRtnRect(w, cols, spec, dst, 0, rows, 0, numGroups(cols, spec.group), clips);
  return dst;
}

/**
 * Fake-quantize only rows [rowStart, rowEnd) × groups [groupStart, groupEnd) of w [·, cols]
 * into the same positions of `out`; everything else in `out` is left alone. The search calls
 * this on a few rows or a few groups per candidate, so it allocates nothing. `clips`:
 * clip codes of w's groups, [rows of w, nGroups] (all CLIP_AUTO when absent).
 */
export function fakeQuantRtnRect(
  w: F32, cols: number, spec: QuantSpec, out: F32,
  rowStart: number, rowEnd: number, groupStart: number, groupEnd: number, clips?: Uint8Array,
): void {
  validateSpec(spec, cols);
  const { group } = spec;
  const nG = numGroups(cols, group);
  if (!(rowStart >= 0 && rowEnd >= rowStart && rowEnd * cols <= w.length && rowEnd * cols <= out.length)) {
    throw new RangeError(`rows [${rowStart}, ${rowEnd}) do not fit weights of ${w.length} values with ${cols} columns`);
  }
  if (!(groupStart >= 0 && groupEnd >= groupStart && groupEnd <= nG)) {
    throw new RangeError(`groups [${groupStart}, ${groupEnd}) outside [0, ${nG})`);
  }
  const maxq = 2 ** spec.bits - 1;
  const grid = clipGrid(spec);
  for (let r = rowStart; r < rowEnd; r++) {
    for (let g = groupStart; g < groupEnd; g++) {
      const off = r * cols + g * group;
      const end = r * cols + Math.min(cols, (g + 1) * group);
      groupParams(w, off, end - off, maxq, grid, params, spec.f16Scales, clips ? clips[r * nG + g] : CLIP_AUTO);
      const s = params[0];
      const z = params[1];
      for (let j = off; j < end; j++) out[j] = (quantCode(w[j], s, z, maxq) - z) * s;
    }
  }
}

function checkSize(w: ArrayLike<number>, rows: number, cols: number): void {
  if (!(Number.isInteger(rows) && rows >= 0 && w.length === rows * cols)) {
    throw new RangeError(`weight holds ${w.length} values, not ${rows} × ${cols}`);
  }
}
