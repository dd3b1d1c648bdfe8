/**
 * Helper threads for a multi-threaded wasm matmul: each worker_thread instantiates the
 * kernels against the same shared WebAssembly.Memory, and all threads (the caller
 * included) take chunks of rows of y from a shared counter until none are left.
 * Grabbing chunks rather than fixed halves keeps both cores busy when one of them is
 * also running something else (machines here are shared); which thread computes a row
 * never changes its value, so results are bit-identical for any thread count.
 *
 * Hand-off is through Atomics on control words at the bottom of that memory, not
 * postMessage, so a call stays synchronous (the caller blocks in Atomics.wait once its
 * own chunks are done) and costs microseconds. The worker source is a string evaluated
 * in the thread, so it works the same from the TypeScript sources and from the esbuild
 * bundle in dist/, with no worker file to locate; it holds the very loops this thread
 * runs (their source text), so the two cannot drift apart.
 */
import { Worker } from 'node:worker_threads';
import type { WasmMemory, WasmModule } from './api';
import type { KernelExports } from './module';

/** Int32 words per thread in the control block; thread t (helpers 1…) owns words [t·CTL_STRIDE, +CTL_STRIDE). */
export const CTL_STRIDE = 32;
const MAX_THREADS = 64;
/** Bytes at the bottom of the memory reserved for control words. */
export const CTL_BYTES = CTL_STRIDE * MAX_THREADS * 4;
/** Per-thread slots: GEN (bumped by the caller per job), DONE (set to GEN when finished), STATUS, OP, then the job. */
const GEN = 0, DONE = 1, STATUS = 2, OP = 3, ARGS = 4;
const OP_QUIT = 0, OP_MATMUL = 1, OP_HESSIAN = 2, OP_TILES = 3, OP_ATTEND = 4;
/** STATUS values. */
const READY = 1, FAILED = -1;
/** The shared next-chunk counter lives in thread 0's (the caller's) otherwise unused slots. */
const COUNTER = 1;

/** A chunked matmul: matmul_t over rows [c·chunk, min((c+1)·chunk, rows)) for each chunk c taken. */
export interface MatmulJob {
  x: number;
  wp: number;
  y: number;
  rows: number;
  K: number;
  N: number;
  kcMax: number;
  beta: number;
  /** Rows per chunk, a multiple of 4. */
  chunk: number;
  /** Byte offset of a 128-byte scratch tile per thread (thread t at + 128·t). */
  scratch: number;
}

/**
 * The loop every thread runs (the workers run its source text: it may use only its
 * arguments and globals). Returns the first rows of the chunks this thread computed.
 */
function runChunks(k: KernelExports, ctl: Int32Array, counter: number, a: number[], t: number): number[] {
  const [x, wp, y, rows, K, N, kcMax, beta, chunk, scratch] = a;
  const mine: number[] = [];
  for (;;) {
    const r0 = Atomics.add(ctl, counter, 1) * chunk;
    if (r0 >= rows) return mine;
    k.matmul_t(x, wp, y, r0, Math.min(r0 + chunk, rows), K, N, kcMax, beta, scratch + 128 * t);
    mine.push(r0);
  }
}

/**
 * A chunked Hessian: lines [c·chunk, min((c+1)·chunk, cols)) of the running sums for each
 * chunk c taken, each line over every segment and row block in order (as the one-thread
 * loop takes them), so a line's bits do not depend on which thread summed it.
 */
export interface HessianJob {
  /** x row-major [N, ld] float32; the sums: line a at acc + 8·a·ld, float64. */
  x: number;
  ld: number;
  cols: number;
  acc: number;
  /** Float64 table of `segments` rows (r0, r1, decay, f): core/quant/hessian.ts's Segments. */
  seg: number;
  segments: number;
  /** Rows per block (each block once over a chunk's lines). */
  blockRows: number;
  chunk: number;
}

/** The Hessian loop every thread runs (the workers run its source text: it may use only its arguments and globals). */
function runHessian(k: KernelExports, ctl: Int32Array, counter: number, a: number[], buffer: ArrayBufferLike): void {
  // (pointers past 2 GiB come back from the Int32 control words negative)
  const [x, acc, seg] = [a[0] >>> 0, a[3] >>> 0, a[4] >>> 0];
  const [, ld, cols, , , segments, blockRows, chunk] = a;
  const sg = new Float64Array(buffer, seg, 4 * segments);
  for (;;) {
    const a0 = Atomics.add(ctl, counter, 1) * chunk;
    if (a0 >= cols) return;
    const a1 = Math.min(a0 + chunk, cols);
    for (let s = 0; s < segments; s++) {
      const r0 = sg[4 * s], r1 = sg[4 * s + 1], decay = sg[4 * s + 2], f = sg[4 * s + 3];
      for (let t0 = r0; t0 < r1; t0 += blockRows) {
        const t1 = Math.min(t0 + blockRows, r1);
        const d = t0 === r0 ? decay : 1;
        for (let i = a0; i < a1; i++) k.hess_row(x, ld, t0, t1, f, d, i, i, (cols - i + 15) & ~15, acc + 8 * i * ld);
      }
    }
  }
}

