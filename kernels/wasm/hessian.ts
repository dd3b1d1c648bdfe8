/**
 * core/quant/hessian.ts's entries on the wasm backend, with kernels.wat's hess_row /
 * hess_col: x goes into the arena row-major (transposed back from xT) with 16 zero columns
 * of padding, so that the kernels' 16-entry blocks may run past the last column (what they
 * compute there is dropped); the rows are walked in blocks of HESS_ROWS, each block once over
 * every entry. Whole Hessians (GPTQ's, at every block) are split over the helper threads by
 * lines; the few rows and columns a move changes stay on this thread.
 */
import type { F32 } from '../../core/model/types';
import { hessianSegments } from '../../core/quant/hessian';
import { checkHessian } from '../check';
import type { Arena } from './arena';
import type { KernelExports } from './module';
import { CHUNKS_PER_THREAD, MT_MIN_MACS, type HelperThreads } from './threads';

/** Rows of x per pass over the Hessian's entries (a block of x stays in L1/L2 meanwhile). */
const HESS_ROWS = 64;

type HessianEntries = (H: Float64Array, xT: F32, N: number, cols: number, rows: ArrayLike<number> | null, seqStarts: readonly number[]) => void;

/** The backend's hessianEntries, over its kernels `k` and `arena`, split over `active()` threads. */
export function wasmHessian(k: KernelExports, arena: Arena, helpers: HelperThreads | null, active: () => number): HessianEntries {
  return (H, xT, N, cols, rows, seqStarts) => {
    const threads = active();
    checkHessian(H, xT, N, cols, rows);
    const sg = hessianSegments(seqStarts, N);
    if (cols === 0) return;
    const ld = cols + 16;
    const up16 = (v: number) => (v + 15) & ~15;
    // The running sums: rows mode keeps row r's entries (r, b ≥ r) and column r's (a < r, r) per changed r.
    const lines = rows === null ? cols : 2 * rows.length;
    arena.reset();
    const xp = arena.alloc(N * ld);
    const accp = arena.alloc(2 * lines * ld);
    // whole Hessians (GPTQ's, at every block) on the helpers too, lines split between threads
    const threaded = rows === null && helpers !== null && threads > 1 && (N * cols * cols) / 2 >= MT_MIN_MACS;
    const segp = threaded ? arena.alloc(8 * sg.count) : 0;
    const m = arena.f32;
    const base = xp >> 2;
    const B = 32;
    for (let t0 = 0; t0 < N; t0 += B) {
      const t1 = Math.min(t0 + B, N);
      for (let c0 = 0; c0 < cols; c0 += B) {
        const c1 = Math.min(c0 + B, cols);
        for (let t = t0; t < t1; t++) for (let c = c0; c < c1; c++) m[base + t * ld + c] = xT[c * N + t];
      }
      for (let t = t0; t < t1; t++) m.fill(0, base + t * ld + cols, base + (t + 1) * ld);
    }
    const acc = new Float64Array(arena.memory.buffer, accp, lines * ld);
    acc.fill(0);
    const line = (i: number) => accp + 8 * i * ld;
    if (threaded) {
      const table = new Float64Array(arena.memory.buffer, segp, 4 * sg.count);
      for (let s = 0; s < sg.count; s++) table.set([sg.r0[s], sg.r1[s], sg.decay[s], sg.f[s]], 4 * s);
      const chunk = Math.max(16, Math.ceil(cols / (threads * CHUNKS_PER_THREAD)));
      helpers!.hessian(k, { x: xp, ld, cols, acc: accp, seg: segp, segments: sg.count, blockRows: HESS_ROWS, chunk }, arena.memory, threads - 1);
      copyHessian(H, cols, acc, ld);
      return;
    }
    for (let s = 0; s < sg.count; s++) {
      for (let t0 = sg.r0[s]; t0 < sg.r1[s]; t0 += HESS_ROWS) {
        const t1 = Math.min(t0 + HESS_ROWS, sg.r1[s]);
        const d = t0 === sg.r0[s] ? sg.decay[s] : 1;
        const f = sg.f[s];
        if (rows === null) {
          for (let a = 0; a < cols; a++) k.hess_row(xp, ld, t0, t1, f, d, a, a, up16(cols - a), line(a));
          continue;
        }
        for (let i = 0; i < rows.length; i++) {
          const r = rows[i];
          k.hess_row(xp, ld, t0, t1, f, d, r, r, up16(cols - r), line(2 * i));
          if (r > 0) k.hess_col(xp, ld, t0, t1, f, d, r, 0, up16(r), line(2 * i + 1));
        }
      }
    }
    if (rows === null) {
      copyHessian(H, cols, acc, ld);
      return;
    }
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      for (let j = 0; r + j < cols; j++) H[r * cols + r + j] = H[(r + j) * cols + r] = acc[2 * i * ld + j];
      for (let a = 0; a < r; a++) H[a * cols + r] = H[r * cols + a] = acc[(2 * i + 1) * ld + a];
    }
  };
}

/** H [cols, cols] from the sums of every line a (entries (a, a + j) at acc[a·ld + j]). */
function copyHessian(H: Float64Array, cols: number, acc: Float64Array, ld: number): void {
  for (let a = 0; a < cols; a++) for (let j = 0; a + j < cols; j++) H[a * cols + a + j] = H[(a + j) * cols + a] = acc[a * ld + j];
}
