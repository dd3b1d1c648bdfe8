/**
 * GPTQ's float64 steps at the shapes of real models, core's loops against the wasm backend
 * on 1 and 2 threads (the same bits), seconds each and the speed-up:
 * - the factor of one Hessian (core/quant/gptq.ts gptqFactor: Cholesky, inverse, Cholesky
 *   of the inverse), and the seconds per layer it makes at the 110M and 1B shapes (one
 *   factor per input: attention in, attention out and FFN in at the model width, FFN out
 *   at the FFN width);
 * - the lazy batch updates of one linear's column loop (lazyUpdate over every batch of 128
 *   columns), for the FFN's output linear of each shape.
 * `INVARX_BENCH_FACTOR_N=768,2048` picks the widths (default 768, 2048, 5632; 5632 takes
 * about a minute in core's loops).
 */
import { gptqFactor, lazyUpdate } from '../core/quant/gptq';
import { hessian } from '../core/quant/hessian';
import { Rng } from '../core/rng';
import type { Ops } from '../core/ops';
import { createWasmBackend } from '../kernels/wasm/backend';
import { emit, note, type BenchModule } from './emit';

const DEFAULT_WIDTHS = [768, 2048, 5632];
/** Model width and FFN width per shape, and the widths' factors per layer. */
const LAYERS = { '110m': [768, 2048], '1b': [2048, 5632] } as const;

const round = (v: number, d = 3) => Math.round(v * 10 ** d) / 10 ** d;

/**
 * A GPTQ Hessian of n columns from n/2 random input rows (core's builder, on the backend's
 * threads): rank-deficient until damped, as small calibration sets make it.
 */
function hessianLike(n: number, ops: Ops): Float64Array {
  const rng = Rng.fromSeed(n);
  const m = Math.ceil(n / 2);
  const x = Float32Array.from({ length: m * n }, () => rng.float() * 2 - 1);
  return hessian(x, m, n, [0, m], ops);
}

function seconds(H: Float64Array, n: number, ops?: Ops): number {
  const t0 = performance.now();
  gptqFactor(H, n, { ops });
  return (performance.now() - t0) / 1000;
}

const BATCH = 128;

/** Seconds for every lazy update of one column loop over w [rows, cols]. */
function updateSeconds(rows: number, cols: number, ops?: Ops): number {
  const rng = Rng.fromSeed(rows + cols);
  const W = Float64Array.from({ length: rows * cols }, () => rng.float() - 0.5);
  const Err1 = Float64Array.from({ length: rows * BATCH }, () => rng.float() - 0.5);
  const Hinv = Float64Array.from({ length: cols * cols }, () => (rng.float() - 0.5) / cols);
  const update = ops?.gptqLazyUpdate ?? lazyUpdate;
  const t0 = performance.now();
  for (let i1 = 0; i1 + BATCH < cols; i1 += BATCH) update(W, Err1, Hinv, rows, cols, BATCH, i1, BATCH, i1 + BATCH);
  return (performance.now() - t0) / 1000;
}

async function run(): Promise<void> {
  const widths = (process.env.INVARX_BENCH_FACTOR_N ?? DEFAULT_WIDTHS.join(',')).split(',').map(Number);
  const one = createWasmBackend({ threads: 1 });
  const two = createWasmBackend({ threads: 2 });
  const perWidth = new Map<number, { core: number; wasm2: number }>();
  for (const n of widths) {
    note(`factor: ${n} columns`);
    const H = hessianLike(n, two);
    // once each first: kernels compiled, helpers started, the arena grown to this size (a run reuses it layer after layer)
    seconds(H, n, one);
    seconds(H, n, two);
    const wasm1 = seconds(H, n, one);
    const wasm2 = seconds(H, n, two);
    const core = seconds(H, n);
    perWidth.set(n, { core, wasm2 });
    emit({ figure: 'gptq_factor_seconds', n, core: round(core), wasm_1_thread: round(wasm1), wasm_2_threads: round(wasm2), speedup_2_threads: round(core / wasm2, 2) });
  }
  for (const [shape, [d, ffn]] of Object.entries(LAYERS)) {
    const a = perWidth.get(d), b = perWidth.get(ffn);
    if (!a || !b) continue;
    emit({ figure: 'gptq_factor_seconds_per_layer', shape, core: round(3 * a.core + b.core), wasm_2_threads: round(3 * a.wasm2 + b.wasm2) });
  }
  for (const [shape, [d, ffn]] of Object.entries(LAYERS)) {
    if (!widths.includes(ffn)) continue;
    note(`lazy update: ${d} × ${ffn}`);
    const core = updateSeconds(d, ffn);
    const wasm1 = updateSeconds(d, ffn, one);
    const wasm2 = updateSeconds(d, ffn, two);
    emit({ figure: 'gptq_lazy_update_seconds', shape, linear: 'w2', rows: d, cols: ffn, core: round(core), wasm_1_thread: round(wasm1), wasm_2_threads: round(wasm2), speedup_2_threads: round(core / wasm2, 2) });
  }
  one.dispose?.();
  two.dispose?.();
}

export const factorBench: BenchModule = { name: 'factor', byNameOnly: true, run };
