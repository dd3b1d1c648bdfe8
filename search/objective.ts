/**
 * The block-local objective (DESIGN §5): on calibration activations,
 *   L = Σ ||block_q(x_q) − block_fp(x_fp)||²   (float64)
 * where x_q is the block's input in the quantized model and the target is the FP model's
 * block output. The search divides by the starting value L0.
 *
 * `BlockObjective` holds one block's quantized weights and the caches (`Caches`) that make
 * moves cheap to score. Every incremental path below is the full evaluation's own float
 * computation restricted to what the move changes, so it gives the full loss (bit for bit
 * where noted; the tests check it).
 *
 * FFN moves on units S:
 *  - RTN: rows S of w1/w3 and the w2 column groups containing S are re-quantized and the
 *    error is updated by Δ = Σ_{j ∈ cols(G)} a'_j w2q'[:, j] − a_j w2q[:, j], which costs
 *    N·dim·(2|S| + 2|cols(G)|) instead of a whole block (to float64 round-off).
 *  - GPTQ: rows of w1/w3 are quantized independently given their input's Hessian, which the
 *    move does not change: rows S are redone from the cached factor. w2's input Hessian
 *    changes only in rows and columns S (recomputed from the cached transposed activation);
 *    w2 is then quantized again whole, as GPTQ's error feedback spreads over all of it
 *    (bit for bit).
 * Attention moves touch a few heads: their rows of wq/wk/wv are re-quantized (RTN row by
 * row; GPTQ from the cached factor of norm(x)'s Hessian), their q/k/v columns projected and
 * their context recomputed per sequence; wo is quantized again (GPTQ with its Hessian
 * updated in the touched heads' rows and columns), and the FFN side is redone from the new
 * residual stream (bit for bit).
 */
import { norm } from '../core/forward';
import { touched, type Transform } from '../core/invariance';
import { siluMul, type Ops } from '../core/ops';
import type { Block, F32, LinearName, ModelConfig } from '../core/model/types';
import { fakeQuantRtnRect, type QuantSpec } from '../core/quant/rtn';
import { gptqFactor, gptqQuantize, gptqQuantizeRows, type GptqFactor } from '../core/quant/gptq';
import { attnInput, attnResidual, context, headProjection, qkv, range, scatterHeads } from './attnSide';
import { gptqFfn, hessian, hessianRows, hessianT, keepCodes, rtnLinears, transpose, type BaseMethod, type CodeSink } from './blockQuant';

/** Fake-quantize one row (groups along it) into out. */
function fakeQuantRtnRow(row: F32, spec: QuantSpec, out: F32): void {
  fakeQuantRtnRect(row, row.length, spec, out, 0, 1, 0, Math.ceil(row.length / spec.group));
}

export type F64 = Float64Array;

