/**
 * The jobs the wasm helper threads run (./threads.ts hands them out): for each, its
 * arguments and the loop every thread runs over a shared counter, taking chunks, lines,
 * tiles or units until none are left. The workers run these loops' source text, so each
 * may use only its arguments and globals; which thread takes a piece never changes its
 * bits. The `…Here` functions run a whole job on the calling thread alone.
 */
import type { KernelExports } from './module';

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
export function runChunks(k: KernelExports, ctl: Int32Array, counter: number, a: number[], t: number): number[] {
  const [x, wp, y, rows, K, N, kcMax, beta, chunk, scratch] = a;
  const mine: number[] = [];
  for (;;) {
    const r0 = Atomics.add(ctl, counter, 1) * chunk;
    if (r0 >= rows) return mine;
    k.matmul_t(x, wp, y, r0, Math.min(r0 + chunk, rows), K, N, kcMax, beta, scratch + 128 * t);
    mine.push(r0);
  }
}

/** matmul_xt over columns [c·cols, min((c+1)·cols, N)) of w for each chunk c taken (see the kernel). */
export interface XtJob {
  /** x transposed [K, 8]; w's plain rows [N, K]; y transposed [N, 8]. */
  xt: number;
  w: number;
  yt: number;
  K: number;
  N: number;
  kcMax: number;
  beta: number;
  /** Columns per chunk, a multiple of 4. */
  cols: number;
}

export function xtArgs(job: XtJob): number[] {
  return [job.xt, job.w, job.yt, job.K, job.N, job.kcMax, job.beta, job.cols];
}

