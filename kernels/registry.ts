/**
 * Backends registered by name (after tfjs-core's kernel registry): 'js', 'wasm', 'gpu'.
 * Callers ask for one by name or take `bestBackend()`; the search and the forward pass
 * get their Ops from here, never from a hard-coded backend.
 *
 * The choice: INVARX_BACKEND=<name> if set; else gpu only when the startup probe finds
 * a hardware GL renderer AND it measures faster than wasm on a mid-size matmul; else
 * wasm. A software renderer (llvmpipe under xvfb) or gpu.js's silent CPU fallback never
 * counts as a GPU. The wasm backend's thread count: defaultWasmThreads.
 */
import os from 'node:os';
import { isMainThread } from 'node:worker_threads';
import type { Backend } from './backend';
import { createGpuBackend, probeGpu, type GpuProbe } from './gpu';
import { createJsBackend } from './js';
import { createWasmBackend } from './wasm/backend';

export type BackendFactory = () => Backend;

const factories = new Map<string, BackendFactory>();
const instances = new Map<string, Backend>();

/** Registers (or replaces) a backend under `name`; it is created on first use. */
export function registerBackend(name: string, factory: BackendFactory): void {
  factories.set(name, factory);
  instances.get(name)?.dispose?.();
  instances.delete(name);
}

/** Names of the registered backends, in registration order. */
export function backendNames(): string[] {
  return [...factories.keys()];
}

/** The backend registered as `name` (one instance per process), or the best one when omitted. */
export function getBackend(name?: string): Backend {
  const chosen = name ?? chooseBackend().name;
  let b = instances.get(chosen);
  if (b) return b;
  const factory = factories.get(chosen);
  if (!factory) throw new Error(`unknown backend '${chosen}' (registered: ${backendNames().join(', ')})`);
  b = factory();
  instances.set(chosen, b);
  return b;
}

/**
 * A new instance of the best backend, not shared: for a phase whose working memory (a
 * wasm backend's memory only grows) should go when the phase ends. The caller disposes it.
 */
export function freshBackend(): Backend {
  return factories.get(chooseBackend().name)!();
}

export interface BackendChoice {
  name: string;
  /** One sentence on why. */
  reason: string;
  /** What the GPU probe found (absent when INVARX_BACKEND decided). */
  probe?: GpuProbe;
  /** GFLOP/s of the timing matmul, when gpu and wasm were measured against each other. */
  measured?: { gpu: number; wasm: number };
}

let choice: BackendChoice | undefined;

/** Decides (once per process) which backend `getBackend()` gives. */
export function chooseBackend(): BackendChoice {
  choice ??= decide();
  return choice;
}

/** The backend `chooseBackend` picked. */
export function bestBackend(): Backend {
  return getBackend(chooseBackend().name);
}

function decide(): BackendChoice {
  const forced = process.env.INVARX_BACKEND;
  if (forced) {
    if (!factories.has(forced)) throw new Error(`INVARX_BACKEND=${forced}: unknown backend (registered: ${backendNames().join(', ')})`);
    return { name: forced, reason: 'INVARX_BACKEND' };
  }
  const probe = probeGpu();
  if (!probe.available) return { name: 'wasm', reason: `no GPU: ${probe.reason}`, probe };
  if (probe.software) return { name: 'wasm', reason: `GL renderer is software: ${probe.renderer}`, probe };
  const measured = { gpu: timeMatmul(getBackend('gpu')), wasm: timeMatmul(getBackend('wasm')) };
  return measured.gpu > measured.wasm
    ? { name: 'gpu', reason: `hardware GL (${probe.renderer}) measured faster than wasm`, probe, measured }
    : { name: 'wasm', reason: `hardware GL (${probe.renderer}) measured slower than wasm`, probe, measured };
}

/**
 * Threads the registered wasm backend splits a large matmul over (results do not depend on
 * it): INVARX_WASM_THREADS when set; else one per core on the main thread, where the big
 * products of sampling, calibration and evaluation run one at a time; one in worker threads,
 * such as the search's candidate workers, which already use a core each.
 */
export function defaultWasmThreads(): number {
  const v = process.env.INVARX_WASM_THREADS;
  if (v !== undefined && v !== '') {
    const n = Number(v);
    if (!(Number.isInteger(n) && n >= 1 && n <= 64)) throw new Error(`INVARX_WASM_THREADS must be an integer from 1 to 64, got ${v}`);
    return n;
  }
  return isMainThread ? Math.min(64, os.availableParallelism()) : 1;
}

/** GFLOP/s of a 512×512×512 matmul, best of 3 after a warm-up. */
function timeMatmul(b: Backend): number {
  const n = 512;
  const x = new Float32Array(n * n).fill(0.5);
  const w = new Float32Array(n * n).fill(0.25);
  const y = new Float32Array(n * n);
  b.matmulT(y, x, w, n, n, n);
  let best = Infinity;
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    b.matmulT(y, x, w, n, n, n);
    best = Math.min(best, performance.now() - t0);
  }
  return (2 * n * n * n) / (best * 1e6);
}

registerBackend('js', createJsBackend);
registerBackend('wasm', () => createWasmBackend({ threads: defaultWasmThreads() }));
registerBackend('gpu', createGpuBackend);
