/**
 * `invarx eval`: perplexity and KL(FP ‖ quantized) of FP, RTN and GPTQ on held-out tokens,
 * as a table or (with --json) one JSON object on stdout. The headline column "closes" is the
 * share of RTN's log-perplexity gap to FP that GPTQ closes (DESIGN.md §9).
 *
 * Held-out tokens: --tokens FILE, --text FILE, or the default set sampled from the FP model.
 * GPTQ calibrates on --calib-tokens FILE or the default calibration set (another seed).
 * `--quantized PATH,…` adds models quantized elsewhere (an `invarx run --out` export, a
 * packed GPTQ checkpoint) as rows against the FP model — on the FP model's default
 * held-out set that is the set a run's final table uses.
 */
import { basename } from 'node:path';
import type { Command } from 'commander';
import { fail } from '../../core/errors';
import { isGptqDir } from '../../core/export/gptqRead';
import { loadModel } from '../../core/model/load';
import { blockLinears, linearShape, type Model } from '../../core/model/types';
import { validateSpec } from '../../core/quant/rtn';
import { formatView, quantizedView } from '../../core/quant/view';
import { formatByName } from '../../core/quant/formats';
import { evaluateModels, gapClosed, type Perplexity, type Quality } from '../../core/metrics';
import {
  DEFAULT_CALIB, DEFAULT_HELD_OUT, loadTextFile, loadTokenFile, overlapCount, sampleSetsCapped,
} from '../../core/data';
import { loadTokenizer, tokenizerPathFor } from '../../core/tokenizer';
import { textWindows } from '../../search/tokens';
import { EVAL_METHODS, parseBits, parseGroup, parseMethods } from './modelArgs';

interface EvalOptions {
  model: string;
  tokenizer?: string;
  tokens?: string;
  text?: string;
  calibTokens?: string;
  calibText?: string;
  bits: string;
  group: string;
  method: string;
  quantized?: string;
  format?: string;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('eval')
    .description('perplexity and KL(FP || quantized) of FP, RTN and GPTQ on held-out tokens')
    .requiredOption('--model <path>', 'model: llama2.c .bin, HF safetensors directory (also a packed GPTQ export)')
    .option('--tokenizer <path>', 'tokenizer for --text (default: tok512.bin or tokenizer.bin beside the model)')
    .option('--tokens <file>', 'held-out tokens: JSON array of arrays of ids, .txt (one sequence per line) or .npy')
    .option('--text <file>', 'held-out text: UTF-8, one document per line')
    .option('--calib-tokens <file>', 'GPTQ calibration tokens (default: sampled from the model)')
    .option('--calib-text <file>', 'GPTQ calibration text (UTF-8, one document per line), cut into windows of 256 tokens')
    .option('--bits <n>', 'weight bits (2-8)', '3')
    .option('--group <n>', 'quantization group size along the input dimension', '32')
    .option('--method <list>', 'comma-separated: fp, rtn, gptq', 'fp,rtn,gptq')
    .option('--format <name>', 'a llama.cpp format (q4_0 … q6_k) instead of --bits/--group: rtn is its reference quantizer, gptq GPTQ on its grid')
    .option('--quantized <paths>', 'comma-separated models to compare with --model as the FP reference (e.g. a run\'s export DIR/gptq)')
    .option('--json', 'print one JSON object instead of a table')
    .action((o: EvalOptions) => evaluate(o));
}

/** Progress lines for people at a terminal; scripts and tests get clean streams. */
function note(msg: string): void {
  if (process.stderr.isTTY) process.stderr.write(`${msg}\n`);
}

