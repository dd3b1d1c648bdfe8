/**
 * The compute primitives the forward pass needs. core/ defines the shape of the interface
 * and a plain-JS implementation; kernels/ provides faster ones (WebAssembly SIMD, gpu.js)
 * that satisfy it, and callers pass them in. Compute calls are synchronous: WebAssembly
 * and gpu.js both run synchronously, and parallelism lives a level up, in the worker pool.
 */
import type { F32 } from './model/types';
import type { QuantSpec } from './quant/rtn';

/** Fewest rows of x for which Ops.matmulT promises row-separable, symmetric results. */
export const SEPARABLE_MIN_ROWS = 4;

export interface Ops {
  readonly name: string;
  /**
   * y[n, out] = x[n, in] · w[out, in]ᵀ   (every row of x through the linear layer w).
   * With `accumulate`, adds into y instead of overwriting it.
   *
   * Contract for incremental callers: when n ≥ SEPARABLE_MIN_ROWS, y[r, o] depends only on
   * row r of x, row o of w and inDim (not on n, outDim or the other rows), and swapping the
   * two rows gives the same bits. So part of a product, or of XᵀX, can be recomputed alone
   * bit for bit. Every backend's conformance suite checks it.
   */
  matmulT(y: F32, x: F32, w: F32, n: number, inDim: number, outDim: number, accumulate?: boolean): void;
  /**
   * Optional:
   * Caps the threads one operation is split over at `n` (at most those the backend has), so a
   * job asked to use n cores does; results do not depend on it. Backends without threads lack it.
   */
  useThreads?(n: number): void;

  /**
   * Optional: causal softmax of the scores att [T, S] (S = past + T) in place, as
   * softmaxCausalRef does it. Row by row, so any subset of rows or heads recomputes to the
   * same bits.
   */
  softmaxCausal?(att: F32, T: number, S: number, past: number, scale: number): void;
  /** Optional: a[i] ← silu(a[i]) · g[i] for i < n, as siluMulRef; element by element. */
  siluMul?(a: F32, g: F32, n: number): void;
  /**
   * Optional: GPTQ's calibration Hessian entries, bit for bit as core/quant/hessian.ts's
   * hessianEntriesRef: rows `rows` (by symmetry also columns; all of H when null) of
   * H [cols, cols] from xT = xᵀ [cols, N] in sequences `seqStarts`, written in place.
   */
  hessianEntries?(H: Float64Array, xT: F32, N: number, cols: number, rows: ArrayLike<number> | null, seqStarts: readonly number[]): void;
  /**
   * Optional: core/quant/cholesky.ts's choleskyLower (A = L Lᵀ in place, false when A is not
   * positive definite) and choleskyInverse (A⁻¹ from L), bit for bit: GPTQ's O(n³) steps.
   */
  choleskyLower?(A: Float64Array, n: number): boolean;
  choleskyInverse?(L: Float64Array, n: number): Float64Array;
  /**
   * Optional: core/quant/gptq.ts's lazyUpdate (GPTQ's lazy batch update of W), bit for bit.
   * With `dense`, zero errors may be multiplied in like any other: every value is the same
   * except that a zero of W may change sign (for products where signed zeros do not matter,
   * so rows with some zero errors need no slower path).
   */
  gptqLazyUpdate?(W: Float64Array, Err1: Float64Array, Hinv: Float64Array, rows: number, cols: number, blocksize: number, i1: number, count: number, i2: number, dense?: boolean): void;
  /**
   * Optional: pins weights in the backend. Until the handle is released, a matmulT whose w
   * is one of these arrays (the same object) uses a copy made on its first use — copied,
   * and packed for the backend's kernel, once instead of on every call. Same bits as
   * without. The caller promises that the pinned arrays' contents do not change before it
   * releases the handle (the copy would go stale). The backend holds at most the pinned
   * weights' size, less when its own cap is reached (weights past it are not kept).
   * Use `withResident` for a scope.
   */
  pin?(weights: readonly F32[]): Pinned;
  /**
   * Optional: out[r] ← the token core/data.ts's drawToken draws from logits row r of
   * [rows, V] at temperature[r] (> 0) and uniform u[r], bit for bit (float64 weights, the
   * same exp as Math.exp, summed and walked in order).
   */
  drawTokens?(out: Int32Array, logits: F32, rows: number, V: number, temperature: ArrayLike<number>, u: ArrayLike<number>): void;
  /**
   * Optional: `floats` float32 values in the backend's own memory, zeroed, which its
   * kernels (attendCached) read in place without copying; null when it has no room.
   */
  residentArray?(floats: number): ResidentArray | null;
  /**
   * Optional: the attention of decode rows over KV caches held in residentArrays (see
   * core/decode.ts). Row r's query heads q[r] [nHeads·hd] (post-RoPE) attend over positions
   * 0 … pos[r] of sequence s = seqs[r], whose keys are at keys[((s·nKvHeads + g)·capacity + j)·hd + i]
   * and values at values[((s·nKvHeads + g)·hd + i)·capacity + j] (transposed), or, where
   * shape.valuesByPosition, at values[((s·nKvHeads + g)·capacity + j)·hd + i] (as the keys);
   * ctx[r] [nHeads·hd] ← the context. Bit for bit what `attendCachedRef` computes on the
   * same backend.
   */
  attendCached?(ctx: F32, q: F32, keys: F32, values: F32, seqs: ArrayLike<number>, pos: ArrayLike<number>, shape: CacheShape): void;
  /** Optional: the values layout this backend's attendCached reads (CacheShape.valuesByPosition; absent: transposed). */
  readonly valuesByPosition?: boolean;
  /**
   * Optional: causal attention of one sequence's T rows over themselves: q [T, nHeads·hd]
   * (post-RoPE), k and v [T, nKvHeads·hd]; the ctx [T, nHeads·hd] columns of query heads
   * `heads` (all when null) are written, the rest left alone. Bit for bit what
   * core/forward.ts's contextHeads (past = 0) computes with this backend's matmulT and
   * softmaxCausal, head by head, so a subset of heads recomputes to the same bits.
   */
  attendRows?(ctx: F32, q: F32, k: F32, v: F32, T: number, heads: ArrayLike<number> | null, shape: HeadShape): void;
  /**
   * Optional: core/quant/rtn.ts's fakeQuantRtnRect, bit for bit (clip search, fp16 scales
   * and clip codes `clips` [rows of w, groups per row] included): rows [rowStart, rowEnd) ×
   * groups [groupStart, groupEnd) of w [·, cols] fake-quantized into the same places of out.
   */
  quantDequant?(w: F32, cols: number, spec: QuantSpec, out: F32, rowStart: number, rowEnd: number, groupStart: number, groupEnd: number, clips?: Uint8Array): void;
}

