/**
 * The search's calibration rows at every block, packed row-wise (core/forwardRows.ts): the
 * FP model's residual stream at each block boundary (captured once, block-major; block l's
 * target is the FP output of block l), and the inputs of block l in the quantized model,
 * which are the calibration rows run through the quantized blocks before it.
 *
 * The quantized-model inputs are cached per block and kept while the quantized blocks
 * below are unchanged (SearchBlocks counts each block's versions), so a stint on block l
 * after one on block l−1 runs one block, not l. Both kinds of rows live in ActivationStores:
 * in memory up to a budget, past it in scratch files. Walking the blocks in order is how
 * the run (re)quantizes the model, initialises scales and re-derives the export's codes,
 * each block on its inputs in the quantized model as quantized so far.
 */
import { ActivationStore, type ActivationStoreOptions } from '../core/activationStore';
import { blockForwardChunked, finalStreams } from '../core/blockPass';
import { packRows, seqStartsOf, seqViews, type Rows } from '../core/forwardRows';
import type { F32, Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { SearchBlocks } from './blocks';
import type { BlockData } from './blockState';

export class CalibrationRows {
  /** Key l: the FP residual stream entering block l (l = nLayers: the final one). */
  private fp: ActivationStore;
  /** Key l: block l's inputs in the quantized model, valid for the versions in `qVersions[l]`. */
  private q: ActivationStore;
  private qVersions = new Map<number, number[]>();
  readonly seqStarts: number[];
  private readonly dim: number;

  /** `memory` splits evenly between the FP and the quantized-model rows. */
  constructor(model: Model, seqs: number[][], private ops: Ops, memory: ActivationStoreOptions) {
    const half = { memoryBytes: memory.memoryBytes / 2 };
    this.fp = new ActivationStore({ ...half, dir: memory.dir && `${memory.dir}/fp` });
    this.q = new ActivationStore({ ...half, dir: memory.dir && `${memory.dir}/q` });
    this.dim = model.config.dim;
    this.seqStarts = seqStartsOf(seqs.map((s) => s.length));
    // the chunks of a pass are consecutive sequences: joined, they are the packed rows
    const keep = (l: number, chunks: Rows[]) => this.fp.set(l, packRows(chunks.map((c) => c.x), this.dim).x);
    finalStreams([model], seqs, { ops, onStart: (rows) => keep(0, rows[0]), onBlock: (l, rows) => keep(l + 1, rows[0]) });
  }

  /** Block l's calibration rows: its inputs `x` in the quantized model, its FP output and, with `fpInputs`, its FP inputs. */
  data(l: number, x: F32, fpInputs = false): BlockData {
    const d: BlockData = { x, y: this.fp.get(l + 1), seqStarts: this.seqStarts };
    if (fpInputs) d.xf = this.fp.get(l);
    return d;
  }

  /** Views of packed rows x, one [T, dim] per sequence. */
  seqViews(x: F32): F32[] {
    return seqViews(x, this.seqStarts, this.dim);
  }

  /** Block l's inputs in the quantized model (blocks 0 … l−1 as `blocks` holds them quantized). */
  inputsOf(l: number, blocks: SearchBlocks): F32 {
    // the nearest block at or below l whose cached inputs are still valid (block 0's always are)
    let k = l;
    while (k > 0 && !this.validAt(k, blocks)) k--;
    let x = k === 0 ? this.fp.get(0) : this.q.get(k);
    for (let i = k; i < l; i++) {
      x = blockForwardChunked(blocks.config, blocks.quantized(i), { x, seqStarts: this.seqStarts }, this.ops).x;
      this.q.set(i + 1, x);
      this.qVersions.set(i + 1, blocks.versions(i + 1));
    }
    return x;
  }

  private validAt(k: number, blocks: SearchBlocks): boolean {
    const v = this.qVersions.get(k);
    if (!v || !this.q.has(k)) return false;
    const now = blocks.versions(k);
    return v.every((x, i) => x === now[i]);
  }

  /**
   * Blocks from..L−1 in order, each with its inputs in the quantized model: the loop body
   * may set the block's quantized weights (blocks.setQuantized), which the next block's
   * inputs then run through (they are computed when the loop asks for the next block).
   */
  *walk(from: number, blocks: SearchBlocks): Generator<[number, F32]> {
    for (let l = from; l < blocks.nLayers; l++) yield [l, this.inputsOf(l, blocks)];
  }

  /** Bytes of rows held in memory (the rest is in scratch files). */
  get bytesInMemory(): number {
    return this.fp.bytesInMemory + this.q.bytesInMemory;
  }

  /**
   * Write every row held in memory to the scratch files, for a phase that needs the memory
   * more (the final evaluation); later reads come from the files (or the OS's page cache).
   */
  spill(): void {
    this.fp.limit(0);
    this.q.limit(0);
  }

  /** Remove the scratch files. */
  close(): void {
    this.fp.close();
    this.q.close();
  }
}
