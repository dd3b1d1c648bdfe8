/**
 * GPTQ's float64 steps on the wasm backend, bit for bit as core's loops: the Cholesky factor
 * and inverse (core/quant/cholesky.ts) and the lazy batch update (core/quant/gptq.ts
 * lazyUpdate). Every entry is the same float64 sequence as there (its terms in ascending k,
 * mul then add or subtract, never fused), only the work is blocked so that most of it is
 * one kernel (kernels.wat gemm_add) split over the helper threads.
 *
 * - Factor (right-looking): for each panel of PANEL columns, the panel's own columns are
 *   finished here in TypeScript (their terms from inside the panel), then the panel's terms
 *   are subtracted from every entry right of it and below the diagonal at once, in column
 *   tiles shared between threads.
 * - Inverse L⁻¹ (forward substitution by row panels): the terms from the rows above the
 *   panel are subtracted in column tiles, then the panel's own rows are finished here.
 * - Product L⁻ᵀ L⁻¹: the upper triangle in column tiles, mirrored.
 * - Lazy update: W[:, i2:] −= Err1 · Hinv[batch, i2:] in column tiles, for the rows whose
 *   errors in the batch are all nonzero; core skips a zero error's terms (which keeps a −0
 *   weight −0), so a row with one takes core's own row loop.
 * Terms that core's loops do not take are products with exact zeros (entries of L⁻¹ above
 * its diagonal); adding them leaves a sum unchanged, because a sum here is never −0 (it
 * starts at +0 or at a nonzero value, and an exact cancellation gives +0).
 *
 * The matrices live in the arena with rows padded past a multiple of 4 (the kernel's tile;
 * 4 more keep a power-of-two row length from mapping a column of tiles onto one cache set);
 * what the tiles compute in the padding is never read back. The operands the kernel reads
 * along k are packed by tiles of 4 rows where they are copies anyway (the panels).
 */
import type { Arena } from './arena';
import type { KernelExports } from './module';
import { MT_MIN_MACS, type HelperThreads } from './threads';
import { runTilesHere, TILE_K_FROM, TILE_ROWS_FROM, TILE_ROWS_TO, type TileJob } from './threadJobs';
import { choleskyInverse as choleskyInverseRef, choleskyLower as choleskyLowerRef } from '../../core/quant/cholesky';
import { lazyUpdate as lazyUpdateRef, lazyUpdateRow } from '../../core/quant/gptq';

/** Columns per panel: the kernel's k range in the factor and the rows finished here per step. */
const PANEL = 32;
/** Below this size one thread does it all (the hand-offs would cost more than they save). */
const MT_MIN_N = 192;
/** Below this many multiply-adds a lazy update stays in core's loops (copying in and out would cost more). */
const MIN_UPDATE_MACS = 1 << 18;
/** Arena bytes the two working matrices may take; past it core's loops run instead (same bits). */
const MAX_MATRIX_BYTES = 1.5 * 2 ** 30;

export interface WasmGptq {
  choleskyLower(A: Float64Array, n: number): boolean;
  choleskyInverse(L: Float64Array, n: number): Float64Array;
  gptqLazyUpdate(W: Float64Array, Err1: Float64Array, Hinv: Float64Array, rows: number, cols: number, blocksize: number, i1: number, count: number, i2: number, dense?: boolean): void;
}

