/**
 * In-place row and column operations on a row-major weight w [nRows, nCols]; a bias vector
 * is the case nCols = 1 of the row operations. Arithmetic is float64 with one rounding to
 * float32 per element, so a rotation followed by its inverse returns each weight to within
 * a few float32 ulps.
 */
import type { F32 } from '../model/types';

/** Rows a, b ← R(θ)·(row_a, row_b) with c = cos θ, s = sin θ. */
export function rotateRows(w: F32, nCols: number, a: number, b: number, c: number, s: number): void {
  const oa = a * nCols;
  const ob = b * nCols;
  for (let j = 0; j < nCols; j++) {
    const xa = w[oa + j];
    const xb = w[ob + j];
    w[oa + j] = c * xa - s * xb;
    w[ob + j] = s * xa + c * xb;
  }
}

/** Columns a, b of every row ← the same map as rotateRows, i.e. W ← W·Rᵀ. */
export function rotateCols(w: F32, nRows: number, nCols: number, a: number, b: number, c: number, s: number): void {
  for (let r = 0, o = 0; r < nRows; r++, o += nCols) {
    const xa = w[o + a];
    const xb = w[o + b];
    w[o + a] = c * xa - s * xb;
    w[o + b] = s * xa + c * xb;
  }
}

/** Row r ← f · row r. */
export function scaleRow(w: F32, nCols: number, r: number, f: number): void {
  const o = r * nCols;
  for (let j = 0; j < nCols; j++) w[o + j] *= f;
}

/** Column col of every row ← f · column col. */
export function scaleCol(w: F32, nRows: number, nCols: number, col: number, f: number): void {
  for (let r = 0, o = col; r < nRows; r++, o += nCols) w[o] *= f;
}

/** New row units[k] = old row from[k] (`from` is a rearrangement of `units`). */
export function moveRows(w: F32, nCols: number, units: ArrayLike<number>, from: ArrayLike<number>): void {
  const n = units.length;
  const tmp = new Float32Array(n * nCols); // the source rows, read before any is overwritten
  for (let k = 0; k < n; k++) tmp.set(w.subarray(from[k] * nCols, (from[k] + 1) * nCols), k * nCols);
  for (let k = 0; k < n; k++) w.set(tmp.subarray(k * nCols, (k + 1) * nCols), units[k] * nCols);
}

/** New column units[k] = old column from[k], in every row. */
export function moveCols(w: F32, nRows: number, nCols: number, units: ArrayLike<number>, from: ArrayLike<number>): void {
  const n = units.length;
  const tmp = new Float32Array(n);
  for (let r = 0, o = 0; r < nRows; r++, o += nCols) {
    for (let k = 0; k < n; k++) tmp[k] = w[o + from[k]];
    for (let k = 0; k < n; k++) w[o + units[k]] = tmp[k];
  }
}

/** The listed indices, sorted ascending and deduplicated. */
export function sortedUnique(xs: ArrayLike<number>): Int32Array {
  const s = Int32Array.from(xs).sort();
  let n = 0;
  for (let i = 0; i < s.length; i++) if (i === 0 || s[i] !== s[i - 1]) s[n++] = s[i];
  return s.slice(0, n);
}
