/**
 * The input Hessians GPTQ quantizes with, H = 2/N · XᵀX over a layer's calibration rows
 * (GPTQ paper §3 eq. (1); gptq.py's add_batch), built one way for every caller: the
 * whole-model GPTQ of the report's base rows and of `invarx eval` (./view.ts) and the
 * search's base quantizer with its incremental moves (search/baseGptq.ts).
 *
 * The value is defined by `accumulateHessian` (./gptq.ts, the running average of
 * gptq.py) fed one calibration sequence at a time, in order, in float64: entry (i, j),
 * i ≤ j, is the float64 sequence
 *     for each sequence s (n_s > 0 rows):  h ← h · N_{s−1}/N_s,   then for each of its rows t:
 *                                          h ← h + (2/N_s · x_ti) · x_tj   (skipped when 2/N_s · x_ti = 0)
 * with N_s the rows seen up to s. Here every entry is computed on its own from the
 * transposed rows xᵀ, so `hessianRows` recomputes some rows (and columns) of H with exactly
 * the bits of `hessianT` recomputing all of it (a search move changes a few input columns).
 * Eight entries of one row are summed side by side, each in its own order, for speed;
 * a backend may do the same faster (Ops.hessianEntries: the wasm backend's SIMD runs across
 * entries, never within one), with the same bits (test/kernels/conformance.test.ts).
 */
import type { F32 } from '../model/types';
import type { Ops } from '../ops';

/** xᵀ [cols, N] of x [N, cols], in 32×32 tiles (a plain double loop misses the cache on every write). */
export function transpose(x: F32, N: number, cols: number): F32 {
  const xT = new Float32Array(cols * N);
  const B = 32;
  for (let n0 = 0; n0 < N; n0 += B) {
    const n1 = Math.min(n0 + B, N);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(c0 + B, cols);
      for (let c = c0; c < c1; c++) for (let n = n0; n < n1; n++) xT[c * N + n] = x[n * cols + c];
    }
  }
  return xT;
}

/**
 * The sequences of `seqStarts` (start rows, then N) as accumulateHessian folds them in
 * (empty ones skipped, as it does): rows [r0[s], r1[s]), the factor N_{s−1}/N_s the sum so
 * far is scaled by, and 2/N_s.
 */
export interface Segments {
  count: number;
  r0: Int32Array;
  r1: Int32Array;
  decay: Float64Array;
  f: Float64Array;
}

export function hessianSegments(seqStarts: readonly number[], N: number): Segments {
  if (seqStarts.length < 2 || seqStarts[0] !== 0 || seqStarts[seqStarts.length - 1] !== N) {
    throw new RangeError(`sequence starts must run from 0 to N = ${N}`);
  }
  const m = seqStarts.length - 1;
  const sg: Segments = { count: 0, r0: new Int32Array(m), r1: new Int32Array(m), decay: new Float64Array(m), f: new Float64Array(m) };
  let seen = 0;
  for (let s = 0; s < m; s++) {
    const n = seqStarts[s + 1] - seqStarts[s];
    if (n === 0) continue;
    const total = seen + n;
    const i = sg.count++;
    sg.r0[i] = seqStarts[s];
    sg.r1[i] = seqStarts[s + 1];
    sg.decay[i] = seen / total;
    sg.f[i] = 2 / total;
    seen = total;
  }
  return sg;
}

/**
 * Entries (a, b_k), a ≤ b_k, for the eight rows of xT at offsets b0 … b7 (a and b_k: row
 * offsets a·N, b_k·N), into out[0 … 7]: each the float64 sequence of the header.
 */
function entries8(
  out: Float64Array, xT: F32, sg: Segments, a: number,
  b0: number, b1: number, b2: number, b3: number, b4: number, b5: number, b6: number, b7: number,
): void {
  let v0 = 0, v1 = 0, v2 = 0, v3 = 0, v4 = 0, v5 = 0, v6 = 0, v7 = 0;
  for (let s = 0; s < sg.count; s++) {
    const f = sg.f[s];
    const d = sg.decay[s];
    (v0 *= d), (v1 *= d), (v2 *= d), (v3 *= d), (v4 *= d), (v5 *= d), (v6 *= d), (v7 *= d);
    const end = sg.r1[s];
    for (let t = sg.r0[s]; t < end; t++) {
      const x = f * xT[a + t];
      if (x !== 0) {
        v0 += x * xT[b0 + t];
        v1 += x * xT[b1 + t];
        v2 += x * xT[b2 + t];
        v3 += x * xT[b3 + t];
        v4 += x * xT[b4 + t];
        v5 += x * xT[b5 + t];
        v6 += x * xT[b6 + t];
        v7 += x * xT[b7 + t];
      }
    }
  }
  (out[0] = v0), (out[1] = v1), (out[2] = v2), (out[3] = v3), (out[4] = v4), (out[5] = v5), (out[6] = v6), (out[7] = v7);
}

