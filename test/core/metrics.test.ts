import { describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { forward } from '../../core/forward';
import { evaluateModels, gapClosed, logSoftmax, meanKl, perplexity } from '../../core/metrics';
import { sampleTokens } from '../../core/data';
import { cloneModel, type Model } from '../../core/model/types';
import { Rng } from '../../core/rng';
import { randomModel } from '../reference';
import { shippedModel } from '../helpers';

/**
 * Float64 reference, written independently of core/metrics: per position, log Σ exp over the
 * vocabulary (no max shift; logits here are O(10)), then NLL and Σ p (log p − log q).
 */
function reference(fp: Model, q: Model, seqs: number[][]): { nllFp: number; nllQ: number; kl: number; n: number } {
  const V = fp.config.vocabSize;
  let nllFp = 0, nllQ = 0, kl = 0, n = 0;
  for (const seq of seqs) {
    const a = Array.from(forward(fp, seq).logits, Number);
    const b = Array.from(forward(q, seq).logits, Number);
    for (let t = 0; t + 1 < seq.length; t++) {
      const za = a.slice(t * V, (t + 1) * V);
      const zb = b.slice(t * V, (t + 1) * V);
      const lseA = Math.log(za.reduce((s, z) => s + Math.exp(z), 0));
      const lseB = Math.log(zb.reduce((s, z) => s + Math.exp(z), 0));
      nllFp += lseA - za[seq[t + 1]];
      nllQ += lseB - zb[seq[t + 1]];
      for (let i = 0; i < V; i++) kl += Math.exp(za[i] - lseA) * ((za[i] - lseA) - (zb[i] - lseB));
      n++;
    }
  }
  return { nllFp: nllFp / n, nllQ: nllQ / n, kl: kl / n, n };
}

/** A copy of m with every block weight perturbed by relative noise `eps` (a stand-in for quantization). */
function perturbed(m: Model, eps: number, seed: number): Model {
  const rng = Rng.fromSeed(seed);
  const q = cloneModel(m);
  for (const b of q.blocks) {
    for (const w of [b.wq, b.wk, b.wv, b.wo, b.w1, b.w2, b.w3!]) for (let i = 0; i < w.length; i++) w[i] *= 1 + eps * rng.normal();
  }
  return q;
}

describe('perplexity and KL', () => {
  const m = shippedModel();
  const seqs = sampleTokens(m, { count: 3, length: 48, seed: 11 });
  seqs.push([1, 403, 407]); // a short one, and one that predicts nothing
  seqs.push([1]);
  const q = perturbed(m, 0.2, 5);

  it('match a float64 reference computed from the logits', () => {
    const ref = reference(m, q, seqs);
    const res = evaluateModels(m, { q }, seqs);
    expect(res.fp.positions).toBe(ref.n);
    expect(res.fp.positions).toBe(3 * 47 + 2);
    expect(res.fp.nll).toBeCloseTo(ref.nllFp, 10);
    expect(res.models.q.nll).toBeCloseTo(ref.nllQ, 10);
    expect(res.models.q.kl).toBeCloseTo(ref.kl, 10);
    expect(res.models.q.ppl).toBeCloseTo(Math.exp(ref.nllQ), 8);
    expect(res.models.q.kl).toBeGreaterThan(0);
    const p = perplexity(q, seqs);
    expect(p.nll).toBe(res.models.q.nll);
    expect(meanKl(m, q, seqs)).toBe(res.models.q.kl);
  });

  it('KL of a model against itself is 0, and the FP row needs no other model', () => {
    const res = evaluateModels(m, { same: m }, seqs);
    expect(res.models.same.kl).toBe(0);
    expect(res.models.same.ppl).toBe(res.fp.ppl);
    expect(evaluateModels(m, {}, seqs).fp.ppl).toBe(res.fp.ppl);
  });

  it('FP perplexity on its own samples is low, a garbage model high', () => {
    expect(perplexity(m, seqs).ppl).toBeLessThan(10);
    // Same shapes, random weights: no better than chance over 512 tokens.
    const garbage = randomModel({ dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512, seed: 3 });
    expect(perplexity(garbage, seqs).ppl).toBeGreaterThan(100);
  });

  it('log-softmax is stable for large logits', () => {
    const out = new Float64Array(3);
    logSoftmax(Float32Array.of(1000, 1000, 0), 0, 3, out);
    expect(out[0]).toBeCloseTo(-Math.LN2, 12);
    expect(out[2]).toBeCloseTo(-1000 - Math.LN2, 9);
  });

  it('is an error when no sequence has a next token', () => {
    expect(() => perplexity(m, [[1], []])).toThrow(InvarxError);
    expect(() => evaluateModels(m, {}, [])).toThrow(/no next-token positions/);
  });
});

describe('gapClosed', () => {
  it('is the share of the base log-perplexity gap closed', () => {
    expect(gapClosed(10, 10, 5)).toBe(0);
    expect(gapClosed(10, 5, 5)).toBe(1);
    expect(gapClosed(8, 4, 2)).toBeCloseTo(0.5, 14); // log 8 − log 4 = half of log 8 − log 2
    expect(gapClosed(10, 20, 5)).toBeLessThan(0);
    expect(gapClosed(5, 5, 5)).toBeNaN();
  });
});