/**
 * Column tiles of a float64 product (kernels.wat gemm_add, for kernels/wasm/cholesky.ts):
 * tiles j0 = j, j + 4, … < j1, one taken at a time. Each tile's rows and k range are
 * fixed or follow the tile (the `TILE_*` flags), so a tile's bits do not depend on which
 * thread computed it.
 */
export interface TileJob {
  /** Byte offsets of C, A and B; C's row length and A's and B's strides (in float64 values, as gemm_add takes them). */
  C: number;
  ldc: number;
  A: number;
  ai: number;
  ak: number;
  B: number;
  bj: number;
  bk: number;
  /** TILE_* flags. */
  flags: number;
  j: number;
  j1: number;
  /** Rows [i0, i1) and k range [k0 = 0, k1), unless a flag ties them to the tile. */
  i0: number;
  i1: number;
  k1: number;
}

/** Rows start at the tile (i0 = j0): the lower triangle. */
export const TILE_ROWS_FROM = 1;
/** Rows end with the tile (i1 = j0 + 4): the upper triangle. */
export const TILE_ROWS_TO = 2;
/** k starts at the tile (k0 = j0): the terms before it are products with zeros. */
export const TILE_K_FROM = 4;

/** The tile loop every thread runs (the workers run its source text: it may use only its arguments). */
function runTiles(k: KernelExports, ctl: Int32Array, counter: number, a: number[]): void {
  const [C, ldc, A, ai, ak, B, bj, bk, flags, j, j1, i0, i1, k1] = a;
  for (;;) {
    const j0 = j + 4 * Atomics.add(ctl, counter, 1);
    if (j0 >= j1) return;
    const r0 = flags & 1 ? j0 : i0;
    const r1 = flags & 2 ? Math.min(j0 + 4, i1) : i1;
    if (r0 < r1) k.gemm_add(C >>> 0, ldc, A >>> 0, ai, ak, B >>> 0, bj, bk, j0, r0, r1, flags & 4 ? j0 : 0, k1);
  }
}

/**
 * Decode attention over resident KV caches (the wasm backend's attendCached): one unit per
 * (row, KV head), taken one at a time; each unit writes only its own heads' context, with
 * the thread's own scratch, so its bits do not depend on which thread ran it.
 */
export interface AttendJob {
  /** Queries and context [n, nHeads·hd] (float32); the caches; (sequence, position) per row (int32 pairs). */
  q: number;
  ctx: number;
  keys: number;
  valuesT: number;
  rows: number;
  n: number;
  nKvHeads: number;
  group: number;
  headDim: number;
  capacity: number;
  kcMax: number;
  /** 1: the group's queries go through packed panels (matmul_t), 0: dot products (dot_t). */
  packed: number;
  /** Thread t's scratch starts at scratch + t·layout.stride (see attendScratch). */
  scratch: number;
  layout: AttendScratch;
}

/** One thread's scratch for an attention job: byte offsets in it of the packed path's operands, and its size. */
export interface AttendScratch {
  xq: number;
  yc: number;
  wp: number;
  tile: number;
  stride: number;
}

/** The scratch layout for `group` query heads per KV head of size hd over spans up to maxS: scores first, then the packed path's operands. */
export function attendScratch(group: number, hd: number, maxS: number): AttendScratch {
  const gPad = (group + 3) & ~3;
  const bytes = (floats: number) => 4 * ((floats + 15) & ~15);
  const span = Math.max(maxS, hd);
  const xq = bytes(gPad * maxS);
  const yc = xq + bytes(gPad * hd);
  const wp = yc + bytes(gPad * hd);
  const tile = wp + bytes(((span + 7) & ~7) * span);
  return { xq, yc, wp, tile, stride: tile + bytes(32) };
}

