/**
 * The search's calibration rows at every block: the FP model's residual stream at each
 * block boundary (captured once; block l's target is the FP output of block l), and the
 * inputs of block l in the quantized model, obtained by running the calibration sequences
 * through the quantized blocks before it. Walking the blocks in order this way is how the
 * run (re)quantizes the model, initialises scales and re-derives the export's codes, each
 * block on its inputs in the quantized model as quantized so far.
 */
import { blockForward, forward } from '../core/forward';
import type { Block, F32, Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { SearchBlocks } from './blocks';
import type { BlockData } from './blockState';

export class CalibrationRows {
  /** [layer][seq]: the FP residual stream entering each block, plus the final one. */
  private fp: F32[][];
  private readonly dim: number;

  constructor(model: Model, seqs: number[][], private ops: Ops) {
    const cfg = model.config;
    const perSeq = seqs.map((seq) => forward(model, seq, { ops, capture: true }).hidden!);
    this.fp = Array.from({ length: cfg.nLayers + 1 }, (_, l) => perSeq.map((h) => h[l]));
    this.dim = cfg.dim;
  }

  /** Block l's calibration rows: its inputs `xs` (one [T, dim] per sequence) and its FP output, concatenated. */
  data(l: number, xs: F32[]): BlockData {
    const seqStarts = [0];
    for (const x of xs) seqStarts.push(seqStarts[seqStarts.length - 1] + x.length / this.dim);
    return { x: concat(xs), y: concat(this.fp[l + 1]), seqStarts };
  }

  /** `xs` through quantized block `q`: the next block's inputs. */
  through(blocks: SearchBlocks, l: number, xs: F32[]): F32[] {
    const q: Block = blocks.quantized(l);
    return xs.map((x) => blockForward(blocks.config, q, x, x.length / this.dim, this.ops));
  }

  /** Block l's inputs in the quantized model (blocks 0 … l−1 as `blocks` holds them quantized). */
  inputsOf(l: number, blocks: SearchBlocks): F32[] {
    let xs = this.fp[0];
    for (let i = 0; i < l; i++) xs = this.through(blocks, i, xs);
    return xs;
  }

  /**
   * Blocks from..L−1 in order, each with its inputs in the quantized model: the loop body
   * may set the block's quantized weights (blocks.setQuantized), which the next block's
   * inputs then run through (they are computed when the loop asks for the next block).
   */
  *walk(from: number, blocks: SearchBlocks): Generator<[number, F32[]]> {
    let xs = this.inputsOf(from, blocks);
    for (let l = from; l < blocks.nLayers; l++) {
      yield [l, xs];
      if (l + 1 < blocks.nLayers) xs = this.through(blocks, l, xs);
    }
  }
}

function concat(xs: F32[]): F32 {
  const n = xs.reduce((s, x) => s + x.length, 0);
  const out = new Float32Array(n);
  let o = 0;
  for (const x of xs) {
    out.set(x, o);
    o += x.length;
  }
  return out;
}
