import { describe, expect, it } from 'vitest';
import { attnRows, blockForwardRows, ffnRows } from '../../core/forwardRows';
import { linearShape, type Block, type F32 } from '../../core/model/types';
import { jsOps } from '../../core/ops';
import { gainRows } from '../../core/quant/rowGains';
import { dequantize, quantizeRtn } from '../../core/quant/rtn';
import { rtnLinears } from '../../search/baseRtn';
import { SearchBlocks } from '../../search/blocks';
import type { BlockData } from '../../search/blockState';
import { plainAlloc } from '../../search/blockState';
import { runNormTask, type NormRunner } from '../../search/normRows';
import { fitUnitGains } from '../../search/rowGains';
import { GAINED_LINEARS, NORM_TUNE_MAX_FLOPS, NORM_TUNE_MIN_SEQS, normTuneCost, normTuneSeqs, rowSeqs, tuneNorms, withNormFactors, type NormFactors } from '../../search/normTune';
import { shippedModel } from '../helpers';
import { randomBlockData } from './blockData';

const spec = { bits: 3, group: 32, clip: true, f16Scales: true };

function quantizedBlock(layer: number): Block {
  const m = shippedModel();
  const b = m.blocks[layer];
  return { ...b, ...rtnLinears(m.config, b, spec) };
}

/** Σ (out − y)², float64, in order. */
function sqErr(out: F32, y: F32): number {
  let s = 0;
  for (let i = 0; i < out.length; i++) s += (out[i] - y[i]) ** 2;
  return s;
}

function objective(b: Block, data: BlockData): number {
  return sqErr(blockForwardRows(shippedModel().config, b, { x: data.x, seqStarts: data.seqStarts }, jsOps).x, data.y);
}

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

