/** Test rows for the clip searches, and their squared error per block. */
import { Rng } from '../../core/rng';

/** Rows with a heavy tail (an outlier now and then) and some all-positive rows, as trained weights have. */
export function heavyTailRows(seed: number, count: number, n: number): Float32Array[] {
  const rng = Rng.fromSeed(seed);
  return Array.from({ length: count }, (_, r) => Float32Array.from({ length: n }, () => {
    const g = rng.normal() * 0.05;
    return rng.float() < 0.03 ? g * 8 : r % 5 === 0 ? Math.abs(g) + 0.01 : g;
  }));
}

/** Squared error of y against x in each block of `size` weights, float64. */
export function blockErrors(x: Float32Array, y: Float32Array, size: number): number[] {
  const e: number[] = [];
  for (let b = 0; b < x.length; b += size) {
    let s = 0;
    for (let j = b; j < b + size; j++) s += (x[j] - y[j]) ** 2;
    e.push(s);
  }
  return e;
}