/** The attention heads of a model. */
export interface HeadShape {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
}

/** A pin on weights (Ops.pin): release it before they change, or when they are no longer used. */
export interface Pinned {
  release(): void;
}

/** Storage in a backend's memory (Ops.residentArray). `data` must not be used after `release`. */
export interface ResidentArray {
  data: F32;
  release(): void;
}

/** The layout of BatchDecoder's per-block KV caches. */
export interface CacheShape extends HeadShape {
  /** Positions per sequence. */
  capacity: number;
  /** Values laid out by position, as the keys (else transposed per KV head: [hd, capacity]). */
  valuesByPosition?: boolean;
}

/** fn() with `weights` pinned on ops (when it can pin), released however fn ends. */
export function withResident<T>(ops: Ops, weights: readonly F32[], fn: () => T): T {
  const pinned = ops.pin?.(weights);
  try {
    return fn();
  } finally {
    pinned?.release();
  }
}

/**
 * Ops.attendCached computed with ops' matmulT and softmax, one KV group at a time: the
 * group's query heads are the rows of one scores matmul over the group's first S = pos + 1
 * keys, a causal softmax per row (each sees all S), and one values matmul over the first S
 * positions' values (gathered into `vg`, [hd, S] packed, as matmulT's weight). `att` holds
 * nHeads/nKvHeads · capacity floats, `vg` hd · capacity.
 */
