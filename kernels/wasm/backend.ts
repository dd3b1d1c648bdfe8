/**
 * The WebAssembly SIMD backend (primary on CPU). Each call copies its operands into the
 * arena, runs a kernel from kernels.wat and copies the result out; with `threads > 1`,
 * matmul rows are split between this thread and helper threads on the same memory.
 */
import type { F32 } from '../../core/model/types';
import type { CacheShape, HeadShape, Pinned, ResidentArray } from '../../core/ops';
import type { QuantSpec } from '../../core/quant/rtn';
import type { Backend } from '../backend';
import { checkAttendCached, checkAttendRows, checkMatmulT, checkQuantRect, checkSiluMul, checkSoftmax } from '../check';
import { CLIP_RATIOS } from '../../core/quant/rtn';
import { checkClips, checkSpec, clipRatios, sqErrRef } from '../js';
import { Arena } from './arena';
import { fusedMadd, instantiate, kernelsModule, relaxedSimd, type KernelExports } from './module';
import { ResidentWeights } from './resident';
import { CHUNKS_PER_THREAD, HelperThreads, MT_MIN_MACS } from './threads';
import { attendRowsScratch, attendScratch, runAttendHere, runAttendRowsHere, type AttendJob, type AttendRowsJob } from './threadJobs';
import { wasmGptq } from './gptq';
import { wasmHessian } from './hessian';
import { wasmDraw } from './draw';
import { nativeKernels, nativeProducts } from '../native/native';

export interface WasmBackendOptions {
  /** Threads a matmul is split over (this one plus threads − 1 helpers). Default 1. */
  threads?: number;
  /** K-chunk of the matmul's cache tiling (packed panels of one chunk stay in L2). */
  kcMax?: number;
  /** Fused multiply-add (relaxed SIMD) in the matmul; default `fusedMadd` (unfused under INVARX_WASM_STRICT=1). */
  fused?: boolean;
  /** Bytes pinned weights may take in the backend's memory (default RESIDENT_WEIGHT_BYTES); past it, a pinned weight is copied per call as if unpinned. */
  residentWeightBytes?: number;
  /** Products past a few rows on the native kernel when it is built (kernels/native; default true, the same bits). */
  native?: boolean;
}

export interface WasmBackend extends Backend {
  /** Threads a large matmul may be split over (helpers created); `activeThreads` of them are used. */
  readonly threads: number;
  readonly activeThreads: number;
  useThreads(n: number): void;
  /** Whether the matmul uses fused multiply-add (relaxed SIMD). */
  readonly fused: boolean;
  pin(weights: readonly F32[]): Pinned;
  residentArray(floats: number): ResidentArray | null;
  attendCached(ctx: F32, q: F32, keys: F32, values: F32, seqs: ArrayLike<number>, pos: ArrayLike<number>, shape: CacheShape): void;
  attendRows(ctx: F32, q: F32, k: F32, v: F32, T: number, heads: ArrayLike<number> | null, shape: HeadShape): void;
  /** Bytes the copies of pinned weights take now. */
  readonly residentWeightBytes: number;
  /** Whether products past a few rows run on the native kernel (kernels/native). */
  readonly native: boolean;
  /** Its attendCached reads values laid out by position (natively) rather than transposed: with the native kernel. */
  readonly valuesByPosition: boolean;
}

/** Default cap on pinned weights' copies: a 110M-parameter model's weights fit, and the arena's 2 GiB keeps room for the rest. */
export const RESIDENT_WEIGHT_BYTES = 2 ** 30;

/** Rows below which the matmul takes the unpacked dot-product path (decode steps). */
const DOT_MAX_ROWS = 3;
/** Below this many multiply-adds a decode attention runs on one thread (its units are small: the hand-offs would dominate). */
const MT_MIN_ATTEND_MACS = 1 << 17;
/** Up to this many rows, a product on a weight not kept packed skips the packing (matmul_xt; the same bits). */
const XT_MAX_ROWS = 8;
/** Spans at most this long are copied element by element (no subarray allocation). */
const SHORT_SPAN = 48;

