/**
 * The block-local objective (DESIGN §5): on calibration activations,
 *   L = Σ ||block_q(x_q) − block_fp(x_fp)||²   (float64)
 * where x_q is the block's input in the quantized model and the target is the FP model's
 * block output. The search divides by the starting value L0.
 *
 * `BlockObjective` is what the search, its workers and scale initialisation hold for one
 * block: the current state (blockState.ts) and the run's base quantizer (blockQuant.ts,
 * chosen once here from the method), with the evaluations they combine into:
 *  - a full evaluation (fullEval.ts);
 *  - an attention move, scored head by head (attnMove.ts);
 *  - an FFN move, scored by the base on the units it touches (baseRtn.ts, baseGptq.ts);
 *  - a clip move (clipMoves.ts, RTN only), scored by the same paths under the new codes:
 *    on wq/wk/wv as an attention move on its row, on wo as one on no rows, on w1/w3/w2 as
 *    an FFN move on its unit or its w2 group's units.
 * Every incremental path gives the full evaluation's loss (bit for bit, except RTN FFN moves:
 * to float64 round-off; test/search/objective.test.ts checks both).
 */
import type { Transform } from '../core/invariance';
import type { Block, ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { QuantSpec } from '../core/quant/rtn';
import { attnMove, attnRowsMove, isAttnOnly } from './attnMove';
import { GptqBase } from './baseGptq';
import { RtnBase } from './baseRtn';
import type { BaseMethod, BaseQuantizer, CodeSink } from './blockQuant';
import { BlockState, plainAlloc, type Alloc, type BlockData, type BlockSetting, type Caches, type Change, type Evaluated, type ObjectiveState } from './blockState';
import { fullEval } from './fullEval';
import { clipUnits, setClip, withClips, type BlockClips, type ClipSet } from './clipMoves';

/** The base quantizer of `method` for the block `s`. */
export function baseQuantizer(method: BaseMethod, s: BlockSetting): BaseQuantizer {
  return method === 'gptq' ? new GptqBase(s) : new RtnBase(s);
}

export class BlockObjective implements BlockSetting {
  readonly N: number;
  private readonly st: BlockState;
  private readonly base: BaseQuantizer;

  /**
   * With `state`, wraps existing caches (a worker's view of shared memory); otherwise
   * allocates them with `alloc` (SharedArrayBuffer-backed when workers share them) on the
   * first `reset`. `clips`: the block's clip codes (clipMoves.ts), changed in place by a
   * committed clip move (so they must hold a table for every linear then).
   */
  constructor(
    readonly cfg: ModelConfig,
    readonly data: BlockData,
    readonly spec: QuantSpec,
    readonly ops: Ops,
    readonly method: BaseMethod = 'rtn',
    state?: ObjectiveState,
    alloc: Alloc = plainAlloc,
    readonly clips?: BlockClips,
  ) {
    this.N = data.x.length / cfg.dim;
    this.st = new BlockState(alloc, state);
    this.base = baseQuantizer(method, this);
  }

  /** Quantized weights of the current block (arrays owned by this object, updated in place). */
  get q(): Block {
    return this.st.q;
  }

  /** The current state's activations (see Caches), updated in place. */
  get c(): Caches {
    return this.st.c;
  }

  /** Σ err² of the current state. */
  get loss(): number {
    return this.st.loss;
  }

  /** The caches as plain data, to hand to workers. */
  state(): ObjectiveState {
    return { q: this.q, c: this.c };
  }

  /** Recompute the caches from the block's FP weights (full evaluation of `change`), in place. */
  reset(b: Block, change: Change = 'all'): number {
    this.st.install(this.fullEval(b, change));
    return this.loss;
  }

  /**
   * Full evaluation of a transformed block `b` (FP weights) without installing it; `change`
   * says what differs from the current state (fullEval.ts). `codes` receives the integer
   * codes of the linears this evaluation quantizes.
   */
  fullEval(b: Block, change: Change = 'all', codes?: CodeSink): Evaluated {
    return fullEval(this, this.base, this.st, b, change, codes);
  }

  /**
   * Loss of an attention move: `b` is a transformed copy of the current FP block, changed
   * only by `transforms` (attention invariances). With `commit`, the caches are updated to
   * the new state.
   */
  attnMoveLoss(b: Block, transforms: readonly Transform[], commit = false): number {
    // Anything but attention transforms (not drawn as attention moves) gets a full evaluation.
    const st = isAttnOnly(transforms) ? attnMove(this, this.base, this.st, b, transforms) : this.fullEval(b, 'all');
    if (commit) this.st.install(st);
    return st.loss;
  }

  /**
   * Loss after replacing FFN units `units` (and, on RTN, every w2 column group containing
   * them) by those of `b`, a transformed copy of the current FP block whose other units are
   * unchanged. With `commit`, the caches are updated to the new state.
   */
  ffnMoveLoss(b: Block, units: ArrayLike<number>, commit = false): number {
    return this.base.ffnMove(this.st, b, units, commit);
  }

  /**
   * Loss after clip move `cs` (codes of groups of one linear) on the current block `b`
   * (its FP weights unchanged): the evaluation of the rows it touches under this block's
   * clip codes with cs set. With `commit`, the caches and the codes are updated to the new state.
   */
  clipMoveLoss(b: Block, cs: readonly ClipSet[], commit = false): number {
    const { s, base } = this.clipSetting(cs);
    const linears = new Set(cs.map((c) => c.linear));
    const ffn = [...linears].every((n) => n === 'w1' || n === 'w2' || n === 'w3');
    const attn = [...linears].every((n) => n !== 'w1' && n !== 'w2' && n !== 'w3');
    let loss: number;
    if (ffn) {
      loss = base.ffnMove(this.st, b, clipUnits(this.cfg, this.spec, cs), commit);
    } else {
      const rows = { wq: new Set<number>(), wk: new Set<number>(), wv: new Set<number>() };
      for (const c of cs) if (c.linear === 'wq' || c.linear === 'wk' || c.linear === 'wv') rows[c.linear].add(c.row);
      // codes on both sides: a full evaluation (an attention move's path keeps the FFN's weights)
      const st = attn ? attnRowsMove(s, base, this.st, b, rows) : fullEval(s, base, this.st, b, 'all');
      if (commit) this.st.install(st);
      loss = st.loss;
    }
    if (commit) {
      if (!this.clips) throw new Error('BlockObjective: a clip move is committed to an objective without clip codes');
      for (const c of cs) setClip(this.cfg, this.spec, this.clips, c);
    }
    return loss;
  }

  /** Full evaluation of the current block `b` with clip codes `cs` set (the reference the incremental path equals). */
  clipMoveFull(b: Block, cs: readonly ClipSet[]): Evaluated {
    const { s, base } = this.clipSetting(cs);
    return fullEval(s, base, this.st, b, 'all');
  }

  /** This block's setting with clip codes `cs` set, and its base quantizer. */
  private clipSetting(cs: readonly ClipSet[]): { s: BlockSetting; base: BaseQuantizer } {
    if (this.method !== 'rtn') throw new Error('clip moves run on the RTN base only');
    const s: BlockSetting = { cfg: this.cfg, data: this.data, N: this.N, spec: this.spec, ops: this.ops, clips: withClips(this.cfg, this.spec, this.clips, cs) };
    return { s, base: baseQuantizer(this.method, s) };
  }
}
