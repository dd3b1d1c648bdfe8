import { describe, expect, it } from 'vitest';
import { sampleTokens } from '../../core/data';
import { meanKl } from '../../core/metrics';
import type { Block, Model } from '../../core/model/types';
import { jsOps } from '../../core/ops';
import { Rng } from '../../core/rng';
import { rtnLinears } from '../../search/baseRtn';
import { SearchBlocks } from '../../search/blocks';
import { freshBoundary, type Boundary } from '../../search/boundary';
import { CalibrationRows } from '../../search/calibration';
import { normPass } from '../../search/normPass';
import type { RunBudget } from '../../search/runBudget';
import { shippedModel } from '../helpers';

const spec = { bits: 3, group: 32, clip: true, f16Scales: true };

function rtnBlock(m: Model, l: number): Block {
  return { ...m.blocks[l], ...rtnLinears(m.config, m.blocks[l], spec) };
}

/** SearchBlocks holding the RTN model with the norm factors of `moves` (a fresh replay, as a resumed run builds it). */
function replayed(m: Model, moves: Boundary['moves']): SearchBlocks {
  const blocks = new SearchBlocks(m, spec);
  blocks.replay(moves);
  for (let l = 0; l < m.config.nLayers; l++) blocks.setQuantized(l, rtnBlock(m, l));
  return blocks;
}

/**
 * The pass on the shipped model's RTN blocks (3 × 40 calibration tokens), validated by the
 * quantized model's KL on 3 other sequences, plus 1 when `penalised` says so of the model.
 */
async function runPass(penalised: (blocks: SearchBlocks) => boolean) {
  const m = shippedModel();
  const L = m.config.nLayers;
  const blocks = replayed(m, []);
  const calib = new CalibrationRows(m, sampleTokens(m, { count: 3, length: 40, seed: 5 }), jsOps, { memoryBytes: 1 << 28 });
  const held = sampleTokens(m, { count: 3, length: 40, seed: 6 });
  const kl = (q: Model) => meanKl(m, q, held, { ops: jsOps });
  const validate = () => kl(blocks.quantizedModel()) + (penalised(blocks) ? 1 : 0);
  const b = freshBoundary('test', Rng.fromSeed(1).state(), L, { calibSeqs: 3, validSeqs: 3, evalSeqs: 3 });
  b.startLoss = new Array(L).fill(1);
  b.blockLoss = new Array(L).fill(1);
  const searched = validate();
  b.best = { validation: searched, moves: 0, step: 0 };
  const cut: string[] = [];
  const budget = { mustStop: () => false, validationSeconds: 0 } as unknown as RunBudget;
  await normPass({ blocks, calib, b, budget, cut, ops: jsOps, seqTokens: 40 }, {
    enter: () => {},
    validate,
    // RTN's base quantization: the blocks as the search left them (the moves carry no transforms)
    quantizeFrom: (from) => {
      blocks.withoutNorms(() => {
        for (let l = from; l < L; l++) blocks.setQuantized(l, rtnBlock(m, l));
      });
      return new Array(L).fill(1);
    },
  });
  calib.close();
  return { m, blocks, b, cut, searched, validate };
}

describe('the norm-gain pass', () => {
  it('tunes every block in order on the linears the search left, records each as a move, and keeps them when validation improves; the model is a fresh replay of the moves', async () => {
    const { m, blocks, b, cut, searched, validate } = await runPass(() => false);
    expect(b.moves.map((mv) => mv.block)).toEqual([0, 1, 2, 3, 4]);
    expect(cut).toEqual([]);
    expect(b.best).toEqual({ validation: validate(), moves: 5, step: 0 });
    expect(b.best.validation).toBeLessThan(searched);
    const fresh = replayed(m, b.moves).quantizedModel();
    blocks.quantizedModel().blocks.forEach((q, l) => {
      expect(q).toEqual(fresh.blocks[l]);
      expect(q.w1).toEqual(rtnBlock(m, l).w1);
      expect(q.attnNorm).not.toEqual(m.blocks[l].attnNorm);
    });
  });

  it('drops the whole pass, back to the search\'s model, when validation does not improve', async () => {
    const { m, blocks, b, cut } = await runPass((blocks) => blocks.norms(2) !== undefined);
    expect(b.moves).toEqual([]);
    expect(b.best.moves).toBe(0);
    expect(cut).toEqual(['norm-gain tuning (it did not improve validation)']);
    blocks.quantizedModel().blocks.forEach((q, l) => {
      expect(blocks.norms(l)).toBeUndefined();
      expect(q).toEqual(rtnBlock(m, l));
    });
  });
});

describe('SearchBlocks.withoutNorms', () => {
  it('lifts every block\'s norm factors off its quantized weights while it runs (what GPTQ is quantized on), and puts them on whatever blocks it set', () => {
    const m = shippedModel();
    const blocks = replayed(m, []);
    const factors = (k: number) => ({ attn: new Float64Array(m.config.dim).fill(k), ffn: new Float64Array(m.config.dim).fill(1 / k) });
    blocks.setNorms(1, factors(1.05));
    blocks.setQuantized(1, rtnBlock(m, 1));
    blocks.setNorms(3, factors(0.95));
    blocks.setQuantized(3, rtnBlock(m, 3));
    const tuned = (l: number) => blocks.quantized(l).attnNorm.slice();
    const [t1, t3] = [tuned(1), tuned(3)];
    expect(t1).not.toEqual(m.blocks[1].attnNorm);
    const other = { ...rtnBlock(m, 3), attnNorm: m.blocks[3].attnNorm.map((g) => g * 2) };
    const seen = blocks.withoutNorms(() => {
      const inside = [1, 3].map((l) => [blocks.norms(l), tuned(l)] as const);
      blocks.setQuantized(3, other);
      return inside;
    });
    expect(seen).toEqual([[undefined, m.blocks[1].attnNorm], [undefined, m.blocks[3].attnNorm]]);
    expect(blocks.norms(1)).toEqual(factors(1.05));
    expect(tuned(1)).toEqual(t1);
    // block 3 now carries its factors on the weights set inside
    expect(tuned(3)).toEqual(other.attnNorm.map((g) => Math.fround(g * 0.95)));
    expect(t3).toEqual(m.blocks[3].attnNorm.map((g) => Math.fround(g * 0.95)));
  });
});
