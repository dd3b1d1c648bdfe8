/**
 * Norm-gain tuning: the last pass of a run. The norm gains of a block are float in every
 * export, so the quantized model may use other values than the transformed FP model
 * without costing a bit of size: after the search, each channel of a quantized block's
 * attention norm, then of its FFN norm, is multiplied by the factor that lowers the block
 * objective ‖block_q(x_q) − block_fp(x_fp)‖² most of the three it tries (parabolaMin), or
 * left alone. The quantized linears stay as they are (but for row gains, below); the
 * factors are recorded with the accepted moves, so a resumed run and the export rebuild
 * the same model (blocks.ts applies them to the quantized block, never to the transformed
 * FP one).
 *
 * On the RTN base the pass may also give each row of the quantized wq, wk, wv, w1 and w3 a
 * gain (`rows`): free in size too, since a packed row's group scales are float
 * (rowGains.ts).
 *
 * An attention-norm candidate is scored by the whole block on the calibration rows, an
 * FFN-norm one by the FFN side alone on the attention output cached for the tuned
 * attention norm, a wq, wk or wv row by the heads that read it and thin products
 * (normScorers.ts). That is ~dim·3 block passes per block, cheap on small
 * models and far too dear on big ones: `normTuneSeqs` fits the rows to a FLOP limit. Each
 * candidate's rows are split over the search's worker threads (normRows.ts), the loss
 * summed here in row order, so the thread count changes no bit.
 */
