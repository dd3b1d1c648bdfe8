/**
 * The initialisation pass, the run's first: every block in order, on its inputs in the
 * quantized model as initialised so far, gets its activation-aware scale initialisation
 * (scaleInit.ts) and, with clip codes searched, its clip initialisation (clipInit.ts). Each
 * accepted change is a recorded move of step 0. Blocks the time budget leaves no room for
 * keep their base quantization.
 */
import type { Logger } from 'pino';
import type { Transform } from '../core/invariance';
import type { Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { SearchBlocks } from './blocks';
import type { Boundary } from './boundary';
import type { CalibrationRows } from './calibration';
import { clipInit } from './clipInit';
import type { SearchTuning } from './config';
import type { Invariance } from './contract';
import type { Evaluator } from './evaluator';
import type { SearchSpec } from './blockQuant';
import type { Move } from './proposals';
import type { RunBlocks } from './runBlocks';
import type { RunBudget } from './runBudget';
import { scaleInit, scaleSitesOn } from './scaleInit';

export interface InitPassRun {
  model: Model;
  tuning: SearchTuning;
  spec: SearchSpec;
  ops: Ops;
  on: Set<Invariance>;
  /** Clip codes are searched (RTN base on the int grid, clip moves or clip initialisation on). */
  clipOn: boolean;
  blocks: SearchBlocks;
  calib: CalibrationRows;
  states: RunBlocks;
  evaluator: Evaluator;
  b: Boundary;
  budget: RunBudget;
  /** Things the time budget made the run leave out (said in the report). */
  cut: string[];
  log?: Logger;
}

/** Whether the run has an initialisation pass to make. */
export function hasInitPass(tuning: SearchTuning, on: Set<Invariance>, clipOn: boolean): boolean {
  return (tuning.scaleInit && scaleSitesOn(on).length > 0) || (clipOn && tuning.clipInit);
}

/**
 * Runs the pass, then quantizes the blocks from the first one it changed again as a resumed
 * run rebuilds them (the blocks before it are as the base pass left them).
 */
export async function initPass(run: InitPassRun): Promise<void> {
  const { model, tuning, blocks, b, evaluator } = run;
  const cfg = model.config;
  const sites = scaleSitesOn(run.on);
  const score = async (moves: Move[]) => (await evaluator.evaluate(moves)).map((r) => r.loss);
  const t0 = performance.now();
  for (const [l, x] of run.calib.walk(0, blocks)) {
    const perBlock = l > 0 ? (performance.now() - t0) / 1000 / l : 0;
    if (run.budget.initMustStop(b, perBlock)) {
      run.log?.info({ block: l }, 'scale initialisation cut short by the time budget');
      run.cut.push(`scale-init from block ${l}`);
      break;
    }
    const obj = run.states.sharedObjective(l, x);
    const accept = (t: Transform) => {
      blocks.apply(l, [t]);
      b.moves.push({ block: l, step: 0, transforms: [t] });
    };
    if (tuning.scaleInit) await scaleInit(cfg, obj, blocks.transformed(l), run.calib.seqViews(x), run.ops, sites, accept, score);
    if (run.clipOn && tuning.clipInit) {
      const acceptClips = (m: Move) => {
        evaluator.commit(m, blocks.transformed(l));
        b.moves.push({ block: l, step: 0, transforms: [], clips: m.clips! });
      };
      await clipInit(cfg, run.spec, obj, blocks.transformed(l), score, acceptClips);
    }
    blocks.setQuantized(l, obj.q);
  }
  const changed = b.moves.filter((m) => m.step === 0).map((m) => m.block);
  if (changed.length > 0) run.states.quantizeFrom(Math.min(...changed)).forEach((loss, l) => (b.blockLoss[l] = loss));
}
