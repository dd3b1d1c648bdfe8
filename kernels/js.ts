/**
 * The plain TypeScript backend: the reference every fast backend is tested against.
 * Matmul is core's jsOps; quantize-dequantize and the loss are written out here,
 * operation for operation in the order the wasm kernels use, so that those two are
 * bit-identical across backends (the conformance suite checks it, and checks
 * `quantDequantRef` against core's fakeQuantRtnRect).
 */
import { jsOps } from '../core/ops';
import type { F32 } from '../core/model/types';
import { CLIP_AUTO, CLIP_RATIOS, type QuantSpec } from '../core/quant/rtn';
import { f16BitsToF32, f32ToF16Bits } from '../core/model/halfFloat';
import type { Backend } from './backend';
import { checkMatmulT, checkQuantRect, checkSqErr } from './check';

/** Clip ratios of `clip: true` (core's DEFAULT_CLIP_GRID): 1.0, 0.95, …, 0.5. */
const DEFAULT_CLIP_GRID: readonly number[] = Array.from({ length: 11 }, (_, i) => Math.round((1 - 0.05 * i) * 100) / 100);

export function checkSpec(spec: QuantSpec): void {
  const { bits, group } = spec;
  if (!(Number.isInteger(bits) && bits >= 2 && bits <= 8)) throw new RangeError(`quantDequant: bits must be an integer 2..8, got ${bits}`);
  if (!(Number.isInteger(group) && group >= 1)) throw new RangeError(`quantDequant: group must be a positive integer, got ${group}`);
}

/** Clip codes for a weight of `rows` rows and nG groups per row: [rows, nG], each CLIP_AUTO or an index of CLIP_RATIOS. */
export function checkClips(clips: Uint8Array | undefined, rows: number, nG: number): void {
  if (!clips) return;
  if (clips.length !== rows * nG) throw new RangeError(`quantDequant: ${clips.length} clip codes for ${rows} rows of ${nG} groups`);
  for (const c of clips) if (c !== CLIP_AUTO && c >= CLIP_RATIOS.length) throw new RangeError(`quantDequant: clip code ${c} is not one of 0..${CLIP_RATIOS.length - 1} or ${CLIP_AUTO}`);
}

export function clipRatios(spec: QuantSpec): readonly number[] | null {
  if (spec.clip === true) return DEFAULT_CLIP_GRID;
  if (Array.isArray(spec.clip) && spec.clip.length > 0) return spec.clip;
  return null;
}

/** The code of x on the grid (scale, zero): clamp(Math.round(x / scale) + zero, 0, maxq). */
function code(x: number, scale: number, zero: number, maxq: number): number {
  const q = Math.round(x / scale) + zero;
  return q < 0 ? 0 : q > maxq ? maxq : q;
}

/** Grid of [lo, hi] into g[0] = scale (a float32 value, or with `f16` an fp16 one at most 65504), g[1] = zero; a zero range gets (1, 0). */
function grid(lo: number, hi: number, maxq: number, g: Float64Array, f16: boolean): void {
  let scale = Math.fround((hi - lo) / maxq);
  if (f16) scale = Math.min(f16BitsToF32(f32ToF16Bits(scale)), 65504);
  if (!(scale > 0)) {
    g[0] = 1;
    g[1] = 0;
    return;
  }
  const z = Math.round(-lo / scale);
  g[0] = scale;
  g[1] = z < 0 ? 0 : z > maxq ? maxq : z;
}

function groupSqErr(w: F32, off: number, end: number, scale: number, zero: number, maxq: number): number {
  let e = 0;
  for (let j = off; j < end; j++) {
    const d = Math.fround((code(w[j], scale, zero, maxq) - zero) * scale) - w[j];
    e += d * d;
  }
  return e;
}

const g = new Float64Array(2);
const trial = new Float64Array(2);

/** Backend.quantDequant in plain TypeScript (see kernels/backend.ts for the numerics). */
export function quantDequantRef(
  w: F32, cols: number, spec: QuantSpec, out: F32,
  rowStart: number, rowEnd: number, groupStart: number, groupEnd: number, clips?: Uint8Array,
): void {
  checkSpec(spec);
  const { group } = spec;
  const nG = Math.ceil(cols / group);
  checkQuantRect(w, out, cols, nG, rowStart, rowEnd, groupStart, groupEnd);
  checkClips(clips, w.length / cols, nG);
  const maxq = 2 ** spec.bits - 1;
  const f16 = spec.f16Scales === true;
  const ratios = clipRatios(spec);
  for (let r = rowStart; r < rowEnd; r++) {
    for (let gi = groupStart; gi < groupEnd; gi++) {
      const off = r * cols + gi * group;
      const end = r * cols + Math.min(cols, (gi + 1) * group);
      let lo = 0;
      let hi = 0;
      for (let j = off; j < end; j++) {
        const x = w[j];
        if (x < lo) lo = x;
        if (x > hi) hi = x;
      }
      const clipCode = clips ? clips[r * nG + gi] : CLIP_AUTO;
      if (clipCode !== CLIP_AUTO) {
        // a clip code fixes the ratio: no search
        grid(CLIP_RATIOS[clipCode] * lo, CLIP_RATIOS[clipCode] * hi, maxq, g, f16);
      } else grid(lo, hi, maxq, g, f16);
      if (clipCode === CLIP_AUTO && ratios !== null && lo !== hi) {
        // clip search: shrink the range by each ratio, keep the strictly best
        let best = groupSqErr(w, off, end, g[0], g[1], maxq);
        for (const ratio of ratios) {
          if (ratio === 1) continue;
          grid(ratio * lo, ratio * hi, maxq, trial, f16);
          const e = groupSqErr(w, off, end, trial[0], trial[1], maxq);
          if (e < best) {
            best = e;
            g[0] = trial[0];
            g[1] = trial[1];
          }
        }
      }
      const s = g[0];
      const z = g[1];
      for (let j = off; j < end; j++) out[j] = (code(w[j], s, z, maxq) - z) * s;
    }
  }
}

/**
 * Backend.sqErr in plain TypeScript. The order of additions is the wasm kernel's: eight
 * running sums by index mod 8 (its four f64x2 accumulators), combined as
 * ((s0 + s2) + (s4 + s6)) + ((s1 + s3) + (s5 + s7)), then the tail one by one.
 */
export function sqErrRef(a: F32, b: F32, n: number): number {
  checkSqErr(a, b, n);
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  const n8 = n - (n % 8);
  let i = 0;
  for (; i < n8; i += 8) {
    const d0 = a[i] - b[i], d1 = a[i + 1] - b[i + 1], d2 = a[i + 2] - b[i + 2], d3 = a[i + 3] - b[i + 3];
    const d4 = a[i + 4] - b[i + 4], d5 = a[i + 5] - b[i + 5], d6 = a[i + 6] - b[i + 6], d7 = a[i + 7] - b[i + 7];
    s0 += d0 * d0; s1 += d1 * d1; s2 += d2 * d2; s3 += d3 * d3;
    s4 += d4 * d4; s5 += d5 * d5; s6 += d6 * d6; s7 += d7 * d7;
  }
  let s = (s0 + s2 + (s4 + s6)) + (s1 + s3 + (s5 + s7));
  for (; i < n; i++) {
    const d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

export function createJsBackend(): Backend {
  return {
    name: 'js',
    matmulT(y, x, w, n, inDim, outDim, accumulate = false) {
      checkMatmulT(y, x, w, n, inDim, outDim);
      jsOps.matmulT(y, x, w, n, inDim, outDim, accumulate);
    },
    quantDequant: quantDequantRef,
    sqErr: sqErrRef,
  };
}
