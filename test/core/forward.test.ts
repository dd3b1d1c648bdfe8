import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng';
import { randomModel, referenceLogits, type RandomModelOptions } from '../reference';
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

describe('forward pass vs float64 reference', () => {
  const cases: Array<[string, RandomModelOptions]> = [
    ['llama interleaved GQA', { arch: 'llama', nHeads: 4, nKvHeads: 2 }],
    ['llama half RoPE MHA separate head', { arch: 'llama', nHeads: 2, nKvHeads: 2, ropeLayout: 'half', sharedClassifier: false }],
    ['qwen2-style q/k/v biases', { arch: 'llama', nHeads: 4, nKvHeads: 1, qkvBias: true, ropeLayout: 'half' }],
    ['opt LayerNorm biases ReLU positions', { arch: 'opt', nHeads: 4, nKvHeads: 4 }],
  ];
  for (const [name, o] of cases) {
    it(name, () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 16 }), (seed, T) => {
          const m = randomModel({ ...o, seed });
          const rng = Rng.fromSeed(seed);
          const tokens = Array.from({ length: T }, () => rng.int(m.config.vocabSize));
          const { logits } = forward(m, tokens);
          const ref = referenceLogits(m, tokens);
          const V = m.config.vocabSize;
          let maxRef = 0;
          let maxErr = 0;
          ref.forEach((row, t) => row.forEach((v, i) => {
            maxRef = Math.max(maxRef, Math.abs(v));
            maxErr = Math.max(maxErr, Math.abs(v - logits[t * V + i]));
          }));
          expect(maxErr).toBeLessThan(1e-4 * Math.max(1, maxRef));
        }),
        { numRuns: 25 },
      );
    });
  }
});
