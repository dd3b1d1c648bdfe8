/**
 * Our GGUF files run by llama.cpp itself (node-llama-cpp's prebuilt CPU binary): greedy
 * continuations and next-token log-probabilities compared with invarx's forward of the
 * same model as our GGUF reader dequantizes it.
 *
 * llama.cpp's CPU kernels multiply quantized weights with activations they quantize too
 * (to 8 bits: q8_0 / q8_1 for the 32-blocks, q8_K for the k-quants; f16 for f16 weights),
 * so only f32 files can agree to float32 rounding. For the others the log-probabilities
 * are bounded and must stay far below the quantization's own effect: llama.cpp runs our
 * quantized weights, not something near the FP model. The context keeps its KV cache in
 * f32 without flash attention (./llamaRunner.ts), so attention adds no f16 rounding of its own.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Token } from 'node-llama-cpp';
import { forward } from '../../core/forward';
import { writeLlamaGguf } from '../../core/gguf';
import { diffs, ourLogProbs } from './logProbs';
import { loadGgufModel } from '../../core/model/gguf';
import { withRopeLayout } from '../../core/model/hf';
import { randomModel } from '../../core/model/synthetic';
import type { Model } from '../../core/model/types';
import { loadTokenizer } from '../../core/tokenizer';
import { shippedModel, TOKENIZER_PATH } from '../helpers';
import { llamaCpuOps } from './llamaCpuArithmetic';
import { llamaSession, runLlama } from './llamaRunner';

const session = llamaSession('invarx-llamacpp-');
const dir = session.dir;

const tok = loadTokenizer(TOKENIZER_PATH, 512);
const BOS = tok.encode('')[0];
const TEXTS = [
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.',
  'Tom had a big red ball. He threw it to his dog, and the dog ran fast to get it.',
  'The sun was shining and the birds were singing. Mom said, "Let us go for a walk."',
];
const HELD_OUT = TEXTS.map((t) => tok.encode(t));

function ourGreedy(m: Model, n: number): number[] {
  const V = m.config.vocabSize;
  const seq = [m.config.bosId];
  while (seq.length <= n) {
    const { logits } = forward(m, seq);
    const o = (seq.length - 1) * V;
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[o + v] > logits[o + best]) best = v;
    seq.push(best);
    if (best === m.config.eosId) break;
  }
  return seq.slice(1);
}


const figures: string[] = [];
afterAll(() => {
  if (figures.length) process.stdout.write(`llama.cpp vs invarx, |Δ log p| on ${HELD_OUT.length} held-out sentences:\n${figures.join('\n')}\n`);
});

/**
 * llama.cpp's log-probs against our float32 forward of the same dequantized model, with
 * the bounds of the header. The figure with llama.cpp's activation rounding emulated
 * (./llamaCpuArithmetic.ts) is reported, not asserted: llama.cpp's x86 kernels (repacked
 * ones included) round some activations differently from ggml's reference quantizers.
 */
function compare(format: string, path: string, ours: Model, theirs: number[][], fp: number[][]): void {
  const emulated = diffs(theirs, ourLogProbs(ours, HELD_OUT, llamaCpuOps(ours, path)));
  const plainLp = ourLogProbs(ours, HELD_OUT);
  const plain = diffs(theirs, plainLp);
  const quant = diffs(plainLp, fp);
  figures.push(
    `  ${format.padEnd(5)} max ${plain.max.toExponential(2)} mean ${plain.mean.toExponential(2)}` +
    ` | quantization itself: mean ${quant.mean.toExponential(2)} | activation rounding emulated: max ${emulated.max.toExponential(2)}`,
  );
  if (format === 'f32') {
    expect(plain.max).toBeLessThan(1e-3);
    return;
  }
  expect(plain.max).toBeLessThan(0.6);
  expect(plain.mean).toBeLessThan(0.04);
  // Where quantization moves log-probs by more than llama.cpp's activation rounding does, llama.cpp must follow ours.
  if (quant.mean > 0.05) expect(plain.mean).toBeLessThan(quant.mean / 2.5);
}

describe('stories260K GGUFs in llama.cpp', () => {
  const fp = shippedModel();
  const fpLogProbs = ourLogProbs(fp, HELD_OUT);

  it.each(['f32', 'f16', 'q8_0', 'q5_1', 'q5_0', 'q4_1', 'q4_0'])('%s: same greedy text, log-probs of the same dequantized model', async (format) => {
    const path = join(dir, `stories260K-${format}.gguf`);
    writeLlamaGguf(fp, tok, path, { format });
    const ours = loadGgufModel(path);
    const run = await runLlama(session.llama(), path, HELD_OUT, BOS, 48);
    expect(run.greedy).toEqual(ourGreedy(ours, 48));
    compare(format, path, ours, run.logProbs, fpLogProbs);
  });
});

describe("llama.cpp reads our tokenizer as run.c's", () => {
  it('tokenize and detokenize agree with core/tokenizer.ts (spaces, newlines as byte tokens, unicode by bytes)', async () => {
    const path = join(dir, 'tokenizer-check.gguf');
    writeLlamaGguf(shippedModel(), tok, path, { format: 'f32' });
    const model = await session.llama().loadModel({ modelPath: path });
    try {
      const texts = [...TEXTS, 'Line one.\nLine two!\n\nEnd', 'Café — naïve 😀 ok', '  two leading spaces', 'x'];
      for (const text of texts) {
        const ours = tok.encode(text, { bos: false });
        expect(Array.from(model.tokenize(text))).toEqual(ours);
        expect(model.detokenize(ours as Token[])).toBe(tok.decode(ours, 1));
      }
    } finally {
      await model.dispose();
    }
  });
});

describe("HF's half RoPE layout in llama.cpp", () => {
  it('a half-layout model written as f32 GGUF gives llama.cpp the log-probs of our forward of the original model', async () => {
    const half = withRopeLayout(randomModel({ dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 512, seqLen: 128, sharedClassifier: false }, 4), 'half');
    const path = join(dir, 'half-f32.gguf');
    writeLlamaGguf(half, tok, path, { format: 'f32' });
    const run = await runLlama(session.llama(), path, HELD_OUT, BOS, 0);
    const d = diffs(run.logProbs, ourLogProbs(half, HELD_OUT));
    figures.push(`  half-layout f32: max ${d.max.toExponential(2)}`);
    expect(d.max).toBeLessThan(1e-3);
  });
});

describe('k-quants on a random 256-aligned LLaMA in llama.cpp', () => {
  const fp = randomModel({ dim: 256, hiddenDim: 512, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 512, seqLen: 128, sharedClassifier: false }, 11);
  const fpLogProbs = ourLogProbs(fp, HELD_OUT);

  it.each(['q6_k', 'q5_k', 'q4_k', 'q3_k', 'q2_k'])('%s: log-probs of the same dequantized model', async (format) => {
    const path = join(dir, `random-${format}.gguf`);
    const rep = writeLlamaGguf(fp, tok, path, { format });
    expect(rep.fallbacks).toEqual([]);
    const ours = loadGgufModel(path);
    const run = await runLlama(session.llama(), path, HELD_OUT, BOS, 0);
    compare(format, path, ours, run.logProbs, fpLogProbs);
  });
});
