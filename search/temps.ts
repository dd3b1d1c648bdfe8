/**
 * Temporaries reused from one candidate to the next. Scoring a candidate allocates
 * short-lived arrays of the block's size (calibration rows × hidden units): at the shipped
 * size, hundreds of MB a second of ArrayBuffers, whose collection took about 15% of a
 * search's CPU (two thirds of it on V8's helper threads, beside the search). An array that
 * never leaves the function that takes it, and is not taken again under the same name before
 * that function is done with it, comes from here instead.
 *
 * Contents are left over from the last use: the taker writes every element it reads. Large
 * arrays are not kept: past KEPT_MAX_BYTES the work done on an array dwarfs its allocation,
 * and a kept one would hold memory a big model needs. One pool per thread (module state).
 */
const KEPT_MAX_BYTES = 8 << 20;

const f32s = new Map<string, Float32Array>();
const f64s = new Map<string, Float64Array>();

function take<T extends Float32Array | Float64Array>(pool: Map<string, T>, make: (n: number) => T, bytes: number, name: string, n: number): T {
  if (n * bytes > KEPT_MAX_BYTES) return make(n);
  let a = pool.get(name);
  if (!a || a.length < n) {
    a = make(n);
    pool.set(name, a);
  }
  return a.length === n ? a : (a.subarray(0, n) as T);
}

/** A Float32Array of n elements, reused under `name` (contents undefined). */
export function temp32(name: string, n: number): Float32Array {
  return take(f32s, (m) => new Float32Array(m), 4, name, n);
}

/** A Float64Array of n elements, reused under `name` (contents undefined). */
export function temp64(name: string, n: number): Float64Array {
  return take(f64s, (m) => new Float64Array(m), 8, name, n);
}

/** A reused copy of `src` under `name`. */
export function tempCopy<T extends Float32Array | Float64Array>(name: string, src: T): T {
  const t = (src instanceof Float32Array ? temp32(name, src.length) : temp64(name, src.length)) as T;
  t.set(src);
  return t;
}
