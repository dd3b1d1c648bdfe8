/** A block's calibration data for the objective tests (its inputs and outputs on random sequences), a quantized block and the objective. */
import { forward } from '../../core/forward';
import { blockForwardRows } from '../../core/forwardRows';
import type { Block, Model } from '../../core/model/types';
import { jsOps, type Ops } from '../../core/ops';
import { Rng } from '../../core/rng';
import { rtnLinears } from '../../search/baseRtn';
import { SearchBlocks } from '../../search/blocks';
import type { BlockData } from '../../search/blockState';
import { tuneNorms, type NormTuneResult } from '../../search/normTune';

/**
 * Block `layer`'s inputs and outputs in `m` on three sequences of `tokens` (BOS, then random
 * ids drawn from `seed`), FP inputs `xf` made to differ from the inputs, and the generator,
 * to draw moves from after the sequences.
 */
export function randomBlockData(m: Model, layer: number, seed: number, tokens: number, ops: Ops = jsOps): { rng: Rng; data: BlockData & { xf: Float32Array } } {
  const rng = Rng.fromSeed(seed);
  const seqs = Array.from({ length: 3 }, () => [1, ...Array.from({ length: tokens - 1 }, () => rng.int(m.config.vocabSize))]);
  const hidden = seqs.map((s) => forward(m, s, { capture: true, ops }).hidden!);
  const cat = (l: number) => {
    const out = new Float32Array(hidden.reduce((s, h) => s + h[l].length, 0));
    let o = 0;
    for (const h of hidden) (out.set(h[l], o), (o += h[l].length));
    return out;
  };
  const x = cat(layer);
  // FP inputs that differ from x as a quantized model's would (asymmetric GPTQ reads them)
  const xf = x.map((v, i) => v * (1 + 0.1 * Math.sin(i)));
  return { rng, data: { x, xf, y: cat(layer + 1), seqStarts: [0, tokens, 2 * tokens, 3 * tokens] } };
}

/** Σ (out − y)², float64, in order: summed here, apart from the code under test. */
export function sqErr(out: Float32Array, y: Float32Array): number {
  let s = 0;
  for (let i = 0; i < out.length; i++) s += (out[i] - y[i]) ** 2;
  return s;
}

/** The block objective Σ (block(x) − y)² of `b` in model `m`'s shape. */
export function objective(m: Model, b: Block, data: BlockData): number {
  return sqErr(blockForwardRows(m.config, b, { x: data.x, seqStarts: data.seqStarts }, jsOps).x, data.y);
}

/** The grid of quantizedBlock. */
export const QUANT_SPEC = { bits: 3, group: 32, clip: true, f16Scales: true };

/** Block `layer` of `m` with its linears RTN-quantized on QUANT_SPEC. */
export function quantizedBlock(m: Model, layer: number): Block {
  const b = m.blocks[layer];
  return { ...b, ...rtnLinears(m.config, b, QUANT_SPEC) };
}

/**
 * `m`'s blocks RTN-quantized (quantizedBlock) in a SearchBlocks, block 0's norms tuned on
 * random data (with row gains when `rows`) and set on it: the blocks and the tuning.
 */
export async function blocksTunedAt0(m: Model, rows: boolean): Promise<{ blocks: SearchBlocks; r: NormTuneResult }> {
  const { data } = randomBlockData(m, 0, 5, 40);
  const blocks = new SearchBlocks(m, QUANT_SPEC);
  for (let l = 0; l < m.config.nLayers; l++) blocks.setQuantized(l, quantizedBlock(m, l));
  const r = await tuneNorms(m.config, quantizedBlock(m, 0), data, jsOps, 3, undefined, rows);
  blocks.setNorms(0, r.factors);
  blocks.setQuantized(0, quantizedBlock(m, 0));
  return { blocks, r };
}
