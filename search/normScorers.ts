/**
 * The norm pass's incremental candidate scorers (normTune.ts): a candidate there changes
 * one norm channel or one linear's row, and these redo only the part of the block that
 * change reaches, over the search's worker threads (normRows.ts). The kept changes
 * accumulate into their cached state: float32 round-off apart from a fresh pass, which the
 * decisions tolerate (the losses the pass reports are fresh passes).
 */
import { attnInput, attnResidual, context, ffnInput, qkv } from '../core/forwardRows';
import type { Block, F32, ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { AttnRowLinear, AttnRowState } from './attnRowRows';
import { copyInto, plainAlloc } from './blockState';
import { inThread, rowRanges, seqRanges, type FfnNormState, type NormRunner } from './normRows';

/** Σ (a − b)², in float64. */
export function sumSquaredDiff(a: F32, b: F32): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

/**
 * Scores FFN-norm candidates of a llama FFN on fixed rows h: a channel's gain scales one
 * column of the FFN's input, so w1's and w3's outputs change by a rank-one term, and only
 * the gate and w2's product are redone (a third of the FFN's products; normRows.ts).
 */
export class FfnNormScorer {
  private readonly st: FfnNormState;
  private readonly out: F32;
  private readonly ranges: [number, number][];

  /** `w`, `h` and `y` as the runner's tasks can read them (its memory). */
  constructor(private cfg: ModelConfig, private w: Block, h: F32, private y: F32, ops: Ops, private runner: NormRunner = inThread(ops, plainAlloc)) {
    const { dim: d, hiddenDim: H } = cfg;
    const N = h.length / d;
    const { alloc } = runner;
    const xn = ffnInput(cfg, w, h, N);
    this.st = { h, xn: copyInto(alloc.f32(xn.length), xn), pre1: alloc.f32(N * H), pre3: alloc.f32(N * H) };
    ops.matmulT(this.st.pre1, xn, w.w1, N, d, H);
    ops.matmulT(this.st.pre3, xn, w.w3!, N, d, H);
    this.out = alloc.f32(N * d);
    this.ranges = rowRanges(N, runner.parts);
  }

  /** The loss with channel c of the FFN norm's gain multiplied by k. */
  async loss(c: number, k: number): Promise<number> {
    const { cfg, w, st, out } = this;
    await this.runner.run(this.ranges.map(([r0, r1]) => ({ kind: 'ffnNorm', cfg, w, st, c, k, r0, r1, out })));
    return sumSquaredDiff(out, this.y);
  }

  /** Keep channel c's factor k. */
  async commit(c: number, k: number): Promise<void> {
    const { cfg, w, st } = this;
    await this.runner.run(this.ranges.map(([r0, r1]) => ({ kind: 'ffnNormCommit', cfg, w, st, c, k, r0, r1 })));
  }
}

/**
 * Scores row candidates of a llama block's wq, wk and wv (attnRowRows.ts) on packed rows
 * x of sequences `seqStarts` against the target y: the attention norm and the FFN side as
 * `w` holds them now (only the attention rows change from here on).
 */
export class AttnRowScorer {
  private readonly st: AttnRowState;
  private readonly out: F32;
  private readonly ranges: [number, number][];

  /** `w` as the runner's tasks can read it (its memory). */
  constructor(private cfg: ModelConfig, private w: Block, x: F32, seqStarts: number[], private y: F32, ops: Ops, private runner: NormRunner = inThread(ops, plainAlloc)) {
    const { dim: d, hiddenDim: H } = cfg;
    const qDim = cfg.nHeads * cfg.headDim;
    const N = x.length / d;
    const shared = (a: F32) => copyInto(runner.alloc.f32(a.length), a);
    const xa = attnInput(cfg, w, x, N);
    const a = qkv(cfg, w, xa, seqStarts, ops);
    const ctx = new Float32Array(N * qDim);
    context(cfg, a, seqStarts, null, ops, ctx);
    const h = attnResidual(cfg, x, ctx, w.wo, undefined, ops);
    const g = w.ffnNorm;
    const hg = h.map((v, i) => v * g[i % d]);
    const w1g = w.w1.map((v, i) => v * g[i % d]);
    const w3g = w.w3!.map((v, i) => v * g[i % d]);
    const woT = new Float32Array(qDim * d);
    for (let i = 0; i < d; i++) for (let c = 0; c < qDim; c++) woT[c * d + i] = w.wo[i * qDim + c];
    const product = (m: F32, w: F32, rows: number, cols: number) => {
      const p = runner.alloc.f32(rows * cols);
      ops.matmulT(p, m, w, rows, d, cols);
      return p;
    };
    this.st = {
      seqStarts, xa: shared(xa), q: shared(a.q), k: shared(a.k), v: shared(a.v), ctx: shared(ctx), h: shared(h),
      u1: product(hg, w.w1, N, H), u3: product(hg, w.w3!, N, H), m1: product(w1g, woT, H, qDim), m3: product(w3g, woT, H, qDim),
    };
    this.out = runner.alloc.f32(N * d);
    this.ranges = seqRanges(seqStarts, seqStarts.length - 1, runner.parts);
  }

  /** The loss with row r of `name` as the block now holds it. */
  async loss(name: AttnRowLinear, r: number): Promise<number> {
    const { cfg, w, st, out } = this;
    await this.runner.run(this.ranges.map(([s0, s1]) => ({ kind: 'attnRow', cfg, w, st, name, r, s0, s1, out })));
    return sumSquaredDiff(out, this.y);
  }

  /** Keep row r of `name` as the block now holds it. */
  async commit(name: AttnRowLinear, r: number): Promise<void> {
    const { cfg, w, st } = this;
    await this.runner.run(this.ranges.map(([s0, s1]) => ({ kind: 'attnRow', cfg, w, st, name, r, s0, s1 })));
  }
}
