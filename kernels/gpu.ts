/**
 * gpu.js backend: matmulT as a WebGL fragment-shader kernel in single precision, on one
 * headless GL context per process (the `gl` package). Quantize-dequantize and the loss
 * need float64 and are memory-bound, so they run on the CPU through the wasm backend.
 *
 * gpu.js falls back to its CPU mode silently when no GL context can be made, so
 * `probeGpu` creates the context itself and reports what really ran: the kernel class
 * gpu.js picked and the renderer string of the native GL driver (headless-gl masks
 * gl.getParameter(RENDERER) as "ANGLE"; the unmasked string comes from the native
 * context underneath). On a machine without a display it finds no context; under
 * `xvfb-run -a` it finds Mesa's llvmpipe, a software rasterizer.
 *
 * Shapes are compiled in: the inner dimension is a kernel constant, so the shader loop
 * has a constant bound (a bound read from a runtime argument is cut off silently at
 * gpu.js's loopMaxIterations) and the output size is fixed per kernel. Kernels are
 * cached per (n, in, out).
 */
import { createRequire } from 'node:module';
import type { F32 } from '../core/model/types';
import type { Backend } from './backend';
import { checkMatmulT } from './check';
import { createWasmBackend } from './wasm/backend';

const require = createRequire(import.meta.url);

export interface GpuProbe {
  /** A GL context exists and a gpu.js kernel ran on it and gave the right answer. */
  available: boolean;
  /** The gpu.js kernel class that ran (HeadlessGLKernel on a GL context), or 'none'. */
  mode: string;
  /** The native GL renderer string, e.g. "ANGLE (Mesa/X.org llvmpipe (LLVM 15.0.6, 256 bits) OpenGL 4.5 core)". */
  renderer: string | null;
  /** The renderer is a software rasterizer (llvmpipe, softpipe, SwiftShader, …). */
  software: boolean;
  /** One sentence: what was found, or why nothing was. */
  reason: string;
}

/* The loose shapes of the two untyped packages this file uses. */
interface GlContext {
  getParameter(p: number): unknown;
  getExtension(name: string): Record<string, number> | null;
  RENDERER: number;
}
interface GpuKernel {
  (...args: unknown[]): unknown;
  destroy(removeCanvasReference?: boolean): void;
}
interface GpuJs {
  Kernel: { name: string } | null;
  createKernel(source: string, settings: Record<string, unknown>): GpuKernel;
}
interface GpuJsModule {
  GPU: new (settings: Record<string, unknown>) => GpuJs;
  input(value: F32, size: number[]): unknown;
}

const SOFTWARE_RENDERER = /llvmpipe|softpipe|swrast|swiftshader|lavapipe|software/i;

interface GlState {
  gl: GlContext | null;
  gpu: GpuJs | null;
  lib: GpuJsModule | null;
  probe: GpuProbe;
}
let state: GlState | undefined;

/** The renderer the driver reports, past headless-gl's "ANGLE" mask. */
function rendererOf(gl: GlContext): string | null {
  const dbg = gl.getExtension('WEBGL_debug_renderer_info');
  if (dbg) {
    const r = gl.getParameter(dbg.UNMASKED_RENDERER_WEBGL);
    if (typeof r === 'string') return r;
  }
  // headless-gl: the JS class overrides getParameter; its native base class answers truly
  let proto = Object.getPrototypeOf(gl);
  while (proto && !Object.prototype.hasOwnProperty.call(proto, 'getParameter')) proto = Object.getPrototypeOf(proto);
  const base = proto && Object.getPrototypeOf(proto);
  if (base && typeof base.getParameter === 'function') {
    try {
      const r = base.getParameter.call(gl, gl.RENDERER);
      if (typeof r === 'string') return r;
    } catch {
      /* fall through */
    }
  }
  const r = gl.getParameter(gl.RENDERER);
  return typeof r === 'string' ? r : null;
}

