/**
 * The optional global term of the score (DESIGN §5, after InvarExplore's CE/CE0 term):
 * every `globalEvery`-th step, a candidate's block loss over its start is increased by
 * globalWeight · KL/KL0, the KL(FP ‖ quantized) of the whole model with the candidate's
 * quantized block in place, on the first `globalSeqs` calibration sequences, over KL0 of
 * the base quantization. Only the blocks from the candidate's on are run: the block's own
 * inputs in the quantized model are its calibration rows.
 */
import { seqViews } from '../core/forwardRows';
import type { Block, Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { SearchBlocks } from './blocks';
import type { BlockData } from './blockState';
import type { SearchTuning } from './config';
import { QualityProbe } from './validation';

export class GlobalTerm {
  /** FP reference on the global-term sequences (the first calibration sequences). */
  private probe: QualityProbe;
  /** The term of the current state, or null once a move has changed it. */
  private current: number | null = null;

  constructor(model: Model, calib: number[][], private tuning: SearchTuning, ops: Ops) {
    this.probe = new QualityProbe(model, calib.slice(0, tuning.globalSeqs), ops);
  }

  /** KL of a whole quantized model on the global-term sequences (KL0, for the base quantization). */
  kl(model: Model): number {
    return this.probe.measure(model).kl;
  }

  /** Whether step `step` adds the term. */
  on(step: number): boolean {
    return step % this.tuning.globalEvery === 0;
  }

  /** globalWeight · KL/KL0 with `qBlock` as block l, whose calibration rows are `data`. */
  term(blocks: SearchBlocks, l: number, qBlock: Block, data: BlockData, kl0: number): number {
    const d = blocks.config.dim;
    const starts = data.seqStarts;
    // The probe holds the first calibration sequences, in the order of the block's rows.
    const xs = seqViews(data.x, starts, d, this.probe.count);
    const kl = this.probe.measureFrom(blocks.quantizedWith(l, qBlock), l, xs).kl;
    return (this.tuning.globalWeight * kl) / Math.max(kl0, 1e-12);
  }

  /** The term of the current state (computed once until `changed`). */
  currentTerm(blocks: SearchBlocks, l: number, qBlock: Block, data: BlockData, kl0: number): number {
    return (this.current ??= this.term(blocks, l, qBlock, data, kl0));
  }

  /** The current state changed (a new stint, an accepted move). */
  changed(): void {
    this.current = null;
  }
}
