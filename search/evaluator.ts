/**
 * Evaluates candidate moves on the current block. Each candidate's loss is a pure function
 * of (block state, move), so results do not depend on how many workers share the work.
 */
import { applyTransforms } from '../core/invariance';
import type { Block, ModelConfig } from '../core/model/types';
import type { QuantSpec } from '../core/quant/rtn';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import workerpool, { type Pool } from 'workerpool';
import { plainAlloc, sharedAlloc, type Alloc, type BlockData } from './blockState';
import type { BlockObjective } from './objective';
import type { StintContext } from './worker';
import type { Move } from './proposals';
import { inThread, type NormRunner } from './normRows';
import type { Ops } from '../core/ops';

export interface CandidateResult {
  loss: number;
}

const FFN_KEYS = ['w1', 'w2', 'w3', 'b1'] as const;
const ATTN_KEYS = ['wq', 'wk', 'wv', 'wo', 'bq', 'bk', 'bv'] as const;

/** The block with fresh copies of the weights a move of this kind may change (all of them for a full move). */
export function candidateBlock(cur: Block, move: Move): Block {
  const nb: Block = { ...cur };
  if (move.kind === 'clip') return nb; // a clip move leaves the FP weights as they are
  if (move.full) {
    for (const [k, v] of Object.entries(cur) as [keyof Block, Float32Array | undefined][]) if (v) nb[k] = v.slice();
    return nb;
  }
  for (const k of move.kind === 'ffn' ? FFN_KEYS : ATTN_KEYS) if (cur[k]) nb[k] = cur[k]!.slice();
  return nb;
}

/** Loss of one candidate move against the objective's current state. */
export function candidateLoss(cfg: ModelConfig, obj: BlockObjective, cur: Block, move: Move): number {
  const nb = candidateBlock(cur, move);
  applyTransforms(cfg, nb, move.transforms);
  // Moves re-evaluate incrementally (objective.ts): the rows, groups, heads and Hessian
  // entries they touch (attention moves also redo the FFN side, whose input they change).
  if (move.full) return obj.fullEval(nb, move.full).loss;
  if (move.kind === 'clip') return obj.clipMoveLoss(cur, move.clips!);
  if (move.kind === 'ffn') return obj.ffnMoveLoss(nb, move.units!);
  return obj.attnMoveLoss(nb, move.transforms);
}

/** The candidate's whole quantized block (for the global term, which runs the rest of the model on it). */
export function candidateQuantBlock(cfg: ModelConfig, obj: BlockObjective, cur: Block, move: Move): Block {
  if (move.kind === 'clip') return obj.clipMoveFull(cur, move.clips!).q;
  const nb = candidateBlock(cur, move);
  applyTransforms(cfg, nb, move.transforms);
  return obj.fullEval(nb, move.kind).q;
}

/**
 * Scores candidates in this thread (workers = 1) or spread over a workerpool of threads
 * that read the block state from shared memory (workers > 1). Results are in move order
 * and identical either way.
 */
export class Evaluator {
  private obj?: BlockObjective;
  private cur?: Block;
  private ctx?: StintContext;
  private pool?: Pool;
  private stint = 0;

  constructor(private cfg: ModelConfig, private spec: QuantSpec, private backend: string, readonly workers: number) {
    if (workers > 1) this.pool = workerpool.pool(workerScript(), { workerType: 'thread', maxWorkers: workers, minWorkers: workers });
  }

  /** Memory for block state: shared when workers read it. */
  get alloc(): Alloc {
    return this.pool ? sharedAlloc : plainAlloc;
  }

  setBlock(obj: BlockObjective, cur: Block, data: BlockData): void {
    this.obj = obj;
    this.cur = cur;
    this.stint++;
    this.ctx = this.pool
      ? { stint: this.stint, cfg: this.cfg, spec: this.spec, method: obj.method, backend: this.backend, data, state: obj.state(), cur, clips: obj.clips }
      : undefined;
  }

  /** Let go of the block set last (its state is the largest thing a stint holds: gone before the next is built). */
  clearBlock(): void {
    this.obj = undefined;
    this.cur = undefined;
    this.ctx = undefined;
  }

  async evaluate(moves: Move[]): Promise<CandidateResult[]> {
    if (!this.pool) return moves.map((m) => ({ loss: candidateLoss(this.cfg, this.obj!, this.cur!, m) }));
    // One task per candidate: costs differ (attention moves redo the whole block), so
    // workers take the next candidate as they free up.
    const losses = await Promise.all(moves.map((m) => this.pool!.exec('evaluate', [this.ctx, [m]]) as Promise<number[]>));
    return losses.flat().map((loss) => ({ loss }));
  }

  /** Install an accepted move; `cur` already holds the transformed FP weights. */
  commit(move: Move, cur: Block): void {
    if (move.kind === 'clip') this.obj!.clipMoveLoss(cur, move.clips!, true);
    else if (move.kind === 'ffn') this.obj!.ffnMoveLoss(cur, move.units!, true);
    else this.obj!.attnMoveLoss(cur, move.transforms, true);
  }

  /** Where norm-gain tuning runs its candidates' rows (normRows.ts): split over the workers, or in this thread with `ops`. */
  normRunner(ops: Ops): NormRunner {
    const pool = this.pool;
    if (!pool) return inThread(ops, plainAlloc);
    const backend = this.backend;
    return { alloc: sharedAlloc, parts: this.workers, run: async (tasks) => void (await Promise.all(tasks.map((t) => pool.exec('normTask', [backend, t])))) };
  }

  async close(): Promise<void> {
    await this.pool?.terminate();
  }
}

/** dist/worker.js of this package (the bundled search/worker.ts), from source or from dist. */
function workerScript(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5 && !existsSync(join(dir, 'package.json')); i++) dir = dirname(dir);
  const path = join(dir, 'dist', 'worker.js');
  if (!existsSync(path)) throw new Error(`worker script ${path} is missing: run npm run build`);
  return path;
}
