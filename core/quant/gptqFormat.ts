/**
 * GPTQ on llama.cpp's formats: the column loop of ./gptq.ts with the format's own grid.
 *
 * When the loop reaches the first column of a packed block (32 weights; a k-quant's
 * super-block of 256), the block's parameters are chosen from the row's error-updated
 * weights, rounded to float32, by the format's rule: its reference quantizer (with `clip`,
 * our clip search, ./formats/clip.ts). A k-quant's sub-block scales
 * are quantized against the whole super-block, so all 256 columns' parameters are fitted
 * at once, from the weights as they stand when the super-block starts. The parameters then
 * stay fixed while each column is rounded to its nearest code — round((w − min) / scale) +
 * zero in float64, ties up, clamped to the format's codes — and its error spread as GPTQ
 * does. Every parameter is one the format holds, so the rows are packed (packRow) exactly,
 * and the packed bytes dequantize to the values GPTQ used.
 *
 * A linear whose rows the format cannot hold gets llama-quantize's fallback format
 * (formatForRow); where there is none it is f16 in the GGUF, so its weights are rounded to
 * f16 without GPTQ, as the GGUF writer and llama-quantize store them.
 */
import { InvarxError } from '../errors';
import type { F32 } from '../model/types';
import { f16Round } from '../model/halfFloat';
import { clippedFormat, formatForRow, type QuantFormat, type UnpackedRow } from './formats';
import { gptqColumns, type ColumnGrid, type GptqFactor, type GptqOptions } from './gptq';

export interface FormatGptqOptions extends GptqOptions {
  /**
   * Choose a block's (a k-quant's: a super-block's) parameters by our clip search instead
   * of the reference quantizer, as the report's RTN+clip row does.
   */
  clip?: boolean;
}

export interface FormatGptqResult {
  /** The format the rows are in (the asked one or its fallback); null: f16. */
  format: QuantFormat | null;
  rows: number;
  cols: number;
  /** The packed rows, rows × format.rowBytes(cols) bytes; null for f16. */
  packed: Uint8Array | null;
  /** The values the packed rows dequantize to (f16: the f16-rounded weights). */
  deq: F32;
  /** gptq.py's loss (0 for f16). */
  loss: number;
}

/** The ggml format a GPTQ'd linear of `cols` columns is in, or a clear error for a format GPTQ cannot take. */
export function gptqRowFormat(fmt: QuantFormat, cols: number): QuantFormat | null {
  if (fmt.ggmlType === null || !fmt.packRow) {
    throw new InvarxError('bad-config', `GPTQ on format ${fmt.name}: only llama.cpp's formats (q4_0 … q6_k) go this way; the int grid has its own GPTQ`);
  }
  return formatForRow(fmt, cols);
}

/**
 * GPTQ of the rows `rowSet` of w [·, cols] (all when omitted) in ggml format `fmt` (or its
 * fallback for this row length), from the factor of the input Hessian.
 */
export function gptqFormatRows(
  w: F32, cols: number, factor: GptqFactor, fmt: QuantFormat, opts: FormatGptqOptions = {}, rowSet?: ArrayLike<number>,
): FormatGptqResult {
  const f = gptqRowFormat(fmt, cols);
  const rows = rowSet ? rowSet.length : w.length / cols;
  if (!f) {
    const deq = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      const src = (rowSet ? rowSet[r] : r) * cols;
      for (let j = 0; j < cols; j++) deq[r * cols + j] = f16Round(w[src + j]);
    }
    return { format: null, rows, cols, packed: null, deq, loss: 0 };
  }
  const us = Array.from({ length: rows }, () => emptyRow(f, cols));
  const { deq, loss } = gptqColumns(w, cols, factor, columnGrid(f, us, opts.clip ?? false), opts, rowSet);
  const rb = f.rowBytes(cols);
  const packed = new Uint8Array(rows * rb);
  for (let r = 0; r < rows; r++) f.packRow!(us[r], packed.subarray(r * rb, (r + 1) * rb));
  return { format: f, rows, cols, packed, deq, loss };
}

/** An unpacked row of `f` with every field allocated (the unpacking of all-zero bytes). */
function emptyRow(f: QuantFormat, cols: number): UnpackedRow {
  return f.unpackRow(new Uint8Array(f.rowBytes(cols)), cols);
}

/** The column grid of format `f` writing codes and parameters into the rows `us`. */
function columnGrid(f: QuantFormat, us: UnpackedRow[], clip: boolean): ColumnGrid {
  const bs = f.blockSize;
  const gs = f.groupSize;
  const top = 2 ** f.codeBits - 1;
  const choose = (clip && clippedFormat(f)) || f;
  const x = new Float32Array(bs);
  return {
    group: bs,
    enter(r, i, cur) {
      for (let j = 0; j < bs; j++) x[j] = cur[j];
      const b = f.unpackRow(choose.quantizeRow(x), bs);
      const u = us[r];
      const g0 = i / gs;
      u.scale.set(b.scale, g0);
      u.zero.set(b.zero, g0);
      if (u.min) u.min.set(b.min!, g0);
      if (u.k) {
        u.k.d[i / bs] = b.k!.d[0];
        if (u.k.dmin) u.k.dmin[i / bs] = b.k!.dmin![0];
        u.k.sc.set(b.k!.sc, g0);
        if (u.k.m) u.k.m.set(b.k!.m!, g0);
      }
    },
    round(r, i, w) {
      const u = us[r];
      const g = Math.floor(i / gs);
      const s = u.scale[g];
      const z = u.zero[g];
      const m = u.min ? u.min[g] : 0;
      // a zero scale gives every code the same value: keep the offset's code
      const q = s === 0 ? Math.min(z, top) : Math.min(top, Math.max(0, Math.round((w - m) / s) + z));
      u.codes[i] = q;
      const v = Math.fround(s * (q - z));
      return u.min ? Math.fround(v + m) : v;
    },
  };
}
