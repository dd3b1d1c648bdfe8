/**
 * k-quants at a real model's size: the random 110M LLaMA of `gen-model --shape 110m` (every
 * row length, 768 and 2048, a whole number of 256-weight super-blocks) exported by
 * `export-gguf` as q4_k, q3_k and q2_k; llama.cpp loads each file, and its next-token
 * log-probabilities on three 32-token sequences match our forward of the weights as our
 * GGUF reader dequantizes them.
 *
 * Tolerance. llama.cpp multiplies a k-quant weight with the activations rounded to q8_K
 * (per 256 values, 8 bits on the absolute maximum) and the q8_0 classifier with them
 * rounded to q8_0; our side emulates that rounding (./llamaCpuArithmetic.ts). What is left
 * is float32 order (llama.cpp sums integer products per sub-block, then scales; its own
 * kernels for norms, RoPE, SiLU, softmax): some 1e-6 relative, which by itself would leave
 * the log-probs equal to ~1e-5 — and does at the first position, BOS alone, for q3_k
 * (measured 3.8e-6; q4_k differs there by 0.07: llama.cpp's x86 q4_K kernels, repacked
 * ones included, evidently round some activations otherwise). But wherever the two sides'
 * values straddle a rounding boundary the q8 value differs by one step, amax/127 of its
 * 256-block, and at this shape amax is large:
 * the outlier channels of gen-model make the FFN-down inputs reach 60–120 while most are
 * below 4, so one step there is ~0.5–1, and a single such flip moves later log-probs by
 * 1e-2 to 1e-1. Over 32 positions × 12 blocks × ~5000 rounded values per position flips
 * are certain: our own forward with two float32 summation orders (js and wasm matmuls,
 * same emulation) already differ by mean 0.044, max 0.20 on the first sequence (q3_k).
 * Measured llama.cpp vs ours: max 0.38–0.46, mean 0.066–0.079, while quantization
 * itself moves the log-probs by mean 0.77–1.09. So the bounds: max 0.6, and mean under a
 * fifth of quantization's own effect, which a wrong block layout or scale (log-probs of
 * some other model) cannot meet. The tight agreement the arithmetic allows holds only
 * without flips, which no 110M-sized run of 32 tokens avoids.
 *
 * Wall time about 75 s on a quiet 2-core machine, most of it the three exports (the k-quant
 * fits of 85M weights), run at once.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Token } from 'node-llama-cpp';
import { diffs, ourLogProbs } from './logProbs';
import { loadGgufModel } from '../../core/model/gguf';
import { loadHfModel } from '../../core/model/hf';
import { eagerModel } from '../../core/model/lazy';
import { loadTokenizer, type Tokenizer } from '../../core/tokenizer';
import { createWasmBackend } from '../../kernels';
import { CLI, ensureBuilt, invarx } from '../cli/cli';
import { ROOT } from '../helpers';
import { llamaCpuOps } from './llamaCpuArithmetic';
import { llamaSession, runLlama } from './llamaRunner';

const FORMATS = ['q4_k', 'q3_k', 'q2_k'] as const;
const MAX_TOLERANCE = 0.6;
const SEQ_LENGTH = 32;
const TEXTS = [
  'once upon a time there was a little girl named lily and she loved to play outside in the park with her dog',
  'tom had a big red ball and he threw it to his dog and the dog ran very fast to get it back to him',
  'the sun was shining and the birds were singing so mom said let us all go for a long walk by the river',
];

const session = llamaSession('invarx-kq110m-');
const modelDir = join(session.dir, 'm110');
const ggufPath = (format: string) => join(session.dir, `m110-${format}.gguf`);
const run = promisify(execFile);
const reports = new Map<string, { fallbacks: unknown[]; tensors: { name: string; type: string }[] }>();
let tok: Tokenizer;
let seqs: number[][] = [];
let fpLogProbs: number[][] = [];
const wasm = createWasmBackend();
const figures: string[] = [];



beforeAll(async () => {
  ensureBuilt();
  const gen = invarx('gen-model', '--shape', '110m', '--out', modelDir);
  expect(gen.code, gen.stderr).toBe(0);
  // The three exports at once: the k-quant fits take most of this file's time, on every core there is.
  const outs = await Promise.all(FORMATS.map((f) => run(
    process.execPath, [CLI, 'export-gguf', '--model', modelDir, '--format', f, '--out', ggufPath(f), '--json'],
    { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 24 },
  )));
  FORMATS.forEach((f, i) => reports.set(f, JSON.parse(outs[i].stdout)));
  tok = loadTokenizer(join(modelDir, 'tokenizer.bin'), 32000);
  seqs = TEXTS.map((t) => tok.encode(t).slice(0, SEQ_LENGTH));
  const fp = eagerModel(loadHfModel(modelDir));
  fpLogProbs = ourLogProbs(fp, seqs, wasm);
}, 300_000);

afterAll(() => {
  if (figures.length) process.stdout.write(`110M k-quants, llama.cpp vs invarx, |Δ log p| on ${seqs.length} × ${SEQ_LENGTH} tokens:\n${figures.join('\n')}\n`);
});

describe('k-quants of the random 110M LLaMA in llama.cpp', () => {
  it('the sequences are 32 tokens of the synthetic tokenizer, which llama.cpp tokenizes as we do', async () => {
    expect(seqs.map((s) => s.length)).toEqual(TEXTS.map(() => SEQ_LENGTH));
    const model = await session.llama().loadModel({ modelPath: ggufPath('q4_k') });
    try {
      for (const [i, text] of TEXTS.entries()) {
        const ours = tok.encode(text, { bos: false });
        expect(ours.slice(0, SEQ_LENGTH - 1)).toEqual(seqs[i].slice(1));
        expect(Array.from(model.tokenize(text))).toEqual(ours);
        expect(model.detokenize(ours as Token[])).toBe(tok.decode(ours, 1));
      }
    } finally {
      await model.dispose();
    }
  });

  it.each(FORMATS)('%s: every linear in the format; llama.cpp log-probs = ours of the dequantized weights', async (format) => {
    const rep = reports.get(format)!;
    expect(rep.fallbacks).toEqual([]);
    expect(rep.tensors.filter((t) => t.type === format)).toHaveLength(12 * 7);
    const path = ggufPath(format);
    const ours = loadGgufModel(path, { stream: false });
    const theirs = (await runLlama(session.llama(), path, seqs, 1, 0)).logProbs;
    const d = diffs(theirs, ourLogProbs(ours, seqs, llamaCpuOps(ours, path, wasm)));
    const quant = diffs(theirs, fpLogProbs);
    figures.push(`  ${format}: max ${d.max.toExponential(2)} mean ${d.mean.toExponential(2)} | quantization itself: mean ${quant.mean.toExponential(2)}`);
    expect(d.max).toBeLessThan(MAX_TOLERANCE);
    expect(d.mean).toBeLessThan(quant.mean / 5);
  });
});
