/**
 * The three token sets of a run: calibration (the search fits to it), validation (the stop
 * rule watches it; never fitted) and evaluation (the final table; never seen by the search).
 * Given files are used as they are; otherwise each set is sampled from the FP model with
 * its own fixed seed, so the sets differ and depend only on the model.
 */
import { loadTokenFile, sampleTokens } from '../core/data';
import type { Model } from '../core/model/types';
import type { SearchTuning } from './config';
import type { RunConfig } from './contract';

export interface TokenSets {
  calib: number[][];
  valid: number[][];
  eval: number[][];
}

/** Fixed seeds of the sampled sets (independent of the run's seed, so runs share data). */
export const DATA_SEEDS = { calib: 1001, valid: 2002, eval: 3003 } as const;

export function resolveTokenSets(model: Model, config: RunConfig, t: SearchTuning): TokenSets {
  const sample = (count: number, seed: number) => sampleTokens(model, { count, length: t.seqTokens, seed });
  return {
    calib: config.calibTokens ? loadTokenFile(config.calibTokens, model.config) : sample(t.calibSeqs, DATA_SEEDS.calib),
    valid: sample(t.validSeqs, DATA_SEEDS.valid),
    eval: config.evalTokens ? loadTokenFile(config.evalTokens, model.config) : sample(t.evalSeqs, DATA_SEEDS.eval),
  };
}