/** Calibration inputs of one block: sequences concatenated row-wise. */
export interface BlockData {
  /** Block input in the quantized model, [N, dim]. */
  x: F32;
  /** FP block output, [N, dim]. */
  y: F32;
  /** Start row of each sequence, plus N at the end. */
  seqStarts: number[];
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

export interface GptqCaches {
  /** The error before w2's contribution, h − y (+ b2), [N, dim]. */
  errBase: F64;
  /** Factor of the Hessian of xa (wq/wk/wv's input) and of xn (w1/w3's input). */
  factorA: GptqFactor;
  factorX: GptqFactor;
  /** ctxᵀ [qDim, N] and its Hessian (wo's input) [qDim, qDim]. */
  ctxT: F32;
  Hctx: F64;
  /** actᵀ [H, N] and its Hessian (w2's input) [H, H]. */
  actT: F32;
  Ha: F64;
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

export function copyInto<T extends F32 | F64 | Uint8Array>(dst: T, src: ArrayLike<number>): T {
  dst.set(src);
  return dst;
}

function factorIn(alloc: Alloc, f: GptqFactor): GptqFactor {
  return { cols: f.cols, U: copyInto(alloc.f64(f.U.length), f.U), dead: copyInto(new Uint8Array(alloc.bytes(f.dead.length)), f.dead) };
}

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
  for (const k of ['factorA', 'factorX'] as const) {
    a[k].U.set(b[k].U);
    a[k].dead.set(b[k].dead);
  }
}

/** The attention side's quantized weights and activations (and GPTQ's caches of it). */
interface AttnSide extends AttnActs {
  w: Pick<Block, 'wq' | 'wk' | 'wv' | 'wo'>;
  factorA?: GptqFactor;
  ctxT?: F32;
  Hctx?: F64;
}

const ATTN_LINEARS = ['wq', 'wk', 'wv'] as const;

/** FFN hidden activation from projections: silu(p1)·p3 (llama) or relu(p1 + b1) (opt), in place in p1. */
function activate(cfg: ModelConfig, ops: Ops, p1: F32, p3: F32 | undefined, b1: F32 | undefined, units: ArrayLike<number>, n: number): void {
  const k = units.length;
  if (cfg.arch === 'llama') {
    // as core's ffnActivation does it, so that a unit's activation has the same bits either way
    siluMul(ops, p1, p3!, n * k);
    return;
  }
  for (let r = 0; r < n; r++) {
    for (let u = 0; u < k; u++) {
      const i = r * k + u;
      const v = p1[i] + (b1 ? b1[units[u]] : 0);
      p1[i] = v > 0 ? v : 0;
    }
  }
}

export class BlockObjective {
  readonly N: number;
  /** Quantized weights of the current block (arrays owned by this object, updated in place). */
  readonly q: Block;
  private caches?: Caches;
  /** Σ err². */
  loss = 0;

  /**
   * With `state`, wraps existing caches (a worker's view of shared memory); otherwise
   * allocates them with `alloc` (SharedArrayBuffer-backed when workers share them) on the
   * first `reset`.
   */
  constructor(
    readonly cfg: ModelConfig,
    readonly data: BlockData,
    readonly spec: QuantSpec,
    private ops: Ops,
    readonly method: BaseMethod = 'rtn',
    state?: ObjectiveState,
    private alloc: Alloc = plainAlloc,
  ) {
    this.N = data.x.length / cfg.dim;
    this.q = state ? state.q : ({} as Block);
    this.caches = state?.c;
  }

  /** The current state's activations (see Caches), updated in place. */
  get c(): Caches {
    if (!this.caches) throw new Error('BlockObjective: reset() first');
    return this.caches;
  }

  /** The caches as plain data, to hand to workers. */
  state(): ObjectiveState {
    return { q: this.q, c: this.c };
  }

  /** Recompute the caches from the block's FP weights (full evaluation of `change`), in place. */
  reset(b: Block, change: Change = 'all'): number {
    this.install(this.fullEval(b, change));
    return this.loss;
  }

  private install(st: Evaluated): void {
    if (this.caches) setCaches(this.caches, st.c);
    else this.caches = cachesIn(this.alloc, st.c);
    for (const [k, v] of Object.entries(st.q) as [keyof Block, F32][]) {
      const mine = this.q[k];
      if (mine && mine.length === v.length) mine.set(v);
      else this.q[k] = copyInto(this.alloc.f32(v.length), v);
    }
    this.loss = st.loss;
  }

  /**
   * Full evaluation of a transformed block `b` (FP weights); returns the quantized block and
   * caches without installing them. `change` says what differs from the current state: with
   * 'ffn' the attention sublayer is unchanged and reused; with 'attn' an RTN FFN keeps its
   * quantized weights (GPTQ's depend on the FFN input, so they are redone).
   * `codes` receives the integer codes of the linears this evaluation quantizes.
   */
  fullEval(b: Block, change: Change = 'all', codes?: CodeSink): Evaluated {
    const a = change === 'ffn' ? this.currentAttn() : this.attnFull(b, codes);
    return this.withFfn(b, a, change === 'attn' ? 'keep' : 'quantize', codes);
  }

