import { describe, expect, it } from 'vitest';
import { jsOps } from '../../core/ops';
import { NORM_TUNE_MAX_FLOPS, NORM_TUNE_MIN_SEQS, normTuneCost, normTuneSeqs, tuneNorms, withNormFactors } from '../../search/normTune';
import { parabolaMin } from '../../search/parabola';
import { SEPARABLE_MIN_ROWS } from '../../core/ops';
import { plainAlloc } from '../../search/blockState';
import { rowRanges, runNormTask, seqRanges, type NormRunner } from '../../search/normRows';
import { shippedModel } from '../helpers';
import { blocksTunedAt0, objective, quantizedBlock, randomBlockData } from './blockData';


describe('norm-gain tuning', () => {
  it('tries a channel at the minimum of the parabola through its three losses, within ±10%, and not where there is none', () => {
    const at = (min: number, curv = 3) => (k: number) => curv * (k - min) ** 2 + 5;
    const p = (f: (k: number) => number) => parabolaMin(f(0.98), f(1), f(1.02));
    expect(p(at(1.013))).toBeCloseTo(1.013, 12);
    expect(p(at(0.962))).toBeCloseTo(0.962, 12);
    expect(p(at(1.3))).toBe(1.1);
    expect(p(at(0.5))).toBe(0.9);
    // concave or flat: no minimum; a minimum at 1 is scored already
    expect(p(at(1.05, -1))).toBeNull();
    expect(p(() => 2)).toBeNull();
    expect(p(at(1))).toBeNull();
  });

  it('lowers a quantized block\'s objective; its factors applied to the block give the loss it reports, bit for bit', async () => {
    const cfg = shippedModel().config;
    const { data } = randomBlockData(shippedModel(), 2, 7, 40);
    const q = quantizedBlock(shippedModel(), 2);
    const norms = [q.attnNorm.slice(), q.ffnNorm.slice()];
    const r = await tuneNorms(cfg, q, data, jsOps, 3);
    expect(r.before).toBe(objective(shippedModel(), q, data));
    expect(r.after).toBe(objective(shippedModel(), withNormFactors(q, r.factors), data));
    expect(r.after).toBeLessThan(r.before * 0.99);
    expect(r.changed).toBeGreaterThan(cfg.dim / 4);
    expect(r.scored).toBeGreaterThanOrEqual(4 * cfg.dim);
    expect(r.scored).toBeLessThanOrEqual(6 * cfg.dim);
    for (const f of [...r.factors.attn, ...r.factors.ffn]) expect(Math.abs(f - 1)).toBeLessThanOrEqual(0.1 + 1e-12);
    // the block given is left as it was
    expect([q.attnNorm, q.ffnNorm]).toEqual(norms);
  });

  it('gives the same bits with each candidate\'s rows cut into ranges, run in any order, as in one piece', async () => {
    const cfg = shippedModel().config;
    const { data } = randomBlockData(shippedModel(), 2, 5, 40);
    const q = quantizedBlock(shippedModel(), 2);
    const whole = await tuneNorms(cfg, q, data, jsOps, 4);
    for (const parts of [2, 3]) {
      let ranges = 0;
      // the tasks run last to first: a range must not read another's rows
      const runner: NormRunner = { alloc: plainAlloc, parts, run: async (tasks) => { ranges = Math.max(ranges, tasks.length); for (const t of [...tasks].reverse()) runNormTask(t, jsOps); } };
      const split = await tuneNorms(cfg, q, data, jsOps, 4, runner);
      expect(ranges).toBe(parts);
      expect(split).toEqual(whole);
    }
    expect(whole.changed).toBeGreaterThan(0);
  });

  it('cuts rows and sequences into contiguous ranges covering them, of at least the rows matmulT keeps separable', () => {
    const check = (r: [number, number][], n: number, parts: number) => {
      expect(r.length).toBeLessThanOrEqual(parts);
      expect(r[0][0]).toBe(0);
      expect(r[r.length - 1][1]).toBe(n);
      for (let i = 1; i < r.length; i++) expect(r[i][0]).toBe(r[i - 1][1]);
      for (const [a, b] of r) expect(b).toBeGreaterThan(a);
    };
    for (const [n, parts] of [[1, 2], [3, 2], [8, 2], [9, 3], [100, 2], [101, 4], [7, 7]] as const) {
      const r = rowRanges(n, parts);
      check(r, n, parts);
      if (n >= 2 * SEPARABLE_MIN_ROWS) expect(r.length).toBe(Math.min(parts, Math.floor(n / SEPARABLE_MIN_ROWS)));
      for (const [a, b] of r) if (n >= SEPARABLE_MIN_ROWS) expect(b - a).toBeGreaterThanOrEqual(SEPARABLE_MIN_ROWS);
    }
    // sequences of 40, 2, 2 and 60 rows in 2 parts: balanced by rows, not by count
    const starts = [0, 40, 42, 44, 104];
    const s = seqRanges(starts, 4, 2);
    check(s, 4, 2);
    expect(s).toEqual([[0, 3], [3, 4]]);
    expect(seqRanges(starts, 1, 2)).toEqual([[0, 1]]);
  });

  it('tunes on the sequences asked for, and measures the objective on all of them', async () => {
    const cfg = shippedModel().config;
    const { data } = randomBlockData(shippedModel(), 1, 3, 40);
    const q = quantizedBlock(shippedModel(), 1);
    const all = await tuneNorms(cfg, q, data, jsOps, 3);
    const one = await tuneNorms(cfg, q, data, jsOps, 1);
    expect(one.factors.ffn).not.toEqual(all.factors.ffn);
    expect(one.before).toBe(all.before);
    expect(one.after).toBe(objective(shippedModel(), withNormFactors(q, one.factors), data));
    // fit to fewer rows, it does less well on all of them
    expect(one.after).toBeGreaterThan(all.after);
  });

  it('tunes on every calibration sequence of a small model, on fewer within its FLOP limit, and skips a big one', () => {
    const small = shippedModel().config;
    expect(normTuneSeqs(small, 32, 256)).toBe(32);
    const m15 = { ...small, dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKvHeads: 6, headDim: 48 };
    const fit = normTuneSeqs(m15, 32, 256);
    expect(fit).toBeGreaterThanOrEqual(NORM_TUNE_MIN_SEQS);
    expect(fit).toBeLessThan(32);
    expect(normTuneCost(m15, fit * 256, 256)).toBeLessThanOrEqual(NORM_TUNE_MAX_FLOPS);
    expect(normTuneCost(m15, (fit + 1) * 256, 256)).toBeGreaterThan(NORM_TUNE_MAX_FLOPS);
    const m110 = { ...small, dim: 768, hiddenDim: 2048, nLayers: 12, nHeads: 12, nKvHeads: 12, headDim: 64 };
    expect(normTuneSeqs(m110, 32, 256)).toBe(0);
    // a run with few sequences tunes on all it has
    expect(normTuneSeqs(m15, 2, 256)).toBe(2);
  });

  it('SearchBlocks applies a block\'s factors to its quantized norms, replays them from the moves, and the packed exports\' float tensors carry them', async () => {
    const m = shippedModel();
    const { blocks, r } = await blocksTunedAt0(m, false);
    const tuned = withNormFactors(quantizedBlock(shippedModel(), 0), r.factors);
    expect(blocks.quantized(0).attnNorm).toEqual(tuned.attnNorm);
    expect(blocks.quantized(0).ffnNorm).toEqual(tuned.ffnNorm);
    expect(blocks.quantized(0).attnNorm).not.toEqual(m.blocks[0].attnNorm);
    expect(blocks.quantized(0).w1).toEqual(quantizedBlock(shippedModel(), 0).w1);
    // the transformed FP model keeps the FP gains; the packed exports' frame has the tuned ones
    expect(blocks.transformedModel().blocks[0].ffnNorm).toEqual(m.blocks[0].ffnNorm);
    expect(blocks.transformedModel(true).blocks[0].ffnNorm).toEqual(tuned.ffnNorm);
    expect(blocks.transformedModel(true).blocks[1].ffnNorm).toEqual(m.blocks[1].ffnNorm);
    // a replay without the record drops them; with it, they come back
    blocks.replay([]);
    expect(blocks.norms(0)).toBeUndefined();
    blocks.replay([{ block: 0, step: 9, transforms: [], norms: r.factors }]);
    blocks.setQuantized(0, quantizedBlock(shippedModel(), 0));
    expect(blocks.quantized(0).attnNorm).toEqual(tuned.attnNorm);
  });
});
