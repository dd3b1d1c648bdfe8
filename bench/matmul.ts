/**
 * fp32 matmul GFLOP/s, y[M, N] = x[M, K] · w[N, K]ᵀ, per backend and thread count, with
 * NumPy/OpenBLAS measured in the same run (interleaved shape by shape, since the machine
 * may be shared) and the ratio to it; and at a decode step's shapes, with the weight
 * pinned (packed once) and not, and pinned on the native kernel where it is built
 * (kernels/native). Times are the best of several repetitions.
 */
import os from 'node:os';
import { Rng } from '../core/rng';
import type { Backend } from '../kernels/backend';
import { createJsBackend } from '../kernels/js';
import { createWasmBackend, type WasmBackend } from '../kernels/wasm/backend';
import { createGpuBackend, probeGpu } from '../kernels/gpu';
import { chooseBackend } from '../kernels/registry';
import { bestMs, emit, note, type BenchModule } from './emit';
import { numpyMatmul, type NumpyResult } from './numpy';

type Shape = [M: number, K: number, N: number];

/** The figures of issue 6. */
const SHAPES: Shape[] = [[1024, 1024, 1024], [4096, 768, 288], [2048, 512, 1536]];
/** What one search candidate multiplies on the shipped model (4096 calibration rows, dim 64, hidden 172). */
const SEARCH_SHAPES: Shape[] = [[4096, 64, 172], [4096, 172, 64]];

/** A batched decode step's products at the 110M shape (32 rows; the FFN, wo/w2 and the classifier): weights pinned or not. */
const DECODE_SHAPES: Shape[] = [[32, 768, 2048], [32, 2048, 768], [32, 768, 32000]];

/** Alternating rounds of NumPy and wasm per shape (see run). */
const ROUNDS = 3;

const shapeName = ([M, K, N]: Shape) => `${M}x${K}x${N}`;
const gflops = ([M, K, N]: Shape, ms: number) => (2 * M * K * N) / (ms * 1e6);
const round = (v: number, d = 2) => Math.round(v * 10 ** d) / 10 ** d;

const operandCache = new Map<string, { x: Float32Array; w: Float32Array; y: Float32Array }>();

function operands(shape: Shape) {
  const hit = operandCache.get(shapeName(shape));
  if (hit) return hit;
  const [M, K, N] = shape;
  const rng = Rng.fromSeed(M * 31 + K * 7 + N);
  const x = new Float32Array(M * K);
  const w = new Float32Array(N * K);
  for (let i = 0; i < x.length; i++) x[i] = rng.float() * 2 - 1;
  for (let i = 0; i < w.length; i++) w[i] = rng.float() * 2 - 1;
  const ops = { x, w, y: new Float32Array(M * N) };
  operandCache.set(shapeName(shape), ops);
  return ops;
}

function time(b: Backend, shape: Shape, minReps: number, budgetMs: number) {
  const [M, K, N] = shape;
  const { x, w, y } = operands(shape);
  const { ms, reps } = bestMs(() => b.matmulT(y, x, w, M, K, N), minReps, budgetMs);
  return { gflops: round(gflops(shape, ms)), best_ms: round(ms, 3), reps };
}

function numpyLine(shape: Shape, threads: number, r: NumpyResult): number | null {
  const base = { figure: 'matmul_gflops', baseline: 'numpy', shape: shapeName(shape), threads };
  if (!r.available) {
    emit({ ...base, available: false, reason: r.reason });
    return null;
  }
  const g = round(gflops(shape, r.best_ms));
  emit({ ...base, available: true, gflops: g, best_ms: round(r.best_ms, 3), reps: r.reps, numpy: r.numpy, blas: r.blas });
  return g;
}