  private currentAttn(): AttnSide {
    const { q, c } = this;
    const g = c.gptq;
    return {
      w: { wq: q.wq, wk: q.wk, wv: q.wv, wo: q.wo }, xa: c.xa, q: c.q, k: c.k, v: c.v, ctx: c.ctx, h: c.h,
      factorA: g?.factorA, ctxT: g?.ctxT, Hctx: g?.Hctx,
    };
  }

  /** The attention sublayer of `b` quantized by the base (GPTQ: true-sequential, wo on the quantized context). */
  private attnFull(b: Block, codes?: CodeSink): AttnSide {
    const { cfg, N, spec, ops } = this;
    const { x, seqStarts } = this.data;
    const d = cfg.dim;
    const qDim = cfg.nHeads * cfg.headDim;
    const xa = attnInput(cfg, b, x, N);
    let factorA: GptqFactor | undefined;
    let w: Partial<Block>;
    if (this.method === 'gptq') {
      factorA = gptqFactor(hessian(xa, N, d, ops), d);
      w = {};
      for (const name of ATTN_LINEARS) w[name] = keepCodes(name, gptqQuantizeRows(b[name], d, factorA, spec), codes);
    } else {
      w = rtnLinears(cfg, b, spec, [...ATTN_LINEARS], codes);
    }
    const a = qkv(cfg, { ...b, ...w }, xa, seqStarts, ops);
    const ctx = new Float32Array(N * qDim);
    context(cfg, a, seqStarts, null, ops, ctx);
    let ctxT: F32 | undefined;
    let Hctx: F64 | undefined;
    if (this.method === 'gptq') {
      ctxT = transpose(ctx, N, qDim);
      Hctx = hessianT(ctxT, N, qDim, ops);
    }
    const wo = this.quantizeWo(b, Hctx, codes);
    const h = attnResidual(cfg, x, ctx, wo, b.bo, ops);
    return { w: { wq: w.wq!, wk: w.wk!, wv: w.wv!, wo }, xa, ...a, ctx, h, factorA, ctxT, Hctx };
  }

  /** wo of `b` by the base: GPTQ on the context's Hessian `Hctx`, RTN without one. */
  private quantizeWo(b: Block, Hctx: F64 | undefined, codes?: CodeSink): F32 {
    const { cfg, spec } = this;
    if (Hctx) return keepCodes('wo', gptqQuantize(b.wo, cfg.dim, cfg.nHeads * cfg.headDim, Hctx, spec), codes);
    return rtnLinears(cfg, b, spec, ['wo'], codes).wo!;
  }

  /**
   * The FFN sublayer on top of attention side `a`: quantized by the base ('keep': an RTN
   * FFN keeps the current quantized weights, whose rounding does not depend on its input),
   * the error and the loss.
   */
  private withFfn(b: Block, a: AttnSide, mode: 'keep' | 'quantize', codes?: CodeSink): Evaluated {
    const { cfg, N, spec, ops } = this;
    const d = cfg.dim;
    const H = cfg.hiddenDim;
    const { y } = this.data;
    const q: Block = { ...b, ...a.w };
    const xn = new Float32Array(N * d);
    norm(cfg, xn, a.h, q.ffnNorm, q.ffnNormBias, N);
    const err = new Float64Array(N * d);
    for (let i = 0; i < N * d; i++) err[i] = a.h[i] - y[i] + (q.b2 ? q.b2[i % d] : 0);
    const ffnNames: LinearName[] = b.w3 ? ['w1', 'w3', 'w2'] : ['w1', 'w2'];
    let act: F32;
    let gptq: GptqCaches | undefined;
    if (this.method === 'gptq') {
      const f = gptqFfn(cfg, b, xn, N, spec, ops, codes);
      for (const n of ffnNames) q[n] = f.q[n]!;
      act = f.act;
      gptq = { errBase: err.slice(), factorA: a.factorA!, ctxT: a.ctxT!, Hctx: a.Hctx!, ...f.cache };
    } else {
      const ffnQ: Partial<Block> = mode === 'keep' ? { w1: this.q.w1, w3: this.q.w3, w2: this.q.w2 } : rtnLinears(cfg, b, spec, ffnNames, codes);
      for (const n of ffnNames) q[n] = ffnQ[n]!;
      act = new Float32Array(N * H);
      this.unitActs(act, xn, q.w1, q.w3, q.b1, range(H));
    }
    const loss = this.addFfnOutput(err, act, q.w2);
    return { q, c: { xa: a.xa, q: a.q, k: a.k, v: a.v, ctx: a.ctx, h: a.h, xn, act, err, gptq }, loss };
  }

