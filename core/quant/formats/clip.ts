/**
 * Our RTN+clip on llama.cpp's 32-block formats: per block, ggml's reference quantizer's
 * result, replaced by a clip ratio's when that has a strictly smaller squared error — the
 * block's range shrunk by r (q4_0/q5_0/q8_0: the scale from r · the signed extreme, as ggml
 * takes it; q4_1/q5_1: min and max both times r, as our int grid clips), the fp16 scale and
 * min rounded first and the codes rounded to nearest against them, clamped to the format's
 * range. Only values the format holds, so the result is packed (packRow) like any row of it.
 * The k-quants (quantized sub-block scales) get theirs per super-block (kquantClip.ts).
 */
import { DEFAULT_CLIP_GRID } from '../rtn';
import { f, fromF16, toF16 } from './ggmlFloat';
import { clippedKFormat, hasKClip } from './kquantClip';
import type { QuantFormat, UnpackedRow } from './types';

const QK = 32;

/** Levels and code offset of a 32-block format (null: not one). */
function grid(fmt: QuantFormat): { levels: number; zero: number; withMin: boolean } | null {
  switch (fmt.name) {
    case 'q4_0': return { levels: 16, zero: 8, withMin: false };
    case 'q5_0': return { levels: 32, zero: 16, withMin: false };
    case 'q8_0': return { levels: 256, zero: 128, withMin: false };
    case 'q4_1': return { levels: 16, zero: 0, withMin: true };
    case 'q5_1': return { levels: 32, zero: 0, withMin: true };
    default: return null;
  }
}

const h = (v: number) => fromF16(toF16(v));

/**
 * Codes of block x[off, off+32) for fp16 scale d and min m into codes[cOff…]; returns the
 * squared error of the values they dequantize to (the format's own formula).
 */
function roundBlock(x: Float32Array, off: number, d: number, m: number, levels: number, zero: number, withMin: boolean, codes: Uint8Array, cOff: number): number {
  let err = 0;
  for (let j = 0; j < QK; j++) {
    const v = x[off + j];
    const q = Math.min(levels - 1, Math.max(0, Math.round((withMin ? v - m : v) / d) + zero));
    codes[cOff + j] = q;
    const y = withMin ? f(f(d * q) + m) : f(d * (q - zero));
    err += (y - v) * (y - v);
  }
  return err;
}

/** `fmt`'s reference quantizer with a clip search (the header's, or a k-quant's); null for formats without one (f16). */
export function clippedFormat(fmt: QuantFormat, ratios: readonly number[] = DEFAULT_CLIP_GRID): QuantFormat | null {
  if (hasKClip(fmt)) return clippedKFormat(fmt, ratios);
  const g = grid(fmt);
  if (!g || !fmt.packRow) return null;
  const { levels, zero, withMin } = g;
  const trial = new Uint8Array(QK);
  const clipRow = (x: Float32Array): UnpackedRow => {
    const u = fmt.unpackRow(fmt.quantizeRow(x), x.length);
    for (let b = 0; b < x.length / QK; b++) {
      const off = b * QK;
      let best = 0;
      for (let j = 0; j < QK; j++) {
        const v = x[off + j];
        const y = withMin ? f(f(u.scale[b] * u.codes[off + j]) + u.min![b]) : f(u.scale[b] * (u.codes[off + j] - zero));
        best += (y - v) * (y - v);
      }
      let lo = Infinity, hi = -Infinity, ext = 0;
      for (let j = 0; j < QK; j++) {
        const v = x[off + j];
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
        if (Math.abs(v) > Math.abs(ext)) ext = v;
      }
      for (const r of ratios) {
        if (r === 1) continue;
        let d: number, m = 0;
        if (withMin) {
          m = h(f(r * lo));
          d = h(f(f(f(r * hi) - m) / (levels - 1)));
        } else {
          // q8_0's scale is positive (amax / 127); the 4/5-bit ones divide the signed extreme by −zero
          d = h(zero === 128 ? f(f(r * Math.abs(ext)) / 127) : f(f(r * ext) / -zero));
        }
        if (!(d !== 0 && Number.isFinite(d))) continue;
        const err = roundBlock(x, off, d, m, levels, zero, withMin, trial, 0);
        if (err < best) {
          best = err;
          u.codes.set(trial, off);
          u.scale[b] = d;
          if (u.min) u.min[b] = m;
        }
      }
    }
    return u;
  };
  return {
    ...fmt,
    name: `${fmt.name}+clip`,
    quantizeRow: (x, out) => fmt.packRow!(clipRow(x), out),
  };
}
