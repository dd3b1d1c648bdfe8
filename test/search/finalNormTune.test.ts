import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sampleTokens } from '../../core/data';
import { meanKl } from '../../core/metrics';
import type { Model } from '../../core/model/types';
import { jsOps } from '../../core/ops';
import { rtnLinears } from '../../search/baseRtn';
import { SearchBlocks } from '../../search/blocks';
import { FINAL_NORM_MAX_OPS, FINAL_NORM_MIN_ROWS, FINAL_NORM_SEQS, FINAL_NORM_TOKENS, finalNormSeqs, tuneFinalNorm, withFinalNorm } from '../../search/finalNormTune';
import { topIndices } from '../../search/klSupport';
import { forward } from '../../core/forward';
import { shippedModel } from '../helpers';

const spec = { bits: 2, group: 32, clip: true, f16Scales: true };

/** The shipped model with every block rounded (RTN W2): far enough from FP for the gain to matter. */
function rounded(): Model {
  const m = shippedModel();
  return { ...m, blocks: m.blocks.map((b) => ({ ...b, ...rtnLinears(m.config, b, spec) })) };
}

describe('final-norm tuning', () => {
  it('lowers KL(FP ‖ model) on its tokens; the factors applied give the KL it reports (core\'s meanKl, summed another way)', () => {
    const fp = shippedModel();
    const q = rounded();
    const seqs = sampleTokens(fp, { count: 3, length: 48, seed: 5 });
    const g = q.finalNorm.slice();
    const r = tuneFinalNorm(fp, q, seqs, jsOps);
    expect(r.before).toBeCloseTo(meanKl(fp, q, seqs), 10);
    expect(r.after).toBeCloseTo(meanKl(fp, withFinalNorm(q, r.factors), seqs), 10);
    expect(r.after).toBeLessThan(r.before * 0.98);
    expect(r.changed).toBeGreaterThan(fp.config.dim / 4);
    expect(r.scored).toBeGreaterThanOrEqual(2 * fp.config.dim);
    expect(r.scored).toBeLessThanOrEqual(3 * fp.config.dim);
    for (const f of r.factors) expect(Math.abs(f - 1)).toBeLessThanOrEqual(0.1 + 1e-12);
    // the model given is left as it was
    expect(q.finalNorm).toEqual(g);
  });

  it('withFinalNorm multiplies the gain channel by channel in float32 and leaves the model alone; no factors, the model itself', () => {
    const m = shippedModel();
    const f = new Float64Array(m.config.dim).fill(1);
    f[3] = 1.05;
    f[7] = 0.93;
    const t = withFinalNorm(m, f);
    expect(t.finalNorm[3]).toBe(Math.fround(m.finalNorm[3] * 1.05));
    expect(t.finalNorm[7]).toBe(Math.fround(m.finalNorm[7] * 0.93));
    expect(t.finalNorm[0]).toBe(m.finalNorm[0]);
    expect(t.blocks).toBe(m.blocks);
    expect(m.finalNorm).toEqual(shippedModel().finalNorm);
    expect(withFinalNorm(m, undefined)).toBe(m);
  });

  it('uses at most FINAL_NORM_SEQS sequences, fewer past its operation limit (by width and support, not vocabulary), none below FINAL_NORM_MIN_ROWS rows', () => {
    const m = shippedModel();
    const seqs = (n: number, len: number) => Array.from({ length: n }, () => new Array(len).fill(1));
    expect(finalNormSeqs(m, seqs(32, 256))).toBe(FINAL_NORM_SEQS);
    expect(finalNormSeqs(m, seqs(3, 256))).toBe(3);
    // a 32,000-token vocabulary costs what FINAL_NORM_TOKENS do; width counts in full
    const wide = (dim: number) => ({ ...m, config: { ...m.config, dim, vocabSize: 32000 } });
    const fit = (dim: number) => Math.floor(FINAL_NORM_MAX_OPS / (3 * dim * FINAL_NORM_TOKENS));
    expect(finalNormSeqs(wide(288), seqs(32, 256))).toBe(Math.min(FINAL_NORM_SEQS, Math.floor(fit(288) / 255)));
    expect(finalNormSeqs(wide(2048), seqs(32, 256))).toBe(Math.floor(fit(2048) / 255));
    expect(Math.floor(fit(2048) / 255)).toBeGreaterThanOrEqual(1);
    expect(finalNormSeqs(wide(8192), seqs(32, 256))).toBe(0);
    expect(finalNormSeqs(m, seqs(4, FINAL_NORM_MIN_ROWS / 4))).toBe(0);
    expect(finalNormSeqs(m, seqs(4, FINAL_NORM_MIN_ROWS / 4 + 1))).toBe(4);
  });

  it('over a support smaller than the vocabulary: the KL it reports is a float64 reference\'s over each row\'s most likely FP tokens, renormalised, and it lowers it', () => {
    const fp = shippedModel();
    const q = rounded();
    const seqs = sampleTokens(fp, { count: 3, length: 48, seed: 6 });
    const K = 40;
    const V = fp.config.vocabSize;
    // reference: per row, the K largest FP logits by a full sort (ties: lower index), both softmaxes over them
    const fpLogits = seqs.map((s) => forward(fp, s).logits);
    const truncatedKl = (m: Model) => {
      let sum = 0;
      let rows = 0;
      seqs.forEach((s, i) => {
        const zq = forward(m, s).logits;
        for (let t = 0; t + 1 < s.length; t++) {
          const zf = fpLogits[i].subarray(t * V, (t + 1) * V);
          const top = [...zf.keys()].sort((a, b) => zf[b] - zf[a] || a - b).slice(0, K);
          const lse = (z: ArrayLike<number>) => Math.log(top.reduce((acc, j) => acc + Math.exp(z[j]), 0));
          const [lf, lq] = [lse(zf), lse(zq.subarray(t * V, (t + 1) * V))];
          for (const j of top) sum += Math.exp(zf[j] - lf) * (zf[j] - lf - (zq[t * V + j] - lq));
          rows++;
        }
      });
      return sum / rows;
    };
    const r = tuneFinalNorm(fp, q, seqs, jsOps, K);
    expect(r.before).toBeCloseTo(truncatedKl(q), 9);
    expect(r.after).toBeCloseTo(truncatedKl(withFinalNorm(q, r.factors)), 9);
    expect(r.after).toBeLessThan(r.before * 0.98);
    // and the whole vocabulary's KL falls with it
    expect(meanKl(fp, withFinalNorm(q, r.factors), seqs)).toBeLessThan(meanKl(fp, q, seqs));
  });

  it('topIndices: the K largest values\' indices, ascending, lower indices first among equals (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -4, max: 4 }), { minLength: 1, maxLength: 60 }), fc.nat(), (vals, kk) => {
        const row = Float32Array.from(vals, (v) => v / 2);
        const K = 1 + (kk % row.length);
        const out = new Int32Array(K);
        topIndices(row, 0, row.length, K, new Float32Array(row.length), out);
        const want = [...row.keys()].sort((a, b) => row[b] - row[a] || a - b).slice(0, K).sort((a, b) => a - b);
        expect([...out]).toEqual(want);
      }),
      { numRuns: 300 },
    );
  });

  it('SearchBlocks applies the factors to the quantized model and the packed exports\' frame, not the transformed FP model, and replays them from the moves', () => {
    const m = shippedModel();
    const q = rounded();
    const blocks = new SearchBlocks(m, spec);
    q.blocks.forEach((b, l) => blocks.setQuantized(l, b));
    const f = new Float64Array(m.config.dim).fill(1);
    f[1] = 1.08;
    blocks.setFinalNorm(f);
    const tuned = withFinalNorm(m, f).finalNorm;
    expect(blocks.quantizedModel().finalNorm).toEqual(tuned);
    expect(blocks.transformedModel(true).finalNorm).toEqual(tuned);
    expect(blocks.transformedModel().finalNorm).toEqual(m.finalNorm);
    blocks.replay([]);
    expect(blocks.quantizedModel().finalNorm).toEqual(m.finalNorm);
    blocks.replay([{ block: m.config.nLayers - 1, step: 3, transforms: [], finalNorm: f }]);
    expect(blocks.quantizedModel().finalNorm).toEqual(tuned);
  });
});