async function evaluate(o: EvalOptions): Promise<void> {
  const bits = parseBits(o.bits);
  const group = parseGroup(o.group);
  const methods = parseMethods(o.method);
  if (o.tokens && o.text) fail('bad-config', 'give --tokens or --text, not both');
  const quantized = methods.filter((m): m is 'rtn' | 'gptq' => m !== 'fp');
  if ((o.calibTokens || o.calibText) && !quantized.includes('gptq')) fail('bad-config', '--calib-tokens and --calib-text only apply to --method gptq');
  if (o.calibTokens && o.calibText) fail('bad-config', 'give --calib-tokens or --calib-text, not both');

  const format = o.format === undefined ? undefined : formatByName(o.format);
  const fp = loadModel(o.model);
  if (isGptqDir(o.model) && !o.tokens && !o.text) {
    // Its "fp" row is the quantized model itself, on tokens sampled from it: rarely what is meant.
    process.stderr.write(
      `invarx: note: ${o.model} is a quantized checkpoint; to score it against its FP model: invarx eval --model FP_MODEL --quantized ${o.model}\n`,
    );
  }
  for (const name of blockLinears(fp.config)) validateSpec({ bits, group }, linearShape(fp.config, name)[1]);
  const given = loadQuantized(fp, o.quantized);
  // The fastest backend for forward passes and sampling (as `invarx run` uses), so the
  // default sets are the ones the search samples too.
  const { bestBackend } = await import('../../kernels/registry'); // (the kernels compile when loaded: not at startup)
  const ops = bestBackend();

  // The default sets this evaluation needs, sampled together (one batch: a pass over the
  // weights per token serves both).
  const sampleHeldOut = !o.tokens && !o.text;
  const sampleCalib = quantized.includes('gptq') && !o.calibTokens && !o.calibText;
  const wanted = [...(sampleHeldOut ? [DEFAULT_HELD_OUT] : []), ...(sampleCalib ? [DEFAULT_CALIB] : [])];
  if (wanted.length > 0) note(`sampling the default ${[sampleHeldOut && 'held-out', sampleCalib && 'calibration'].filter(Boolean).join(' and ')} set${wanted.length > 1 ? 's' : ''}…`);
  const sampled = sampleSetsCapped(fp, wanted, ops);

  let heldOut: number[][];
  let source: string;
  if (o.tokens) {
    heldOut = loadTokenFile(o.tokens, fp.config);
    source = o.tokens;
  } else if (o.text) {
    const tok = loadTokenizer(tokenizerPathFor(o.model, o.tokenizer), fp.config.vocabSize);
    heldOut = loadTextFile(o.text, tok, fp.config);
    source = o.text;
  } else {
    heldOut = sampled.shift()!;
    const len = Math.min(DEFAULT_HELD_OUT.length, fp.config.seqLen);
    source = `sampled from the model (${DEFAULT_HELD_OUT.count} × ${len} tokens, seed ${DEFAULT_HELD_OUT.seed})`;
  }

  const models: Partial<Record<'rtn' | 'gptq', Model>> = {};
  for (const method of quantized) {
    let calib: number[][] | undefined;
    if (method === 'gptq') {
      if (o.calibTokens) calib = loadTokenFile(o.calibTokens, fp.config);
      else if (o.calibText) {
        const length = Math.min(DEFAULT_CALIB.length, fp.config.seqLen);
        calib = textWindows(fp, tokenizerPathFor(o.model, o.tokenizer), o.calibText, length, DEFAULT_CALIB.count);
      } else {
        calib = sampled.shift()!;
      }
      const shared = overlapCount(calib, heldOut);
      if (shared > 0) process.stderr.write(`invarx: warning: ${shared} held-out sequences also occur in the calibration set\n`);
    }
    // Quantized block by block as the evaluation reaches it: one block of it in memory at a time.
    models[method] = format && method === 'rtn' ? formatView(fp, format) : quantizedView(fp, { bits, group, method, calib, ops, f16Scales: true, format });
  }
  note(`quantizing (${quantized.join(', ') || 'nothing'}) and evaluating, block by block…`);
  const res = evaluateModels(fp, { ...models, ...given } as Record<string, Model>, heldOut, { ops });
  const rows: Partial<Record<string, Perplexity | Quality>> = { fp: res.fp, ...res.models };
  const names: string[] = [...methods, ...Object.keys(given)];

  if (o.json) {
    const obj: Record<string, { ppl: number; kl?: number }> = {};
    for (const m of names) {
      const r = rows[m]!;
      obj[m] = 'kl' in r ? { ppl: r.ppl, kl: r.kl } : { ppl: r.ppl };
    }
    process.stdout.write(JSON.stringify(obj) + '\n');
    return;
  }
  const calibNote = quantized.includes('gptq')
    ? `; GPTQ calibration: ${o.calibTokens ?? o.calibText ?? `sampled (${DEFAULT_CALIB.count} sequences, seed ${DEFAULT_CALIB.seed})`}`
    : '';
  const width = Math.max(8, ...names.map((n) => n.length + 2));
  const lines = [
    format ? `model ${basename(o.model)}, rtn: ${format.name} (llama.cpp's reference quantizer)` : `model ${basename(o.model)}, ${bits}-bit, group ${group}`,
    `held-out: ${source}, ${res.fp.positions} predicted tokens${calibNote}`,
    '',
    `${'method'.padEnd(width)}${'ppl'.padStart(10)}${'KL(FP||q)'.padStart(12)}${'closes'.padStart(9)}`,
  ];
  for (const m of names) {
    const r = rows[m]!;
    const kl = 'kl' in r ? r.kl.toFixed(4) : '-';
    let closes = '';
    if (m !== 'fp' && m !== 'rtn' && rows.rtn) {
      const c = gapClosed(rows.rtn.ppl, r.ppl, res.fp.ppl);
      closes = Number.isNaN(c) ? '-' : `${(100 * c).toFixed(1)}%`;
    }
    lines.push(`${m.padEnd(width)}${r.ppl.toFixed(4).padStart(10)}${kl.padStart(12)}${closes.padStart(9)}`);
  }
  if (rows.rtn && names.length > 2) lines.push('', 'closes: share of the RTN log-perplexity gap to FP that a method closes');
  process.stdout.write(lines.join('\n') + '\n');
}

/** The --quantized models by the name they were given, each checked to be a variant of the FP model. */
function loadQuantized(fp: Model, list: string | undefined): Record<string, Model> {
  const out: Record<string, Model> = {};
  if (list === undefined) return out;
  const paths = list.split(',').map((p) => p.trim()).filter(Boolean);
  if (paths.length === 0) fail('bad-config', '--quantized names no model');
  for (const p of paths) {
    if (p in out || (EVAL_METHODS as readonly string[]).includes(p)) fail('bad-config', `--quantized: "${p}" is given twice or clashes with a method name`);
    const q = loadModel(p);
    const a = fp.config;
    const b = q.config;
    // The hidden width may differ (GPTQ exports pad it with zero units); the function may not.
    for (const k of ['arch', 'dim', 'nLayers', 'nHeads', 'nKvHeads', 'vocabSize'] as const) {
      if (a[k] !== b[k]) fail('bad-model', `--quantized ${p}: ${k} is ${b[k]}, the FP model's is ${a[k]}; not a quantization of it`);
    }
    out[p] = q;
  }
  return out;
}
