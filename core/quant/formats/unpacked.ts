/** The float32 values of an unpacked row (see UnpackedRow for the formula). */
import type { UnpackedRow } from './types';

export function dequantizeUnpacked(u: UnpackedRow, out?: Float32Array): Float32Array {
  const { n, group, codes, scale, zero, min } = u;
  const y = out ?? new Float32Array(n);
  if (y.length < n) throw new RangeError(`out holds ${y.length} values, need ${n}`);
  for (let g = 0, start = 0; start < n; g++, start += group) {
    const s = scale[g];
    const z = zero[g];
    const end = Math.min(n, start + group);
    if (min) {
      const m = min[g];
      for (let j = start; j < end; j++) y[j] = Math.fround(Math.fround(s * (codes[j] - z)) + m);
    } else {
      for (let j = start; j < end; j++) y[j] = s * (codes[j] - z);
    }
  }
  return y;
}

/** An empty unpacked row of n weights in groups of `group`. */
export function newUnpacked(n: number, group: number, withMin: boolean): UnpackedRow {
  const nG = Math.ceil(n / group);
  const u: UnpackedRow = { n, group, codes: new Uint8Array(n), scale: new Float32Array(nG), zero: new Int32Array(nG) };
  if (withMin) u.min = new Float32Array(nG);
  return u;
}
