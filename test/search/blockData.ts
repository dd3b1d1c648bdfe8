/** A block's calibration data for the objective tests: its inputs and outputs on random sequences. */
import { forward } from '../../core/forward';
import type { Model } from '../../core/model/types';
import { jsOps, type Ops } from '../../core/ops';
import { Rng } from '../../core/rng';
import type { BlockData } from '../../search/blockState';

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