/** Entries (a, b) of H for b in `bs` (each ≥ a), written at (a, b) and (b, a); eight at a time. */
function fillEntries(H: Float64Array, xT: F32, N: number, cols: number, sg: Segments, a: number, bs: ArrayLike<number>): void {
  const out = new Float64Array(8);
  const o = (i: number) => bs[Math.min(i, bs.length - 1)] * N; // padding: the last entry again
  for (let i = 0; i < bs.length; i += 8) {
    entries8(out, xT, sg, a * N, o(i), o(i + 1), o(i + 2), o(i + 3), o(i + 4), o(i + 5), o(i + 6), o(i + 7));
    for (let u = 0; u < 8 && i + u < bs.length; u++) {
      const b = bs[i + u];
      H[a * cols + b] = out[u];
      H[b * cols + a] = out[u];
    }
  }
}

/**
 * The reference computation: rows `rows` (and, by symmetry, columns) of H [cols, cols] from
 * xT = xᵀ [cols, N] in sequences `seqStarts`, written in place; all of H when `rows` is
 * null. Entry (a, b), a ≤ b, changes when a or b is in `rows`; each is computed once.
 */
export function hessianEntriesRef(H: Float64Array, xT: F32, N: number, cols: number, rows: ArrayLike<number> | null, seqStarts: readonly number[]): void {
  const sg = hessianSegments(seqStarts, N);
  if (rows === null) {
    for (let a = 0; a < cols; a++) fillEntries(H, xT, N, cols, sg, a, range(a, cols));
    return;
  }
  const changed = new Uint8Array(cols);
  for (let i = 0; i < rows.length; i++) changed[rows[i]] = 1;
  const sorted = Int32Array.from(rows).sort();
  for (let a = 0; a < cols; a++) {
    const bs = changed[a] ? range(a, cols) : sorted.filter((r) => r > a && changed[r]);
    if (bs.length > 0) fillEntries(H, xT, N, cols, sg, a, bs);
  }
}

function entries(H: Float64Array, xT: F32, N: number, cols: number, rows: ArrayLike<number> | null, seqStarts: readonly number[], ops?: Ops): void {
  if (ops?.hessianEntries) ops.hessianEntries(H, xT, N, cols, rows, seqStarts);
  else hessianEntriesRef(H, xT, N, cols, rows, seqStarts);
}

/**
 * H [cols, cols] of the rows of x, given transposed: xT = xᵀ [cols, N], in sequences
 * `seqStarts` (start rows, then N). `ops`: a backend with a faster `hessianEntries`
 * (same bits).
 */
export function hessianT(xT: F32, N: number, cols: number, seqStarts: readonly number[] = [0, N], ops?: Ops): Float64Array {
  const H = new Float64Array(cols * cols);
  entries(H, xT, N, cols, null, seqStarts, ops);
  return H;
}

/** H of x [N, cols] in sequences `seqStarts`. */
export function hessian(x: F32, N: number, cols: number, seqStarts: readonly number[] = [0, N], ops?: Ops): Float64Array {
  return hessianT(transpose(x, N, cols), N, cols, seqStarts, ops);
}

/**
 * Rows (and, by symmetry, columns) `rows` of hessianT(xT) written into H in place: the same
 * float operations per entry, so the same bits as recomputing all of H.
 */
export function hessianRows(
  H: Float64Array, xT: F32, N: number, cols: number, rows: ArrayLike<number>, seqStarts: readonly number[] = [0, N], ops?: Ops,
): void {
  entries(H, xT, N, cols, rows, seqStarts, ops);
}

/** a, a + 1, …, b − 1. */
function range(a: number, b: number): Int32Array {
  return Int32Array.from({ length: b - a }, (_, i) => a + i);
}