/** The attention loop every thread runs (the workers run its source text: it may use only its arguments and globals). */
function runAttend(k: KernelExports, ctl: Int32Array, counter: number, a: number[], buffer: ArrayBufferLike, t: number): void {
  const [q, ctx, keys, values, rows] = [a[0] >>> 0, a[1] >>> 0, a[2] >>> 0, a[3] >>> 0, a[4] >>> 0];
  const [, , , , , n, nKv, group, hd, cap, kcMax, packed, scratch, xqAt, ycAt, wpAt, tileAt, stride] = a;
  const gPad = (group + 3) & ~3;
  const att = (scratch >>> 0) + t * stride;
  const [xq, yc, wp, tile] = [att + xqAt, att + ycAt, att + wpAt, att + tileAt];
  const m = new Float32Array(buffer);
  const sp = new Int32Array(buffer, rows, 2 * n);
  const qDim = group * nKv * hd;
  const scale = 1 / Math.sqrt(hd);
  if (packed) m.fill(0, xq >> 2, (xq >> 2) + gPad * hd);
  for (;;) {
    const u = Atomics.add(ctl, counter, 1);
    if (u >= n * nKv) return;
    const r = Math.floor(u / nKv), g = u % nKv;
    const p = sp[2 * r + 1];
    const S = p + 1;
    const base = 4 * (sp[2 * r] * nKv + g) * cap * hd;
    const h0 = 4 * (r * qDim + g * group * hd);
    if (!packed) {
      k.dot_t(q + h0, keys + base, 4 * hd, att, group, hd, S, 0);
      for (let j = 0; j < group; j++) k.softmax_causal(att + 4 * j * S, 1, S, p, scale);
      k.dot_t(att, values + base, 4 * cap, ctx + h0, group, S, hd, 0);
      continue;
    }
    m.copyWithin(xq >> 2, (q + h0) >> 2, ((q + h0) >> 2) + group * hd);
    k.pack_w(keys + base, 4 * hd, S, hd, kcMax, wp);
    k.matmul_t(xq, wp, att, 0, gPad, hd, S, kcMax, 0, tile);
    for (let j = 0; j < group; j++) k.softmax_causal(att + 4 * j * S, 1, S, p, scale);
    // rows past the group were zero queries: their scores are not probabilities, but rows never mix
    k.pack_w(values + base, 4 * cap, hd, S, kcMax, wp);
    k.matmul_t(att, wp, yc, 0, gPad, S, hd, kcMax, 0, tile);
    m.copyWithin((ctx + h0) >> 2, yc >> 2, (yc >> 2) + group * hd);
  }
}

function attendArgs(job: AttendJob): number[] {
  const { xq, yc, wp, tile, stride } = job.layout;
  return [job.q, job.ctx, job.keys, job.valuesT, job.rows, job.n, job.nKvHeads, job.group, job.headDim, job.capacity, job.kcMax, job.packed, job.scratch, xq, yc, wp, tile, stride];
}

/** Runs all of the attention `job` on this thread alone. */
export function runAttendHere(k: KernelExports, job: AttendJob, buffer: ArrayBufferLike): void {
  runAttend(k, new Int32Array(2), 1, attendArgs(job), buffer, 0);
}

/** Runs every tile of `job` on this thread alone (no helpers, no shared counter). */
export function runTilesHere(k: KernelExports, job: TileJob): void {
  runTiles(k, new Int32Array(2), 1, tileArgs(job));
}

function tileArgs(job: TileJob): number[] {
  return [job.C, job.ldc, job.A, job.ai, job.ak, job.B, job.bj, job.bk, job.flags, job.j, job.j1, job.i0, job.i1, job.k1];
}

