/**
 * Sizes of the sampled token sets under a time budget. Every phase of a run but the
 * search is proportional to the number of calibration rows (sampling them, the
 * calibration pass, the base quantization, the scale initialisation, and each candidate's
 * score) or to the number of held-out rows (sampling the validation and evaluation sets,
 * validation checks, the final table), so with `--time-budget` the sets are cut, in
 * proportion, until the predicted work fits its share of the budget. On the shipped
 * model nothing is cut; at 1B parameters the default sets alone would take hours.
 *
 * The prediction is a count of floating-point operations at a fixed rate, not a timing
 * of this machine: the plan, and with it the whole run, stays a function of model,
 * options and seed (an export is reproducible anywhere), and a faster machine gets a
 * conservative plan. The phases that can stop early (scale initialisation, the search,
 * the table's reference rows) still watch the clock.
 */
import type { ModelConfig } from '../core/model/types';
import type { SearchTuning } from './config';
import type { RunConfig } from './contract';
import type { Phase } from './phases';

/** The sampled sets' sizes (sequences; each of `seqTokens` tokens). */
export interface SetPlan {
  calibSeqs: number;
  validSeqs: number;
  evalSeqs: number;
}

/**
 * FLOP/s the plan assumes, measured on a 2-core machine at the 110M shape (wasm backend):
 * batched passes (sampling, block passes, the table), and candidate scoring (an attention
 * move redoes the block's FFN side on every row: 0.8 s of CPU on 2048 rows, the linears'
 * re-quantization a small part of it).
 */
export const PASS_FLOPS_PER_SECOND = 25e9;
export const CANDIDATE_FLOPS_PER_SECOND = 30e9;
/** Shares of the budget for the calibration-sized and the held-out-sized work (the rest is slack). */
const CALIB_SHARE = 0.55;
const HELD_OUT_SHARE = 0.3;
/** Candidates the search should afford at least (the scale initialisation scores ~40 per block). */
const MIN_CANDIDATES = 600;
const SCALE_INIT_CANDIDATES_PER_BLOCK = 40;
/** Validation checks the plan expects (one per stint), and the final table's models (FP, RTN, base, base+clip, searched). */
const VALIDATION_CHECKS = 8;
const TABLE_MODELS = 5;
/** The smallest sets a plan cuts to. */
const MIN_SEQS: SetPlan = { calibSeqs: 2, validSeqs: 1, evalSeqs: 2 };

/** FLOPs per token: through one block's weights, and through every block plus the classifier. */
export function tokenFlops(cfg: ModelConfig, seqTokens: number): { block: number; model: number } {
  const q = cfg.nHeads * cfg.headDim;
  const kv = cfg.nKvHeads * cfg.headDim;
  const ffn = (cfg.arch === 'llama' ? 3 : 2) * cfg.dim * cfg.hiddenDim;
  // weights, plus causal attention over on average half the sequence (scores and context)
  const block = 2 * (2 * cfg.dim * q + 2 * cfg.dim * kv + ffn) + 2 * seqTokens * q;
  return { block, model: cfg.nLayers * block + 2 * cfg.vocabSize * cfg.dim };
}

type SetSources = Pick<RunConfig, 'base' | 'calibTokens' | 'calibText' | 'evalTokens' | 'evalText'>;

const sampled = (c: SetSources) => ({ calib: !c.calibTokens && !c.calibText, eval: !c.evalTokens && !c.evalText });

