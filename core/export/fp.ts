/**
 * Export of the (transformed) full-precision model: an HF checkpoint (config.json +
 * safetensors) for every kind, and a llama2.c `.bin` for llama models that fit that format.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../errors';
import { hfConfigOf, hfLayoutOf, hfTensors, withRopeLayout } from '../model/hf';
import { presentKeys } from '../model/lazy';
import { writeLlama2c } from '../model/llama2c';
import { writeSafetensorsCheckpointStream } from '../model/safetensorsWrite';
import type { Model } from '../model/types';
import { clearCheckpointFiles, type FloatDtype } from './gptq';

export interface HfExportOptions {
  /** Tensor dtype (default F32: bit-exact). */
  dtype?: FloatDtype;
  /** The source checkpoint's config.json, whose non-structural fields are carried over. */
  baseConfig?: Record<string, unknown>;
  /** Shard above this many bytes (default 4 GiB). */
  maxShardBytes?: number;
}

const TORCH_DTYPE: Record<FloatDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * Write `model` as an HF checkpoint into dir; returns the files written. Tensors are read
 * and written one at a time (a lazy model's blocks are loaded when their tensors' turn comes).
 */
export function writeHfExport(dir: string, model: Model, opts: HfExportOptions = {}): string[] {
  const dtype = opts.dtype ?? 'F32';
  if (!(dtype in TORCH_DTYPE)) fail('bad-config', `unknown export dtype ${String(dtype)} (F32, F16 or BF16)`);
  const layout = hfLayoutOf(model, opts.baseConfig);
  const tensors = hfTensors(model, layout).map((t) => ({ name: t.name, dtype, shape: t.shape, read: t.read }));
  const config = hfConfigOf(model, layout, TORCH_DTYPE[dtype], opts.baseConfig);
  mkdirSync(dir, { recursive: true });
  clearCheckpointFiles(dir);
  const files = writeSafetensorsCheckpointStream(dir, tensors, (t) => t.read(), { metadata: { format: 'pt' }, maxShardBytes: opts.maxShardBytes });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  return [...files, 'config.json'];
}

/**
 * Why `model` cannot be written as llama2.c, or null. run.c hard-codes RMSNorm epsilon 1e-5
 * and RoPE theta 10000, derives the head size as dim / n_heads, and has no biases.
 */
export function llama2cIncompatibility(model: Model): string | null {
  const cfg = model.config;
  if (cfg.arch !== 'llama') return `llama2.c holds llama models only, not ${cfg.arch}`;
  if (cfg.headDim * cfg.nHeads !== cfg.dim) return `llama2.c derives the head size as dim / n_heads; this model has head_dim ${cfg.headDim}`;
  if (cfg.normEps !== 1e-5) return `llama2.c uses RMSNorm epsilon 1e-5; this model has ${cfg.normEps}`;
  if (cfg.ropeTheta !== 10000) return `llama2.c uses RoPE theta 10000; this model has ${cfg.ropeTheta}`;
  if (model.blocks.some((b) => presentKeys(b).some((k) => k === 'bq' || k === 'bk' || k === 'bv' || k === 'bo'))) return 'llama2.c has no attention biases';
  return null;
}

/** Write a llama model as a llama2.c version-0 `.bin` (converted to interleaved RoPE), a tensor at a time. */
export function writeLlama2cExport(path: string, model: Model): void {
  const why = llama2cIncompatibility(model);
  if (why) fail('bad-config', `cannot export as llama2.c: ${why}`);
  writeLlama2c(path, withRopeLayout(model, 'interleaved'));
}
