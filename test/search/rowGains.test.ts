import { describe, expect, it } from 'vitest';
import { attnRows, ffnRows } from '../../core/forwardRows';
import { linearShape, type Block, type F32 } from '../../core/model/types';
import { jsOps } from '../../core/ops';
import { gainRows } from '../../core/quant/rowGains';
import { dequantize, quantizeRtn } from '../../core/quant/rtn';
import { plainAlloc } from '../../search/blockState';
import { runNormTask, type NormRunner } from '../../search/normRows';
import { QKV_LINEARS } from '../../search/blockQuant';
import { fitGateGains, fitUnitGains } from '../../search/rowGains';
import { attnRowFlops, FFN_ROW_SWEEPS, GAINED_LINEARS, NORM_TUNE_MAX_FLOPS, NORM_TUNE_MIN_SEQS, normTuneCost, normTuneSeqs, rowSeqs, tuneNorms, withNormFactors, type NormFactors } from '../../search/normTune';
import { parabolaMin } from '../../search/parabola';
import { tokenFlops } from '../../search/plan';
import { shippedModel } from '../helpers';
import { blocksTunedAt0, objective, QUANT_SPEC as spec, quantizedBlock, randomBlockData, sqErr } from './blockData';

/** `b` with each row r of linear `name` multiplied by g[r] in float32, as the tuning scores it. */
function rowProducts(b: Block, rows: NormFactors['rows'] = {}): Block {
  const out = { ...b };
  for (const [name, g] of Object.entries(rows)) {
    const w = b[name as keyof Block]!.slice();
    const cols = w.length / g.length;
    for (let r = 0; r < g.length; r++) if (g[r] !== 1) for (let j = r * cols; j < (r + 1) * cols; j++) w[j] = w[j] * g[r];
    (out as Record<string, F32>)[name] = w;
  }
  return out;
}

/** Block `layer` RTN-quantized, its attention output h on random data drawn from `seed`, and the FFN's loss on h with gains g on the rows of `name`. */
function ffnCase(layer: number, seed: number, name: 'w1' | 'w3') {
  const cfg = shippedModel().config;
  const { data } = randomBlockData(shippedModel(), layer, seed, 40);
  const w = quantizedBlock(shippedModel(), layer);
  const h = attnRows(cfg, w, { x: data.x, seqStarts: data.seqStarts }, jsOps).h;
  const loss = (g: Float64Array) => sqErr(ffnRows(cfg, rowProducts(w, { [name]: g }), h, jsOps), data.y);
  return { cfg, w, h, data, loss };
}