  /** err += act · w2qᵀ (act [N, H], w2q [dim, H]); returns Σ err² in float64. */
  private addFfnOutput(err: F64, act: F32, w2q: F32): number {
    const { cfg, N } = this;
    const d = cfg.dim;
    const out = new Float32Array(N * d);
    this.ops.matmulT(out, act, w2q, N, cfg.hiddenDim, d);
    let loss = 0;
    for (let i = 0; i < N * d; i++) {
      const e = err[i] + out[i];
      err[i] = e;
      loss += e * e;
    }
    return loss;
  }

  /**
   * Loss of an attention move: `b` is a transformed copy of the current FP block, changed
   * only by `transforms` (attention invariances). With `commit`, the caches are updated to
   * the new state.
   */
  attnMoveLoss(b: Block, transforms: readonly Transform[], commit = false): number {
    // Anything but attention transforms (not drawn as attention moves) gets a full evaluation.
    const st = transforms.every((t) => t.kind.startsWith('attn-')) ? this.attnMove(b, transforms) : this.fullEval(b, 'all');
    if (commit) this.install(st);
    return st.loss;
  }

  private attnMove(b: Block, transforms: readonly Transform[]): Evaluated {
    const { cfg, N, spec, ops, c } = this;
    const { x, seqStarts } = this.data;
    const { dim: d, headDim: hd, nHeads, nKvHeads } = cfg;
    const G = nHeads / nKvHeads;
    const qDim = nHeads * hd;
    const gq = c.gptq;
    const rows = { wq: new Set<number>(), wk: new Set<number>(), wv: new Set<number>() };
    for (const t of transforms) {
      const tt = touched(cfg, t);
      for (const n of ATTN_LINEARS) tt[n]?.rows.forEach((r) => rows[n].add(r));
    }
    // The changed rows of wq/wk/wv, quantized again.
    const w = { wq: this.q.wq.slice(), wk: this.q.wk.slice(), wv: this.q.wv.slice() };
    for (const n of ATTN_LINEARS) {
      const rs = sortedOf(rows[n]);
      if (rs.length === 0) continue;
      if (gq) {
        setRows(w[n], gptqQuantizeRows(b[n], d, gq.factorA, spec, {}, rs).deq, rs, d);
      } else {
        for (const row of rs) fakeQuantRtnRow(b[n].subarray(row * d, (row + 1) * d), spec, w[n].subarray(row * d, (row + 1) * d));
      }
    }
    // Heads whose projections change, and every q head whose context does.
    const qProj = sortedOf(new Set(Array.from(rows.wq, (r) => Math.floor(r / hd))));
    const kvHeads = sortedOf(new Set([...rows.wk, ...rows.wv].map((r) => Math.floor(r / hd))));
    const qHeads = sortedOf(new Set([...qProj, ...Array.from(kvHeads).flatMap((g) => Array.from({ length: G }, (_, r) => g * G + r))]));
    const a = { q: c.q.slice(), k: c.k.slice(), v: c.v.slice() };
    if (qProj.length) scatterHeads(a.q, headProjection(cfg, w.wq, b.bq, qProj, c.xa, seqStarts, true, ops), qProj, nHeads, hd);
    if (kvHeads.length) {
      scatterHeads(a.k, headProjection(cfg, w.wk, b.bk, kvHeads, c.xa, seqStarts, true, ops), kvHeads, nKvHeads, hd);
      scatterHeads(a.v, headProjection(cfg, w.wv, b.bv, kvHeads, c.xa, seqStarts, false, ops), kvHeads, nKvHeads, hd);
    }
    const ctx = c.ctx.slice();
    if (qHeads.length) context(cfg, a, seqStarts, qHeads, ops, ctx);
    let ctxT: F32 | undefined;
    let Hctx: F64 | undefined;
    if (gq) {
      // wo's Hessian changes in the rows and columns of the recomputed heads' context.
      const cols = Array.from(qHeads).flatMap((h) => Array.from({ length: hd }, (_, i) => h * hd + i));
      ctxT = gq.ctxT.slice();
      for (const col of cols) for (let n = 0; n < N; n++) ctxT[col * N + n] = ctx[n * qDim + col];
      Hctx = gq.Hctx.slice();
      hessianRows(Hctx, ctxT, N, qDim, cols, ops);
    }
    const wo = this.quantizeWo(b, Hctx);
    const h = attnResidual(cfg, x, ctx, wo, b.bo, ops);
    return this.withFfn(b, { w: { ...w, wo }, xa: c.xa, ...a, ctx, h, factorA: gq?.factorA, ctxT, Hctx }, 'keep');
  }

