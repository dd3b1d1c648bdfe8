/**
 * Quantized weights held compactly and exactly: every group of `group` consecutive values
 * of a row takes at most 2^bits distinct float32 values (whatever chose them: RTN, GPTQ,
 * a clip ratio), so a group is stored as its palette of distinct values plus an index per
 * weight into it, half a byte when a palette has at most 16 entries (2-4 bits), else a
 * byte: 1/2 + 4·2^bits/group bytes a weight at 2-4 bits (1.0 at 4 bits in groups of 128,
 * 1.5 at 3 bits in groups of 32) instead of 4. Unpacking gives the
 * same float32 bits back (the palette holds the values themselves, not a scale and zero
 * to recompute them), so code that holds the quantized model this way computes exactly
 * what it would with the float arrays.
 */
import type { F32 } from '../model/types';

export interface PaletteWeights {
  rows: number;
  cols: number;
  group: number;
  /** Per weight, row-major: the index of its value in its group's palette; two to a byte (low nibble first) when `width` ≤ 16. */
  index: Uint8Array;
  /** Palettes of every (row, group), in that order, each `width` entries (unused ones 0). */
  palette: Float32Array;
  width: number;
}

/** Most distinct values a group may hold (an index is one byte). */
export const PALETTE_MAX = 256;

/** Widest palette whose indices are packed two to a byte. */
const NIBBLE_MAX = 16;

/**
 * `w` [rows, cols] packed with one palette per `group` columns of a row; null when some
 * group holds more than `maxValues` (≤ PALETTE_MAX) distinct values, i.e. `w` is not
 * quantized on that grid.
 */
export function packPalette(w: F32, rows: number, cols: number, group: number, maxValues: number): PaletteWeights | null {
  if (!(Number.isInteger(maxValues) && maxValues >= 1 && maxValues <= PALETTE_MAX)) throw new RangeError(`palette size must be 1..${PALETTE_MAX}, got ${maxValues}`);
  if (w.length !== rows * cols) throw new RangeError(`weights hold ${w.length} values, not ${rows}×${cols}`);
  const nG = Math.ceil(cols / group);
  const nibbles = maxValues <= NIBBLE_MAX;
  const index = new Uint8Array(nibbles ? Math.ceil((rows * cols) / 2) : rows * cols);
  const palette = new Float32Array(rows * nG * maxValues);
  // distinct values compared by their bits, so -0 and +0 (and any NaN payload) stay apart
  const bits = new Uint32Array(w.buffer, w.byteOffset, w.length);
  const palBits = new Uint32Array(palette.buffer);
  const slot = new Map<number, number>();
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < nG; g++) {
      slot.clear();
      const p0 = (r * nG + g) * maxValues;
      const end = r * cols + Math.min(cols, (g + 1) * group);
      for (let j = r * cols + g * group; j < end; j++) {
        let k = slot.get(bits[j]);
        if (k === undefined) {
          k = slot.size;
          if (k >= maxValues) return null;
          slot.set(bits[j], k);
          palBits[p0 + k] = bits[j];
        }
        if (!nibbles) index[j] = k;
        else index[j >> 1] |= k << ((j & 1) << 2);
      }
    }
  }
  return { rows, cols, group, index, palette, width: maxValues };
}

/** The float32 weights back, bit for bit. */
export function unpackPalette(p: PaletteWeights, out?: F32): F32 {
  const { rows, cols, group, index, palette, width } = p;
  const nG = Math.ceil(cols / group);
  const w = out ?? new Float32Array(rows * cols);
  const wBits = new Uint32Array(w.buffer, w.byteOffset, rows * cols);
  const palBits = new Uint32Array(palette.buffer, palette.byteOffset, palette.length);
  const nibbles = width <= NIBBLE_MAX;
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < nG; g++) {
      const p0 = (r * nG + g) * width;
      const end = r * cols + Math.min(cols, (g + 1) * group);
      if (nibbles) for (let j = r * cols + g * group; j < end; j++) wBits[j] = palBits[p0 + ((index[j >> 1] >> ((j & 1) << 2)) & 15)];
      else for (let j = r * cols + g * group; j < end; j++) wBits[j] = palBits[p0 + index[j]];
    }
  }
  return w;
}

/** Bytes a packed weight holds. */
export function paletteBytes(p: PaletteWeights): number {
  return p.index.byteLength + p.palette.byteLength;
}
