/**
 * Option parsing shared by `invarx generate` and `invarx eval`: numbers checked with one
 * clear message each (commander hands us strings), and the model/tokenizer/quantizer
 * plumbing both commands need.
 */
import { fail } from '../../core/errors';
import { MAX_BITS, MIN_BITS } from '../../core/quant/rtn';

/** A finite number, else InvarxError naming the option. */
export function parseNumber(option: string, v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) fail('bad-config', `${option} must be a number, got "${v}"`);
  return n;
}

/** An integer in [min, max], else InvarxError naming the option and the range. */
export function parseInteger(option: string, v: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = parseNumber(option, v);
  if (!Number.isInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`;
    fail('bad-config', `${option} must be ${range}, got ${v}`);
  }
  return n;
}

export function parseBits(v: string): number {
  return parseInteger('--bits', v, MIN_BITS, MAX_BITS);
}

export function parseGroup(v: string): number {
  return parseInteger('--group', v, 1);
}

/** Seeds are uint32 (the Rng folds its seed to 32 bits; larger values would alias). */
export function parseSeed(v: string): number {
  return parseInteger('--seed', v, 0, 0xffffffff);
}

export type EvalMethod = 'fp' | 'rtn' | 'gptq';
export const EVAL_METHODS: readonly EvalMethod[] = ['fp', 'rtn', 'gptq'];

/** "fp,rtn,gptq" → the distinct methods, in the order fp, rtn, gptq. */
export function parseMethods(v: string, allowed: readonly EvalMethod[] = EVAL_METHODS): EvalMethod[] {
  const names = v.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
  if (names.length === 0) fail('bad-config', `--method needs at least one of ${allowed.join(', ')}`);
  for (const n of names) {
    if (!(allowed as readonly string[]).includes(n)) fail('bad-config', `unknown method "${n}" for --method (use ${allowed.join(', ')})`);
  }
  return allowed.filter((m) => names.includes(m));
}