  /** act[N, k] of the given units from their quantized rows w1q/w3q [k, dim]. */
  private unitActs(act: F32, xn: F32, w1q: F32, w3q: F32 | undefined, b1: F32 | undefined, units: ArrayLike<number>): void {
    const { cfg, N } = this;
    const k = units.length;
    this.ops.matmulT(act, xn, w1q, N, cfg.dim, k);
    let p3: F32 | undefined;
    if (cfg.arch === 'llama') {
      p3 = new Float32Array(N * k);
      this.ops.matmulT(p3, xn, w3q!, N, cfg.dim, k);
    }
    activate(cfg, this.ops, act, p3, b1, units, N);
  }

  /**
   * Loss after replacing FFN units `units` (and every w2 column group containing them) by
   * those of `b`, a transformed copy of the current FP block whose other units are
   * unchanged. With `commit`, the caches are updated to the new state.
   */
  ffnMoveLoss(b: Block, units: ArrayLike<number>, commit = false): number {
    if (this.method === 'gptq') return this.ffnMoveLossGptq(b, units, commit);
    const { cfg, N, spec } = this;
    const d = cfg.dim;
    const H = cfg.hiddenDim;
    const g = spec.group;
    const S = Int32Array.from(units).sort();
    const k = S.length;
    // New quantized rows of w1/w3 for the touched units (each row is quantized on its own).
    const w1q = new Float32Array(k * d);
    const w3q = cfg.arch === 'llama' ? new Float32Array(k * d) : undefined;
    for (const [w, out] of [[b.w1, w1q], [b.w3, w3q]] as const) {
      if (!w || !out) continue;
      for (let u = 0; u < k; u++) {
        fakeQuantRtnRow(w.subarray(S[u] * d, (S[u] + 1) * d), spec, out.subarray(u * d, (u + 1) * d));
      }
    }
    // New quantized w2 columns of every group that holds a touched unit.
    const groups = [...new Set(Array.from(S, (j) => Math.floor(j / g)))].sort((a, c) => a - c);
    const cols: number[] = [];
    for (const gi of groups) for (let j = gi * g; j < Math.min(H, (gi + 1) * g); j++) cols.push(j);
    const nc = cols.length;
    const w2new = new Float32Array(d * H);
    for (const gi of groups) fakeQuantRtnRect(b.w2, H, spec, w2new, 0, d, gi, gi + 1);
    const actS = new Float32Array(N * k);
    this.unitActs(actS, this.c.xn, w1q, w3q, b.b1, S);
    // Δ = [a' | a] · [w2q' | −w2q]ᵀ over the touched columns: one matmul.
    const slot = new Int32Array(H).fill(-1);
    S.forEach((j, u) => (slot[j] = u));
    const aCat = new Float32Array(N * 2 * nc);
    for (let n = 0; n < N; n++) {
      const o = n * 2 * nc;
      for (let c = 0; c < nc; c++) {
        const j = cols[c];
        const old = this.c.act[n * H + j];
        aCat[o + c] = slot[j] >= 0 ? actS[n * k + slot[j]] : old;
        aCat[o + nc + c] = old;
      }
    }
    const wCat = new Float32Array(d * 2 * nc);
    for (let i = 0; i < d; i++) {
      for (let c = 0; c < nc; c++) {
        wCat[i * 2 * nc + c] = w2new[i * H + cols[c]];
        wCat[i * 2 * nc + nc + c] = -this.q.w2[i * H + cols[c]];
      }
    }
    const delta = new Float32Array(N * d);
    this.ops.matmulT(delta, aCat, wCat, N, 2 * nc, d);
    let loss = 0;
    const err = this.c.err;
    for (let i = 0; i < N * d; i++) {
      const e = err[i] + delta[i];
      loss += e * e;
    }
    if (commit) {
      for (let i = 0; i < N * d; i++) err[i] += delta[i];
      for (let n = 0; n < N; n++) for (let u = 0; u < k; u++) this.c.act[n * H + S[u]] = actS[n * k + u];
      this.commitUnits(b, S, w1q, w3q);
      for (let i = 0; i < d; i++) for (const j of cols) this.q.w2[i * H + j] = w2new[i * H + j];
      this.loss = loss;
    }
    return loss;
  }

