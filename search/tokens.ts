/**
 * The three token sets of a run: calibration (the search fits to it), validation (the stop
 * rule watches it; never fitted) and evaluation (the final table; never seen by the search).
 * Given files are used as they are; otherwise each set is sampled from the FP model with
 * its own fixed seed, so the sets differ and depend only on the model.
 */
import { DEFAULT_CALIB, DEFAULT_HELD_OUT, loadTextFile, loadTokenFile, sampleSetsCapped, type SampledSet } from '../core/data';
import { fail } from '../core/errors';
import { loadTokenizer, tokenizerPathFor } from '../core/tokenizer';
import type { Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { SearchTuning } from './config';
import type { RunConfig } from './contract';
import type { SetPlan } from './plan';

export interface TokenSets {
  calib: number[][];
  valid: number[][];
  eval: number[][];
}

/** The validation set: like the others, with a seed of its own. */
export const VALIDATION_SEED = 2002;

/** The sets of a run; sampled ones have the sizes of `plan` (search/plan.ts) and are decoded together. */
export function resolveTokenSets(model: Model, config: RunConfig, t: SearchTuning, plan: SetPlan, ops: Ops): TokenSets {
  const length = Math.min(t.seqTokens, model.config.seqLen);
  if (config.calibTokens && config.calibText) fail('bad-config', 'give calibration tokens or calibration text, not both');
  if (config.evalTokens && config.evalText) fail('bad-config', 'give evaluation tokens or evaluation text, not both');
  const given = (tokens: string | undefined, text: string | undefined, count: number): number[][] | undefined => {
    if (tokens) return loadTokenFile(tokens, model.config);
    if (text) return textWindows(model, tokenizerPathFor(config.model, config.tokenizer), text, length, count);
    return undefined;
  };
  const calib = given(config.calibTokens, config.calibText, plan.calibSeqs);
  const evalSet = given(config.evalTokens, config.evalText, plan.evalSeqs);
  const wanted: SampledSet[] = [{ count: plan.validSeqs, length, seed: VALIDATION_SEED }];
  if (!calib) wanted.push({ ...DEFAULT_CALIB, count: plan.calibSeqs, length, temperature: t.calibTemperature });
  if (!evalSet) wanted.push({ ...DEFAULT_HELD_OUT, count: plan.evalSeqs, length });
  const [valid, ...rest] = sampleSetsCapped(model, wanted, ops);
  return { calib: calib ?? rest.shift()!, valid, eval: evalSet ?? rest.shift()! };
}

/**
 * Up to `count` windows of `length` tokens from a text file: its documents (lines) tokenized
 * with the model's tokenizer, each from BOS, joined and cut in order; a shorter last window
 * is kept when it predicts anything.
 */
export function textWindows(model: Model, tokenizerPath: string, path: string, length: number, count: number): number[][] {
  const tok = loadTokenizer(tokenizerPath, model.config.vocabSize);
  const ids = loadTextFile(path, tok, model.config).flat();
  const out: number[][] = [];
  for (let i = 0; i < ids.length && out.length < count; i += length) {
    const w = ids.slice(i, i + length);
    if (w.length >= 2) out.push(w);
  }
  if (out.length === 0) fail('bad-tokens', `${path}: no text to take windows of ${length} tokens from`);
  return out;
}