describe('row gains of the quantized linears', () => {
  it('fits w3\'s unit gains by the exact quadratic: the first unit\'s gain is the minimum along it of a fresh FFN pass, and the loss falls', () => {
    const { cfg, w, h, data, loss } = ffnCase(1, 11, 'w3');
    const g = fitUnitGains(cfg, w, h, data.y, jsOps, 0.1);
    const ones = new Float64Array(cfg.hiddenDim).fill(1);
    expect(loss(g)).toBeLessThan(loss(ones) * 0.995);
    for (const k of g) expect(Math.abs(k - 1)).toBeLessThanOrEqual(0.1 + 1e-12);
    expect(g.filter((k) => k !== 1).length).toBeGreaterThan(cfg.hiddenDim / 2);
    const first = (k: number) => loss(Float64Array.from(ones, (v, u) => (u === 0 ? k : v)));
    const at = first(g[0]);
    expect(at).toBeLessThan(first(1));
    // the minimum along unit 0 (or past the clamp, on its side)
    if (g[0] > 0.9 && g[0] < 1.1) expect(Math.min(first(g[0] - 0.02), first(g[0] + 0.02))).toBeGreaterThan(at);
    else expect(first(g[0] - 0.02 * Math.sign(g[0] - 1))).toBeGreaterThan(at);
  });

  it('fits w1\'s gate gains unit by unit: each kept gain is the best of its tries given the gains before it, by a fresh FFN pass, and the loss falls', () => {
    const { cfg, w, h, data, loss } = ffnCase(3, 12, 'w1');
    const g = fitGateGains(cfg, w, h, data.y, jsOps);
    const ones = new Float64Array(cfg.hiddenDim).fill(1);
    const none = loss(ones);
    expect(loss(g)).toBeLessThan(none * 0.995);
    for (const k of g) expect(Math.abs(k - 1)).toBeLessThanOrEqual(0.1 + 1e-12);
    expect(g.filter((k) => k !== 1).length).toBeGreaterThan(cfg.hiddenDim / 2);
    // unit u with the gains before it kept and those after it at 1: its gain beats the probes
    // and 1, and where it is the parabola's minimum, it is the one through fresh passes
    let interior = 0;
    for (let u = 0; u < cfg.hiddenDim; u++) {
      const along = (k: number) => loss(Float64Array.from(g, (v, i) => (i < u ? v : i === u ? k : 1)));
      const [lo, mid, hi] = [along(0.98), along(1), along(1.02)];
      const at = along(g[u]);
      for (const l of [lo, mid, hi]) expect(at).toBeLessThanOrEqual(l + 1e-7 * none);
      if (Math.abs(g[u] - 1) < 0.1 && ![1, 0.98, 1.02].includes(g[u])) {
        interior++;
        expect(Math.abs(g[u] - parabolaMin(lo, mid, hi)!)).toBeLessThan(5e-4);
      }
    }
    expect(interior).toBeGreaterThan(cfg.hiddenDim / 5);
  });

  it('with row gains the pass lowers the objective further; applied as float32 row products they give the loss it reports, bit for bit', async () => {
    const cfg = shippedModel().config;
    const { data } = randomBlockData(shippedModel(), 2, 7, 40);
    const q = quantizedBlock(shippedModel(), 2);
    const copy = Object.fromEntries(Object.entries(q).map(([k, v]) => [k, (v as F32).slice()]));
    const norms = await tuneNorms(cfg, q, data, jsOps, 3);
    const r = await tuneNorms(cfg, q, data, jsOps, 3, undefined, true);
    // the attention norm comes first, as without, on the first rowSeqs(3) = 2 sequences
    expect(r.factors.attn).toEqual((await tuneNorms(cfg, q, data, jsOps, rowSeqs(3))).factors.attn);
    expect(r.factors.attn).not.toEqual(norms.factors.attn);
    expect(Object.keys(r.factors.rows ?? {}).sort()).toEqual([...GAINED_LINEARS].sort());
    expect(r.before).toBe(norms.before);
    expect(r.after).toBe(objective(shippedModel(), rowProducts(withNormFactors(q, r.factors), r.factors.rows), data));
    expect(r.after).toBeLessThan(norms.after * 0.98);
    // the FFN's rows are fitted FFN_ROW_SWEEPS times, each time within ±10%
    for (const [name, f] of Object.entries(r.factors.rows!)) for (const k of f) expect(Math.abs(k - 1)).toBeLessThanOrEqual(((QKV_LINEARS as readonly string[]).includes(name) ? 0.1 : 1.1 ** FFN_ROW_SWEEPS - 1) + 1e-12);
    expect(r.changed).toBeGreaterThan(norms.changed);
    expect(q).toEqual(copy);
    // the same bits with each candidate cut into ranges, run last to first
    const runner: NormRunner = { alloc: plainAlloc, parts: 3, run: async (tasks) => { for (const t of [...tasks].reverse()) runNormTask(t, jsOps); } };
    expect(await tuneNorms(cfg, q, data, jsOps, 3, runner, true)).toEqual(r);
  });

  it('costs the pass more FLOPs: a model of dim 192 tunes on fewer sequences with them, a 15M-parameter one on the fewest the pass takes', () => {
    const small = shippedModel().config;
    expect(normTuneSeqs(small, 32, 256, true)).toBe(32);
    expect(normTuneCost(small, 32 * 256, 256, true)).toBeGreaterThan(normTuneCost(small, 32 * 256, 256));
    const m = { ...small, dim: 192, hiddenDim: 512, nLayers: 6, nHeads: 6, nKvHeads: 6, headDim: 32 };
    const fit = normTuneSeqs(m, 32, 256, true);
    expect(fit).toBeGreaterThanOrEqual(NORM_TUNE_MIN_SEQS);
    expect(fit).toBeLessThan(normTuneSeqs(m, 32, 256));
    expect(normTuneCost(m, fit * 256, 256, true)).toBeLessThanOrEqual(NORM_TUNE_MAX_FLOPS);
    expect(normTuneCost(m, (fit + 1) * 256, 256, true)).toBeGreaterThan(NORM_TUNE_MAX_FLOPS);
    const m15 = { ...small, dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKvHeads: 6, headDim: 48 };
    expect(normTuneSeqs(m15, 32, 256, true)).toBe(NORM_TUNE_MIN_SEQS);
    expect(normTuneSeqs(m15, 32, 256)).toBeGreaterThan(NORM_TUNE_MIN_SEQS);
    // a row of wq, wk or wv costs about a third of a block pass (AttnRowScorer), not a whole one
    for (const c of [small, m, m15]) {
      const rows = (c.nHeads + 2 * c.nKvHeads) * c.headDim;
      const ratio = attnRowFlops(c, 256) / (rows * tokenFlops(c, 256).block);
      expect(ratio).toBeGreaterThan(0.25);
      expect(ratio).toBeLessThan(0.4);
    }
    expect(rowSeqs(5)).toBe(3);
  });

  it('SearchBlocks holds them in the group scales of RTN\'s codes, lifts them with the norms, and replays them from the moves', async () => {
    const m = shippedModel();
    const cfg = m.config;
    const { blocks, r } = await blocksTunedAt0(m, true);
    const gained = () => {
      for (const [name, g] of Object.entries(r.factors.rows!)) {
        const [rows, cols] = linearShape(cfg, name as (typeof GAINED_LINEARS)[number]);
        const want = dequantize(gainRows(quantizeRtn(m.blocks[0][name as keyof Block]!, rows, cols, spec), g, true));
        expect(blocks.quantized(0)[name as keyof Block]).toEqual(want);
        expect(blocks.quantized(0)[name as keyof Block]).not.toEqual(quantizedBlock(shippedModel(), 0)[name as keyof Block]);
      }
      expect(blocks.quantized(0).attnNorm).toEqual(withNormFactors(quantizedBlock(shippedModel(), 0), r.factors).attnNorm);
    };
    gained();
    expect(blocks.quantized(0).wo).toEqual(quantizedBlock(shippedModel(), 0).wo);
    // lifted with the norms (what GPTQ and the export's inputs see), then put back
    blocks.withoutNorms(() => {
      for (const name of GAINED_LINEARS) expect(blocks.quantized(0)[name]).toEqual(quantizedBlock(shippedModel(), 0)[name]);
      expect(blocks.quantized(0).attnNorm).toEqual(m.blocks[0].attnNorm);
    });
    gained();
    // the transformed FP model never has them
    expect(blocks.transformedModel(true).blocks[0].wq).toEqual(m.blocks[0].wq);
    blocks.replay([]);
    blocks.setQuantized(0, quantizedBlock(shippedModel(), 0));
    expect(blocks.quantized(0).w3).toEqual(quantizedBlock(shippedModel(), 0).w3);
    blocks.replay([{ block: 0, step: 9, transforms: [], norms: r.factors }]);
    blocks.setQuantized(0, quantizedBlock(shippedModel(), 0));
    gained();
    // a quantized linear that is not RTN of the transformed weights cannot carry them
    expect(() => blocks.setQuantized(0, { ...quantizedBlock(shippedModel(), 0), w3: m.blocks[0].w3 })).toThrow(/w3 is not the RTN of its transformed weights/);
  });
});