export function createWasmBackend(opts: WasmBackendOptions = {}): WasmBackend {
  const threads = Math.max(1, Math.floor(opts.threads ?? 1));
  const kcMax = opts.kcMax ?? 256;
  if (!(Number.isInteger(kcMax) && kcMax >= 1)) throw new RangeError(`kcMax must be a positive integer, got ${kcMax}`);
  const fused = (opts.fused ?? fusedMadd) && relaxedSimd;
  const module = kernelsModule(fused);
  const arena = new Arena();
  const k: KernelExports = instantiate(module, arena.memory);
  const helpers = threads > 1 ? new HelperThreads(module, arena.memory, threads - 1) : null;
  let active = threads;
  const weightCap = opts.residentWeightBytes ?? RESIDENT_WEIGHT_BYTES;
  const resident = new ResidentWeights(arena, weightCap);
  // products past DOT_MAX_ROWS rows go to the native kernel when there is one (same bits)
  const native = opts.native !== false && nativeKernels ? nativeProducts(nativeKernels, kcMax, weightCap) : null;
  const gptq = wasmGptq(k, arena, helpers, () => active);
  const hessianEntries = wasmHessian(k, arena, helpers, () => active);
  const drawTokens = wasmDraw(k, arena, helpers, () => active);

  /** Copies rows [r0, r1) × columns [c0, c0 + span) of src [·, cols] to the arena at byte p, packed. */
  function copyIn(src: F32, cols: number, r0: number, r1: number, c0: number, span: number, p: number): void {
    const m = arena.f32;
    let d = p >> 2;
    if (span === cols) {
      m.set(src.subarray(r0 * cols, r1 * cols), d);
      return;
    }
    for (let r = r0; r < r1; r++, d += span) {
      const s = r * cols + c0;
      if (span <= SHORT_SPAN) for (let j = 0; j < span; j++) m[d + j] = src[s + j];
      else m.set(src.subarray(s, s + span), d);
    }
  }

  /** The inverse of copyIn. */
  function copyOut(dst: F32, cols: number, r0: number, r1: number, c0: number, span: number, p: number): void {
    const m = arena.f32;
    let s = p >> 2;
    if (span === cols) {
      dst.set(m.subarray(s, s + (r1 - r0) * cols), r0 * cols);
      return;
    }
    for (let r = r0; r < r1; r++, s += span) {
      const d = r * cols + c0;
      if (span <= SHORT_SPAN) for (let j = 0; j < span; j++) dst[d + j] = m[s + j];
      else dst.set(m.subarray(s, s + span), d);
    }
  }

  function matmulT(y: F32, x: F32, w: F32, n: number, K: number, N: number, accumulate = false): void {
    checkMatmulT(y, x, w, n, K, N);
    if (n === 0 || N === 0) return;
    if (K === 0) {
      if (!accumulate) y.fill(0, 0, n * N);
      return;
    }
    const beta = accumulate ? 1 : 0;
    if (n <= DOT_MAX_ROWS) {
      // a pinned weight's resident copy, or this call's (reserved before the scratch: it may move it)
      const kept = resident.lookup(w, K, N, 'rows') ?? resident.add(w, K, N, 'rows', (p) => copyIn(w, K, 0, N, 0, K, p));
      arena.reset();
      const xp = arena.alloc(n * K), yp = arena.alloc(n * N);
      const wp = kept ?? arena.alloc(N * K);
      copyIn(x, K, 0, n, 0, K, xp);
      if (kept === null) copyIn(w, K, 0, N, 0, K, wp);
      if (accumulate) copyIn(y, N, 0, n, 0, N, yp);
      k.dot_t(xp, wp, 4 * K, yp, n, K, N, beta);
      copyOut(y, N, 0, n, 0, N, yp);
      return;
    }
    if (native) {
      // a pinned weight's native copy; an unpinned one packed for this call where its rows
      // outnumber matmul_xt's (which skips the packing), as the wasm path would pack it
      let packed = native.pins.packed(w, K, N, active);
      if (!packed && n > XT_MAX_ROWS && resident.lookup(w, K, N, kcMax) === null) {
        packed = native.scratch(native.k.packedLength(N, K));
        native.k.pack(w, N, K, kcMax, packed, active);
      }
      if (packed) {
        native.k.matmulT(y, x, packed, n, K, N, kcMax, accumulate, fused, active);
        return;
      }
    }
    // x and y get zero rows up to a multiple of 4 (the register tile's height);
    // w is packed into 8-column panels (see kernels.wat).
    const nPad = (n + 3) & ~3;
    const Np = (N + 7) & ~7;
    const kept = resident.lookup(w, K, N, kcMax) ?? resident.add(w, K, N, kcMax, (p) => packInto(w, K, N, p));
    if (kept === null && n <= XT_MAX_ROWS) {
      fewRows(y, x, w, n, K, N, beta);
      return;
    }
    arena.reset();
    const xp = arena.alloc(nPad * K);
    const wp = kept ?? arena.alloc(Np * K);
    const yp = arena.alloc(nPad * N);
    const scratch = arena.alloc(32 * threads);
    const m = arena.f32;
    copyIn(x, K, 0, n, 0, K, xp);
    m.fill(0, (xp >> 2) + n * K, (xp >> 2) + nPad * K);
    if (kept === null) {
      const wRaw = arena.alloc(N * K);
      copyIn(w, K, 0, N, 0, K, wRaw);
      k.pack_w(wRaw, 4 * K, N, K, kcMax, wp);
    }
    if (accumulate) {
      copyIn(y, N, 0, n, 0, N, yp);
      m.fill(0, (yp >> 2) + n * N, (yp >> 2) + nPad * N);
    }
    const chunk = splitChunk(nPad, n * K * N);
    if (helpers && chunk > 0) {
      // copying y out is serial work: this thread copies its own chunks while the helpers finish
      const copied = new Uint8Array(Math.ceil(nPad / chunk));
      const copyChunk = (c: number) => {
        const r0 = c * chunk;
        const r1 = Math.min(r0 + chunk, n);
        if (r1 > r0) copyOut(y, N, r0, r1, 0, N, yp + r0 * N * 4);
      };
      helpers.matmul(k, { x: xp, wp, y: yp, rows: nPad, K, N, kcMax, beta, chunk, scratch }, active - 1, (mine) => {
        for (const r0 of mine) {
          copyChunk(r0 / chunk);
          copied[r0 / chunk] = 1;
        }
      });
      for (let c = 0; c < copied.length; c++) if (!copied[c]) copyChunk(c);
    } else {
      k.matmul_t(xp, wp, yp, 0, nPad, K, N, kcMax, beta, scratch);
      copyOut(y, N, 0, n, 0, N, yp);
    }
  }

  /**
   * matmulT for at most XT_MAX_ROWS rows on a weight not kept packed: matmul_xt on w's plain
   * rows (the bits matmul_t gives, without packing w first; x and y go in and out
   * transposed), split over the helpers by columns when large.
   */
  function fewRows(y: F32, x: F32, w: F32, n: number, K: number, N: number, beta: number): void {
    arena.reset();
    const xt = arena.alloc(XT_MAX_ROWS * K), wp = arena.alloc(N * K), yt = arena.alloc(XT_MAX_ROWS * N);
    const m = arena.f32;
    const x0 = xt >> 2, y0 = yt >> 2;
    m.fill(0, x0, x0 + XT_MAX_ROWS * K);
    for (let r = 0; r < n; r++) for (let c = 0; c < K; c++) m[x0 + c * XT_MAX_ROWS + r] = x[r * K + c];
    if (beta) for (let r = 0; r < n; r++) for (let j = 0; j < N; j++) m[y0 + j * XT_MAX_ROWS + r] = y[r * N + j];
    copyIn(w, K, 0, N, 0, K, wp);
    const cols = splitChunk(N, n * K * N);
    if (helpers && cols > 0) {
      helpers.xt(k, { xt, w: wp, yt, K, N, kcMax, beta, cols }, active - 1);
    } else {
      k.matmul_xt(xt, wp, 4 * K, yt, K, kcMax, beta, 0, N);
    }
    for (let r = 0; r < n; r++) for (let j = 0; j < N; j++) y[r * N + j] = m[y0 + j * XT_MAX_ROWS + r];
  }

  /** Packs w [N, K] for matmul_t at byte p (Np·K floats), through scratch. */
  function packInto(w: F32, K: number, N: number, p: number): void {
    arena.reset();
    const wRaw = arena.alloc(N * K);
    copyIn(w, K, 0, N, 0, K, wRaw);
    k.pack_w(wRaw, 4 * K, N, K, kcMax, p);
  }

  function residentArray(floats: number): ResidentArray | null {
    const p = arena.allocResident(floats);
    if (p < 0) return null;
    const data = arena.view(p, floats);
    data.fill(0);
    let live = true;
    return {
      data,
      release: () => {
        if (live) arena.freeResident(p, floats);
        live = false;
      },
    };
  }

  /**
   * core/ops.ts's attendCachedRef on this backend, reading the caches in place: per row and
   * KV group, the calls matmulT would make (dot_t for at most DOT_MAX_ROWS query heads per
   * KV head, else pack_w + matmul_t, with the same kcMax), so the same bits. Values laid
   * out by position (what valuesByPosition asks for when the products run natively) go to
   * the native kernel, which does the same arithmetic (kernels/native/attend.c).
   */
  function attendCached(ctx: F32, q: F32, keys: F32, values: F32, seqs: ArrayLike<number>, pos: ArrayLike<number>, shape: CacheShape): void {
    const n = seqs.length;
    checkAttendCached(ctx, q, keys, values, seqs, pos, shape);
    const kOff = arena.offsetOf(keys), vOff = arena.offsetOf(values);
    if (kOff < 0 || vOff < 0) throw new RangeError('attendCached: the caches must be residentArrays of this backend');
    const { nHeads, nKvHeads, headDim: hd, capacity: cap } = shape;
    const qDim = nHeads * hd;
    const group = nHeads / nKvHeads;
    let maxS = 1;
    let macs = 0;
    for (let r = 0; r < n; r++) {
      maxS = Math.max(maxS, pos[r] + 1);
      macs += 2 * (pos[r] + 1) * qDim;
    }
    if (shape.valuesByPosition) {
      if (!native) throw new RangeError('attendCached: values laid out by position need the native kernel (this backend reads them transposed)');
      const rows = new Int32Array(2 * n);
      for (let r = 0; r < n; r++) (rows[2 * r] = seqs[r]), (rows[2 * r + 1] = pos[r]);
      const threads = macs >= MT_MIN_ATTEND_MACS ? active : 1;
      native.k.attendCached(ctx, q, keys, values, rows, n, nKvHeads, group, hd, cap, kcMax, group > DOT_MAX_ROWS, 1 / Math.sqrt(hd), fused, threads);
      return;
    }
    const threaded = helpers !== null && active > 1 && macs >= MT_MIN_ATTEND_MACS;
    const threadsUsed = threaded ? active : 1;
    const layout = attendScratch(group, hd, maxS);
    arena.reset();
    const qp = arena.alloc(n * qDim), cp = arena.alloc(n * qDim);
    const rowsp = arena.alloc(2 * n);
    const scratch = arena.alloc((threadsUsed * layout.stride) / 4);
    const m = arena.f32;
    m.set(q.subarray(0, n * qDim), qp >> 2);
    const table = new Int32Array(arena.memory.buffer, rowsp, 2 * n);
    for (let r = 0; r < n; r++) (table[2 * r] = seqs[r]), (table[2 * r + 1] = pos[r]);
    const job: AttendJob = {
      q: qp, ctx: cp, keys: kOff, valuesT: vOff, rows: rowsp, n, nKvHeads, group, headDim: hd, capacity: cap, kcMax,
      packed: group > DOT_MAX_ROWS ? 1 : 0, scratch, layout,
    };
    if (threaded) helpers.attend(k, job, arena.memory, active - 1);
    else runAttendHere(k, job, arena.memory.buffer);
    ctx.set(m.subarray(cp >> 2, (cp >> 2) + n * qDim));
  }

  /**
   * Units per chunk (a multiple of 4, about CHUNKS_PER_THREAD chunks per active thread) when
   * a product of `units` rows (or, for matmul_xt, columns) and `macs` multiply-adds is split
   * over the helpers; 0: it runs here alone.
   */
  function splitChunk(units: number, macs: number): number {
    if (!helpers || active < 2 || macs < MT_MIN_MACS) return 0;
    return Math.max(4, Math.ceil(units / (active * CHUNKS_PER_THREAD) / 4) * 4);
  }

  /**
   * core/forward.ts's contextHeads (past = 0) on this backend, with q, k and v copied in
   * once: per query head, the scores and values products matmulT would compute (dot_t under
   * DOT_MAX_ROWS + 1 rows, else matmul_t on panels packed straight from k and v, which have
   * the bytes pack_w gives the gathered keys and transposed values), the same bits. From
   * DOT_MAX_ROWS + 1 rows the heads are spread over the helpers when the work is large enough
   * (the scores' softmax is a third of a short sequence's block pass, and serial otherwise).
   */
  function attendRows(ctx: F32, q: F32, kk: F32, v: F32, T: number, heads: ArrayLike<number> | null, shape: HeadShape): void {
    checkAttendRows(ctx, q, kk, v, T, heads, shape);
    if (T === 0) return;
    const { nHeads, nKvHeads, headDim: hd } = shape;
    const qDim = nHeads * hd, kvDim = nKvHeads * hd;
    const n = heads ? heads.length : nHeads;
    if (T <= DOT_MAX_ROWS) return attendFewRows(ctx, q, kk, v, T, heads, shape);
    const threaded = helpers !== null && active > 1 && n > 1 && n * T * T * hd >= MT_MIN_ATTEND_MACS;
    const layout = attendRowsScratch(T, hd);
    arena.reset();
    const qp = arena.alloc(T * qDim), kp = arena.alloc(T * kvDim), vp = arena.alloc(T * kvDim), cp = arena.alloc(T * qDim);
    const hp = arena.alloc(n);
    const scratch = arena.alloc(((threaded ? active : 1) * layout.stride) / 4);
    const m = arena.f32;
    m.set(q.subarray(0, T * qDim), qp >> 2);
    m.set(kk.subarray(0, T * kvDim), kp >> 2);
    m.set(v.subarray(0, T * kvDim), vp >> 2);
    const table = new Int32Array(arena.memory.buffer, hp, n);
    for (let x = 0; x < n; x++) table[x] = heads ? heads[x] : x;
    const job: AttendRowsJob = { q: qp, k: kp, v: vp, ctx: cp, heads: hp, n, T, nHeads, nKvHeads, headDim: hd, kcMax, scratch, layout };
    if (threaded) helpers.attendRows(k, job, arena.memory, active - 1);
    else runAttendRowsHere(k, job, arena.memory.buffer);
    copyHeadsOut(ctx, cp, T, heads, qDim, hd);
  }

  /** attendRows for at most DOT_MAX_ROWS rows: dot products, as matmulT takes them. */
  function attendFewRows(ctx: F32, q: F32, kk: F32, v: F32, T: number, heads: ArrayLike<number> | null, shape: HeadShape): void {
    const { nHeads, nKvHeads, headDim: hd } = shape;
    const qDim = nHeads * hd, kvDim = nKvHeads * hd;
    const group = nHeads / nKvHeads;
    const scale = 1 / Math.sqrt(hd);
    const S = T;
    arena.reset();
    const qp = arena.alloc(T * qDim), kp = arena.alloc(T * kvDim), vp = arena.alloc(T * kvDim), cp = arena.alloc(T * qDim);
    const qh = arena.alloc(T * hd), ch = arena.alloc(T * hd), att = arena.alloc(T * S);
    const vw = arena.alloc(hd * S);
    const m = arena.f32;
    m.set(q.subarray(0, T * qDim), qp >> 2);
    m.set(kk.subarray(0, T * kvDim), kp >> 2);
    m.set(v.subarray(0, T * kvDim), vp >> 2);
    let loaded = -1;
    const n = heads ? heads.length : nHeads;
    for (let x = 0; x < n; x++) {
      const h = heads ? heads[x] : x;
      const g = Math.floor(h / group);
      if (g !== loaded) {
        // the values transposed
        const d = vw >> 2, src = (vp >> 2) + g * hd;
        for (let s = 0; s < S; s++) for (let i = 0; i < hd; i++) m[d + i * S + s] = m[src + s * kvDim + i];
        loaded = g;
      }
      for (let t = 0; t < T; t++) m.copyWithin((qh >> 2) + t * hd, (qp >> 2) + t * qDim + h * hd, (qp >> 2) + t * qDim + (h + 1) * hd);
      k.dot_t(qh, kp + 4 * g * hd, 4 * kvDim, att, T, hd, S, 0);
      k.softmax_causal(att, T, S, 0, scale);
      k.dot_t(att, vw, 4 * S, ch, T, S, hd, 0);
      for (let t = 0; t < T; t++) m.copyWithin((cp >> 2) + t * qDim + h * hd, (ch >> 2) + t * hd, (ch >> 2) + (t + 1) * hd);
    }
    copyHeadsOut(ctx, cp, T, heads, qDim, hd);
  }

  /** The context [T, qDim] at byte cp out to ctx: all of it, or only the given heads' columns. */
  function copyHeadsOut(ctx: F32, cp: number, T: number, heads: ArrayLike<number> | null, qDim: number, hd: number): void {
    const m = arena.f32;
    if (heads === null) {
      ctx.set(m.subarray(cp >> 2, (cp >> 2) + T * qDim));
      return;
    }
    for (let x = 0; x < heads.length; x++) {
      const h = heads[x];
      for (let t = 0; t < T; t++) {
        const o = t * qDim + h * hd;
        ctx.set(m.subarray((cp >> 2) + o, (cp >> 2) + o + hd), o);
      }
    }
  }

  function quantDequant(
    w: F32, cols: number, spec: QuantSpec, out: F32,
    rowStart: number, rowEnd: number, groupStart: number, groupEnd: number, clips?: Uint8Array,
  ): void {
    checkSpec(spec);
    const { group } = spec;
    const nG = Math.ceil(cols / group);
    checkQuantRect(w, out, cols, nG, rowStart, rowEnd, groupStart, groupEnd);
    checkClips(clips, w.length / cols, nG);
    const rows = rowEnd - rowStart;
    if (rows === 0 || groupEnd === groupStart) return;
    // only the columns of the groups travel: [c0, c0 + span) of each row, packed
    const c0 = groupStart * group;
    const span = Math.min(cols, groupEnd * group) - c0;
    const ratios = clipRatios(spec) ?? [];
    arena.reset();
    const rp = arena.alloc(2 * ratios.length); // float64 clip ratios
    const crp = clips ? arena.alloc(2 * CLIP_RATIOS.length) : 0; // float64 ratios of the clip codes
    const nc = groupEnd - groupStart;
    const cp = clips ? arena.alloc(Math.ceil((rows * nc) / 4)) : 0; // the rectangle's clip codes, a byte each
    const wp = arena.alloc(rows * span), op = arena.alloc(rows * span);
    if (ratios.length > 0) new Float64Array(arena.memory.buffer, rp, ratios.length).set(ratios);
    if (clips) {
      new Float64Array(arena.memory.buffer, crp, CLIP_RATIOS.length).set(CLIP_RATIOS);
      const codes = new Uint8Array(arena.memory.buffer, cp, rows * nc);
      for (let r = 0; r < rows; r++) codes.set(clips.subarray((rowStart + r) * nG + groupStart, (rowStart + r) * nG + groupEnd), r * nc);
    }
    copyIn(w, cols, rowStart, rowEnd, c0, span, wp);
    k.qdq(wp, op, rows, span, group, 0, nc, 2 ** spec.bits - 1, rp, ratios.length, spec.f16Scales ? 1 : 0, cp, crp);
    copyOut(out, cols, rowStart, rowEnd, c0, span, op);
  }

  function softmaxCausal(att: F32, T: number, S: number, past: number, scale: number): void {
    checkSoftmax(att, T, S, past);
    if (T === 0) return;
    arena.reset();
    const p = arena.alloc(T * S);
    copyIn(att, S, 0, T, 0, S, p);
    k.softmax_causal(p, T, S, past, scale);
    copyOut(att, S, 0, T, 0, S, p);
  }

  function siluMul(a: F32, g: F32, n: number): void {
    checkSiluMul(a, g, n);
    if (n === 0) return;
    // padded to whole vectors with zeros (silu(0)·0 = 0), so every element takes the same path
    const n4 = (n + 3) & ~3;
    arena.reset();
    const ap = arena.alloc(n4), gp = arena.alloc(n4);
    const m = arena.f32;
    m.set(a.subarray(0, n), ap >> 2);
    m.set(g.subarray(0, n), gp >> 2);
    m.fill(0, (ap >> 2) + n, (ap >> 2) + n4);
    m.fill(0, (gp >> 2) + n, (gp >> 2) + n4);
    k.silu_mul(ap, gp, n4);
    a.set(m.subarray(ap >> 2, (ap >> 2) + n));
  }

  return {
    name: 'wasm',
    threads,
    get activeThreads() {
      return active;
    },
    useThreads(n) {
      active = Math.max(1, Math.min(threads, Math.floor(n)));
    },
    fused,
    matmulT,
    pin: (weights) => {
      const kept = [resident.pin(weights), native?.pins.pin(weights)];
      return { release: () => kept.forEach((p) => p?.release()) };
    },
    native: native !== null,
    valuesByPosition: native !== null,
    residentArray,
    attendCached,
    attendRows,
    get residentWeightBytes() {
      return resident.bytes + (native?.pins.bytes ?? 0);
    },
    softmaxCausal,
    siluMul,
    drawTokens,
    hessianEntries,
    choleskyLower: gptq.choleskyLower,
    choleskyInverse: gptq.choleskyInverse,
    gptqLazyUpdate: gptq.gptqLazyUpdate,
    quantDequant,
    // in TypeScript: with its eight running sums it streams at memory speed, and copying
    // both operands into the arena cost more than wasm saved (measured)
    sqErr: sqErrRef,
    dispose: () => {
      native?.clear();
      helpers?.dispose();
    },
  };
}