  /** Rows S of the quantized w1/w3 (given in S's order) and b1 entries S of `b` into the current state. */
  private commitUnits(b: Block, S: Int32Array, w1q: F32, w3q: F32 | undefined): void {
    const { q, cfg } = this;
    setRows(q.w1, w1q, S, cfg.dim);
    if (w3q) setRows(q.w3!, w3q, S, cfg.dim);
    if (b.b1) for (const j of S) q.b1![j] = b.b1[j];
  }

  /** ffnMoveLoss on the GPTQ base (see the header): the full evaluation's computations, restricted to what S changes. */
  private ffnMoveLossGptq(b: Block, units: ArrayLike<number>, commit: boolean): number {
    const { cfg, N, spec, ops } = this;
    const d = cfg.dim;
    const H = cfg.hiddenDim;
    const c = this.c;
    const g = c.gptq!;
    const S = Int32Array.from(units).sort();
    const k = S.length;
    // Rows S of w1/w3 from the factor of their (unchanged) input Hessian.
    const w1q = gptqQuantizeRows(b.w1, d, g.factorX, spec, {}, S).deq;
    const w3q = b.w3 ? gptqQuantizeRows(b.w3, d, g.factorX, spec, {}, S).deq : undefined;
    const actS = new Float32Array(N * k);
    this.unitActs(actS, c.xn, w1q, w3q, b.b1, S);
    // The activation with units S replaced, as [N, H] and transposed [H, N].
    const act = c.act.slice();
    const actT = g.actT.slice();
    for (let n = 0; n < N; n++) {
      for (let u = 0; u < k; u++) {
        const v = actS[n * k + u];
        act[n * H + S[u]] = v;
        actT[S[u] * N + n] = v;
      }
    }
    const Ha = g.Ha.slice();
    hessianRows(Ha, actT, N, H, S, ops);
    const w2q = gptqQuantize(b.w2, d, H, Ha, spec).deq;
    const err = g.errBase.slice();
    const loss = this.addFfnOutput(err, act, w2q);
    if (commit) {
      c.err.set(err);
      c.act.set(act);
      g.actT.set(actT);
      g.Ha.set(Ha);
      this.commitUnits(b, S, w1q, w3q);
      this.q.w2.set(w2q);
      this.loss = loss;
    }
    return loss;
  }
}

/** Row i of src [rows.length, width] into row rows[i] of dst. */
function setRows(dst: F32, src: F32, rows: ArrayLike<number>, width: number): void {
  for (let i = 0; i < rows.length; i++) dst.set(src.subarray(i * width, (i + 1) * width), rows[i] * width);
}

function sortedOf(s: Iterable<number>): Int32Array {
  return Int32Array.from(s).sort();
}
