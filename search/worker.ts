/**
 * Worker thread of the candidate-evaluation pool. The block's state lives in
 * SharedArrayBuffers written only by the main thread between steps; a worker wraps it
 * once per stint (keyed by `stint`) and scores the candidates it is sent.
 */
import workerpool from 'workerpool';
import type { Block, ModelConfig } from '../core/model/types';
import type { QuantSpec } from '../core/quant/rtn';
import { getBackend } from '../kernels/registry';
import type { BaseMethod } from './blockQuant';
import { candidateLoss } from './evaluator';
import type { BlockData, ObjectiveState } from './blockState';
import { BlockObjective } from './objective';
import type { Move } from './proposals';
import type { BlockClips } from './clipMoves';
import { runNormTask, type NormTask } from './normRows';

export interface StintContext {
  stint: number;
  cfg: ModelConfig;
  spec: QuantSpec;
  method: BaseMethod;
  backend: string;
  data: BlockData;
  state: ObjectiveState;
  cur: Block;
  /** The block's clip codes (shared memory the main thread updates on a committed clip move). */
  clips?: BlockClips;
}

let ctx: StintContext | undefined;
let obj: BlockObjective | undefined;

function evaluate(c: StintContext, moves: Move[]): number[] {
  if (!ctx || ctx.stint !== c.stint) {
    ctx = c;
    obj = new BlockObjective(c.cfg, c.data, c.spec, getBackend(c.backend), c.method, c.state, undefined, c.clips);
  }
  return moves.map((m) => candidateLoss(ctx!.cfg, obj!, ctx!.cur, m));
}

/** A task of norm-gain tuning (normRows.ts) on this thread's backend: its rows, into shared memory. */
function normTask(backend: string, t: NormTask): void {
  runNormTask(t, getBackend(backend));
}

workerpool.worker({ evaluate, normTask });
