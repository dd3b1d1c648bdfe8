/**
 * The native kernels (built by scripts/setup.sh and .ci/run with node-gyp for the machine
 * they run on): the product (matmul.c), the wasm kernel's matmul_t arithmetic, and the decode
 * attention over KV caches (attend.c), runAttend's, so the same bits, at the machine's full
 * vector width (AVX-512: about twice what WebAssembly's 128-bit SIMD reaches here). The wasm
 * backend hands them every product past a few rows and, reading its values laid out by
 * position, the decode attention (kernels/wasm/backend.ts). Absent (not built, not loadable,
 * or INVARX_NATIVE=0), the wasm backend computes everything itself; so it does where the
 * build is not vectorized.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { F32 } from '../../core/model/types';
import type { Pinned } from '../../core/ops';
import { PinTable } from '../pinTable';

export interface NativeKernels {
  /** Built with AVX-512 (else a scalar loop: correct, not faster than wasm). */
  vectorized: boolean;
  /** Floats of w [N, K] packed. */
  packedLength(N: number, K: number): number;
  pack(w: F32, N: number, K: number, kcMax: number, out: F32, threads: number): void;
  matmulT(y: F32, x: F32, wp: F32, n: number, K: number, N: number, kcMax: number, beta: boolean, fused: boolean, threads: number): void;
  /**
   * The wasm backend's attendCached (kernels/wasm/threadJobs.ts's runAttend), reading the
   * caches in place: rows holds (sequence, position) pairs; `packed` takes matmul_t's order
   * (more than DOT_MAX_ROWS query heads per KV head), else dot_t's.
   */
  attendCached(
    ctx: F32, q: F32, keys: F32, values: F32, rows: Int32Array, n: number, nKvHeads: number, group: number, headDim: number,
    capacity: number, kcMax: number, packed: boolean, scale: number, fused: boolean, threads: number,
  ): void;
}

const ADDON = join('kernels', 'native', 'build', 'Release', 'invarx_native.node');

/** The package root: the nearest folder above this module (source or bundle) holding package.json. */
function packageRoot(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

/** The built addon, vectorized or not (null: not built, not loadable, or INVARX_NATIVE=0). */
export function loadNativeAddon(): NativeKernels | null {
  if (process.env.INVARX_NATIVE === '0') return null;
  const root = packageRoot();
  if (root === null || !existsSync(join(root, ADDON))) return null;
  try {
    return createRequire(import.meta.url)(join(root, ADDON)) as NativeKernels;
  } catch {
    return null;
  }
}

/** The addon when it is built and vectorized, else null. */
export const nativeKernels: NativeKernels | null = ((k) => (k?.vectorized ? k : null))(loadNativeAddon());

interface Copy {
  K: number;
  N: number;
  packed: F32;
}

/**
 * Native packed copies of pinned weights, made on first use per shape and released with the
 * last pin on their array (as kernels/wasm/resident.ts does for the arena's copies). Past
 * `cap` bytes no copy is made: the product then runs in wasm. A released copy's array is
 * kept for the next copy of its length (the next block's weight of the same shape), so a
 * pass over a big model's blocks reuses one block's arrays instead of leaving each to the
 * garbage collector.
 */
export class NativePins {
  private readonly table = new PinTable<Copy>((copies) => {
    for (const c of copies) {
      this.bytes -= c.packed.byteLength;
      this.spare.push(c.packed);
    }
    // spares only up to the cap: the rest goes to the garbage collector
    let kept = this.bytes;
    this.spare = this.spare.filter((a) => (kept += a.byteLength) <= this.cap);
  });
  private spare: F32[] = [];
  bytes = 0;

  constructor(private readonly k: NativeKernels, private readonly kcMax: number, private readonly cap: number) {}

  pin(weights: readonly F32[]): Pinned {
    return this.table.pin(weights);
  }

  /** w [N, K] packed (on `threads` threads the first time), when w is pinned and its copy fits under the cap; else null. */
  packed(w: F32, K: number, N: number, threads: number): F32 | null {
    const copies = this.table.copies(w);
    if (!copies) return null;
    for (const c of copies) if (c.K === K && c.N === N) return c.packed;
    const floats = this.k.packedLength(N, K);
    if (this.bytes + 4 * floats > this.cap) return null;
    const i = this.spare.findIndex((a) => a.length === floats);
    const packed = i >= 0 ? this.spare.splice(i, 1)[0] : new Float32Array(floats);
    this.k.pack(w, N, K, this.kcMax, packed, threads);
    copies.push({ K, N, packed });
    this.bytes += packed.byteLength;
    return packed;
  }

  /** Drops the spare arrays (the backend is disposed). */
  clear(): void {
    this.spare = [];
  }
}

/** What a wasm backend keeps for its native products: pinned weights' copies and one grow-only array for packing the others per call. */
export function nativeProducts(k: NativeKernels, kcMax: number, cap: number) {
  const pins = new NativePins(k, kcMax, cap);
  let scratch = new Float32Array(0);
  return {
    k,
    pins,
    /** An array of at least `floats`, reused by the next call. */
    scratch(floats: number): F32 {
      if (scratch.length < floats) scratch = new Float32Array(floats);
      return scratch.length === floats ? scratch : scratch.subarray(0, floats);
    },
    clear(): void {
      pins.clear();
      scratch = new Float32Array(0);
    },
  };
}
