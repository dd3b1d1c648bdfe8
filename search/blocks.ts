/**
 * Where a search gets each block's weights: the FP weights (the model as loaded), the
 * transformed FP weights (FP + the accepted moves of that block) and the quantized
 * transformed weights (what the objective scored, what validation and the report run).
 * Today all three are whole arrays in memory; this class is the one place that knows it,
 * so that holding them otherwise (blocks streamed from disk, transformed weights rebuilt
 * from moves, quantized blocks kept as codes) changes only this file.
 */
import { applyTransforms, type Transform } from '../core/invariance';
import { cloneBlock, type Block, type Model, type ModelConfig } from '../core/model/types';

/** One accepted move: the transforms applied to one block (step 0: scale initialisation). */
export interface AcceptedMove {
  block: number;
  step: number;
  transforms: Transform[];
}

export class SearchBlocks {
  private cur: Block[];
  private q: Block[] = [];
  /** How many times each block's quantized weights were set (what cached activations depend on). */
  private ver: number[];

  constructor(private model: Model) {
    this.cur = model.blocks.map(cloneBlock);
    this.ver = new Array(model.config.nLayers).fill(0);
  }

  get config(): ModelConfig {
    return this.model.config;
  }

  get nLayers(): number {
    return this.model.config.nLayers;
  }

  /** FP weights of block l. */
  fp(l: number): Block {
    return this.model.blocks[l];
  }

  /** Transformed FP weights of block l (a move being accepted changes them in place). */
  transformed(l: number): Block {
    return this.cur[l];
  }

  /** Quantized transformed weights of block l. */
  quantized(l: number): Block {
    return this.q[l];
  }

  /** Hold block l's transformed weights in `b` (the same values, e.g. in memory workers share). */
  setTransformed(l: number, b: Block): void {
    this.cur[l] = b;
  }

  setQuantized(l: number, q: Block): void {
    this.q[l] = q;
    this.ver[l]++;
  }

  /** The versions of the quantized blocks 0 … k−1: the rows entering block k depend on exactly these. */
  versions(k: number): number[] {
    return this.ver.slice(0, k);
  }

  /** Apply `transforms` to block l's transformed weights (an accepted move). */
  apply(l: number, transforms: readonly Transform[]): void {
    applyTransforms(this.model.config, this.cur[l], transforms);
  }

  /** The transformed weights of every block rebuilt as FP + `moves`, in order (resume, rollback). */
  replay(moves: readonly AcceptedMove[]): void {
    this.cur = this.model.blocks.map(cloneBlock);
    for (const m of moves) this.apply(m.block, m.transforms);
  }

  /** The FP model. */
  fpModel(): Model {
    return this.model;
  }

  /** The transformed FP model (computes the FP function, up to the approximate invariances). */
  transformedModel(): Model {
    return { ...this.model, blocks: this.cur };
  }

  /** The quantized transformed model the objective scored. */
  quantizedModel(): Model {
    return { ...this.model, blocks: this.q };
  }

  /** The quantized model with `qBlock` in place of block l (a candidate's). */
  quantizedWith(l: number, qBlock: Block): Model {
    const blocks = this.q.slice();
    blocks[l] = qBlock;
    return { ...this.model, blocks };
  }
}
