/**
 * Norm-gain tuning: the last pass of a run. The norm gains of a block are float in every
 * export, so the quantized model may use other values than the transformed FP model
 * without costing a bit of size: after the search, each channel of a quantized block's
 * attention norm, then of its FFN norm, is multiplied by the factor that lowers the block
 * objective ‖block_q(x_q) − block_fp(x_fp)‖² most of the three it tries (parabolaMin), or
 * left alone. The quantized linears stay as they are (but for row gains, below); the factors are recorded with the
 * accepted moves, so a resumed run and the export rebuild the same model (blocks.ts
 * applies them to the quantized block, never to the transformed FP one).
 *
 * On the RTN base the pass may also give each row of the quantized wq, wk, wv and w3 a gain
 * (`rows`): free in size too, since a packed row's group scales are float (rowGains.ts).
 *
 * An attention-norm candidate is scored by the whole block on the calibration rows, an
 * FFN-norm one by the FFN side alone on the attention output cached for the tuned
 * attention norm (FfnNormScorer). That is ~dim·3 block passes per block, cheap on small
 * models and far too dear on big ones: `normTuneSeqs` fits the rows to a FLOP limit. Each
 * candidate's rows are split over the search's worker threads (normRows.ts), the loss
 * summed here in row order, so the thread count changes no bit.
 */