export const matmulBench: BenchModule = {
  name: 'matmul',
  run() {
    note(`matmul: best of several repetitions per figure; ${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} (shared machines make figures noisy)`);
    const probe = probeGpu();
    const choice = chooseBackend();
    emit({ figure: 'gpu_probe', ...probe, chosen: choice.name, choice_reason: choice.reason });

    // the wasm kernel's own figures: without kernels/native, which would take these products
    const wasm1 = createWasmBackend({ threads: 1, native: false });
    const wasm2 = createWasmBackend({ threads: 2, native: false });
    const nat = [createWasmBackend({ threads: 1 }), createWasmBackend({ threads: 2 })];
    const js = createJsBackend();
    const gpu = probe.available ? createGpuBackend() : null;
    const fused = wasm1.fused;
    let numpyMissing = false;

    for (const shape of SHAPES) {
      // NumPy and ours alternate over a few rounds, and each keeps its best: a busy
      // neighbour on a shared machine then rarely spoils every round of one of them
      const np: Record<number, NumpyResult> = {};
      const ours: Record<number, ReturnType<typeof time>> = {};
      for (let round = 0; round < ROUNDS; round++) {
        for (const t of [2, 1]) {
          if (!numpyMissing) {
            const r = numpyMatmul(...shape, t, 0.5);
            if (!r.available) numpyMissing = true;
            const prev = np[t];
            if (!prev || !prev.available || (r.available && r.best_ms < prev.best_ms)) np[t] = r;
          }
          const m = time(t === 1 ? wasm1 : wasm2, shape, 4, 500);
          if (!ours[t] || m.best_ms < ours[t].best_ms) ours[t] = { ...m, reps: m.reps + (ours[t]?.reps ?? 0) };
          else ours[t].reps += m.reps;
        }
      }
      const npG: Record<number, number | null> = {};
      for (const t of [1, 2]) npG[t] = numpyLine(shape, t, np[t] ?? { available: false, reason: 'numpy unavailable' });
      for (const t of [1, 2]) {
        emit({
          figure: 'matmul_gflops', backend: 'wasm', threads: t, shape: shapeName(shape), ...ours[t], fused_madd: fused,
          vs_numpy: npG[2] ? round(ours[t].gflops / npG[2], 3) : null,
          vs_numpy_same_threads: npG[t] ? round(ours[t].gflops / npG[t]!, 3) : null,
        });
      }
      if (gpu) {
        // llvmpipe runs ~1 GFLOP/s: one timed repetition after the warm-up
        const m = time(gpu, shape, 1, 0);
        emit({
          figure: 'matmul_gflops', backend: 'gpu', threads: 1, shape: shapeName(shape), ...m, renderer: probe.renderer,
          software: probe.software, vs_numpy: npG[2] ? round(m.gflops / npG[2], 4) : null,
        });
      }
    }
    if (!gpu) emit({ figure: 'matmul_gflops', backend: 'gpu', available: false, reason: probe.reason });

    // plain TypeScript is ~1–2 GFLOP/s: the first shape only (all three take ~20 s more)
    const m = time(js, SHAPES[0], 2, 0);
    emit({
      figure: 'matmul_gflops', backend: 'js', threads: 1, shape: shapeName(SHAPES[0]), ...m,
      note: `js measured on ${shapeName(SHAPES[0])} only (too slow for the other shapes)`,
    });

    for (const shape of SEARCH_SHAPES) {
      for (const [b, threads] of [[js, 1], [wasm1, 1]] as const) {
        emit({ figure: 'matmul_gflops', backend: b.name, threads, shape: shapeName(shape), tag: 'search-shape', ...time(b, shape, 5, 700) });
      }
    }
    // what pinning saves (core/ops.ts's Ops.pin): the copy and re-pack of w on every call;
    // and, where kernels/native is built, pinned weights' products on it (the same bits)
    for (const shape of DECODE_SHAPES) {
      const [M, K, N] = shape;
      const { x, w, y } = operands(shape);
      for (const threads of [1, 2]) {
        const b = threads === 1 ? wasm1 : wasm2;
        const onNative = nat[threads - 1];
        const copied = bestMs(() => b.matmulT(y, x, w, M, K, N), 4, 400);
        const pinnedMs = (on: WasmBackend) => {
          const pin = on.pin([w]);
          try {
            return bestMs(() => on.matmulT(y, x, w, M, K, N), 4, 400).ms;
          } finally {
            pin.release();
          }
        };
        const pinned = pinnedMs(b);
        const native = onNative.native ? pinnedMs(onNative) : null;
        emit({
          figure: 'matmul_gflops', backend: 'wasm', threads, shape: shapeName(shape), tag: 'decode-shape',
          gflops: round(gflops(shape, copied.ms)), gflops_pinned: round(gflops(shape, pinned)),
          best_ms: round(copied.ms, 3), best_ms_pinned: round(pinned, 3),
          gflops_pinned_native: native === null ? null : round(gflops(shape, native)),
          native_vs_wasm_pinned: native === null ? null : round(pinned / native, 2),
        });
      }
    }
    for (const b of [wasm1, wasm2, ...nat]) b.dispose?.();
    gpu?.dispose?.();
  },
};