/** Predicted seconds per calibration, validation and evaluation token (sequence position). */
export function plannedSeconds(cfg: ModelConfig, config: SetSources, seqTokens: number) {
  const f = tokenFlops(cfg, seqTokens);
  const L = cfg.nLayers;
  const isSampled = sampled(config);
  // the calibration pass and the base pass; GPTQ's Hessians over the rows cost about one more
  const passes = config.base === 'gptq' ? 3 : 2;
  const pass = (flops: number) => flops / PASS_FLOPS_PER_SECOND;
  const candidates = (n: number) => (n * f.block) / CANDIDATE_FLOPS_PER_SECOND;
  return {
    calib: pass((isSampled.calib ? f.model : 0) + passes * L * f.block) + candidates(SCALE_INIT_CANDIDATES_PER_BLOCK * L + MIN_CANDIDATES),
    valid: pass(f.model * (1 + VALIDATION_CHECKS)),
    eval: pass(f.model * ((isSampled.eval ? 1 : 0) + TABLE_MODELS)),
  };
}

/** The set sizes the tuning asks for. */
export function tuningSets(t: SearchTuning): SetPlan {
  return { calibSeqs: t.calibSeqs, validSeqs: t.validSeqs, evalSeqs: t.evalSeqs };
}

/**
 * The set sizes for this run: the tuning's when there is no time budget or they fit, else
 * cut in proportion (calibration on its own, validation and evaluation together).
 */
export function planSets(cfg: ModelConfig, config: RunConfig, t: SearchTuning): SetPlan {
  const asked = tuningSets(t);
  if (!(config.timeBudget > 0)) return asked;
  const T = Math.min(t.seqTokens, cfg.seqLen);
  const sec = plannedSeconds(cfg, config, T);
  const calibFit = (CALIB_SHARE * config.timeBudget) / (asked.calibSeqs * T * sec.calib);
  const heldOutFit = (HELD_OUT_SHARE * config.timeBudget) / (T * (asked.validSeqs * sec.valid + asked.evalSeqs * sec.eval));
  const cut = (n: number, fit: number, min: number) => (fit >= 1 ? n : Math.min(n, Math.max(min, Math.floor(n * fit))));
  return {
    calibSeqs: cut(asked.calibSeqs, calibFit, MIN_SEQS.calibSeqs),
    validSeqs: cut(asked.validSeqs, heldOutFit, MIN_SEQS.validSeqs),
    evalSeqs: cut(asked.evalSeqs, heldOutFit, MIN_SEQS.evalSeqs),
  };
}

/** The report's words for the sampled sets a plan cut ([] when it cut none). */
export function describeCuts(plan: SetPlan, t: SearchTuning, config: SetSources): string[] {
  const isSampled = sampled(config);
  const sets = [
    ['calibSeqs', 'calibration', isSampled.calib],
    ['validSeqs', 'validation', true],
    ['evalSeqs', 'evaluation', isSampled.eval],
  ] as const;
  return sets.filter(([k, , s]) => s && plan[k] < t[k]).map(([k, name]) => `${name} set ${plan[k]} of ${t[k]} sequences (time budget)`);
}

/**
 * Predicted seconds of the phases before and after the search for these sets (the same
 * model as the plan's; a progress display's ETA, not a promise).
 */
export function phaseSeconds(cfg: ModelConfig, config: RunConfig, t: SearchTuning, sets: SetPlan): Partial<Record<Phase, number>> {
  const T = Math.min(t.seqTokens, cfg.seqLen);
  const f = tokenFlops(cfg, T);
  const isSampled = sampled(config);
  const L = cfg.nLayers;
  const calibTokens = sets.calibSeqs * T;
  const sampledTokens = T * (sets.validSeqs + (isSampled.calib ? sets.calibSeqs : 0) + (isSampled.eval ? sets.evalSeqs : 0));
  const pass = (flops: number) => flops / PASS_FLOPS_PER_SECOND;
  return {
    tokens: pass(sampledTokens * f.model),
    calibration: pass(calibTokens * L * f.block),
    base: pass(calibTokens * L * f.block * (config.base === 'gptq' ? 2 : 1)),
    'scale-init': (SCALE_INIT_CANDIDATES_PER_BLOCK * L * calibTokens * f.block) / CANDIDATE_FLOPS_PER_SECOND,
    report: pass(sets.evalSeqs * T * f.model * TABLE_MODELS),
  };
}
