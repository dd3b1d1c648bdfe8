/**
 * Quality of a (quantized) model against the FP model on a fixed token set: teacher-forced
 * cross-entropy and KL(FP ‖ model) of next-token distributions, float64 throughout. The FP
 * log-probabilities are computed once and kept, so each check costs one forward pass.
 */
import { forward, head, runBlocks } from '../core/forward';
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
  private fpLogProbs: Float64Array[];
  readonly fpQuality: Quality;

  constructor(private fp: Model, private seqs: number[][], private ops: Ops) {
    this.fpLogProbs = seqs.map((s) => this.logProbs(fp, s));
    this.fpQuality = this.measure(fp);
  }

  private logProbs(m: Model, seq: number[]): Float64Array {
    return this.logProbsOf(forward(m, seq, { ops: this.ops }).logits, m.config.vocabSize, seq.length);
  }

  /** Next-token log-probabilities of positions 0…T-2 from logits [T, V]. */
  private logProbsOf(logits: F32, V: number, T: number): Float64Array {
    const out = new Float64Array((T - 1) * V);
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
    return this.score((s) => (m === this.fp ? this.fpLogProbs[s] : this.logProbs(m, this.seqs[s])));
  }

  /**
   * The same for `m` run from block `from` on, given the residual stream entering that block
   * for each sequence (`xs[s]`, [T, dim]): what a change to block `from` does downstream.
   */
  measureFrom(m: Model, from: number, xs: F32[]): Quality {
    const { nLayers } = m.config;
    const d = m.config.dim;
    return this.score((s) => {
      const T = xs[s].length / d;
      return this.logProbsOf(head(m, runBlocks(m, xs[s], T, from, nLayers, this.ops), T, this.ops), m.config.vocabSize, T);
    });
  }

  private score(logProbs: (s: number) => Float64Array): Quality {
    const V = this.fp.config.vocabSize;
    let ce = 0;
    let kl = 0;
    let n = 0;
    this.seqs.forEach((seq, s) => {
      const lp = logProbs(s);
      const ref = this.fpLogProbs[s];
      for (let t = 0; t + 1 < seq.length; t++) {
        ce -= lp[t * V + seq[t + 1]];
        for (let i = 0; i < V; i++) {
          const p = Math.exp(ref[t * V + i]);
          kl += p * (ref[t * V + i] - lp[t * V + i]);
        }
        n++;
      }
    });
    return { ce: ce / n, kl: kl / n };
  }
}
