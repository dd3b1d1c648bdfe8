/**
 * `invarx gen-model`: write a random-weight LLaMA checkpoint of a named real shape (HF
 * config.json + safetensors), for trying and benchmarking the quantizer at scale without
 * downloading a model. Its quality figures mean nothing; its time and memory do. The `7b`
 * shape is header-only: the command prints its plan and writes nothing.
 */
import type { Command } from 'commander';
import { fail } from '../../core/errors';
import {
  SYNTHETIC_SHAPES, checkOutputDir, parseSyntheticDtype, planSynthetic, syntheticShape, writeSyntheticCheckpoint, type SyntheticPlan,
} from '../../core/model/synthetic';
import { parseInteger, parseSeed } from './modelArgs';

interface GenModelOptions {
  shape: string;
  out?: string;
  dtype: string;
  seed: string;
  shards?: string;
  layers?: string;
}

export function register(program: Command): void {
  program
    .command('gen-model')
    .description('write a random-weight LLaMA checkpoint of a real shape (for tests and benchmarks)')
    .requiredOption('--shape <name>', `model shape: ${Object.keys(SYNTHETIC_SHAPES).join(', ')} (7b: plan only)`)
    .option('--out <dir>', 'new or empty directory to write the checkpoint into')
    .option('--dtype <type>', 'tensor dtype: bf16, fp16 or fp32', 'bf16')
    .option('--seed <n>', 'random seed of the weights', '1')
    .option('--shards <n>', 'split the weights into this many safetensors files (default: one file up to 4 GiB)')
    .option('--layers <n>', 'the shape\'s width with this many layers (its own count by default): a block\'s time and memory in minutes')
    .action((o: GenModelOptions) => genModel(o));
}

/** Bytes in MB below a GB, else GB (the shapes span 0.5 MB to 13 GB). */
function size(bytes: number): string {
  return bytes < 1e9 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e9).toFixed(2)} GB`;
}

function describe(p: SyntheticPlan, dtype: 'bf16' | 'fp16' | 'fp32'): string {
  const c = p.config;
  return [
    `shape ${p.shape}: dim ${c.dim}, FFN ${c.hiddenDim}, ${c.nLayers} layers, ${c.nHeads}/${c.nKvHeads} heads, vocab ${c.vocabSize}, ` +
      `seqLen ${c.seqLen}, ${c.sharedClassifier ? 'tied' : 'separate'} classifier`,
    `${(p.parameters / 1e6).toFixed(1)}M parameters in ${p.tensors} tensors; ${size(p.bytes[dtype])} in ${dtype}; ` +
      `float32: ${size(p.blockBytesF32)} per block, ${size(p.embeddingBytesF32)} embedding + classifier`,
  ].join('\n');
}

function genModel(o: GenModelOptions): void {
  // Every option is checked before anything is written.
  const base = syntheticShape(o.shape);
  const shape = o.layers === undefined ? base : { ...base, name: `${base.name}-${o.layers}l`, nLayers: parseInteger('--layers', o.layers, 1, 1000) };
  const plan = planSynthetic(shape);
  const dtype = parseSyntheticDtype(o.dtype);
  const seed = parseSeed(o.seed);
  const shards = o.shards === undefined ? undefined : parseInteger('--shards', o.shards, 1, plan.tensors);
  if (plan.headerOnly) {
    process.stdout.write(`${describe(plan, dtype)}\n${plan.shape} is header-only: planned, no weights written\n`);
    return;
  }
  if (o.out === undefined) fail('bad-config', `--out DIR is required to write shape ${plan.shape}`);
  checkOutputDir(o.out);
  process.stdout.write(`${describe(plan, dtype)}\n`);
  const t0 = performance.now();
  let lastShown = 0;
  const res = writeSyntheticCheckpoint(o.out, shape, {
    dtype, seed, shards,
    onTensor: (_name, i, n) => {
      const now = performance.now();
      if (process.stderr.isTTY && now - lastShown > 500) {
        process.stderr.write(`\rwriting tensor ${i + 1}/${n}\x1b[K`);
        lastShown = now;
      }
    },
  });
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  const s = ((performance.now() - t0) / 1000).toFixed(1);
  process.stdout.write(`wrote ${o.out}: ${res.files.join(', ')} (${size(res.bytes)}, ${s} s)\n`);
}
