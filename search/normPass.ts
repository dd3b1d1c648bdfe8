/**
 * The run's last passes. First norm-gain tuning (normTune.ts) of every block in order, each on
 * its inputs in the quantized model as tuned so far, its quantized linears as the search left
 * them (on GPTQ, quantized on the untuned model's rows, which the run's quantizeFrom keeps
 * to, so a resumed run rebuilds the same model), recorded as accepted moves and kept only
 * if validation improves. Within NORM_TUNE_MAX_FLOPS (on fewer calibration sequences, or
 * none, on bigger models); under a time budget, the blocks it leaves no room for are left
 * out. Then the final norm's gain (finalNormTune.ts), on the first calibration sequences,
 * kept likewise only if validation improves.
 */
import type { Logger } from 'pino';
import type { Ops } from '../core/ops';
import type { SearchBlocks } from './blocks';
import { meanLoss, moveStat, type Boundary } from './boundary';
import type { CalibrationRows } from './calibration';
import { FINAL_NORM_MIN_ROWS, finalNormSeconds, finalNormSeqs, tuneFinalNorm } from './finalNormTune';
import { NORM_TUNE_MAX_FLOPS, NORM_TUNE_MIN_SEQS, normTuneCost, normTuneSeqs, tuneNorms } from './normTune';
import { CANDIDATE_FLOPS_PER_SECOND } from './plan';
import type { NormRunner } from './normRows';
import type { RunBudget } from './runBudget';

/** What the pass reads and changes of a run. */
export interface NormPassState {
  blocks: SearchBlocks;
  calib: CalibrationRows;
  b: Boundary;
  budget: RunBudget;
  /** What the run left out, for the report: the pass adds to it. */
  cut: string[];
  ops: Ops;
  seqTokens: number;
  /** Where the tuning's candidates run (normRows.ts): the search's worker threads; absent, this thread. */
  runner?: NormRunner;
  /** Tune row gains of the quantized linears too (normTune.ts; the RTN base on the int grid). */
  rowGains?: boolean;
}

/** What it asks of the run: the phase's start, a validation check, and the base quantization of blocks from..L−1 (the search's, without norm factors). */
export interface NormPassHooks {
  enter(): void;
  validate(): number;
  quantizeFrom(from: number): number[];
  log?: Logger;
}

/** The run's state as it is now becomes its best check, at validation v (a pass that improved it). */
function keepAsBest(b: Boundary, v: number): void {
  b.best = { validation: v, moves: b.moves.length, step: b.step };
  b.history.push({ step: b.step, loss: meanLoss(b), validation: v });
}

export async function normPass(s: NormPassState, run: NormPassHooks): Promise<void> {
  const { blocks, calib, b } = s;
  const cfg = blocks.config;
  const starts = calib.seqStarts;
  const T = Math.min(s.seqTokens, cfg.seqLen);
  let rowGains = s.rowGains ?? false;
  let seqs = normTuneSeqs(cfg, starts.length - 1, T, rowGains);
  if (rowGains && seqs === 0) {
    s.cut.push('row-gain tuning (over the pass\'s FLOP limit at this size)');
    rowGains = false;
    seqs = normTuneSeqs(cfg, starts.length - 1, T);
  }
  if (seqs === 0) {
    const least = normTuneCost(cfg, NORM_TUNE_MIN_SEQS * T, T, rowGains);
    s.cut.push(`norm-gain tuning (${(least / 1e12).toFixed(0)} TFLOP on ${NORM_TUNE_MIN_SEQS} sequences at this size, over its limit of ${NORM_TUNE_MAX_FLOPS / 1e12})`);
    return;
  }
  if (seqs < starts.length - 1) s.cut.push(`norm-gain tuning on ${seqs} of ${starts.length - 1} calibration sequences (its FLOP limit)`);
  run.enter();
  const flops = normTuneCost(cfg, starts[seqs], T, rowGains);
  const kept = b.moves.length;
  const t0 = performance.now();
  for (const [l, x] of calib.walk(0, blocks)) {
    const perBlock = l > 0 ? (performance.now() - t0) / 1000 / l : flops / cfg.nLayers / CANDIDATE_FLOPS_PER_SECOND;
    if (s.budget.mustStop(b, perBlock)) {
      s.cut.push(`norm-gain tuning from block ${l} (time budget)`);
      break;
    }
    // the block's linears stay the search's: the factors ride on them (the pass runs once, after the search: no factors yet)
    const q = blocks.quantized(l);
    const r = await tuneNorms(cfg, q, calib.data(l, x), s.ops, seqs, s.runner, rowGains);
    blocks.setNorms(l, r.factors);
    blocks.setQuantized(l, q);
    b.blockLoss[l] = r.after;
    b.moves.push({ block: l, step: b.step, transforms: [], norms: r.factors });
    const stat = moveStat(b, 'norm', cfg.nLayers);
    stat.proposed[l] += r.scored;
    stat.accepted[l] += r.changed;
    stat.gain[l] += (r.before - r.after) / b.startLoss[l];
  }
  if (b.moves.length === kept) return;
  const v = run.validate();
  if (v < b.best.validation) {
    keepAsBest(b, v);
  } else {
    b.moves.length = kept;
    blocks.replay(b.moves);
    run.quantizeFrom(0).forEach((loss, l) => (b.blockLoss[l] = loss));
    s.cut.push('norm-gain tuning (it did not improve validation)');
  }
  run.log?.info({ validation: v, best: b.best.validation, kept: b.moves.length > kept }, 'norm gains tuned');
}

/**
 * Tunes the quantized model's final norm gain on the first calibration sequences (`tokens`,
 * as many as finalNormSeqs allows), records it as an accepted move on the last block and
 * keeps it only if validation improves.
 */
export function finalNormPass(s: NormPassState, tokens: number[][], run: Pick<NormPassHooks, 'enter' | 'validate' | 'log'>): void {
  const { blocks, b } = s;
  const cfg = blocks.config;
  const q = blocks.quantizedModel();
  const n = finalNormSeqs(q, tokens);
  if (s.budget.mustStop(b, finalNormSeconds(q, tokens, n) + s.budget.validationSeconds)) {
    s.cut.push('final-norm tuning (time budget)');
    return;
  }
  if (n === 0) {
    s.cut.push(`final-norm tuning (fewer than ${FINAL_NORM_MIN_ROWS} rows fit its limit at this width)`);
    return;
  }
  run.enter();
  const r = tuneFinalNorm(blocks.fpModel(), q, tokens.slice(0, n), s.ops);
  if (r.changed === 0) return;
  const last = cfg.nLayers - 1;
  blocks.setFinalNorm(r.factors);
  const v = run.validate();
  const stat = moveStat(b, 'final-norm', cfg.nLayers);
  stat.proposed[last] += r.scored;
  if (v < b.best.validation) {
    b.moves.push({ block: last, step: b.step, transforms: [], finalNorm: r.factors });
    keepAsBest(b, v);
    stat.accepted[last] += r.changed;
    stat.gain[last] += r.before > 0 ? (r.before - r.after) / r.before : 0;
  } else {
    blocks.setFinalNorm(undefined);
    s.cut.push('final-norm tuning (it did not improve validation)');
  }
  run.log?.info({ validation: v, best: b.best.validation, kept: blocks.finalNorm() !== undefined, kl: [r.before, r.after] }, 'final norm gain tuned');
}
