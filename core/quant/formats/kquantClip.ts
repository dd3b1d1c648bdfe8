/**
 * RTN+clip for ggml's k-quants. Per 256-weight super-block: ggml's reference quantizer's
 * bytes, replaced by those of a clip ratio r when they dequantize to a strictly smaller
 * squared error against the original weights. Ratio r runs the same reference quantizer
 * on the super-block with each sub-block's range shrunk by r before its scale fit sees it
 * (asymmetric q2_k q4_k q5_k: clamped to [r·min, r·max] of the sub-block, as our int grid
 * clips; symmetric q3_k q6_k: to ±r·max|x|), so the sub-block scales and mins, their
 * quantization against the super-block scale, and the codes are all the reference's, fitted
 * to the clipped values: every candidate is bytes the format holds, scored by what they
 * dequantize to. The reference's own bytes are always a candidate, so no super-block gets
 * worse. Codes are not re-rounded against the unclipped weights (that needs packing from
 * codes, which the k-quants do not have here).
 */
import { fail } from '../../errors';
import { DEFAULT_CLIP_GRID } from '../rtn';
import type { QuantFormat } from './types';

const QK_K = 256;

/** Sub-block length and symmetry of each k-quant. */
const SUB_BLOCKS: Readonly<Record<string, { group: number; symmetric: boolean }>> = {
  q2_k: { group: 16, symmetric: false },
  q3_k: { group: 16, symmetric: true },
  q4_k: { group: 32, symmetric: false },
  q5_k: { group: 32, symmetric: false },
  q6_k: { group: 16, symmetric: true },
};

/** x[off, off+256) with each sub-block's range shrunk by r, into out[0, 256). */
export function clipSuperBlock(x: Float32Array, off: number, r: number, group: number, symmetric: boolean, out: Float32Array): void {
  for (let s = off; s < off + QK_K; s += group) {
    let lo = Infinity, hi = -Infinity;
    for (let j = s; j < s + group; j++) {
      lo = Math.min(lo, x[j]);
      hi = Math.max(hi, x[j]);
    }
    if (symmetric) {
      hi = Math.max(Math.abs(lo), Math.abs(hi));
      lo = -hi;
    }
    // Math.fround: the bounds are float32 values, so a value at the bound stays itself.
    const a = Math.fround(r * lo), b = Math.fround(r * hi);
    for (let j = s; j < s + group; j++) out[j - off] = Math.min(b, Math.max(a, x[j]));
  }
}

/** Σ (y[i] − x[off + i])² over a super-block, in float64. */
export function superBlockError(x: Float32Array, off: number, y: Float32Array): number {
  let e = 0;
  for (let i = 0; i < QK_K; i++) {
    const d = y[i] - x[off + i];
    e += d * d;
  }
  return e;
}

/** Whether `fmt` is a k-quant this clip search handles. */
export function hasKClip(fmt: QuantFormat): boolean {
  return Object.prototype.hasOwnProperty.call(SUB_BLOCKS, fmt.name);
}

/**
 * `fmt` (a k-quant) with the clip search of the header over `ratios` (each in (0, 1]; 1,
 * the reference, is always tried); else InvarxError('bad-config') naming the problem.
 */
export function clippedKFormat(fmt: QuantFormat, ratios: readonly number[] = DEFAULT_CLIP_GRID): QuantFormat {
  if (!hasKClip(fmt)) fail('bad-config', `k-quant clip search: ${fmt.name} is not a k-quant (q2_k, q3_k, q4_k, q5_k or q6_k)`);
  const bad = ratios.find((r) => !(typeof r === 'number' && r > 0 && r <= 1));
  if (bad !== undefined) fail('bad-config', `k-quant clip search: clip ratio ${bad} is not in (0, 1]`);
  const { group, symmetric } = SUB_BLOCKS[fmt.name];
  const BB = fmt.blockBytes;
  const clipped = new Float32Array(QK_K);
  const trial = new Uint8Array(BB);
  const values = new Float32Array(QK_K);
  const quantizeRow = (x: Float32Array, out?: Uint8Array): Uint8Array => {
    if (!fmt.fitsRow(x.length)) fail('bad-config', `${fmt.name}+clip: a row of ${x.length} weights is not a whole number of ${QK_K}-weight super-blocks`);
    const y = fmt.quantizeRow(x, out);
    for (let off = 0, o = 0; off < x.length; off += QK_K, o += BB) {
      let best = superBlockError(x, off, fmt.dequantizeRow(y.subarray(o, o + BB), QK_K, values));
      for (const r of ratios) {
        if (r === 1 || best === 0) continue;
        clipSuperBlock(x, off, r, group, symmetric, clipped);
        fmt.quantizeRow(clipped, trial);
        const err = superBlockError(x, off, fmt.dequantizeRow(trial, QK_K, values));
        if (err < best) {
          best = err;
          y.set(trial, o);
        }
      }
    }
    return y;
  };
  return { ...fmt, name: `${fmt.name}+clip`, quantizeRow };
}
