/**
 * The options of `invarx run`, shared with `invarx submit` so both take the same job.
 */
import type { Command } from 'commander';
import { fail } from '../../core/errors';
import { formatByName } from '../../core/quant/formats';
import { autoWorkers, DEFAULT_CONFIG, formatGrid, parseInvariances, resolveTuning, type SearchTuning } from '../../search/config';
import type { RunConfig } from '../../search/contract';
import { parseBytes } from '../../search/scratch';

export function addRunOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--model <path>', 'model: llama2.c .bin, HF safetensors directory')
    .option('--tokenizer <path>', 'tokenizer (default: tok512.bin or tokenizer.bin beside the model)')
    .option('--bits <n>', 'weight bits (2-8) of the int grid; required unless --format names a ggml format')
    .option('--group <n>', 'quantization group size along the input dimension of the int grid; required unless --format names a ggml format')
    .option('--format <name>', 'int (the grid of --bits/--group, default) or a llama.cpp format: q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k; a ggml format fixes bits and block, so --bits/--group are not needed (if given they must match it), and --out writes model.gguf')
    .option('--embed <type>', 'ggml formats: token embedding and classifier of model.gguf, q8_0 (default) or f16')
    .option('--base <method>', 'base quantizer the search runs on: rtn or gptq', DEFAULT_CONFIG.base)
    .option('--steps <n>', 'step budget', String(DEFAULT_CONFIG.steps))
    .option('--time-budget <seconds>', 'wall-clock budget in seconds (0 = none)', '0')
    .option('--seed <n>', 'random seed of the search', String(DEFAULT_CONFIG.seed))
    .option('--calib-tokens <file>', 'calibration tokens (JSON array of arrays, .txt, .npy); default: sampled from the model')
    .option('--eval-tokens <file>', 'held-out evaluation tokens; default: sampled from the model with another seed')
    .option('--calib-text <file>', 'calibration text (UTF-8, one document per line), cut into windows of seqTokens tokens')
    .option('--eval-text <file>', 'held-out evaluation text, as --calib-text')
    .option('--invariances <list>', 'ffn, attn, all, or kinds such as ffn-perm,attn-vo-rot', 'all')
    .option('--candidates <n>', 'candidates evaluated per step', String(DEFAULT_CONFIG.candidates))
    .option('--workers <n>', 'threads the job computes on (candidate evaluation, and the matmuls of sampling, calibration and evaluation), or auto: one per core up to --candidates (results do not depend on it)', 'auto')
    .option('--memory-budget <bytes>', 'memory the run aims to stay within, e.g. 6G (default: a fifth of the machine\'s); activations past an eighth of it go to scratch files')
    .option('--patience <n>', 'stop after this many validation checks without improvement, once every block has had a stint (0 = never)', String(DEFAULT_CONFIG.patience))
    .option('--tuning <json>', 'search tuning overrides as a JSON object, e.g. \'{"accept":"anneal","schedule":"gain"}\' (README: "Tuning")');
}

/** `--tuning` → validated overrides (undefined when not given). */
export function tuningFromOptions(o: Record<string, string>): Partial<SearchTuning> | undefined {
  if (o.tuning === undefined) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(o.tuning);
  } catch (e) {
    fail('bad-config', `--tuning is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('bad-config', '--tuning must be a JSON object');
  resolveTuning(raw as Partial<SearchTuning>); // one clear error now, not when the job starts
  return raw as Partial<SearchTuning>;
}

function bytes(name: string, v: string): number {
  const n = parseBytes(v);
  if (!Number.isFinite(n)) fail('bad-config', `--${name} must be a size such as 6G, 512M or a number of bytes, got "${v}"`);
  return n;
}

function num(name: string, v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) fail('bad-config', `--${name} must be a number, got "${v}"`);
  return n;
}

/**
 * bits and group of the run: a ggml `--format` fixes them (given ones must agree, which the
 * search's validation says in one error), the int grid needs both.
 */
function grid(o: Record<string, string>): { bits: number; group: number } {
  if (o.format !== undefined && o.format.toLowerCase() !== 'int') {
    const g = formatGrid(formatByName(o.format));
    return { bits: o.bits === undefined ? g.bits : num('bits', o.bits), group: o.group === undefined ? g.group : num('group', o.group) };
  }
  if (o.bits === undefined || o.group === undefined) fail('bad-config', '--bits and --group are required (or --format with a ggml format)');
  return { bits: num('bits', o.bits), group: num('group', o.group) };
}

/** commander's parsed options → a RunConfig (validated later by the search). */
export function runConfigFromOptions(o: Record<string, string>): RunConfig {
  const { bits, group } = grid(o);
  return {
    model: o.model,
    tokenizer: o.tokenizer,
    bits,
    group,
    base: o.base as RunConfig['base'],
    steps: num('steps', o.steps),
    timeBudget: num('time-budget', o.timeBudget),
    seed: num('seed', o.seed),
    calibTokens: o.calibTokens,
    evalTokens: o.evalTokens,
    calibText: o.calibText,
    evalText: o.evalText,
    invariances: parseInvariances(o.invariances),
    candidates: num('candidates', o.candidates),
    workers: o.workers === 'auto' ? autoWorkers(num('candidates', o.candidates)) : num('workers', o.workers),
    patience: num('patience', o.patience),
    memoryBudget: o.memoryBudget === undefined ? undefined : bytes('memory-budget', o.memoryBudget),
    // only when given, so an int-grid run's config (and its export's bytes) is as before
    ...(o.format !== undefined ? { format: o.format.toLowerCase() } : {}),
    ...(o.embed !== undefined ? { embed: o.embed as RunConfig['embed'] } : {}),
  };
}
