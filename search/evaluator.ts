/**
 * Evaluates candidate moves on the current block. Each candidate's loss is a pure function
 * of (block state, move), so results do not depend on how many workers share the work.
 */
import { applyTransforms } from '../core/invariance';
import type { Block, ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import { quantizeBlockLinears } from '../core/quant/model';
import type { QuantSpec } from '../core/quant/rtn';
import type { BlockObjective } from './objective';
import type { Move } from './proposals';

export interface CandidateResult {
  loss: number;
}

const FFN_KEYS = ['w1', 'w2', 'w3', 'b1'] as const;
const ATTN_KEYS = ['wq', 'wk', 'wv', 'wo', 'bq', 'bk', 'bv'] as const;

/** The block with fresh copies of the weights a move of this kind may change. */
export function candidateBlock(cur: Block, move: Move): Block {
  const nb: Block = { ...cur };
  for (const k of move.kind === 'ffn' ? FFN_KEYS : ATTN_KEYS) if (cur[k]) nb[k] = cur[k]!.slice();
  return nb;
}

/** Loss of one candidate move against the objective's current state. */
export function candidateLoss(cfg: ModelConfig, spec: QuantSpec, obj: BlockObjective, cur: Block, move: Move): number {
  const nb = candidateBlock(cur, move);
  applyTransforms(cfg, nb, move.transforms);
  if (move.kind === 'ffn') return obj.ffnMoveLoss(nb, move.units!);
  // Attention moves change h and so the whole FFN input: evaluate the block in full,
  // re-quantizing only the attention linears.
  const qa = quantizeBlockLinears(cfg, nb, spec, { method: 'rtn', names: ['wq', 'wk', 'wv', 'wo'] });
  return obj.fullEval(nb, { ...obj.q, wq: qa.wq, wk: qa.wk, wv: qa.wv, wo: qa.wo, bq: nb.bq, bk: nb.bk, bv: nb.bv }).loss;
}

export class Evaluator {
  private obj?: BlockObjective;
  private cur?: Block;

  constructor(private cfg: ModelConfig, private spec: QuantSpec, private ops: Ops, readonly workers: number) {}

  setBlock(obj: BlockObjective, cur: Block): void {
    this.obj = obj;
    this.cur = cur;
  }

  async evaluate(moves: Move[]): Promise<CandidateResult[]> {
    return moves.map((m) => ({ loss: candidateLoss(this.cfg, this.spec, this.obj!, this.cur!, m) }));
  }

  /** Install an accepted move; `cur` already holds the transformed FP weights. */
  commit(move: Move, cur: Block): void {
    this.cur = cur;
    if (move.kind === 'ffn') this.obj!.ffnMoveLoss(cur, move.units!, true);
    else this.obj!.reset(cur);
  }

  async close(): Promise<void> {}
}