export function wasmGptq(k: KernelExports, arena: Arena, helpers: HelperThreads | null, activeThreads: () => number): WasmGptq {
  const up4 = (v: number) => (v + 3) & ~3;
  /** Row length of a matrix of n columns in the arena. */
  const rowLength = (n: number) => up4(n) + 4;
  const fits = (n: number) => 2 * 8 * rowLength(n) ** 2 <= MAX_MATRIX_BYTES;

  function tiles(job: TileJob, parallel: boolean): void {
    const t = activeThreads();
    if (helpers && t > 1 && parallel) helpers.tiles(k, job, t - 1);
    else runTilesHere(k, job);
  }

  /** Room for `count` float64 values in the arena, zeroed; returns the byte offset. */
  function zeros(count: number): number {
    const p = arena.alloc(2 * count);
    new Float64Array(arena.memory.buffer, p, count).fill(0);
    return p;
  }

  const view = (p: number, count: number) => new Float64Array(arena.memory.buffer, p, count);

  /** The lower triangle of A [n, n] (diagonal included) into M [n, ld]. */
  function copyLower(M: Float64Array, ld: number, A: Float64Array, n: number): void {
    for (let i = 0; i < n; i++) M.set(A.subarray(i * n, i * n + i + 1), i * ld);
  }

  function choleskyLower(A: Float64Array, n: number): boolean {
    if (n === 0 || !fits(n)) return choleskyLowerRef(A, n);
    const ld = rowLength(n);
    arena.reset();
    const mp = zeros(ld * ld);
    // the panel's columns in tiles of 4 rows: L[r][p0 + k] at (r − r mod 4)·PANEL + 4k + r mod 4
    const pp = zeros(PANEL * ld);
    const qp = zeros(PANEL * ld); // −P
    const M = view(mp, ld * ld);
    const P = view(pp, PANEL * ld);
    const Q = view(qp, PANEL * ld);
    copyLower(M, ld, A, n);
    for (let p0 = 0; p0 < n; p0 += PANEL) {
      const p1 = Math.min(p0 + PANEL, n);
      for (let j = p0; j < p1; j++) {
        const rj = j * ld;
        let d = M[rj + j];
        for (let k = p0; k < j; k++) d -= M[rj + k] * M[rj + k];
        if (!(d > 0)) return false;
        const ljj = Math.sqrt(d);
        M[rj + j] = ljj;
        for (let i = j + 1; i < n; i++) {
          const ri = i * ld;
          let s = M[ri + j];
          for (let k = p0; k < j; k++) s -= M[ri + k] * M[rj + k];
          M[ri + j] = s / ljj;
        }
      }
      if (p1 === n) break;
      for (let r = p1; r < n; r++) {
        const o = (r & ~3) * PANEL + (r & 3);
        for (let k = 0; k < PANEL; k++) {
          const v = M[r * ld + p0 + k];
          P[o + 4 * k] = v;
          Q[o + 4 * k] = -v;
        }
      }
      const np = up4(n);
      tiles({ C: mp, ldc: ld, A: qp, ai: PANEL, ak: 4, B: pp, bj: PANEL, bk: 4, flags: TILE_ROWS_FROM, j: p1, j1: np, i0: 0, i1: np, k1: PANEL }, n >= MT_MIN_N);
    }
    for (let i = 0; i < n; i++) {
      A.set(M.subarray(i * ld, i * ld + i + 1), i * n);
      A.fill(0, i * n + i + 1, (i + 1) * n);
    }
    return true;
  }

  function choleskyInverse(L: Float64Array, n: number): Float64Array {
    if (n === 0 || !fits(n)) return choleskyInverseRef(L, n);
    const ld = rowLength(n);
    const np = up4(n);
    arena.reset();
    const lp = zeros(ld * ld);
    const xp = zeros(ld * ld); // X = L⁻¹, by rows
    const ap = zeros(PANEL * ld); // −L's panel rows in tiles of 4: −L[i][k] at (i − p0 − i mod 4)·p0 + 4k + i mod 4
    const Lm = view(lp, ld * ld);
    const X = view(xp, ld * ld);
    copyLower(Lm, ld, L, n);
    for (let p0 = 0; p0 < n; p0 += PANEL) {
      const p1 = Math.min(p0 + PANEL, n);
      if (p0 > 0) {
        // terms k < p0: X[i][j] += (−L[i][k]) · X[k][j]
        const Ap = view(ap, PANEL * ld);
        for (let i = p0; i < up4(p1); i++) {
          const o = (i - p0 - (i & 3)) * p0 + (i & 3);
          for (let k = 0; k < p0; k++) Ap[o + 4 * k] = i < p1 ? -Lm[i * ld + k] : 0;
        }
        tiles({ C: xp, ldc: ld, A: ap - 8 * p0 * p0, ai: p0, ak: 4, B: xp, bj: 1, bk: ld, flags: TILE_K_FROM, j: 0, j1: p0, i0: p0, i1: up4(p1), k1: p0 }, n >= MT_MIN_N);
      }
      // terms p0 ≤ k < i, row by row (X[k][j] = 0 for j > k: not taken)
      for (let i = p0; i < p1; i++) {
        const ri = i * ld;
        for (let k = p0; k < i; k++) {
          const l = Lm[ri + k];
          const rk = k * ld;
          for (let j = 0; j <= k; j++) X[ri + j] -= l * X[rk + j];
        }
        const d = Lm[ri + i];
        for (let j = 0; j < i; j++) X[ri + j] /= d;
        X[ri + i] = 1 / d;
      }
    }
    // L⁻ᵀ L⁻¹: entry (i, j ≥ i) = Σ_k X[k][i] X[k][j], into L's room
    Lm.fill(0);
    tiles({ C: lp, ldc: ld, A: xp, ai: 1, ak: ld, B: xp, bj: 1, bk: ld, flags: TILE_ROWS_TO | TILE_K_FROM, j: 0, j1: np, i0: 0, i1: np, k1: n }, n >= MT_MIN_N);
    const inv = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      const ri = i * ld;
      for (let j = i; j < n; j++) inv[i * n + j] = inv[j * n + i] = Lm[ri + j];
    }
    return inv;
  }

  function gptqLazyUpdate(
    W: Float64Array, Err1: Float64Array, Hinv: Float64Array, rows: number, cols: number, blocksize: number, i1: number, count: number, i2: number, dense = false,
  ): void {
    const width = cols - i2;
    if (rows * width * count < MIN_UPDATE_MACS) {
      lazyUpdateRef(W, Err1, Hinv, rows, cols, blocksize, i1, count, i2);
      return;
    }
    const clean: number[] = [];
    for (let r = 0; r < rows; r++) {
      let zeros = 0;
      for (let c = 0; c < count; c++) if (Err1[r * blocksize + c] === 0) zeros++;
      if (zeros === count) continue; // (nothing to subtract)
      // a zero error must leave a −0 weight −0, which the tiles would not: that row goes alone, unless dense
      if (zeros > 0 && !dense) lazyUpdateRow(W, Err1, Hinv, r, cols, blocksize, i1, count, i2);
      else clean.push(r);
    }
    if (clean.length === 0) return;
    const m = up4(clean.length);
    const ld = rowLength(width);
    arena.reset();
    const wp = zeros(m * ld); // the clean rows' W[r][i2:]
    const ap = zeros(m * count); // −Err1 of row i at (i − i mod 4)·count + 4k + i mod 4
    const hp = zeros(count * ld); // Hinv[i1 + k][i2:]
    const Wm = view(wp, m * ld);
    const Am = view(ap, m * count);
    const Hm = view(hp, count * ld);
    clean.forEach((r, i) => {
      Wm.set(W.subarray(r * cols + i2, (r + 1) * cols), i * ld);
      const o = (i & ~3) * count + (i & 3);
      for (let c = 0; c < count; c++) Am[o + 4 * c] = -Err1[r * blocksize + c];
    });
    for (let c = 0; c < count; c++) Hm.set(Hinv.subarray((i1 + c) * cols + i2, (i1 + c + 1) * cols), c * ld);
    const parallel = m * width * count >= MT_MIN_MACS;
    tiles({ C: wp, ldc: ld, A: ap, ai: count, ak: 4, B: hp, bj: 1, bk: ld, flags: 0, j: 0, j1: up4(width), i0: 0, i1: m, k1: count }, parallel);
    clean.forEach((r, i) => W.set(Wm.subarray(i * ld, i * ld + width), r * cols + i2));
  }

  return { choleskyLower, choleskyInverse, gptqLazyUpdate };
}
