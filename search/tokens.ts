/**
 * The three token sets of a run: calibration (the search fits to it), validation (the stop
 * rule watches it; never fitted) and evaluation (the final table; never seen by the search).
 * Given files are used as they are; otherwise each set is sampled from the FP model with
 * its own fixed seed, so the sets differ and depend only on the model.
 */
import { DEFAULT_CALIB, DEFAULT_HELD_OUT, loadTokenFile, sampleSet } from '../core/data';
import type { Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { SearchTuning } from './config';
import type { RunConfig } from './contract';

export interface TokenSets {
  calib: number[][];
  valid: number[][];
  eval: number[][];
}

/** The validation set: like the others, with a seed of its own. */
export const VALIDATION_SEED = 2002;

export function resolveTokenSets(model: Model, config: RunConfig, t: SearchTuning, ops: Ops): TokenSets {
  const length = Math.min(t.seqTokens, model.config.seqLen);
  return {
    calib: config.calibTokens ? loadTokenFile(config.calibTokens, model.config) : sampleSet(model, { ...DEFAULT_CALIB, count: t.calibSeqs, length }, ops),
    valid: sampleSet(model, { count: t.validSeqs, length, seed: VALIDATION_SEED }, ops),
    eval: config.evalTokens ? loadTokenFile(config.evalTokens, model.config) : sampleSet(model, { ...DEFAULT_HELD_OUT, count: t.evalSeqs, length }, ops),
  };
}
