/**
 * Quality of a (quantized) model against the FP model on a fixed token set: teacher-forced
 * cross-entropy and KL(FP ‖ model) of next-token distributions, float64 throughout. The FP
 * log-probabilities are computed once and kept, so each check costs one block-major pass
 * (core/blockPass.ts) of the model.
 */
import { forEachSeqLogits } from '../core/blockPass';
import { logSoftmax } from '../core/metrics';
import type { Ops } from '../core/ops';
import type { F32, Model } from '../core/model/types';

export interface Quality {
  /** Mean next-token cross-entropy (nats); perplexity = exp(ce). */
  ce: number;
  /** Mean KL(FP ‖ model) (nats). */
  kl: number;
}

export class QualityProbe {
  private fpLogProbs: Float64Array[] = [];
  readonly fpQuality: Quality;

  constructor(private fp: Model, private seqs: number[][], private ops: Ops) {
    forEachSeqLogits([fp], seqs, (s, [z]) => (this.fpLogProbs[s] = this.logProbsOf(z, s)), { ops });
    this.fpQuality = this.measure(fp);
  }

  /** Next-token log-probabilities of positions 0…T-2 of sequence s from its logits [T, V]. */
  private logProbsOf(logits: F32, s: number): Float64Array {
    const V = this.fp.config.vocabSize;
    const T = this.seqs[s].length;
    const out = new Float64Array(Math.max(0, T - 1) * V);
    const row = new Float64Array(V);
    for (let t = 0; t + 1 < T; t++) {
      logSoftmax(logits, t * V, V, row);
      out.set(row, t * V);
    }
    return out;
  }

  /** How many sequences the probe holds. */
  get count(): number {
    return this.seqs.length;
  }

  /** Cross-entropy on positions 1…T-1 of every sequence and KL against the FP model. */
  measure(m: Model): Quality {
    if (m !== this.fp) return this.scoreRun(m, {});
    const acc = new Score();
    this.seqs.forEach((_, s) => this.addSeq(acc, s, this.fpLogProbs[s]));
    return acc.quality();
  }

  /**
   * The same for `m` run from block `from` on, given the residual stream entering that block
   * for each sequence (`xs[s]`, [T, dim]): what a change to block `from` does downstream.
   */
  measureFrom(m: Model, from: number, xs: F32[]): Quality {
    return this.scoreRun(m, { from, inputs: xs });
  }

  /** Sequences are visited in order, so the sums are the same whichever way the logits came. */
  private scoreRun(m: Model, start: { from?: number; inputs?: F32[] }): Quality {
    const acc = new Score();
    forEachSeqLogits([m], this.seqs, (s, [z]) => this.addSeq(acc, s, this.logProbsOf(z, s)), { ops: this.ops, ...start });
    return acc.quality();
  }

  private addSeq(acc: Score, s: number, lp: Float64Array): void {
    const V = this.fp.config.vocabSize;
    const seq = this.seqs[s];
    const ref = this.fpLogProbs[s];
    for (let t = 0; t + 1 < seq.length; t++) {
      acc.ce -= lp[t * V + seq[t + 1]];
      for (let i = 0; i < V; i++) {
        const p = Math.exp(ref[t * V + i]);
        acc.kl += p * (ref[t * V + i] - lp[t * V + i]);
      }
      acc.n++;
    }
  }
}

/** Running float64 sums of a quality measurement. */
class Score {
  ce = 0;
  kl = 0;
  n = 0;

  quality(): Quality {
    return { ce: this.ce / this.n, kl: this.kl / this.n };
  }
}
