/**
 * Random-weight LLaMA checkpoints of real shapes, for tests and benchmarks of time and
 * memory (their quality figures mean nothing). Named shapes:
 *
 *   260k  stories260K    dim 64,   FFN 172,   5 layers,  8/4 heads,  vocab 512,   tied
 *   15m   stories15M     dim 288,  FFN 768,   6 layers,  6/6 heads,  vocab 32000, tied
 *   110m  stories110M    dim 768,  FFN 2048,  12 layers, 12/12 heads, vocab 32000
 *   1b    TinyLlama 1.1B dim 2048, FFN 5632,  22 layers, 32/4 heads, vocab 32000
 *   7b    LLaMA-2 7B     dim 4096, FFN 11008, 32 layers, 32/32 heads, vocab 32000 (header only: planned, never written)
 *
 * Every tensor is a pure function of (seed, its HF name), so a checkpoint is written tensor
 * by tensor in whatever order the file needs, holding one tensor at a time, and
 * `randomModel` builds the same values in memory. Beside the weights goes a tokenizer.bin
 * of the vocabulary's size (./syntheticTokenizer.ts), so the checkpoint exports to GGUF.
 *
 * Scales follow trained LLMs: linear weights N(0, 1/in) (std 0.013–0.036 at the 110m and
 * 1b widths), with 1% of input channels (at least one) scaled ×10–30 on top, the same
 * channels for the linears that read the same input (q/k/v, gate/up), as activation
 * outliers are a property of the channel; norms 1 ± 0.05; embedding std 0.02; a separate
 * classifier N(0, 1/dim).
 */
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../errors';
import { Rng } from '../rng';
import { hfBlockTensorName, hfConfigOf, type HfLayout } from './hf';
import { SYNTHETIC_TOKENIZER_MIN_VOCAB, syntheticTokenizerBytes } from './syntheticTokenizer';
import { decodeBf16, decodeF16, encodeBf16, encodeF16 } from './halfFloat';
import { type Dtype, dtypeSize } from './safetensors';
import { type TensorSpec, writeSafetensorsCheckpointStream } from './safetensorsWrite';
import { LINEAR_NAMES, linearShape, type F32, type LinearName, type Model, type ModelConfig } from './types';

export interface SyntheticShape {
  name?: string;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
  /** Too large to write here: only planned. */
  headerOnly?: boolean;
}

export const SYNTHETIC_SHAPES: Readonly<Record<string, Readonly<SyntheticShape>>> = {
  '260k': { name: '260k', dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512, sharedClassifier: true },
  '15m': { name: '15m', dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKvHeads: 6, vocabSize: 32000, seqLen: 256, sharedClassifier: true },
  '110m': { name: '110m', dim: 768, hiddenDim: 2048, nLayers: 12, nHeads: 12, nKvHeads: 12, vocabSize: 32000, seqLen: 1024, sharedClassifier: false },
  '1b': { name: '1b', dim: 2048, hiddenDim: 5632, nLayers: 22, nHeads: 32, nKvHeads: 4, vocabSize: 32000, seqLen: 2048, sharedClassifier: false },
  '7b': { name: '7b', dim: 4096, hiddenDim: 11008, nLayers: 32, nHeads: 32, nKvHeads: 32, vocabSize: 32000, seqLen: 4096, sharedClassifier: false, headerOnly: true },
};

export type SyntheticDtype = 'bf16' | 'fp16' | 'fp32';
export const SYNTHETIC_DTYPES: readonly SyntheticDtype[] = ['bf16', 'fp16', 'fp32'];
const FILE_DTYPE: Record<SyntheticDtype, Dtype> = { bf16: 'BF16', fp16: 'F16', fp32: 'F32' };
const TORCH_DTYPE: Record<SyntheticDtype, string> = { bf16: 'bfloat16', fp16: 'float16', fp32: 'float32' };

const EMBEDDING_STD = 0.02;
const NORM_SPREAD = 0.05;
const OUTLIER_SHARE = 0.01;
const OUTLIER_MIN = 10;
const OUTLIER_MAX = 30;
/** randomModel builds everything as float32 at once; above this it is a file's job. */
const RANDOM_MODEL_MAX_BYTES = 2 ** 30;

