/**
 * fp32 matmul GFLOP/s, y[M, N] = x[M, K] · w[N, K]ᵀ, per backend and thread count, with
 * NumPy/OpenBLAS measured in the same run (interleaved shape by shape, since the machine
 * may be shared) and the ratio to it. Times are the best of several repetitions.
 */
import os from 'node:os';
import { Rng } from '../core/rng';
import type { Backend } from '../kernels/backend';
import { createJsBackend } from '../kernels/js';
import { createWasmBackend } from '../kernels/wasm/backend';
import { createGpuBackend, probeGpu } from '../kernels/gpu';
import { chooseBackend } from '../kernels/registry';
import { bestMs, emit, note, type BenchModule } from './emit';
import { numpyMatmul, type NumpyResult } from './numpy';

type Shape = [M: number, K: number, N: number];

/** The figures of issue 6. */
const SHAPES: Shape[] = [[1024, 1024, 1024], [4096, 768, 288], [2048, 512, 1536]];
/** What one search candidate multiplies on the shipped model (4096 calibration rows, dim 64, hidden 172). */
const SEARCH_SHAPES: Shape[] = [[4096, 64, 172], [4096, 172, 64]];

const shapeName = ([M, K, N]: Shape) => `${M}x${K}x${N}`;
const gflops = ([M, K, N]: Shape, ms: number) => (2 * M * K * N) / (ms * 1e6);
const round = (v: number, d = 2) => Math.round(v * 10 ** d) / 10 ** d;

function operands([M, K, N]: Shape) {
  const rng = Rng.fromSeed(M * 31 + K * 7 + N);
  const x = new Float32Array(M * K);
  const w = new Float32Array(N * K);
  for (let i = 0; i < x.length; i++) x[i] = rng.float() * 2 - 1;
  for (let i = 0; i < w.length; i++) w[i] = rng.float() * 2 - 1;
  return { x, w, y: new Float32Array(M * N) };
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

    const wasm1 = createWasmBackend({ threads: 1 });
    const wasm2 = createWasmBackend({ threads: 2 });
    const js = createJsBackend();
    const gpu = probe.available ? createGpuBackend() : null;
    const fused = wasm1.fused;
    let numpyMissing = false;

    for (const shape of SHAPES) {
      // NumPy first, then ours, shape by shape: a busy neighbour hurts both alike
      const np: Record<number, number | null> = {};
      for (const t of [1, 2]) {
        const r = numpyMissing ? ({ available: false, reason: 'numpy unavailable' } as const) : numpyMatmul(...shape, t);
        if (!r.available) numpyMissing = true;
        np[t] = numpyLine(shape, t, r);
      }
      for (const [b, threads] of [[wasm1, 1], [wasm2, 2]] as const) {
        const m = time(b, shape, 8, 1500);
        emit({
          figure: 'matmul_gflops', backend: 'wasm', threads, shape: shapeName(shape), ...m, fused_madd: fused,
          vs_numpy: np[2] ? round(m.gflops / np[2], 3) : null,
          vs_numpy_same_threads: np[threads] ? round(m.gflops / np[threads]!, 3) : null,
        });
      }
      if (gpu) {
        const m = time(gpu, shape, 2, 0);
        emit({
          figure: 'matmul_gflops', backend: 'gpu', threads: 1, shape: shapeName(shape), ...m, renderer: probe.renderer,
          software: probe.software, vs_numpy: np[2] ? round(m.gflops / np[2], 4) : null,
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
    wasm1.dispose?.();
    wasm2.dispose?.();
    gpu?.dispose?.();
  },
};
