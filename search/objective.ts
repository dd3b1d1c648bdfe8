/**
 * The block-local objective (DESIGN §5): on calibration activations,
 *   L = Σ ||block_q(x_q) − block_fp(x_fp)||²   (float64)
 * where x_q is the block's input in the quantized model and the target is the FP model's
 * block output. The search divides by the starting value L0.
 *
 * `BlockObjective` holds one block's quantized weights and the caches that make FFN moves
 * cheap: the FFN input norm(h) [N, dim], the hidden activation [N, H] and the current
 * error [N, dim]. A FFN move that touches units S re-quantizes rows S of w1/w3 and the
 * w2 column groups that contain S, and updates the error by
 *   Δ = Σ_{j ∈ cols(G)} a'_j w2q'[:, j] − a_j w2q[:, j]
 * which costs N·dim·(2|S| + 2|cols(G)|) instead of a whole block.
 *
 * With GPTQ as the base, rows of w1/w3 are still quantized independently given their
 * input's Hessian, which an FFN move does not change: rows S are redone from the cached
 * factor. w2's input Hessian changes only in rows and columns S (recomputed from the cached
 * transposed activation); w2 is then quantized again whole, as GPTQ's error feedback
 * spreads over all of it. Every piece is the same float computation the full evaluation
 * does, so the loss is bit for bit the full one.
 */
import { attentionContext, norm } from '../core/forward';
import type { Ops } from '../core/ops';
import type { Block, F32, LinearName, ModelConfig } from '../core/model/types';
import { fakeQuantRtnRect, type QuantSpec } from '../core/quant/rtn';
import { gptqQuantize, gptqQuantizeRows } from '../core/quant/gptq';
import { gptqAttention, gptqFfn, hessianRows, rtnLinears, type BaseMethod, type CodeSink, type GptqFfnCache } from './blockQuant';

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

/** FFN hidden activation from projections: silu(p1)·p3 (llama) or relu(p1 + b1) (opt), in place in p1. */
function activate(cfg: ModelConfig, p1: F32, p3: F32 | undefined, b1: F32 | undefined, units: ArrayLike<number>, n: number): void {
  const k = units.length;
  for (let r = 0; r < n; r++) {
    for (let u = 0; u < k; u++) {
      const i = r * k + u;
      if (cfg.arch === 'llama') {
        const a = p1[i];
        p1[i] = (a / (1 + Math.exp(-a))) * p3![i];
      } else {
        const v = p1[i] + (b1 ? b1[units[u]] : 0);
        p1[i] = v > 0 ? v : 0;
      }
    }
  }
}

export class BlockObjective {
  readonly N: number;
  /** Quantized weights of the current block (arrays owned by this object, updated in place). */
  readonly q: Block;
  /** x + attention of the quantized block: the FFN sublayer's input, [N, dim]. */
  readonly h: F32;
  /** norm(h): FFN input, [N, dim]. */
  readonly xn: F32;
  /** FFN hidden activation, [N, H]. */
  readonly act: F32;
  /** Current error block_q(x_q) − y, [N, dim], float64. */
  readonly err: F64;
  /** GPTQ only: Σ over rows of the block output before w2's contribution, h − y (+ b2), [N, dim]. */
  readonly errBase?: F64;
  /** GPTQ only: what incremental FFN moves reuse (see GptqFfnCache). */
  readonly gptq?: GptqFfnCache;
  /** Σ err². */
  loss = 0;

  /**
   * With `state`, wraps existing caches (a worker's view of shared memory); otherwise
   * allocates them with `alloc` (SharedArrayBuffer-backed when workers share them).
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
    if (state) {
      ({ q: this.q, h: this.h, xn: this.xn, act: this.act, err: this.err, errBase: this.errBase, gptq: this.gptq } = state);
      return;
    }
    const d = cfg.dim;
    this.h = alloc.f32(this.N * d);
    this.xn = alloc.f32(this.N * d);
    this.act = alloc.f32(this.N * cfg.hiddenDim);
    this.err = alloc.f64(this.N * d);
    this.q = {} as Block;
    if (method === 'gptq') {
      const H = cfg.hiddenDim;
      this.errBase = alloc.f64(this.N * d);
      this.gptq = {
        factorX: { cols: d, U: alloc.f64(d * d), dead: new Uint8Array(alloc.bytes(d)) },
        actT: alloc.f32(H * this.N),
        Ha: alloc.f64(H * H),
      };
    }
  }

  /** The caches as plain data, to hand to workers. */
  state(): ObjectiveState {
    return { q: this.q, h: this.h, xn: this.xn, act: this.act, err: this.err, errBase: this.errBase, gptq: this.gptq };
  }

