import { describe, expect, it } from 'vitest';
import { Decoder, forward } from '../../core/forward';
import { shippedModel } from '../helpers';

function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

describe('shipped stories260K', () => {
  const expected = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];

  it('greedy decoding from BOS gives the ids llama2.c run.c prints', () => {
    const m = shippedModel();
    const dec = new Decoder(m);
    const ids: number[] = [];
    let tok = 1;
    for (let i = 0; i < expected.length; i++) {
      tok = argmax(dec.step(tok));
      ids.push(tok);
    }
    expect(ids).toEqual(expected);
  });

  it('teacher-forced forward agrees with incremental decoding', () => {
    const m = shippedModel();
    const tokens = [1, ...expected];
    const { logits } = forward(m, tokens);
    const dec = new Decoder(m);
    const V = m.config.vocabSize;
    for (let t = 0; t < tokens.length; t++) {
      const step = dec.step(tokens[t]);
      for (let i = 0; i < V; i++) expect(Math.abs(step[i] - logits[t * V + i])).toBeLessThan(1e-4);
    }
  });
});
