import type { Rng } from '../../core/rng';

/** Uniform in [−scale, scale). */
export function randomArray(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng.float() * 2 - 1) * scale;
  return a;
}

/** Index of the first element where a and b differ (Object.is: NaN = NaN, +0 ≠ −0), or −1. */
export function firstMismatch(a: Float32Array | Float64Array, b: Float32Array | Float64Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

/** Transposed values [heads, hd, capacity] laid out by position instead, [heads, capacity, hd]. */
export function byPosition(valuesT: Float32Array, heads: number, hd: number, cap: number): Float32Array {
  const out = new Float32Array(valuesT.length);
  for (let h = 0; h < heads; h++) for (let i = 0; i < hd; i++) for (let j = 0; j < cap; j++) out[(h * cap + j) * hd + i] = valuesT[(h * hd + i) * cap + j];
  return out;
}
