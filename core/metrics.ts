/**
 * Quality metrics of a (quantized) model on token sequences (DESIGN.md §9):
 *
 *   nll  = mean over predicted positions of −log p(x_{t+1} | x_≤t)   (teacher forcing)
 *   ppl  = exp(nll)
 *   kl   = mean over the same positions of KL(p_FP ‖ p_model)
 *
 * A sequence of T tokens predicts positions 1…T-1 from the logits at 0…T-2 (position 0,
 * usually BOS, is context only). Logits are float32; log-softmax, KL terms and every sum are
 * float64. The models run block-major over all sequences (core/blockPass.ts: each block's
 * weights read once, so a streamed model decodes each block once); the logits are then taken
 * sequence by sequence, so memory is the residual streams and one sequence's logits per model.
 */
import { fail } from './errors';
import { forEachSeqLogits } from './blockPass';
import type { Ops } from './ops';
import type { Model } from './model/types';

export interface MetricOptions {
  /** Compute backend for the forward passes (default: plain JS). */
  ops?: Ops;
}

export interface Perplexity {
  /** Mean next-token negative log-likelihood in nats. */
  nll: number;
  ppl: number;
  /** Number of predicted positions averaged over. */
  positions: number;
}

export interface Quality extends Perplexity {
  /** Mean KL(FP ‖ model) in nats. */
  kl: number;
}

/** out[i] = log softmax(logits[off … off+V))_i in float64. */
export function logSoftmax(logits: ArrayLike<number>, off: number, V: number, out: Float64Array): void {
  const lse = logSumExp(logits, off, V);
  for (let i = 0; i < V; i++) out[i] = logits[off + i] - lse;
}

/** log Σ exp of logits[off … off+V-1] in float64, shifted by the maximum (what logSoftmax subtracts). */
export function logSumExp(logits: ArrayLike<number>, off: number, V: number): number {
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[off + i] > max) max = logits[off + i];
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(logits[off + i] - max);
  return max + Math.log(sum);
}

/** Positions predicted over all sequences; an InvarxError when there are none. */
function countPositions(seqs: ArrayLike<number>[]): number {
  let n = 0;
  for (const s of seqs) n += Math.max(0, s.length - 1);
  if (n === 0) fail('bad-tokens', 'no next-token positions to evaluate: every sequence has fewer than 2 tokens');
  return n;
}

/** Teacher-forced perplexity of `m` on `seqs`. */
export function perplexity(m: Model, seqs: ArrayLike<number>[], opts: MetricOptions = {}): Perplexity {
  const positions = countPositions(seqs);
  const V = m.config.vocabSize;
  const lp = new Float64Array(V);
  let nll = 0;
  forEachSeqLogits([m], seqs, (s, [z]) => {
    const seq = seqs[s];
    for (let t = 0; t + 1 < seq.length; t++) {
      logSoftmax(z, t * V, V, lp);
      nll -= lp[seq[t + 1]];
    }
  }, { ops: opts.ops });
  nll /= positions;
  return { nll, ppl: Math.exp(nll), positions };
}

/**
 * Perplexity of the FP model and, for each model in `models`, perplexity and KL(FP ‖ model),
 * with one FP forward per sequence shared by all of them.
 */
export function evaluateModels<K extends string>(
  fp: Model, models: Record<K, Model>, seqs: ArrayLike<number>[], opts: MetricOptions = {},
): { fp: Perplexity; models: Record<K, Quality> } {
  const positions = countPositions(seqs);
  const V = fp.config.vocabSize;
  const names = Object.keys(models) as K[];
  for (const k of names) {
    if (models[k].config.vocabSize !== V) fail('bad-model', `model "${k}" has vocabulary ${models[k].config.vocabSize}, FP has ${V}`);
  }
  const lpFp = new Float64Array(V);
  const lpQ = new Float64Array(V);
  const pFp = new Float64Array(V);
  let nllFp = 0;
  const nll = new Float64Array(names.length);
  const kl = new Float64Array(names.length);
  forEachSeqLogits([fp, ...names.map((k) => models[k])], seqs, (s, [zFp, ...zQ]) => {
    const seq = seqs[s];
    for (let t = 0; t + 1 < seq.length; t++) {
      const next = seq[t + 1];
      logSoftmax(zFp, t * V, V, lpFp);
      for (let i = 0; i < V; i++) pFp[i] = Math.exp(lpFp[i]);
      nllFp -= lpFp[next];
      for (let j = 0; j < names.length; j++) {
        logSoftmax(zQ[j], t * V, V, lpQ);
        nll[j] -= lpQ[next];
        let d = 0;
        for (let i = 0; i < V; i++) d += pFp[i] * (lpFp[i] - lpQ[i]);
        kl[j] += d;
      }
    }
  }, { ops: opts.ops });
  const out = {} as Record<K, Quality>;
  names.forEach((k, j) => {
    const m = nll[j] / positions;
    out[k] = { nll: m, ppl: Math.exp(m), kl: kl[j] / positions, positions };
  });
  const fpNll = nllFp / positions;
  return { fp: { nll: fpNll, ppl: Math.exp(fpNll), positions }, models: out };
}

/** Mean KL(FP ‖ q) of next-token distributions over positions 1…T-1 of every sequence. */
export function meanKl(fp: Model, q: Model, seqs: ArrayLike<number>[], opts: MetricOptions = {}): number {
  return evaluateModels(fp, { q }, seqs, opts).models.q.kl;
}

/**
 * Share of the base method's log-perplexity gap to FP that method x closes:
 *   (log ppl_base − log ppl_x) / (log ppl_base − log ppl_fp)
 * 1 = as good as FP, 0 = no better than the base, < 0 = worse. NaN when the base has no gap
 * (ppl_base ≤ ppl_fp), where the share means nothing.
 */
export function gapClosed(pplBase: number, pplX: number, pplFp: number): number {
  const gap = Math.log(pplBase) - Math.log(pplFp);
  if (!(gap > 0)) return NaN;
  return (Math.log(pplBase) - Math.log(pplX)) / gap;
}