/** The matmul_xt loop every thread runs (the workers run its source text: it may use only its arguments). */
export function runXt(k: KernelExports, ctl: Int32Array, counter: number, a: number[]): void {
  // (pointers past 2 GiB come back from the Int32 control words negative)
  const [xt, w, yt] = [a[0] >>> 0, a[1] >>> 0, a[2] >>> 0];
  const [, , , K, N, kcMax, beta, cols] = a;
  for (;;) {
    const j0 = Atomics.add(ctl, counter, 1) * cols;
    if (j0 >= N) return;
    k.matmul_xt(xt, w, 4 * K, yt, K, kcMax, beta, j0, Math.min(j0 + cols, N));
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
export function runHessian(k: KernelExports, ctl: Int32Array, counter: number, a: number[], buffer: ArrayBufferLike): void {
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
 * Column tiles of a float64 product (kernels.wat gemm_add, for kernels/wasm/gptq.ts):
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
export function runTiles(k: KernelExports, ctl: Int32Array, counter: number, a: number[]): void {
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
export function runAttend(k: KernelExports, ctl: Int32Array, counter: number, a: number[], buffer: ArrayBufferLike, t: number): void {
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

export function attendArgs(job: AttendJob): number[] {
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

export function tileArgs(job: TileJob): number[] {
  return [job.C, job.ldc, job.A, job.ai, job.ak, job.B, job.bj, job.bk, job.flags, job.j, job.j1, job.i0, job.i1, job.k1];
}

/**
 * Attention of a whole sequence's rows (the wasm backend's attendRows, T > DOT_MAX_ROWS):
 * one unit per query head, taken one at a time. A unit packs its KV head's keys and values
 * into the thread's scratch, gathers the head's queries, and makes the two matmul_t calls
 * and the softmax a product on the caller's thread makes; it writes only its own head's
 * columns of the context, so its bits do not depend on which thread ran it.
 */
export interface AttendRowsJob {
  /** q and ctx [T, nHeads·hd], k and v [T, kvHeads·hd] (float32, copied in); the heads to compute (int32). */
  q: number;
  k: number;
  v: number;
  ctx: number;
  heads: number;
  n: number;
  T: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  kcMax: number;
  /** Thread t's scratch starts at scratch + t·layout.stride (see attendRowsScratch). */
  scratch: number;
  layout: AttendRowsScratch;
}

/** One thread's scratch for attendRows: byte offsets of the gathered queries, its context, the scores, the packed keys and values, the ragged tile. */
export interface AttendRowsScratch {
  qh: number;
  ch: number;
  att: number;
  kw: number;
  vw: number;
  tile: number;
  stride: number;
}

export function attendRowsScratch(T: number, hd: number): AttendRowsScratch {
  const bytes = (floats: number) => 4 * ((floats + 15) & ~15);
  const nPad = (T + 3) & ~3;
  const qh = 0;
  const ch = qh + bytes(nPad * hd);
  const att = ch + bytes(nPad * hd);
  const kw = att + bytes(nPad * T);
  const vw = kw + bytes(((T + 7) & ~7) * hd);
  const tile = vw + bytes(((hd + 7) & ~7) * T);
  return { qh, ch, att, kw, vw, tile, stride: tile + bytes(32) };
}

export function attendRowsArgs(job: AttendRowsJob): number[] {
  const { qh, ch, att, kw, vw, tile, stride } = job.layout;
  return [job.q, job.k, job.v, job.ctx, job.heads, job.n, job.T, job.nHeads, job.nKvHeads, job.headDim, job.kcMax, job.scratch, qh, ch, att, kw, vw, tile, stride];
}

/** The attendRows loop every thread runs (the workers run its source text: it may use only its arguments and globals). */
export function runAttendRows(k: KernelExports, ctl: Int32Array, counter: number, a: number[], buffer: ArrayBufferLike, t: number): void {
  const [q, kk, v, ctx, headsAt] = [a[0] >>> 0, a[1] >>> 0, a[2] >>> 0, a[3] >>> 0, a[4] >>> 0];
  const [, , , , , n, T, nHeads, nKv, hd, kcMax, scratch, qhAt, chAt, attAt, kwAt, vwAt, tileAt, stride] = a;
  const base = (scratch >>> 0) + t * stride;
  const [qh, ch, att, kw, vw, tile] = [base + qhAt, base + chAt, base + attAt, base + kwAt, base + vwAt, base + tileAt];
  const m = new Float32Array(buffer);
  const heads = new Int32Array(buffer, headsAt, n);
  const qDim = nHeads * hd, kvDim = nKv * hd, group = nHeads / nKv;
  const nPad = (T + 3) & ~3;
  const scale = 1 / Math.sqrt(hd);
  // the padding rows of the queries stay zero: their scores are not probabilities, but rows never mix
  m.fill(0, (qh >> 2) + T * hd, (qh >> 2) + nPad * hd);
  for (;;) {
    const u = Atomics.add(ctl, counter, 1);
    if (u >= n) return;
    const h = heads[u];
    const g = Math.floor(h / group);
    k.pack_w(kk + 4 * g * hd, 4 * kvDim, T, hd, kcMax, kw);
    k.pack_wt(v + 4 * g * hd, 4 * kvDim, hd, T, kcMax, vw);
    for (let r = 0; r < T; r++) m.copyWithin((qh >> 2) + r * hd, (q >> 2) + r * qDim + h * hd, (q >> 2) + r * qDim + (h + 1) * hd);
    k.matmul_t(qh, kw, att, 0, nPad, hd, T, kcMax, 0, tile);
    k.softmax_causal(att, T, T, 0, scale);
    k.matmul_t(att, vw, ch, 0, nPad, T, hd, kcMax, 0, tile);
    for (let r = 0; r < T; r++) m.copyWithin((ctx >> 2) + r * qDim + h * hd, (ch >> 2) + r * hd, (ch >> 2) + (r + 1) * hd);
  }
}

/** Runs all of the attendRows `job` on this thread alone. */
export function runAttendRowsHere(k: KernelExports, job: AttendRowsJob, buffer: ArrayBufferLike): void {
  runAttendRows(k, new Int32Array(2), 1, attendRowsArgs(job), buffer, 0);
}

/** Token draws: draw_rows over rows [0, rows), one row per piece taken; thread t's weights scratch at w + 8·V·t. */
export interface DrawJob {
  logits: number;
  V: number;
  temps: number;
  us: number;
  out: number;
  w: number;
  rows: number;
}

export function drawArgs(job: DrawJob): number[] {
  return [job.logits, job.V, job.temps, job.us, job.out, job.w, job.rows];
}

/** The draw loop every thread runs (the workers run its source text: it may use only its arguments). */
export function runDraw(k: KernelExports, ctl: Int32Array, counter: number, a: number[], t: number): void {
  // (pointers past 2 GiB come back from the Int32 control words negative)
  const [logits, temps, us, out, w] = [a[0] >>> 0, a[2] >>> 0, a[3] >>> 0, a[4] >>> 0, a[5] >>> 0];
  const [, V, , , , , rows] = a;
  for (;;) {
    const r = Atomics.add(ctl, counter, 1);
    if (r >= rows) return;
    k.draw_rows(logits, V, temps, us, out, w + 8 * V * t, r, r + 1);
  }
}