  /** Recompute the caches from the block's FP weights (full evaluation of `change`), in place. */
  reset(b: Block, change: Change = 'all'): number {
    const st = this.fullEval(b, change);
    this.h.set(st.h);
    this.xn.set(st.xn);
    this.act.set(st.act);
    this.err.set(st.err);
    if (st.gptq) this.installGptq(st.errBase!, st.gptq);
    for (const [k, v] of Object.entries(st.q) as [keyof Block, F32][]) {
      const mine = this.q[k];
      if (mine && mine.length === v.length) mine.set(v);
      else this.q[k] = copyInto(this.alloc.f32(v.length), v);
    }
    this.loss = st.loss;
    return this.loss;
  }

  /** The block's inputs, one [T, dim] per calibration sequence. */
  private inputs(): F32[] {
    const { x, seqStarts } = this.data;
    const d = this.cfg.dim;
    return seqStarts.slice(0, -1).map((r0, s) => x.subarray(r0 * d, seqStarts[s + 1] * d));
  }

  /**
   * Full evaluation of a transformed block `b` (FP weights); returns the caches without
   * installing them. `change` says what differs from the current state: with 'ffn' the
   * attention sublayer is unchanged and its cached output h is reused; with 'attn' an RTN
   * FFN keeps its quantized weights (GPTQ's depend on the FFN input, so they are redone).
   * `codes` receives the integer codes of the linears this evaluation quantizes.
   */
  fullEval(b: Block, change: Change = 'all', codes?: CodeSink): FullEval {
    const { cfg, N, spec, ops } = this;
    const d = cfg.dim;
    const H = cfg.hiddenDim;
    const { x, y, seqStarts } = this.data;
    const gptq = this.method === 'gptq';
    const attnQ: Partial<Block> = change === 'ffn'
      ? { wq: this.q.wq, wk: this.q.wk, wv: this.q.wv, wo: this.q.wo }
      : gptq ? gptqAttention(cfg, b, this.inputs(), spec, ops, codes) : rtnLinears(cfg, b, spec, ['wq', 'wk', 'wv', 'wo'], codes);
    const q: Block = { ...b, ...attnQ };
    const xn = new Float32Array(N * d);
    const act = new Float32Array(N * H);
    const err = new Float64Array(N * d);
    const qDim = cfg.nHeads * cfg.headDim;
    const h = change === 'ffn' ? this.h : new Float32Array(N * d);
    if (change !== 'ffn') {
      for (let s = 0; s + 1 < seqStarts.length; s++) {
        const r0 = seqStarts[s];
        const T = seqStarts[s + 1] - r0;
        const xs = x.subarray(r0 * d, (r0 + T) * d);
        const xa = new Float32Array(T * d);
        norm(cfg, xa, xs, q.attnNorm, q.attnNormBias, T);
        const ctx = attentionContext(cfg, q, xa, T, ops);
        const hs = h.subarray(r0 * d, (r0 + T) * d);
        hs.set(xs);
        ops.matmulT(hs, ctx, q.wo, T, qDim, d, true);
        if (q.bo) for (let t = 0; t < T; t++) for (let i = 0; i < d; i++) hs[t * d + i] += q.bo[i];
      }
    }
    norm(cfg, xn, h, q.ffnNorm, q.ffnNormBias, N);
    const ffnNames: LinearName[] = b.w3 ? ['w1', 'w3', 'w2'] : ['w1', 'w2'];
    for (let i = 0; i < N * d; i++) err[i] = h[i] - y[i] + (q.b2 ? q.b2[i % d] : 0);
    let gptqCache: GptqFfnCache | undefined;
    let errBase: F64 | undefined;
    if (gptq) {
      const f = gptqFfn(cfg, b, xn, N, spec, ops, codes);
      for (const n of ffnNames) q[n] = f.q[n]!;
      act.set(f.act);
      gptqCache = f.cache;
      errBase = err.slice();
    } else {
      const ffnQ: Partial<Block> = change === 'attn' ? { w1: this.q.w1, w3: this.q.w3, w2: this.q.w2 } : rtnLinears(cfg, b, spec, ffnNames, codes);
      for (const n of ffnNames) q[n] = ffnQ[n]!;
      this.unitActs(act, xn, q.w1, q.w3, q.b1, allUnits(H));
    }
    // err += act · w2qᵀ, then Σ err² in float64.
    const loss = this.addFfnOutput(err, act, q.w2);
    return { q, h, xn, act, err, loss, errBase, gptq: gptqCache };
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

  private installGptq(errBase: F64, c: GptqFfnCache): void {
    const mine = this.gptq!;
    this.errBase!.set(errBase);
    mine.factorX.U.set(c.factorX.U);
    mine.factorX.dead.set(c.factorX.dead);
    mine.actT.set(c.actT);
    mine.Ha.set(c.Ha);
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
    activate(cfg, act, p3, b1, units, N);
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
    this.unitActs(actS, this.xn, w1q, w3q, b.b1, S);
    // Δ = [a' | a] · [w2q' | −w2q]ᵀ over the touched columns: one matmul.
    const slot = new Int32Array(H).fill(-1);
    S.forEach((j, u) => (slot[j] = u));
    const aCat = new Float32Array(N * 2 * nc);
    for (let n = 0; n < N; n++) {
      const o = n * 2 * nc;
      for (let c = 0; c < nc; c++) {
        const j = cols[c];
        const old = this.act[n * H + j];
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
    const err = this.err;
    for (let i = 0; i < N * d; i++) {
      const e = err[i] + delta[i];
      loss += e * e;
    }
    if (commit) {
      for (let i = 0; i < N * d; i++) err[i] += delta[i];
      for (let n = 0; n < N; n++) for (let u = 0; u < k; u++) this.act[n * H + S[u]] = actS[n * k + u];
      const q = this.q;
      for (let u = 0; u < k; u++) {
        q.w1.set(w1q.subarray(u * d, (u + 1) * d), S[u] * d);
        if (w3q) q.w3!.set(w3q.subarray(u * d, (u + 1) * d), S[u] * d);
        if (b.b1) q.b1![S[u]] = b.b1[S[u]];
      }
      for (let i = 0; i < d; i++) for (const j of cols) q.w2[i * H + j] = w2new[i * H + j];
      this.loss = loss;
    }
    return loss;
  }

  /** ffnMoveLoss on the GPTQ base (see the header): the full evaluation's computations, restricted to what S changes. */
  private ffnMoveLossGptq(b: Block, units: ArrayLike<number>, commit: boolean): number {
    const { cfg, N, spec, ops } = this;
    const d = cfg.dim;
    const H = cfg.hiddenDim;
    const c = this.gptq!;
    const S = Int32Array.from(units).sort();
    const k = S.length;
    // Rows S of w1/w3 from the factor of their (unchanged) input Hessian.
    const w1q = gptqQuantizeRows(b.w1, d, c.factorX, spec, {}, S).deq;
    const w3q = b.w3 ? gptqQuantizeRows(b.w3, d, c.factorX, spec, {}, S).deq : undefined;
    const actS = new Float32Array(N * k);
    this.unitActs(actS, this.xn, w1q, w3q, b.b1, S);
    // The activation with units S replaced, as [N, H] and transposed [H, N].
    const act = this.act.slice();
    const actT = c.actT.slice();
    for (let n = 0; n < N; n++) {
      for (let u = 0; u < k; u++) {
        const v = actS[n * k + u];
        act[n * H + S[u]] = v;
        actT[S[u] * N + n] = v;
      }
    }
    const Ha = c.Ha.slice();
    hessianRows(Ha, actT, N, H, S, ops);
    const w2q = gptqQuantize(b.w2, d, H, Ha, spec).deq;
    const err = this.errBase!.slice();
    const loss = this.addFfnOutput(err, act, w2q);
    if (commit) {
      this.err.set(err);
      this.act.set(act);
      c.actT.set(actT);
      c.Ha.set(Ha);
      const q = this.q;
      for (let u = 0; u < k; u++) {
        q.w1.set(w1q.subarray(u * d, (u + 1) * d), S[u] * d);
        if (w3q) q.w3!.set(w3q.subarray(u * d, (u + 1) * d), S[u] * d);
        if (b.b1) q.b1![S[u]] = b.b1[S[u]];
      }
      q.w2.set(w2q);
      this.loss = loss;
    }
    return loss;
  }
}

export interface ObjectiveState {
  q: Block;
  h: F32;
  xn: F32;
  act: F32;
  err: F64;
  errBase?: F64;
  gptq?: GptqFfnCache;
}

/** A full evaluation's results (what `reset` installs). */
export interface FullEval {
  q: Block;
  h: F32;
  xn: F32;
  act: F32;
  err: F64;
  loss: number;
  errBase?: F64;
  gptq?: GptqFfnCache;
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

export function copyInto<T extends F32 | F64>(dst: T, src: ArrayLike<number>): T {
  dst.set(src);
  return dst;
}

function allUnits(H: number): Int32Array {
  return Int32Array.from({ length: H }, (_, j) => j);
}
