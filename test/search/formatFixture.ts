/**
 * A block objective on a ggml format for the format tests: block `layer` of `m` on three
 * random 40-token sequences (drawn from `seed`), and the models they use — stories260K
 * (rows that fall back), and random models whose rows hold whole 32-blocks or 256-super-blocks.
 */
import { randomModel } from '../../core/model/synthetic';
import { cloneBlock, type Model } from '../../core/model/types';
import { jsOps } from '../../core/ops';
import type { BaseMethod, SearchSpec } from '../../search/blockQuant';
import { BlockObjective } from '../../search/objective';
import { shippedModel } from '../helpers';
import { randomBlockData } from './blockData';

export function formatObjective(m: Model, layer: number, format: string, group: number, opts: { method: BaseMethod; seed: number; clip?: boolean }) {
  const { rng, data } = randomBlockData(m, layer, opts.seed, 40);
  const spec: SearchSpec = { bits: Number(format.charAt(1)), group, format, ...(opts.clip !== undefined ? { clip: opts.clip } : {}) };
  const obj = new BlockObjective(m.config, data, spec, jsOps, opts.method);
  const cur = cloneBlock(m.blocks[layer]);
  obj.reset(cur);
  return { rng, obj, cur, spec };
}

export const stories = () => shippedModel();
// hidden 128: w2's rows hold four 32-blocks, so FFN moves re-quantize real w2 column groups
export const aligned32 = () => randomModel({ dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 256, seqLen: 64, sharedClassifier: false }, 3);
export const aligned256 = () => randomModel({ dim: 256, hiddenDim: 256, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 256, seqLen: 64, sharedClassifier: false }, 4);