describe('row gains of the quantized linears', () => {
  it('fits w3\'s unit gains by the exact quadratic: the first unit\'s gain is the minimum along it of a fresh FFN pass, and the loss falls', () => {
    const cfg = shippedModel().config;
    const { data } = randomBlockData(shippedModel(), 1, 11, 40);
    const w = quantizedBlock(1);
    const h = attnRows(cfg, w, { x: data.x, seqStarts: data.seqStarts }, jsOps).h;
    const loss = (g: Float64Array) => sqErr(ffnRows(cfg, rowProducts(w, { w3: g }), h, jsOps), data.y);
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

  it('with row gains the pass lowers the objective further; applied as float32 row products they give the loss it reports, bit for bit', async () => {
    const cfg = shippedModel().config;
    const { data } = randomBlockData(shippedModel(), 2, 7, 40);
    const q = quantizedBlock(2);
    const copy = Object.fromEntries(Object.entries(q).map(([k, v]) => [k, (v as F32).slice()]));
    const norms = await tuneNorms(cfg, q, data, jsOps, 3);
    const r = await tuneNorms(cfg, q, data, jsOps, 3, undefined, true);
    // the attention norm comes first, as without
    expect(r.factors.attn).toEqual(norms.factors.attn);
    expect(Object.keys(r.factors.rows ?? {}).sort()).toEqual([...GAINED_LINEARS].sort());
    expect(r.before).toBe(norms.before);
    expect(r.after).toBe(objective(rowProducts(withNormFactors(q, r.factors), r.factors.rows), data));
    expect(r.after).toBeLessThan(norms.after * 0.98);
    for (const f of Object.values(r.factors.rows!)) for (const k of f) expect(Math.abs(k - 1)).toBeLessThanOrEqual(0.1 + 1e-12);
    expect(r.changed).toBeGreaterThan(norms.changed);
    expect(q).toEqual(copy);
    // the same bits with each candidate cut into ranges, run last to first
    const runner: NormRunner = { alloc: plainAlloc, parts: 3, run: async (tasks) => { for (const t of [...tasks].reverse()) runNormTask(t, jsOps); } };
    expect(await tuneNorms(cfg, q, data, jsOps, 3, runner, true)).toEqual(r);
  });

  it('costs the pass more FLOPs: a model of dim 192 tunes on fewer sequences with them, a 15M-parameter one cannot have them (the pass then tunes the norms alone)', () => {
    const small = shippedModel().config;
    expect(normTuneSeqs(small, 32, 256, true)).toBe(32);
    expect(normTuneCost(small, 32 * 256, 256, true)).toBeGreaterThan(1.5 * normTuneCost(small, 32 * 256, 256));
    const m = { ...small, dim: 192, hiddenDim: 512, nLayers: 6, nHeads: 6, nKvHeads: 6, headDim: 32 };
    const fit = normTuneSeqs(m, 32, 256, true);
    expect(fit).toBeGreaterThanOrEqual(NORM_TUNE_MIN_SEQS);
    expect(fit).toBeLessThan(normTuneSeqs(m, 32, 256));
    expect(normTuneCost(m, fit * 256, 256, true)).toBeLessThanOrEqual(NORM_TUNE_MAX_FLOPS);
    expect(normTuneCost(m, (fit + 1) * 256, 256, true)).toBeGreaterThan(NORM_TUNE_MAX_FLOPS);
    const m15 = { ...small, dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKvHeads: 6, headDim: 48 };
    expect(normTuneSeqs(m15, 32, 256, true)).toBe(0);
    expect(normTuneSeqs(m15, 32, 256)).toBeGreaterThan(0);
    expect(rowSeqs(5)).toBe(3);
  });

  it('SearchBlocks holds them in the group scales of RTN\'s codes, lifts them with the norms, and replays them from the moves', async () => {
    const m = shippedModel();
    const cfg = m.config;
    const { data } = randomBlockData(m, 0, 5, 40);
    const blocks = new SearchBlocks(m, spec);
    for (let l = 0; l < cfg.nLayers; l++) blocks.setQuantized(l, quantizedBlock(l));
    const r = await tuneNorms(cfg, quantizedBlock(0), data, jsOps, 3, undefined, true);
    blocks.setNorms(0, r.factors);
    blocks.setQuantized(0, quantizedBlock(0));
    const gained = () => {
      for (const [name, g] of Object.entries(r.factors.rows!)) {
        const [rows, cols] = linearShape(cfg, name as (typeof GAINED_LINEARS)[number]);
        const want = dequantize(gainRows(quantizeRtn(m.blocks[0][name as keyof Block]!, rows, cols, spec), g, true));
        expect(blocks.quantized(0)[name as keyof Block]).toEqual(want);
        expect(blocks.quantized(0)[name as keyof Block]).not.toEqual(quantizedBlock(0)[name as keyof Block]);
      }
      expect(blocks.quantized(0).attnNorm).toEqual(withNormFactors(quantizedBlock(0), r.factors).attnNorm);
    };
    gained();
    expect(blocks.quantized(0).wo).toEqual(quantizedBlock(0).wo);
    // lifted with the norms (what GPTQ and the export's inputs see), then put back
    blocks.withoutNorms(() => {
      for (const name of GAINED_LINEARS) expect(blocks.quantized(0)[name]).toEqual(quantizedBlock(0)[name]);
      expect(blocks.quantized(0).attnNorm).toEqual(m.blocks[0].attnNorm);
    });
    gained();
    // the transformed FP model never has them
    expect(blocks.transformedModel(true).blocks[0].wq).toEqual(m.blocks[0].wq);
    blocks.replay([]);
    blocks.setQuantized(0, quantizedBlock(0));
    expect(blocks.quantized(0).w3).toEqual(quantizedBlock(0).w3);
    blocks.replay([{ block: 0, step: 9, transforms: [], norms: r.factors }]);
    blocks.setQuantized(0, quantizedBlock(0));
    gained();
    // a quantized linear that is not RTN of the transformed weights cannot carry them
    expect(() => blocks.setQuantized(0, { ...quantizedBlock(0), w3: m.blocks[0].w3 })).toThrow(/w3 is not the RTN of its transformed weights/);
  });
});
