/**
 * llama.cpp (node-llama-cpp's prebuilt CPU binary) for the GGUF tests: one instance and a
 * scratch directory per test file, and a runner that scores sequences and continues BOS
 * greedily. The context keeps its KV cache in f32 without flash attention, so attention
 * adds no f16 rounding of its own.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { getLlama, LlamaLogLevel, type ControlledEvaluateInputItem, type Llama, type Token } from 'node-llama-cpp';

export interface LlamaRun {
  /** Per sequence, log p(next token) at each position. */
  logProbs: number[][];
  greedy: number[];
}

/** Registers the file's llama.cpp instance and scratch directory (removed after the file's tests). */
export function llamaSession(prefix: string): { dir: string; llama: () => Llama } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  let llama: Llama | undefined;
  beforeAll(async () => {
    llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  });
  afterAll(async () => {
    await llama?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, llama: () => llama! };
}

/** llama.cpp's log-probabilities of `seqs` and its greedy continuation of `bos` (greedyLength tokens) on the GGUF at `path`. */
export async function runLlama(llama: Llama, path: string, seqs: number[][], bos: number, greedyLength: number): Promise<LlamaRun> {
  const model = await llama.loadModel({ modelPath: path });
  try {
    const ctx = await model.createContext({
      contextSize: 256, batchSize: 256, threads: 1, flashAttention: false,
      experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32',
    });
    const seq = ctx.getSequence();
    const logProbs: number[][] = [];
    for (const s of seqs) {
      await seq.clearHistory();
      const out = await seq.controlledEvaluate(s.map((t): ControlledEvaluateInputItem => [t as Token, { generateNext: { probabilities: true } }]));
      logProbs.push(s.slice(1).map((next, i) => Math.log(out[i]!.next.probabilities!.get(next as Token) ?? 0)));
    }
    await seq.clearHistory();
    const greedy: number[] = [];
    if (greedyLength > 0) {
      for await (const t of seq.evaluate([bos as Token], { temperature: 0, yieldEogToken: true })) {
        greedy.push(t);
        if (greedy.length >= greedyLength) break;
      }
    }
    await ctx.dispose();
    return { logProbs, greedy };
  } finally {
    await model.dispose();
  }
}
