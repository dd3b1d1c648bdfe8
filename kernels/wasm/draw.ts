/**
 * Ops.drawTokens on the wasm backend (kernels.wat's draw_rows): each row's float64 weights
 * (fdlibm's exp, which is V8's Math.exp), their sum in order and the walk, bit for bit as
 * core/data.ts's draw in JS, so the sampled sets do not depend on the backend. Rows are
 * split over the helper threads, each with its own weights scratch.
 */
import type { F32 } from '../../core/model/types';
import { checkDraw } from '../check';
import type { Arena } from './arena';
import type { KernelExports } from './module';
import type { HelperThreads } from './threads';

type DrawTokens = (out: Int32Array, logits: F32, rows: number, V: number, temperature: ArrayLike<number>, u: ArrayLike<number>) => void;

/** The backend's drawTokens, over its kernels `k` and `arena`, split over `active()` threads. */
export function wasmDraw(k: KernelExports, arena: Arena, helpers: HelperThreads | null, active: () => number): DrawTokens {
  return (out, logits, rows, V, temperature, u) => {
    checkDraw(out, logits, rows, V, temperature, u);
    if (rows === 0) return;
    const threads = helpers ? Math.min(active(), rows) : 1;
    arena.reset();
    const lp = arena.alloc(rows * V);
    const tp = arena.alloc(2 * rows), up = arena.alloc(2 * rows), op = arena.alloc(rows);
    const wp = arena.alloc(2 * V * threads);
    arena.f32.set(logits.subarray(0, rows * V), lp >> 2);
    const f64 = new Float64Array(arena.memory.buffer);
    for (let r = 0; r < rows; r++) {
      f64[(tp >> 3) + r] = temperature[r];
      f64[(up >> 3) + r] = u[r];
    }
    if (threads > 1) helpers!.draw(k, { logits: lp, V, temps: tp, us: up, out: op, w: wp, rows }, threads - 1);
    else k.draw_rows(lp, V, tp, up, op, wp, 0, rows);
    out.set(new Int32Array(arena.memory.buffer, op, rows));
  };
}
