/**
 * Quality of a (quantized) model against the FP model on a fixed token set: teacher-forced
 * cross-entropy and KL(FP ‖ model) of next-token distributions, float64 throughout. The FP
 * model's distributions are computed once and kept, so each check costs one block-major pass
 * (core/blockPass.ts) of the model.
 */
import { forEachSeqLogits } from '../core/blockPass';
import { logSoftmax, logSumExp } from '../core/metrics';
import type { Ops } from '../core/ops';
import type { F32, Model } from '../core/model/types';

export interface Quality {
  /** Mean next-token cross-entropy (nats); perplexity = exp(ce). */
  ce: number;
  /** Mean KL(FP ‖ model) (nats). */
  kl: number;
}

export class QualityProbe {
  /**
   * The FP model's logits of positions 0…T-2 of each sequence (float32, as the model gave
   * them) and each position's log-sum-exp: its log-probabilities are `logit − lse`, the very
   * float64 values logSoftmax gives, at half the memory of keeping them (a 1B model's 8
   * validation sequences: 261 MB instead of 522).
   */
  private fpLogits: F32[] = [];
  private fpLse: Float64Array[] = [];
  /** One position's log-probabilities under the model being measured. */
  private row: Float64Array;
  readonly fpQuality: Quality;

  constructor(private fp: Model, private seqs: number[][], private ops: Ops) {
    const V = fp.config.vocabSize;
    this.row = new Float64Array(V);
    forEachSeqLogits([fp], seqs, (s, [z]) => {
      const positions = Math.max(0, seqs[s].length - 1);
      const logits = z.slice(0, positions * V);
      const lse = new Float64Array(positions);
      for (let t = 0; t < positions; t++) lse[t] = logSumExp(logits, t * V, V);
      this.fpLogits[s] = logits;
      this.fpLse[s] = lse;
    }, { ops });
    this.fpQuality = this.measure(fp);
  }

  /** How many sequences the probe holds. */
  get count(): number {
    return this.seqs.length;
  }

  /** Cross-entropy on positions 1…T-1 of every sequence and KL against the FP model. */
  measure(m: Model): Quality {
    if (m !== this.fp) return this.scoreRun(m, {});
    const acc = new Score();
    this.seqs.forEach((_, s) => this.addSeq(acc, s, this.fpLogits[s]));
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
    forEachSeqLogits([m], this.seqs, (s, [z]) => this.addSeq(acc, s, z), { ops: this.ops, ...start });
    return acc.quality();
  }

  /** Adds sequence s, given the measured model's logits of its positions ([≥ T-1, V]). */
  private addSeq(acc: Score, s: number, logits: F32): void {
    const V = this.fp.config.vocabSize;
    const seq = this.seqs[s];
    const ref = this.fpLogits[s];
    const lse = this.fpLse[s];
    const lp = this.row;
    for (let t = 0; t + 1 < seq.length; t++) {
      logSoftmax(logits, t * V, V, lp);
      acc.ce -= lp[seq[t + 1]];
      const off = t * V;
      const c = lse[t];
      for (let i = 0; i < V; i++) {
        const r = ref[off + i] - c;
        acc.kl += Math.exp(r) * (r - lp[i]);
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
