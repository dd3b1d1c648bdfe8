/** Our forward's next-token log-probabilities, and how far two sets of them are apart. */
import { forward } from '../../core/forward';
import { logSoftmax } from '../../core/metrics';
import type { Model } from '../../core/model/types';
import type { Ops } from '../../core/ops';

/** log p(s[i+1] | s[..i]) under m, for every sequence. */
export function ourLogProbs(m: Model, seqs: number[][], ops?: Ops): number[][] {
  const V = m.config.vocabSize;
  const lp = new Float64Array(V);
  return seqs.map((s) => {
    const { logits } = forward(m, s, { ops });
    return s.slice(1).map((next, i) => {
      logSoftmax(logits, i * V, V, lp);
      return lp[next];
    });
  });
}

/** Largest and mean |a − b| over matching entries. */
export function diffs(a: number[][], b: number[][]): { max: number; mean: number } {
  let max = 0, sum = 0, n = 0;
  a.forEach((row, i) => row.forEach((v, j) => {
    const d = Math.abs(v - b[i][j]);
    max = Math.max(max, d);
    sum += d;
    n++;
  }));
  return { max, mean: sum / n };
}