function initGl(): GlState {
  const none = (reason: string, renderer: string | null = null, mode = 'none'): GlState => ({
    gl: null, gpu: null, lib: null, probe: { available: false, mode, renderer, software: false, reason },
  });
  let gl: GlContext | null;
  try {
    // 'gl' is gpu.js's dependency, not ours: resolve it from gpu.js
    const createGl = createRequire(require.resolve('gpu.js'))('gl') as (w: number, h: number, opts?: object) => GlContext | null;
    gl = createGl(1, 1, { preserveDrawingBuffer: false });
  } catch (e) {
    return none(`the 'gl' package did not load (${(e as Error).message.split('\n')[0]})`);
  }
  if (!gl) return none('no GL context could be created (no display: run under `xvfb-run -a`)');
  const renderer = rendererOf(gl);
  let lib: GpuJsModule;
  let gpu: GpuJs;
  try {
    lib = require('gpu.js') as GpuJsModule;
    gpu = new lib.GPU({ mode: 'headlessgl', context: gl });
  } catch (e) {
    return none(`gpu.js refused the GL context (${(e as Error).message})`, renderer);
  }
  const mode = gpu.Kernel?.name ?? 'none';
  // a 2×3 · (2×3)ᵀ product with a known answer: proves the shader path, not just the context
  try {
    const k = gpu.createKernel(MATMUL_T_SOURCE, { output: [2, 2], constants: { K: 3 }, precision: 'single', tactic: 'precision' });
    const rows = k(lib.input(Float32Array.from([1, 2, 3, 4, 5, 6]), [3, 2]), lib.input(Float32Array.from([1, 0, 1, 0, 1, 0]), [3, 2])) as F32[];
    k.destroy();
    const got = [rows[0][0], rows[0][1], rows[1][0], rows[1][1]];
    if (got.join() !== '4,2,10,5') return none(`a test kernel gave ${got.join()} instead of 4,2,10,5`, renderer, mode);
  } catch (e) {
    return none(`a test kernel failed (${(e as Error).message.split('\n')[0]})`, renderer, mode);
  }
  const software = renderer !== null && SOFTWARE_RENDERER.test(renderer);
  return {
    gl, gpu, lib,
    probe: {
      available: mode !== 'CPUKernel',
      mode,
      renderer,
      software,
      reason: `${mode} on ${renderer ?? 'an unknown renderer'}${software ? ' (software rasterizer)' : ''}`,
    },
  };
}

/** What a gpu.js backend would run on here; creates the process's GL context on first call. */
export function probeGpu(): GpuProbe {
  state ??= initGl();
  return state.probe;
}

/**
 * y[thread.y][thread.x] = Σ_k x[thread.y][k] · w[thread.x][k] — one output per fragment.
 * Kept as source text: gpu.js parses the function's text, which must not go through
 * TypeScript or bundler rewriting.
 */
const MATMUL_T_SOURCE = `function matmulT(x, w) {
  let s = 0;
  for (let k = 0; k < this.constants.K; k++) {
    s += x[this.thread.y][k] * w[this.thread.x][k];
  }
  return s;
}`;

/** Kernels kept per shape; the oldest are destroyed beyond this. */
const MAX_KERNELS = 32;

export function createGpuBackend(): Backend {
  const st = (state ??= initGl());
  if (!st.probe.available || !st.gpu || !st.lib) throw new Error(`gpu backend unavailable: ${st.probe.reason}`);
  const gpu = st.gpu;
  const lib = st.lib;
  const kernels = new Map<string, GpuKernel>();
  const cpu = createWasmBackend();

  function kernelFor(n: number, K: number, N: number): GpuKernel {
    const key = `${n}x${K}x${N}`;
    let k = kernels.get(key);
    if (k) {
      kernels.delete(key); // re-insert: Map order is the eviction order
    } else {
      k = gpu.createKernel(MATMUL_T_SOURCE, { output: [N, n], constants: { K }, precision: 'single', tactic: 'precision' });
      if (kernels.size >= MAX_KERNELS) {
        const [oldKey, old] = kernels.entries().next().value as [string, GpuKernel];
        kernels.delete(oldKey);
        old.destroy();
      }
    }
    kernels.set(key, k);
    return k;
  }

  function matmulT(y: F32, x: F32, w: F32, n: number, K: number, N: number, accumulate = false): void {
    checkMatmulT(y, x, w, n, K, N);
    if (n === 0 || N === 0) return;
    if (K === 0) {
      if (!accumulate) y.fill(0, 0, n * N);
      return;
    }
    const k = kernelFor(n, K, N);
    const rows = k(lib.input(x.subarray(0, n * K), [K, n]), lib.input(w.subarray(0, N * K), [K, N])) as F32[];
    for (let r = 0; r < n; r++) {
      const row = rows[r];
      const o = r * N;
      if (accumulate) for (let j = 0; j < N; j++) y[o + j] += row[j];
      else y.set(row.length === N ? row : row.subarray(0, N), o);
    }
  }

  return {
    name: 'gpu',
    matmulT,
    quantDequant: cpu.quantDequant,
    sqErr: cpu.sqErr,
    dispose() {
      for (const k of kernels.values()) k.destroy();
      kernels.clear();
      cpu.dispose?.();
    },
  };
}