import { attnRows, ffnInput } from '../core/forwardRows';
import { linearShape, type Block, type F32, type ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import { QKV_LINEARS } from './blockQuant';
import { blockIn, copyInto, plainAlloc, type BlockData } from './blockState';
import { inThread, rowRanges, seqRanges, type FfnNormState, type NormRunner } from './normRows';
import { fitUnitGains } from './rowGains';
import { tokenFlops } from './plan';

/** A channel's factor is probed at 1 ± PROBE, then tried at the parabola's minimum through the three losses, within 1 ± MAX_STEP. */
export const PROBE = 0.02;
const MAX_STEP = 0.1;
/** Candidates scored per channel at most. */
const PER_CHANNEL = 3;

/**
 * The factor at the minimum of the parabola through (1 − PROBE, lo), (1, mid), (1 + PROBE, hi),
 * clamped to 1 ± MAX_STEP; null when it has none (not convex) or it is 1 or a probe, scored already.
 */
export function parabolaMin(lo: number, mid: number, hi: number): number | null {
  const curv = lo + hi - 2 * mid;
  if (!(curv > 0)) return null;
  const k = 1 + (PROBE * (lo - hi)) / (2 * curv);
  const clamped = Math.min(1 + MAX_STEP, Math.max(1 - MAX_STEP, k));
  return clamped === 1 - PROBE || clamped === 1 + PROBE || clamped === 1 ? null : clamped;
}

/** Linears whose quantized rows the pass may scale (rowGains): each feeds the block's output only through a later product. */
export const GAINED_LINEARS = [...QKV_LINEARS, 'w3'] as const;
export type GainedLinear = (typeof GAINED_LINEARS)[number];

/** Per channel, the factor each norm gain of a block is multiplied by (1: unchanged); per row, the factor of a quantized linear's row (core/quant/rowGains.ts), for the linears that have one ≠ 1. */
export interface NormFactors {
  attn: Float64Array;
  ffn: Float64Array;
  rows?: Partial<Record<GainedLinear, Float64Array>>;
}

/** `g` with channel c multiplied by f[c] (a new array; float32 products, as the tuning wrote them). */
export function scaledGain(g: F32, f: Float64Array): F32 {
  const out = g.slice();
  for (let c = 0; c < out.length; c++) if (f[c] !== 1) out[c] = g[c] * f[c];
  return out;
}

/** A copy of block `q` whose norm gains are multiplied by `f` (its other arrays shared). */
export function withNormFactors(q: Block, f: NormFactors): Block {
  return { ...q, attnNorm: scaledGain(q.attnNorm, f.attn), ffnNorm: scaledGain(q.ffnNorm, f.ffn) };
}

function sumSquaredDiff(a: F32, b: F32): number {
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
 * the gate and w2's product are redone (a third of the FFN's products; normRows.ts). The
 * kept changes accumulate into the cached outputs: float32 round-off apart from a fresh
 * pass, which the decisions tolerate (the reported losses are fresh passes).
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

export interface NormTuneResult {
  factors: NormFactors;
  /** Block objective before and after. */
  before: number;
  after: number;
  /** Candidates scored (each unit of w3 counted once), channels and rows changed. */
  scored: number;
  changed: number;
}

/**
 * Tunes the norm gains of quantized block `q` on the first `seqs` sequences of its
 * calibration rows `data` (inputs in the quantized model, FP outputs as the target),
 * channel by channel in order, the attention norm first. With `rows` (a llama block
 * without biases), the rows of wq, wk and wv after the attention norm, each as a channel
 * scored on the first rowSeqs(seqs) sequences, and after the FFN norm the units of w3
 * (fitUnitGains). `q` is not changed. The objective
 * before and after is measured on every row. The candidates' rows run on `runner` (the
 * search's worker threads, or this one): the same bits either way.
 */
export async function tuneNorms(cfg: ModelConfig, q: Block, data: BlockData, ops: Ops, seqs: number, runner = inThread(ops, plainAlloc), rows = false): Promise<NormTuneResult> {
  const { alloc, parts } = runner;
  const d = cfg.dim;
  const shared = (a: F32) => copyInto(alloc.f32(a.length), a);
  // the tuned copy, in memory the tasks read: its gains change in place between tasks
  const w = blockIn(alloc, q);
  const factors: NormFactors = { attn: new Float64Array(d).fill(1), ffn: new Float64Array(d).fill(1) };
  const { seqStarts } = data;
  const x = shared(data.x);
  const out = alloc.f32(data.x.length);
  const n = Math.min(seqs, seqStarts.length - 1);
  const rowsOf = (k: number) => seqStarts[k] * d;
  // the block on the first k sequences' rows, against their targets
  const blockLoss = async (k: number) => {
    await runner.run(seqRanges(seqStarts, k, parts).map(([s0, s1]) => ({ kind: 'block', cfg, w, x, seqStarts, s0, s1, out })));
    return sumSquaredDiff(out.subarray(0, rowsOf(k)), data.y.subarray(0, rowsOf(k)));
  };
  let scored = 0;
  // coordinate search over `f.length` coordinates, from loss `start` (of the values as they
  // are); `set(c, k)` puts coordinate c at its old value × k (k = 1: its old value),
  // `loss(c, k)` is the loss with it set so, `commit(c, k)` is told of a kept k
  type Loss = (c: number, k: number) => Promise<number>;
  const tune = async (set: Setter, f: Float64Array, start: number, loss: Loss, commit?: (c: number, k: number) => Promise<void>) => {
    let best = start;
    for (let c = 0; c < f.length; c++) {
      const at = (k: number) => {
        set(c, k);
        scored++;
        return loss(c, k);
      };
      const lo = await at(1 - PROBE);
      const hi = await at(1 + PROBE);
      let [pick, pickLoss] = lo < hi ? [1 - PROBE, lo] : [1 + PROBE, hi];
      const k = parabolaMin(lo, best, hi);
      if (k !== null) {
        const l = await at(k);
        if (l < pickLoss) [pick, pickLoss] = [k, l];
      }
      if (pickLoss < best) best = pickLoss;
      else pick = 1;
      set(c, pick);
      f[c] = pick;
      if (pick !== 1) await commit?.(c, pick);
    }
    return best;
  };
  const attnLoss = () => blockLoss(n);
  await tune(gainSetter(w.attnNorm), factors.attn, await attnLoss(), attnLoss);
  const gains: Partial<Record<GainedLinear, Float64Array>> = {};
  // (a bias would not scale with its row: llama blocks without them only)
  const rowsOn = rows && cfg.arch === 'llama' && !!w.w3 && !w.bq && !w.bk && !w.bv && !w.b1 && !w.b2;
  if (rowsOn) {
    // scored on the first half of the sequences: there are twice as many rows as channels
    const rowLoss = () => blockLoss(rowSeqs(n));
    let best = await rowLoss();
    for (const name of QKV_LINEARS) {
      const f = (gains[name] = new Float64Array(linearShape(cfg, name)[0]).fill(1));
      best = await tune(rowSetter(w[name], d), f, best, rowLoss);
    }
  }
  // the attention side is fixed from here on: each FFN-norm candidate redoes the FFN alone
  const h = shared(attnRows(cfg, w, { x: x.subarray(0, rowsOf(n)), seqStarts: seqStarts.slice(0, n + 1) }, ops).h);
  const y = data.y.subarray(0, rowsOf(n));
  const ffnRanges = rowRanges(seqStarts[n], parts);
  const ffnLoss = async () => {
    await runner.run(ffnRanges.map(([r0, r1]) => ({ kind: 'ffn', cfg, w, h, r0, r1, out })));
    return sumSquaredDiff(out.subarray(0, rowsOf(n)), y);
  };
  const start = await ffnLoss();
  if (cfg.arch === 'llama' && !w.b1 && !w.b2) {
    const s = new FfnNormScorer(cfg, w, h, y, ops, runner);
    await tune(gainSetter(w.ffnNorm), factors.ffn, start, (c, k) => s.loss(c, k), (c, k) => s.commit(c, k));
  } else {
    await tune(gainSetter(w.ffnNorm), factors.ffn, start, ffnLoss);
  }
  if (rowsOn) {
    const f = (gains.w3 = fitUnitGains(cfg, w, h, y, ops, MAX_STEP));
    const set = rowSetter(w.w3!, d);
    f.forEach((k, u) => set(u, k));
    scored += cfg.hiddenDim;
  }
  for (const [name, f] of Object.entries(gains)) if (f.some((k) => k !== 1)) (factors.rows ??= {})[name as GainedLinear] = f;
  const all = seqStarts.length - 1;
  // with the row gains as float32 products; the quantized block carries them in its scales (rowGains.ts), within their fp16 rounding
  const after = await blockLoss(all);
  for (const k of ['attnNorm', 'ffnNorm', ...GAINED_LINEARS] as const) if (q[k]) w[k]!.set(q[k]!);
  const before = await blockLoss(all);
  const changed = [factors.attn, factors.ffn, ...Object.values(factors.rows ?? {})].reduce((s, f) => s + f.filter((k) => k !== 1).length, 0);
  return { factors, before, after, scored, changed };
}

/** Of the `n` sequences the norms are tuned on, those the attention rows' candidates are scored on. */
export function rowSeqs(n: number): number {
  return Math.ceil(n / 2);
}

type Setter = (c: number, k: number) => void;

/** Channel c of gain g at its value on entry × k. */
function gainSetter(g: F32): Setter {
  const g0 = g.slice();
  return (c, k) => {
    g[c] = k === 1 ? g0[c] : g0[c] * k;
  };
}

/** Row r of w [·, cols] at its values on entry × k. */
function rowSetter(w: F32, cols: number): Setter {
  const w0 = w.slice();
  return (r, k) => {
    for (let j = r * cols; j < (r + 1) * cols; j++) w[j] = k === 1 ? w0[j] : w0[j] * k;
  };
}

/**
 * The most FLOPs a run spends on the pass (~10 minutes at the plan's candidate rate; the
 * shipped model's small products run at about a third of it): on the default calibration
 * set (32 × 256 tokens) the shipped model's pass costs ~1·10¹², a 15M-parameter model's
 * ~1·10¹⁴ (it tunes on 5 of the 32 sequences), a 110M one's ~4·10¹⁵ (skipped).
 */
export const NORM_TUNE_MAX_FLOPS = 2e13;
/** Fewer calibration sequences than this would fit the tuning to too few rows: the run skips it. */
export const NORM_TUNE_MIN_SEQS = 4;

/**
 * FLOPs of tuning every block's norms on `rows` calibration rows of `seqTokens` tokens:
 * attention-norm candidates redo the block, FFN-norm ones w2's product and the gate; with
 * `rowGains`, each row of wq, wk and wv is a block-redoing candidate too (on half the
 * sequences, rowSeqs), and w3's fit costs its Gram matrices (rows · H · (H + dim)
 * multiply-adds).
 */
export function normTuneCost(cfg: ModelConfig, rows: number, seqTokens: number, rowGains = false): number {
  const perRow = tokenFlops(cfg, seqTokens).block + 2 * cfg.hiddenDim * cfg.dim;
  const norms = cfg.nLayers * cfg.dim * PER_CHANNEL * rows * perRow;
  if (!rowGains) return norms;
  const attnRows = (cfg.nHeads + 2 * cfg.nKvHeads) * cfg.headDim;
  const H = cfg.hiddenDim;
  const scored = rowSeqs(rows / seqTokens) * seqTokens;
  return norms + cfg.nLayers * (scored * attnRows * PER_CHANNEL * tokenFlops(cfg, seqTokens).block + 2 * rows * H * (H + cfg.dim));
}

/** The calibration sequences (of `seqs`, `seqTokens` tokens each) the pass tunes on within NORM_TUNE_MAX_FLOPS: 0 when fewer than NORM_TUNE_MIN_SEQS would fit. */
export function normTuneSeqs(cfg: ModelConfig, seqs: number, seqTokens: number, rowGains = false): number {
  let fit = 0;
  while (fit < seqs && normTuneCost(cfg, (fit + 1) * seqTokens, seqTokens, rowGains) <= NORM_TUNE_MAX_FLOPS) fit++;
  return fit >= Math.min(seqs, NORM_TUNE_MIN_SEQS) ? fit : 0;
}
