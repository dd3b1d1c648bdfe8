/**
 * The run's quantized blocks: re-quantizing them with the base quantizer, each on its inputs
 * in the quantized model, so the quantized model stays a pure function of the FP weights and
 * the recorded moves; going back to a prefix of those moves; and the objective a stint or
 * the initialisation pass works on, in the memory the evaluator's workers share.
 */
import { collectAtBlockBoundary } from '../core/memory';
import { cloneBlock, type F32, type Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import { rtnLinears } from './baseRtn';
import { needsFpInputs, type SearchSpec } from './blockQuant';
import type { SearchBlocks } from './blocks';
import { blockIn, copyInto, type BlockData } from './blockState';
import type { Boundary } from './boundary';
import type { CalibrationRows } from './calibration';
import { fullClips } from './clipMoves';
import type { RunConfig } from './contract';
import type { Evaluator } from './evaluator';
import { BlockObjective } from './objective';

export class RunBlocks {
  constructor(
    private readonly model: Model,
    private readonly config: RunConfig,
    private readonly spec: SearchSpec,
    private readonly ops: Ops,
    private readonly blocks: SearchBlocks,
    private readonly calib: CalibrationRows,
    private readonly evaluator: Evaluator,
    /** Clip codes are searched: a block's objective then holds every linear's codes in shared memory. */
    private readonly clipOn: boolean,
  ) {}

  /**
   * Re-quantizes blocks from..L-1 of the transformed model with the base quantizer, each on
   * its inputs in the quantized model without the norm factors tuned after the search (RTN
   * ignores them; GPTQ's rounding depends on them), and returns their losses.
   */
  quantizeFrom(from: number): number[] {
    const losses: number[] = [];
    this.blocks.withoutNorms(() => {
      for (const [l, x] of this.calib.walk(from, this.blocks)) {
        collectAtBlockBoundary(this.model.config);
        const obj = new BlockObjective(this.model.config, this.calib.data(l, x, needsFpInputs(this.spec)), this.spec, this.ops, this.config.base, undefined, undefined, this.blocks.clips(l));
        losses[l] = obj.reset(this.blocks.transformed(l));
        this.blocks.setQuantized(l, obj.q);
      }
    });
    return losses;
  }

  /** After a stint on block l: RTN re-quantizes only that block; GPTQ also every later one, whose inputs changed. */
  stintDone(l: number): void {
    if (this.config.base === 'gptq') {
      this.quantizeFrom(l);
      return;
    }
    const cur = this.blocks.transformed(l);
    const q = rtnLinears(this.model.config, cur, this.spec, { clips: this.blocks.clips(l), ops: this.ops });
    this.blocks.setQuantized(l, cloneBlock({ ...cur, ...q }, Object.keys(q)));
  }

  /** The first block a move after the best validated state is on (null: none), from which going back re-quantizes. */
  rollbackFrom(b: Boundary): number | null {
    const dropped = b.moves.slice(b.best.moves);
    return dropped.length > 0 ? Math.min(...dropped.map((m) => m.block)) : null;
  }

  /** Go back to the accepted-move prefix with the best validation loss (no-op when the moves are that prefix). */
  backToBest(b: Boundary): void {
    const from = this.rollbackFrom(b);
    if (from === null) return;
    b.moves = b.moves.slice(0, b.best.moves);
    this.blocks.replay(b.moves);
    // the blocks before the first one a dropped move was on are as the kept moves left them
    this.quantizeFrom(from).forEach((loss, l) => (b.blockLoss[l] = loss));
  }

  /**
   * The objective of block l on its inputs x, its state (and the block's FP weights) in
   * memory the evaluator's workers share, and installed in the evaluator. The caller drops
   * its reference to the last block's objective first: at 1B parameters it is a gigabyte.
   */
  sharedObjective(l: number, x: F32): BlockObjective {
    this.evaluator.clearBlock();
    collectAtBlockBoundary(this.model.config);
    const alloc = this.evaluator.alloc;
    const plain = this.calib.data(l, x, needsFpInputs(this.spec));
    const shared = (a: F32) => copyInto(alloc.f32(a.length), a);
    const data: BlockData = { ...plain, x: shared(plain.x), y: shared(plain.y), ...(plain.xf && { xf: shared(plain.xf) }) };
    this.blocks.setTransformed(l, blockIn(alloc, this.blocks.transformed(l)));
    // with clip moves on, every linear's codes in shared memory, which a committed clip move updates
    if (this.clipOn) this.blocks.setClips(l, fullClips(this.model.config, this.spec, this.blocks.clips(l), alloc));
    const obj = new BlockObjective(this.model.config, data, this.spec, this.ops, this.config.base, undefined, alloc, this.blocks.clips(l));
    obj.reset(this.blocks.transformed(l));
    this.evaluator.setBlock(obj, this.blocks.transformed(l), data);
    return obj;
  }
}