import { attnRows } from '../core/forwardRows';
import { linearShape, type Block, type F32, type ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import { QKV_LINEARS } from './blockQuant';
import { blockIn, copyInto, plainAlloc, type BlockData } from './blockState';
import { inThread, rowRanges, seqRanges } from './normRows';
import { AttnRowScorer, FfnNormScorer, sumSquaredDiff } from './normScorers';
import { bestTry, MAX_STEP, parabolaMin, PROBE } from './parabola';
import { fitGateGains, fitUnitGains } from './rowGains';
import { tokenFlops } from './plan';

/** Candidates scored per channel at most. */
const PER_CHANNEL = 3;
/** Turns of w1's and w3's fits (rowGains.ts). */
export const FFN_ROW_SWEEPS = 3;
/** FLOPs counted for fitGateGains's silu evaluations per row and unit. */
const FIT_SILU_FLOPS = 100;

/** Linears whose quantized rows the pass may scale (rowGains): each feeds the block's output only through a later product. */
export const GAINED_LINEARS = [...QKV_LINEARS, 'w1', 'w3'] as const;
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
 * without biases), the attention norm and then the rows of wq, wk and wv, each as a
 * channel, on the first rowSeqs(seqs) sequences; after the FFN norm the units' gains on
 * w1 and w3 (fitGateGains, fitUnitGains) and the FFN norm again. `q` is not changed. The
 * objective before and after is measured on every row. The candidates' rows run on
 * `runner` (the search's worker threads, or this one): the same bits either way.
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
  // coordinate search over the coordinates of factors `f`, from loss `start` (of the values
  // as they are); `set(c, k)` puts coordinate c at its value on entry × f[c] × k, `loss(c, k)`
  // is the loss with it set so, `commit(c, k)` is told of a kept k (then f[c] is f[c] · k)
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
      const k = parabolaMin(lo, best, hi);
      const tried = bestTry(best, lo, hi, k, k === null ? NaN : await at(k));
      const pick = tried?.pick ?? 1;
      if (tried) best = tried.loss;
      set(c, pick);
      f[c] *= pick;
      if (pick !== 1) await commit?.(c, pick);
    }
    return best;
  };
  const gains: Partial<Record<GainedLinear, Float64Array>> = {};
  // (a bias would not scale with its row: llama blocks without them only)
  const rowsOn = rows && cfg.arch === 'llama' && !!w.w3 && !w.bq && !w.bk && !w.bv && !w.b1 && !w.b2;
  // with row gains the attention side is scored on the first half of the sequences: its
  // rows are three times its norm's channels (and the norm on half of them is as good)
  const m = rowsOn ? rowSeqs(n) : n;
  const attnLoss = () => blockLoss(m);
  await tune(setterOf(w.attnNorm, 1, factors.attn), factors.attn, await attnLoss(), attnLoss);
  if (rowsOn) {
    const s = new AttnRowScorer(cfg, w, x.subarray(0, rowsOf(m)), seqStarts.slice(0, m + 1), data.y.subarray(0, rowsOf(m)), ops, runner);
    let best = await s.loss('wq', 0);
    for (const name of QKV_LINEARS) {
      const f = (gains[name] = new Float64Array(linearShape(cfg, name)[0]).fill(1));
      best = await tune(setterOf(w[name], d, f), f, best, (r) => s.loss(name, r), (r) => s.commit(name, r));
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
  const setFfnNorm = setterOf(w.ffnNorm, 1, factors.ffn);
  const tuneFfnNorm = async () => {
    const start = await ffnLoss();
    if (cfg.arch === 'llama' && !w.b1 && !w.b2) {
      const s = new FfnNormScorer(cfg, w, h, y, ops, runner);
      await tune(setFfnNorm, factors.ffn, start, (c, k) => s.loss(c, k), (c, k) => s.commit(c, k));
    } else {
      await tune(setFfnNorm, factors.ffn, start, ffnLoss);
    }
  };
  await tuneFfnNorm();
  if (rowsOn) {
    // w1's gates and w3's units in turn, each fit seeing the other's gains (a unit's gain
    // lies within (1 ± MAX_STEP)^FFN_ROW_SWEEPS), then the FFN norm again on them
    const H = cfg.hiddenDim;
    const f1 = (gains.w1 = new Float64Array(H).fill(1));
    const f3 = (gains.w3 = new Float64Array(H).fill(1));
    const keep = (set: Setter, f: Float64Array) => (k: number, u: number) => {
      set(u, k);
      f[u] *= k;
    };
    const [keep1, keep3] = [keep(setterOf(w.w1, d, f1), f1), keep(setterOf(w.w3!, d, f3), f3)];
    for (let i = 0; i < FFN_ROW_SWEEPS; i++) {
      fitGateGains(cfg, w, h, y, ops).forEach(keep1);
      fitUnitGains(cfg, w, h, y, ops, MAX_STEP).forEach(keep3);
    }
    scored += 2 * FFN_ROW_SWEEPS * H;
    await tuneFfnNorm();
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

/** Coordinate c of `a` (`width` values: a linear's row, or 1, a norm's channel) at its values on entry × f[c] × k. */
function setterOf(a: F32, width: number, f: Float64Array): Setter {
  const a0 = a.slice();
  return (c, k) => {
    const g = f[c] * k;
    for (let j = c * width; j < (c + 1) * width; j++) a[j] = a0[j] * g;
  };
}

/**
 * The most FLOPs a run spends on the pass (~10 minutes at the plan's candidate rate; the
 * shipped model's small products run at about a third of it): on the default calibration
 * set (32 × 256 tokens) the shipped model's pass costs ~1·10¹², a 15M-parameter model's
 * ~1·10¹⁴ (it tunes on 5 of the 32 sequences, 4 with row gains), a 110M one's ~4·10¹⁵ (skipped).
 */
export const NORM_TUNE_MAX_FLOPS = 2e13;
/** Fewer calibration sequences than this would fit the tuning to too few rows: the run skips it. */
export const NORM_TUNE_MIN_SEQS = 4;

/**
 * FLOPs of tuning every block's norms on `rows` calibration rows of `seqTokens` tokens:
 * attention-norm candidates redo the block, FFN-norm ones w2's product and the gate. With
 * `rowGains`, the attention side is scored on half the sequences (rowSeqs), its norm's
 * channels and the rows of wq, wk and wv (attnRowFlops); each turn of w1's and w3's fits
 * costs per row and unit w3's Gram matrix, ~5 products through dim and 5 silu evaluations
 * (FIT_SILU_FLOPS); the FFN norm is tuned twice.
 */
export function normTuneCost(cfg: ModelConfig, rows: number, seqTokens: number, rowGains = false): number {
  const { dim: d, hiddenDim: H } = cfg;
  const block = tokenFlops(cfg, seqTokens).block;
  const ffnNorm = d * PER_CHANNEL * 2 * H * d;
  if (!rowGains) return cfg.nLayers * rows * (d * PER_CHANNEL * block + ffnNorm);
  const scored = rowSeqs(rows / seqTokens) * seqTokens;
  const attnSide = scored * PER_CHANNEL * (d * block + attnRowFlops(cfg, seqTokens));
  const ffnSide = rows * (2 * ffnNorm + FFN_ROW_SWEEPS * H * (2 * H + 10 * d + FIT_SILU_FLOPS));
  return cfg.nLayers * (attnSide + ffnSide);
}

/**
 * FLOPs per token of one candidate for each row of wq, wk and wv (AttnRowScorer): the
 * changed head's projection, causal attention of the K columns of the query heads reading
 * it, their change through wo, m1 and m3, and w2's product.
 */
export function attnRowFlops(cfg: ModelConfig, seqTokens: number): number {
  const { dim: d, hiddenDim: H, headDim: hd } = cfg;
  const one = (K: number) => 2 * d * hd + 2 * seqTokens * K + 2 * K * d + 4 * K * H + 2 * H * d;
  return cfg.nHeads * hd * one(hd) + 2 * cfg.nKvHeads * hd * one((cfg.nHeads / cfg.nKvHeads) * hd);
}

/** The calibration sequences (of `seqs`, `seqTokens` tokens each) the pass tunes on within NORM_TUNE_MAX_FLOPS: 0 when fewer than NORM_TUNE_MIN_SEQS would fit. */
export function normTuneSeqs(cfg: ModelConfig, seqs: number, seqTokens: number, rowGains = false): number {
  let fit = 0;
  while (fit < seqs && normTuneCost(cfg, (fit + 1) * seqTokens, seqTokens, rowGains) <= NORM_TUNE_MAX_FLOPS) fit++;
  return fit >= Math.min(seqs, NORM_TUNE_MIN_SEQS) ? fit : 0;
}
