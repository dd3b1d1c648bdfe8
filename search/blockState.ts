/**
 * The state of one block under search, as plain data: its calibration rows, its quantized
 * weights, the activations and caches that make moves cheap to score (search/objective.ts
 * and the parts it calls), and the loss. Kept apart from the code that computes it so that
 * worker threads can wrap the main thread's state (SharedArrayBuffer memory, `Alloc`) and
 * every part reads one definition of what the caches hold.
 */
import type { Block, F32, ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { GptqFactor } from '../core/quant/gptq';
import type { QuantSpec } from '../core/quant/rtn';
import type { BlockClips } from './clipMoves';

export type F64 = Float64Array;

/** Calibration inputs of one block: sequences concatenated row-wise. */
export interface BlockData {
  /** Block input in the quantized model, [N, dim]. */
  x: F32;
  /** FP block output, [N, dim]. */
  y: F32;
  /** FP block input, [N, dim] (what asymmetric GPTQ reads; absent where no base needs it). */
  xf?: F32;
  /** Start row of each sequence, plus N at the end. */
  seqStarts: number[];
}

/** What every part of the objective reads: the block's shape, its rows and the quantization settings. */
export interface BlockSetting {
  readonly cfg: ModelConfig;
  readonly data: BlockData;
  /** Calibration rows (tokens) of the block. */
  readonly N: number;
  readonly spec: QuantSpec;
  readonly ops: Ops;
  /** Per-group clip codes of the block's linears (clipMoves.ts; RTN on the int grid only): absent, every group CLIP_AUTO. */
  readonly clips?: BlockClips;
}

/** What a full evaluation must redo: everything, the attention side only, or the FFN side only. */
export type Change = 'all' | 'attn' | 'ffn';

/** Activations of the quantized attention sublayer on the calibration rows; all row-major. */
export interface AttnActs {
  /** norm(x): input of wq/wk/wv, [N, dim]. */
  xa: F32;
  /** Post-RoPE queries [N, qDim], keys [N, kvDim], values [N, kvDim]. */
  q: F32;
  k: F32;
  v: F32;
  /** Attention context: input of wo, [N, qDim]. */
  ctx: F32;
  /** x + attention: the FFN sublayer's input, [N, dim]. */
  h: F32;
}

/** Activations of the whole quantized block (what moves reuse). */
export interface Caches extends AttnActs {
  /** norm(h): input of w1/w3, [N, dim]. */
  xn: F32;
  /** FFN hidden activation: input of w2, [N, H]. */
  act: F32;
  /** Current error block_q(x_q) − y, [N, dim], float64. */
  err: F64;
  /** GPTQ only: what its incremental paths reuse. */
  gptq?: GptqCaches;
}

/** GPTQ's caches of the attention side. */
export interface GptqAttnCaches {
  /** Factor of the Hessian of xa (wq/wk/wv's input). */
  factorA: GptqFactor;
  /** ctxᵀ [qDim, N] and its Hessian (wo's input) [qDim, qDim]. */
  ctxT: F32;
  Hctx: F64;
  /**
   * Asymmetric GPTQ (core/quant/asymmetric.ts) only: the map Mᵀ of xa's correction, the FP
   * model's context under the block [N, qDim] and wo's G [qDim, qDim] (a move changes them
   * in its heads' columns, and rows and columns).
   */
  asymA?: F32;
  ctxF?: F32;
  Gctx?: F32;
}

/** GPTQ's caches of the FFN side. */
export interface GptqFfnCaches {
  /** Factor of the Hessian of xn (w1/w3's input; FFN moves do not change it). */
  factorX: GptqFactor;
  /** actᵀ [H, N] and its Hessian (w2's input) [H, H]: a move changes them in its units' rows (and columns). */
  actT: F32;
  Ha: F64;
  /**
   * Asymmetric GPTQ only: the map Mᵀ of xn's correction, the FP model's xn [N, dim] and
   * activation [N, H] under the block, and w2's G [H, H] (a move changes its units' columns,
   * and rows and columns).
   */
  asymX?: F32;
  xnF?: F32;
  actF?: F32;
  Gact?: F32;
}

export interface GptqCaches extends GptqAttnCaches, GptqFfnCaches {
  /** The error before w2's contribution, h − y (+ b2), [N, dim]. */
  errBase: F64;
}

/** The quantized weights and caches a (full or incremental) evaluation produced. */
export interface Evaluated {
  q: Block;
  c: Caches;
  loss: number;
}

/** What a worker needs to wrap the main thread's state (shared memory). */
export interface ObjectiveState {
  q: Block;
  c: Caches;
}

/** Where cache arrays come from: ordinary or SharedArrayBuffer memory. */
export interface Alloc {
  f32(n: number): F32;
  f64(n: number): F64;
  bytes(n: number): ArrayBufferLike;
}

export const plainAlloc: Alloc = { f32: (n) => new Float32Array(n), f64: (n) => new Float64Array(n), bytes: (n) => new ArrayBuffer(n) };

export const sharedAlloc: Alloc = {
  f32: (n) => new Float32Array(new SharedArrayBuffer(4 * n)),
  f64: (n) => new Float64Array(new SharedArrayBuffer(8 * n)),
  bytes: (n) => new SharedArrayBuffer(n),
};

export function copyInto<T extends F32 | F64 | Uint8Array | Int32Array>(dst: T, src: ArrayLike<number>): T {
  dst.set(src);
  return dst;
}

/** A copy of the block whose arrays live in `alloc`'s memory. */
export function blockIn(alloc: Alloc, b: Block): Block {
  const out: Record<string, F32> = {};
  for (const [k, v] of Object.entries(b)) if (v) out[k] = copyInto(alloc.f32(v.length), v as F32);
  return out as unknown as Block;
}

function factorIn(alloc: Alloc, f: GptqFactor): GptqFactor {
  const g = { cols: f.cols, U: copyInto(alloc.f64(f.U.length), f.U), dead: copyInto(new Uint8Array(alloc.bytes(f.dead.length)), f.dead),
    H: copyInto(alloc.f64(f.H.length), f.H), damp: f.damp };
  return f.order ? { ...g, order: copyInto(new Int32Array(alloc.bytes(4 * f.order.length)), f.order) } : g;
}

/** The asymmetric GPTQ caches (all present or all absent, as the base's alpha says). */
const ASYM_CACHES = ['asymA', 'ctxF', 'Gctx', 'asymX', 'xnF', 'actF', 'Gact'] as const;

/** A copy of `c` in `alloc`'s memory. */
function cachesIn(alloc: Alloc, c: Caches): Caches {
  const f32 = (a: F32) => copyInto(alloc.f32(a.length), a);
  const f64 = (a: F64) => copyInto(alloc.f64(a.length), a);
  const g = c.gptq;
  return {
    xa: f32(c.xa), q: f32(c.q), k: f32(c.k), v: f32(c.v), ctx: f32(c.ctx), h: f32(c.h), xn: f32(c.xn), act: f32(c.act), err: f64(c.err),
    gptq: g && {
      errBase: f64(g.errBase), factorA: factorIn(alloc, g.factorA), factorX: factorIn(alloc, g.factorX),
      ctxT: f32(g.ctxT), Hctx: f64(g.Hctx), actT: f32(g.actT), Ha: f64(g.Ha),
      ...Object.fromEntries(ASYM_CACHES.filter((k) => g[k]).map((k) => [k, f32(g[k]!)])),
    },
  };
}

/** dst ← src, array by array (same shapes). */
function setCaches(dst: Caches, src: Caches): void {
  for (const k of ['xa', 'q', 'k', 'v', 'ctx', 'h', 'xn', 'act', 'err'] as const) if (dst[k] !== src[k]) dst[k].set(src[k]);
  const a = dst.gptq;
  const b = src.gptq;
  if (!a || !b) return;
  for (const k of ['errBase', 'ctxT', 'Hctx', 'actT', 'Ha'] as const) if (a[k] !== b[k]) a[k].set(b[k]);
  for (const k of ASYM_CACHES) if (a[k] !== b[k]) a[k]!.set(b[k]!);
  for (const k of ['factorA', 'factorX'] as const) {
    a[k].U.set(b[k].U);
    a[k].dead.set(b[k].dead);
    a[k].order?.set(b[k].order!);
  }
}

/**
 * The current state of a block: quantized weights `q` and caches `c`, arrays owned by this
 * object and updated in place (so workers that wrap them see every commit), and the loss.
 */
export class BlockState {
  /** Quantized weights of the current block. */
  readonly q: Block;
  private caches?: Caches;
  /** Σ err². */
  loss = 0;

  /** With `state`, wraps existing arrays (a worker's view of shared memory); otherwise allocates them with `alloc` on the first install. */
  constructor(private alloc: Alloc, state?: ObjectiveState) {
    this.q = state ? state.q : ({} as Block);
    this.caches = state?.c;
  }

  get c(): Caches {
    if (!this.caches) throw new Error('BlockObjective: reset() first');
    return this.caches;
  }

  /** Make `st` the current state (copied into this state's arrays). */
  install(st: Evaluated): void {
    if (this.caches) setCaches(this.caches, st.c);
    else this.caches = cachesIn(this.alloc, st.c);
    for (const [k, v] of Object.entries(st.q) as [keyof Block, F32][]) {
      const mine = this.q[k];
      if (mine && mine.length === v.length) mine.set(v);
      else this.q[k] = copyInto(this.alloc.f32(v.length), v);
    }
    this.loss = st.loss;
  }
}
