import { describe, expect, it } from 'vitest';
import { sampleTokens } from '../../core/data';
import { meanKl } from '../../core/metrics';
import type { Model } from '../../core/model/types';
import { jsOps } from '../../core/ops';
import { rtnLinears } from '../../search/baseRtn';
import { SearchBlocks } from '../../search/blocks';
import { FINAL_NORM_MAX_OPS, FINAL_NORM_MIN_ROWS, FINAL_NORM_SEQS, finalNormSeqs, tuneFinalNorm, withFinalNorm } from '../../search/finalNormTune';
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

  it('uses at most FINAL_NORM_SEQS sequences, fewer past its operation limit, none below FINAL_NORM_MIN_ROWS rows', () => {
    const m = shippedModel();
    const seqs = (n: number, len: number) => Array.from({ length: n }, () => new Array(len).fill(1));
    // the shipped model: 3·64·512 products a row, so 5·10⁸ allow 5086 rows
    const perRow = 3 * m.config.dim * m.config.vocabSize;
    expect(finalNormSeqs(m, seqs(32, 256))).toBe(FINAL_NORM_SEQS);
    expect(finalNormSeqs(m, seqs(3, 256))).toBe(3);
    const fit = Math.floor(FINAL_NORM_MAX_OPS / perRow);
    const big = { ...m, config: { ...m.config, vocabSize: m.config.vocabSize * 8 } };
    expect(finalNormSeqs(big, seqs(32, 256))).toBe(Math.floor(Math.floor(fit / 8) / 255));
    expect(finalNormSeqs(m, seqs(4, FINAL_NORM_MIN_ROWS / 4))).toBe(0);
    expect(finalNormSeqs(m, seqs(4, FINAL_NORM_MIN_ROWS / 4 + 1))).toBe(4);
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