export function attendCachedRef(
  ops: Ops, ctx: F32, q: F32, keys: F32, values: F32, seqs: ArrayLike<number>, pos: ArrayLike<number>, shape: CacheShape, att: F32, vg: F32,
): void {
  const { nHeads, nKvHeads, headDim: hd, capacity: cap } = shape;
  const qDim = nHeads * hd;
  const group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(hd);
  for (let r = 0; r < seqs.length; r++) {
    const s = seqs[r];
    const p = pos[r];
    const S = p + 1;
    for (let g = 0; g < nKvHeads; g++) {
      const base = (s * nKvHeads + g) * cap * hd; // this KV head's keys, and its values
      if (shape.valuesByPosition) {
        for (let j = 0; j < S; j++) for (let i = 0; i < hd; i++) vg[i * S + j] = values[base + j * hd + i];
      } else {
        for (let i = 0; i < hd; i++) {
          const src = base + i * cap;
          if (S > SHORT_SPAN) vg.set(values.subarray(src, src + S), i * S);
          else for (let j = 0; j < S; j++) vg[i * S + j] = values[src + j];
        }
      }
      const h0 = r * qDim + g * group * hd; // the group's query heads are consecutive in q and ctx
      ops.matmulT(att, q.subarray(h0, h0 + group * hd), keys.subarray(base, base + S * hd), group, hd, S);
      for (let j = 0; j < group; j++) softmaxCausal(ops, att.subarray(j * S, (j + 1) * S), 1, S, p, scale);
      ops.matmulT(ctx.subarray(h0, h0 + group * hd), att, vg, group, S, hd);
    }
  }
}

/** Spans at most this long are copied element by element (a subarray view costs more). */
const SHORT_SPAN = 48;

/**
 * The reference causal softmax: row t of att [T, S] sees keys 0 … past + t;
 * p_j = exp((a_j − max)·scale) / Σ over those keys (float64), 0 for the masked keys.
 */
export function softmaxCausalRef(att: F32, T: number, S: number, past: number, scale: number): void {
  for (let t = 0; t < T; t++) {
    const visible = past + t + 1;
    const o = t * S;
    let max = -Infinity;
    for (let j = 0; j < visible; j++) if (att[o + j] > max) max = att[o + j];
    let sum = 0;
    for (let j = 0; j < visible; j++) {
      const e = Math.exp((att[o + j] - max) * scale);
      att[o + j] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let j = 0; j < visible; j++) att[o + j] *= inv;
    for (let j = visible; j < S; j++) att[o + j] = 0;
  }
}

/** The reference SwiGLU gate: a[i] ← a[i] / (1 + exp(−a[i])) · g[i], in float64, rounded once. */
export function siluMulRef(a: F32, g: F32, n: number): void {
  for (let i = 0; i < n; i++) {
    const v = a[i];
    a[i] = (v / (1 + Math.exp(-v))) * g[i];
  }
}

/** ops.softmaxCausal when the backend has one, else the reference. */
export function softmaxCausal(ops: Ops, att: F32, T: number, S: number, past: number, scale: number): void {
  if (ops.softmaxCausal) ops.softmaxCausal(att, T, S, past, scale);
  else softmaxCausalRef(att, T, S, past, scale);
}

/** ops.siluMul when the backend has one, else the reference. */
export function siluMul(ops: Ops, a: F32, g: F32, n: number): void {
  if (ops.siluMul) ops.siluMul(a, g, n);
  else siluMulRef(a, g, n);
}

/** Plain TypeScript: the reference the fast backends are tested against. */
export const jsOps: Ops = {
  name: 'js',
  matmulT(y, x, w, n, inDim, outDim, accumulate = false) {
    for (let r = 0; r < n; r++) {
      const xo = r * inDim;
      const yo = r * outDim;
      for (let o = 0; o < outDim; o++) {
        const wo = o * inDim;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        let i = 0;
        for (; i + 3 < inDim; i += 4) {
          s0 += x[xo + i] * w[wo + i];
          s1 += x[xo + i + 1] * w[wo + i + 1];
          s2 += x[xo + i + 2] * w[wo + i + 2];
          s3 += x[xo + i + 3] * w[wo + i + 3];
        }
        for (; i < inDim; i++) s0 += x[xo + i] * w[wo + i];
        const s = s0 + s1 + s2 + s3;
        y[yo + o] = accumulate ? y[yo + o] + s : s;
      }
    }
  },
};