const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { module, memory, t } = workerData;
const base = t * ${CTL_STRIDE};
const ctl = new Int32Array(memory.buffer, 0, ${CTL_STRIDE * MAX_THREADS});
const runChunks = ${runChunks.toString()};
const runHessian = ${runHessian.toString()};
const runTiles = ${runTiles.toString()};
const runAttend = ${runAttend.toString()};
let k;
try {
  k = new WebAssembly.Instance(module, { env: { memory } }).exports;
  Atomics.store(ctl, base + ${STATUS}, ${READY});
} catch (e) {
  Atomics.store(ctl, base + ${STATUS}, ${FAILED});
  Atomics.store(ctl, base + ${DONE}, -1);
  Atomics.notify(ctl, base + ${DONE});
  throw e;
}
let seen = 0;
for (;;) {
  Atomics.wait(ctl, base + ${GEN}, seen);
  const gen = Atomics.load(ctl, base + ${GEN});
  if (gen === seen) continue;
  seen = gen;
  if (ctl[base + ${OP}] === ${OP_QUIT}) break;
  let status = ${READY};
  try {
    const args = Array.from(ctl.subarray(base + ${ARGS}, base + ${CTL_STRIDE}));
    const op = ctl[base + ${OP}];
    if (op === ${OP_HESSIAN}) runHessian(k, ctl, ${COUNTER}, args, memory.buffer);
    else if (op === ${OP_TILES}) runTiles(k, ctl, ${COUNTER}, args);
    else if (op === ${OP_ATTEND}) runAttend(k, ctl, ${COUNTER}, args, memory.buffer, t);
    else runChunks(k, ctl, ${COUNTER}, args, t);
  } catch (e) {
    status = ${FAILED};
  }
  Atomics.store(ctl, base + ${STATUS}, status);
  Atomics.store(ctl, base + ${DONE}, gen);
  Atomics.notify(ctl, base + ${DONE});
}
`;

export class HelperThreads {
  private readonly workers: Worker[] = [];
  private readonly ctl: Int32Array;
  private gen = 0;

  /** `count` helpers (threads 1…count) on `memory`, which must reserve CTL_BYTES at its bottom. */
  constructor(module: WasmModule, memory: WasmMemory, readonly count: number) {
    if (count + 1 > MAX_THREADS) throw new RangeError(`at most ${MAX_THREADS - 1} helper threads`);
    this.ctl = new Int32Array(memory.buffer, 0, CTL_STRIDE * MAX_THREADS);
    for (let t = 1; t <= count; t++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { module, memory, t } });
      w.unref(); // idle helpers must not keep the process alive
      this.workers.push(w);
    }
  }

  /**
   * Runs `job` on this thread and the first `helpers` helper threads; returns when every
   * chunk is done. `ownDone` gets the first rows of the chunks this thread computed, as
   * soon as it runs out of chunks and before it waits for the helpers, so the caller can
   * copy those rows out while the helpers finish theirs.
   */
  matmul(k: KernelExports, job: MatmulJob, helpers: number, ownDone?: (rowStarts: number[]) => void): void {
    const args = [job.x, job.wp, job.y, job.rows, job.K, job.N, job.kcMax, job.beta, job.chunk, job.scratch];
    this.run(OP_MATMUL, args, helpers, () => ownDone?.(runChunks(k, this.ctl, COUNTER, args, 0)));
  }

  /** Runs the Hessian `job` on this thread and the first `helpers` helper threads; returns when every line is done. */
  hessian(k: KernelExports, job: HessianJob, memory: WasmMemory, helpers: number): void {
    const args = [job.x, job.ld, job.cols, job.acc, job.seg, job.segments, job.blockRows, job.chunk];
    this.run(OP_HESSIAN, args, helpers, () => runHessian(k, this.ctl, COUNTER, args, memory.buffer));
  }

  /** Runs the tile `job` on this thread and the first `helpers` helper threads; returns when every tile is done. */
  tiles(k: KernelExports, job: TileJob, helpers: number): void {
    const args = tileArgs(job);
    this.run(OP_TILES, args, helpers, () => runTiles(k, this.ctl, COUNTER, args));
  }

  /** Runs the attention `job` on this thread and the first `helpers` helper threads; returns when every unit is done. */
  attend(k: KernelExports, job: AttendJob, memory: WasmMemory, helpers: number): void {
    const args = attendArgs(job);
    this.run(OP_ATTEND, args, helpers, () => runAttend(k, this.ctl, COUNTER, args, memory.buffer, 0));
  }

  /** Starts the helpers on job `op`, runs this thread's share (`own`), then waits for them. */
  private run(op: number, args: number[], helpers: number, own: () => void): void {
    const c = this.ctl;
    Atomics.store(c, COUNTER, 0);
    this.gen = (this.gen + 1) | 0 || 1;
    for (let t = 1; t <= helpers; t++) {
      const base = t * CTL_STRIDE;
      if (Atomics.load(c, base + STATUS) === FAILED) throw new Error(`wasm helper thread ${t} failed`);
      c.set(args, base + ARGS);
      c[base + OP] = op;
      Atomics.store(c, base + GEN, this.gen);
      Atomics.notify(c, base + GEN);
    }
    try {
      own();
    } finally {
      for (let t = 1; t <= helpers; t++) this.finish(t);
    }
  }

  /** Blocks until helper t has finished its current job. */
  private finish(t: number): void {
    const base = t * CTL_STRIDE;
    const c = this.ctl;
    const deadline = Date.now() + 120_000;
    for (;;) {
      const done = Atomics.load(c, base + DONE);
      if (done === this.gen) break;
      if (done === -1) throw new Error(`wasm helper thread ${t} failed to start`);
      if (Date.now() > deadline) throw new Error(`wasm helper thread ${t} did not answer within 120 s`);
      Atomics.wait(c, base + DONE, done, 1000);
    }
    if (Atomics.load(c, base + STATUS) === FAILED) throw new Error(`wasm helper thread ${t} trapped in a kernel`);
  }

  dispose(): void {
    for (let t = 1; t <= this.count; t++) {
      const base = t * CTL_STRIDE;
      this.ctl[base + OP] = OP_QUIT;
      Atomics.add(this.ctl, base + GEN, 1);
      Atomics.notify(this.ctl, base + GEN);
    }
    for (const w of this.workers) void w.terminate();
    this.workers.length = 0;
  }
}