/** A named shape, or a custom one checked for consistency; else InvarxError naming the problem. */
export function syntheticShape(shape: string | SyntheticShape): SyntheticShape {
  if (typeof shape === 'string') {
    const s = Object.prototype.hasOwnProperty.call(SYNTHETIC_SHAPES, shape) ? SYNTHETIC_SHAPES[shape] : undefined;
    if (!s) fail('bad-config', `unknown model shape "${shape}" (known: ${Object.keys(SYNTHETIC_SHAPES).join(', ')})`);
    return s;
  }
  for (const k of ['dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'vocabSize', 'seqLen'] as const) {
    if (!(Number.isSafeInteger(shape[k]) && shape[k] > 0)) fail('bad-config', `model shape: ${k} must be a positive integer, got ${shape[k]}`);
  }
  if (shape.dim % shape.nHeads !== 0) fail('bad-config', `model shape: dim ${shape.dim} is not a multiple of ${shape.nHeads} heads`);
  if ((shape.dim / shape.nHeads) % 2 !== 0) fail('bad-config', `model shape: head dimension ${shape.dim / shape.nHeads} must be even for RoPE`);
  if (shape.nHeads % shape.nKvHeads !== 0) fail('bad-config', `model shape: ${shape.nHeads} heads is not a multiple of ${shape.nKvHeads} KV heads`);
  return shape;
}

/** The ModelConfig `loadModel` reads back from a checkpoint of this shape. */
export function syntheticConfig(shape: string | SyntheticShape): ModelConfig {
  const s = syntheticShape(shape);
  return {
    arch: 'llama', dim: s.dim, hiddenDim: s.hiddenDim, nLayers: s.nLayers, nHeads: s.nHeads, nKvHeads: s.nKvHeads,
    headDim: s.dim / s.nHeads, vocabSize: s.vocabSize, seqLen: s.seqLen, normEps: 1e-5, ropeTheta: 10000,
    ropeLayout: 'half', sharedClassifier: s.sharedClassifier, bosId: 1, eosId: 2,
  };
}

export function parseSyntheticDtype(v: string): SyntheticDtype {
  if (!(SYNTHETIC_DTYPES as readonly string[]).includes(v)) fail('bad-config', `unknown dtype "${v}" (use ${SYNTHETIC_DTYPES.join(', ')})`);
  return v as SyntheticDtype;
}

/** Seeds are uint32 (the Rng folds its seed to 32 bits; others would alias). */
function checkSeed(seed: number): number {
  if (!(Number.isSafeInteger(seed) && seed >= 0 && seed <= 0xffffffff)) fail('bad-config', `seed must be an integer from 0 to 4294967295, got ${seed}`);
  return seed;
}

// ---------------------------------------------------------------------------------------
// Tensors

const LAYOUT: HfLayout = {
  architecture: 'LlamaForCausalLM', prefix: 'model.',
  blockKeys: ['attnNorm', 'wq', 'wk', 'wv', 'wo', 'ffnNorm', 'w1', 'w2', 'w3'],
};

/** Linears reading the same input share its outlier channels. */
const INPUT_OF: Record<LinearName, string> = { wq: 'attn_in', wk: 'attn_in', wv: 'attn_in', wo: 'attn_ctx', w1: 'ffn_in', w3: 'ffn_in', w2: 'ffn_mid' };

type Role = { kind: 'embedding' } | { kind: 'classifier' } | { kind: 'norm'; key: 'attnNorm' | 'ffnNorm' | 'finalNorm'; layer: number } | { kind: 'linear'; name: LinearName; layer: number };

interface SyntheticTensor extends TensorSpec {
  role: Role;
}

/** Every tensor of the checkpoint, HF names and shapes (no values). */
function syntheticTensors(cfg: ModelConfig, dtype: Dtype): SyntheticTensor[] {
  const out: SyntheticTensor[] = [{ name: 'model.embed_tokens.weight', dtype, shape: [cfg.vocabSize, cfg.dim], role: { kind: 'embedding' } }];
  for (let l = 0; l < cfg.nLayers; l++) {
    for (const key of ['attnNorm', 'ffnNorm'] as const) {
      out.push({ name: hfBlockTensorName(LAYOUT, l, key), dtype, shape: [cfg.dim], role: { kind: 'norm', key, layer: l } });
    }
    for (const name of LINEAR_NAMES) {
      out.push({ name: hfBlockTensorName(LAYOUT, l, name), dtype, shape: linearShape(cfg, name), role: { kind: 'linear', name, layer: l } });
    }
  }
  out.push({ name: 'model.norm.weight', dtype, shape: [cfg.dim], role: { kind: 'norm', key: 'finalNorm', layer: -1 } });
  if (!cfg.sharedClassifier) out.push({ name: 'lm_head.weight', dtype, shape: [cfg.vocabSize, cfg.dim], role: { kind: 'classifier' } });
  return out;
}

/** FNV-1a of a string: a stable per-tensor key for the Rng seed. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

function keyedRng(seed: number, key: string): Rng {
  return Rng.fromSeed(fnv1a(`${seed >>> 0}:${key}`));
}

/**
 * out[i] = std · N(0, 1) by Marsaglia's polar method, both values of each pair used: drawing
 * is most of the writer's time, and this avoids Box–Muller's sine and cosine.
 */
function fillNormal(rng: Rng, out: F32, std: number): void {
  for (let i = 0; i < out.length; i += 2) {
    let x: number;
    let y: number;
    let s: number;
    do {
      x = rng.nextU32() / 2147483648 - 1;
      y = rng.nextU32() / 2147483648 - 1;
      s = x * x + y * y;
    } while (s >= 1 || s === 0);
    const f = std * Math.sqrt((-2 * Math.log(s)) / s);
    out[i] = x * f;
    if (i + 1 < out.length) out[i + 1] = y * f;
  }
}

/** The outlier input channels (of n) of linear `name` in layer `layer`, and their factors. */
export function syntheticOutliers(seed: number, layer: number, name: LinearName, n: number): { channels: number[]; factors: number[] } {
  const rng = keyedRng(seed, `layers.${layer}.${INPUT_OF[name]}.outliers`);
  const channels = rng.sample(n, Math.max(1, Math.round(OUTLIER_SHARE * n)));
  return { channels, factors: channels.map(() => OUTLIER_MIN + (OUTLIER_MAX - OUTLIER_MIN) * rng.float()) };
}

/** The float32 values of one tensor: a function of (seed, name) only. */
function tensorValues(t: SyntheticTensor, seed: number): F32 {
  const rng = keyedRng(seed, t.name);
  const out = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
  const role = t.role;
  switch (role.kind) {
    case 'embedding':
      fillNormal(rng, out, EMBEDDING_STD);
      break;
    case 'classifier':
      fillNormal(rng, out, 1 / Math.sqrt(t.shape[1]));
      break;
    case 'norm':
      fillNormal(rng, out, NORM_SPREAD);
      for (let i = 0; i < out.length; i++) out[i] += 1;
      break;
    case 'linear': {
      const [rows, cols] = t.shape;
      fillNormal(rng, out, 1 / Math.sqrt(cols));
      const { channels, factors } = syntheticOutliers(seed, role.layer, role.name, cols);
      channels.forEach((c, j) => {
        for (let r = 0; r < rows; r++) out[r * cols + c] *= factors[j];
      });
      break;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Plan

export interface SyntheticPlan {
  shape: string;
  config: ModelConfig;
  headerOnly: boolean;
  parameters: number;
  tensors: number;
  /** Weight bytes of a checkpoint in each dtype (headers add a few KiB). */
  bytes: Record<SyntheticDtype, number>;
  /** One transformer block as float32. */
  blockBytesF32: number;
  /** Embedding plus separate classifier (if any) as float32. */
  embeddingBytesF32: number;
}

export function planSynthetic(shape: string | SyntheticShape): SyntheticPlan {
  const s = syntheticShape(shape);
  const cfg = syntheticConfig(s);
  const specs = syntheticTensors(cfg, 'F32');
  const count = (t: TensorSpec) => t.shape.reduce((a, b) => a * b, 1);
  const parameters = specs.reduce((n, t) => n + count(t), 0);
  const block = specs.filter((t) => (t.role.kind === 'linear' || t.role.kind === 'norm') && t.role.layer === 0);
  const embedding = specs.filter((t) => t.role.kind === 'embedding' || t.role.kind === 'classifier');
  const bytes = Object.fromEntries(SYNTHETIC_DTYPES.map((d) => [d, parameters * dtypeSize(FILE_DTYPE[d])])) as Record<SyntheticDtype, number>;
  return {
    shape: s.name ?? 'custom', config: cfg, headerOnly: s.headerOnly === true, parameters, tensors: specs.length, bytes,
    blockBytesF32: block.reduce((n, t) => n + 4 * count(t), 0),
    embeddingBytesF32: embedding.reduce((n, t) => n + 4 * count(t), 0),
  };
}

// ---------------------------------------------------------------------------------------
// In memory

/** `values` as a `dtype` checkpoint stores them (identity for fp32). */
function roundTo(values: F32, dtype: SyntheticDtype): F32 {
  if (dtype === 'bf16') decodeBf16(encodeBf16(values), values);
  else if (dtype === 'fp16') decodeF16(encodeF16(values), values);
  return values;
}

/**
 * The model a checkpoint of this shape and seed holds, built in memory: bit for bit what
 * `loadModel` reads from `writeSyntheticCheckpoint`'s output in `dtype` (default fp32,
 * the unrounded values). Small shapes only (at most 1 GiB as float32).
 */
export function randomModel(shape: string | SyntheticShape, seed = 1, opts: { dtype?: SyntheticDtype } = {}): Model {
  const plan = planSynthetic(shape);
  const dtype = parseSyntheticDtype(opts.dtype ?? 'fp32');
  checkSeed(seed);
  if (plan.parameters * 4 > RANDOM_MODEL_MAX_BYTES) {
    fail('bad-config', `shape ${plan.shape} is ${(plan.parameters * 4 / 2 ** 30).toFixed(1)} GiB as float32, too large to build in memory; write it with writeSyntheticCheckpoint`);
  }
  const cfg = plan.config;
  const blocks: Record<string, F32>[] = Array.from({ length: cfg.nLayers }, () => ({}));
  const model = { config: cfg, blocks } as unknown as Model;
  for (const t of syntheticTensors(cfg, FILE_DTYPE[dtype])) {
    const v = roundTo(tensorValues(t, seed), dtype);
    const r = t.role;
    if (r.kind === 'embedding') model.embedding = v;
    else if (r.kind === 'classifier') model.classifier = v;
    else if (r.kind === 'norm' && r.key === 'finalNorm') model.finalNorm = v;
    else blocks[r.layer][r.kind === 'norm' ? r.key : r.name] = v;
  }
  if (cfg.sharedClassifier) model.classifier = model.embedding;
  return model;
}

// ---------------------------------------------------------------------------------------
// On disk

/** The tokenizer written beside a checkpoint (one of the names export commands look for). */
export const SYNTHETIC_TOKENIZER_FILE = 'tokenizer.bin';

export interface SyntheticWriteOptions {
  dtype?: SyntheticDtype;
  seed?: number;
  /** At most this many shards of about equal size (default: one file up to 4 GiB). */
  shards?: number;
  /** Called as each tensor's turn comes, before its values are drawn (progress; tests watch the order). */
  onTensor?: (name: string, index: number, count: number) => void;
}

export interface SyntheticWriteResult {
  files: string[];
  /** Total size of the files written. */
  bytes: number;
  plan: SyntheticPlan;
}

/** Refuse an output directory that is a file or holds anything (a checkpoint is never mixed into other files). */
export function checkOutputDir(dir: string): void {
  if (!existsSync(dir)) return;
  if (!statSync(dir).isDirectory()) fail('bad-config', `${dir} exists and is not a directory`);
  if (readdirSync(dir).length > 0) fail('bad-config', `${dir} is not empty; give a new or empty directory`);
}

/**
 * Write a checkpoint of this shape into `dir` (created; it must not hold anything): the
 * safetensors file(s), tokenizer.bin (when the vocabulary holds its 259 fixed pieces), then
 * config.json (HF LlamaForCausalLM form), last, so a directory with config.json is complete. Tensors are drawn, encoded and written one at a time.
 */
export function writeSyntheticCheckpoint(dir: string, shape: string | SyntheticShape, opts: SyntheticWriteOptions = {}): SyntheticWriteResult {
  const plan = planSynthetic(shape);
  const dtype = parseSyntheticDtype(opts.dtype ?? 'bf16');
  const seed = checkSeed(opts.seed ?? 1);
  if (plan.headerOnly) {
    fail('bad-config', `shape ${plan.shape} is header-only (${(plan.parameters / 1e9).toFixed(1)}B parameters, ${(plan.bytes[dtype] / 1e9).toFixed(1)} GB in ${dtype}): it can be planned, not written`);
  }
  if (opts.shards !== undefined && !(Number.isSafeInteger(opts.shards) && opts.shards >= 1 && opts.shards <= plan.tensors)) {
    fail('bad-config', `shards must be an integer from 1 to ${plan.tensors} (the tensor count), got ${opts.shards}`);
  }
  checkOutputDir(dir);
  mkdirSync(dir, { recursive: true });
  const specs = syntheticTensors(plan.config, FILE_DTYPE[dtype]);
  let index = 0;
  const produce = (t: SyntheticTensor) => {
    opts.onTensor?.(t.name, index++, specs.length);
    return tensorValues(t, seed);
  };
  const files = writeSafetensorsCheckpointStream(dir, specs, produce, { metadata: { format: 'pt' }, shards: opts.shards });
  // A tokenizer to go with it (GGUF export needs one); vocabularies too small for its layout get none.
  if (plan.config.vocabSize >= SYNTHETIC_TOKENIZER_MIN_VOCAB) {
    writeFileSync(join(dir, SYNTHETIC_TOKENIZER_FILE), syntheticTokenizerBytes(plan.config.vocabSize));
    files.push(SYNTHETIC_TOKENIZER_FILE);
  }
  // hfConfigOf reads only the model's config; the rest of a Model is not needed for the header.
  const config = hfConfigOf({ config: plan.config } as Model, LAYOUT, TORCH_DTYPE[dtype]);
  config.invarx_synthetic = { shape: plan.shape, seed, dtype }; // what made it (the scale bench reuses a matching one)
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  files.push('config.json');
  const bytes = files.reduce((n, f) => n + statSync(join(dir, f)).size, 0);
  return { files, bytes, plan };
}
