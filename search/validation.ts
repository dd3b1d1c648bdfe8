/**
 * Quality of a (quantized) model against the FP model on a fixed token set: teacher-forced
 * cross-entropy and KL(FP ‖ model) of next-token distributions, float64 throughout. The FP
 * log-probabilities are computed once and kept, so each check costs one forward pass.
 */
import { forward } from '../core/forward';
import type { Ops } from '../core/ops';
import type { Model } from '../core/model/types';

export interface Quality {
  /** Mean next-token cross-entropy (nats); perplexity = exp(ce). */
  ce: number;
  /** Mean KL(FP ‖ model) (nats). */
  kl: number;
}

function logSoftmaxRow(logits: Float32Array, off: number, V: number, out: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[off + i] > max) max = logits[off + i];
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(logits[off + i] - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < V; i++) out[i] = logits[off + i] - lse;
}

export class QualityProbe {
  private fpLogProbs: Float64Array[];
  readonly fpQuality: Quality;

  constructor(private fp: Model, private seqs: number[][], private ops: Ops) {
    this.fpLogProbs = seqs.map((s) => this.logProbs(fp, s));
    this.fpQuality = this.measure(fp);
  }

  private logProbs(m: Model, seq: number[]): Float64Array {
    const V = m.config.vocabSize;
    const T = seq.length;
    const { logits } = forward(m, seq, { ops: this.ops });
    const out = new Float64Array((T - 1) * V);
    const row = new Float64Array(V);
    for (let t = 0; t + 1 < T; t++) {
      logSoftmaxRow(logits, t * V, V, row);
      out.set(row, t * V);
    }
    return out;
  }

  /** Cross-entropy on positions 1…T-1 of every sequence and KL against the FP model. */
  measure(m: Model): Quality {
    const V = m.config.vocabSize;
    let ce = 0;
    let kl = 0;
    let n = 0;
    this.seqs.forEach((seq, s) => {
      const lp = m === this.fp ? this.fpLogProbs[s] : this.logProbs(m, seq);
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
