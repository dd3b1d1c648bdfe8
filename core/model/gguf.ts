/**
 * A llama GGUF file (ours or anyone's) as our Model: metadata to config, tensors
 * dequantized to float32 exactly (core/gguf/reader.ts). llama.cpp's llama rotates
 * interleaved RoPE pairs, so the model comes back in the 'interleaved' layout, the reverse
 * of the writer's permutation. A missing output.weight means a tied classifier.
 */
import { fail } from '../errors';
import { readGgufHeader, readGgufTensor, type GgufFile } from '../gguf/reader';
import { GGML_LINEAR_NAMES } from '../gguf/llama';
import { blockBytes, STREAM_ABOVE_BYTES } from './hf';
import { BlockCache, lazyBlocks } from './lazy';
import { blockLinears, linearShape, type Block, type Model, type ModelConfig } from './types';

function num(file: GgufFile, key: string, fallback?: number): number {
  const v = file.metadata.get(key);
  if (v === undefined || Array.isArray(v.value)) {
    if (fallback !== undefined && v === undefined) return fallback;
    return fail('bad-model', `${file.path}: GGUF metadata ${key} is ${v === undefined ? 'missing' : 'not a number'}`);
  }
  const n = Number(v.value);
  if (!Number.isFinite(n)) fail('bad-model', `${file.path}: GGUF metadata ${key} is ${String(v.value)}, not a number`);
  return n;
}

function positiveInt(file: GgufFile, key: string, fallback?: number): number {
  const n = num(file, key, fallback);
  if (!(Number.isSafeInteger(n) && n > 0)) fail('bad-model', `${file.path}: GGUF metadata ${key} is ${n}, not a positive integer`);
  return n;
}

/** The config a llama GGUF declares. */
export function ggufConfig(file: GgufFile): ModelConfig {
  const arch = file.metadata.get('general.architecture')?.value;
  if (arch !== 'llama') fail('bad-model', `${file.path}: GGUF architecture ${JSON.stringify(arch ?? null)} is not supported (only llama)`);
  const dim = positiveInt(file, 'llama.embedding_length');
  const nHeads = positiveInt(file, 'llama.attention.head_count');
  const nKvHeads = positiveInt(file, 'llama.attention.head_count_kv', nHeads);
  if (dim % nHeads !== 0 || nHeads % nKvHeads !== 0) fail('bad-model', `${file.path}: ${nHeads} heads, ${nKvHeads} KV heads and embedding ${dim} do not fit together`);
  const headDim = dim / nHeads;
  const ropeDims = positiveInt(file, 'llama.rope.dimension_count', headDim);
  if (ropeDims !== headDim) fail('bad-model', `${file.path}: RoPE on ${ropeDims} of ${headDim} head dimensions is not supported`);
  if (file.metadata.has('llama.rope.scaling.type') && file.metadata.get('llama.rope.scaling.type')!.value !== 'none') {
    fail('bad-model', `${file.path}: RoPE scaling is not supported`);
  }
  const embd = file.tensors.find((t) => t.name === 'token_embd.weight');
  if (!embd) fail('bad-model', `${file.path}: no token_embd.weight tensor`);
  return {
    arch: 'llama',
    dim,
    hiddenDim: positiveInt(file, 'llama.feed_forward_length'),
    nLayers: positiveInt(file, 'llama.block_count'),
    nHeads,
    nKvHeads,
    headDim,
    vocabSize: embd.dims[1] ?? 0,
    seqLen: positiveInt(file, 'llama.context_length'),
    normEps: num(file, 'llama.attention.layer_norm_rms_epsilon'),
    ropeTheta: num(file, 'llama.rope.freq_base', 10000),
    ropeLayout: 'interleaved',
    sharedClassifier: !file.tensors.some((t) => t.name === 'output.weight'),
    bosId: num(file, 'tokenizer.ggml.bos_token_id', 1),
    eosId: num(file, 'tokenizer.ggml.eos_token_id', 2),
  };
}

/**
 * Read a llama GGUF as a Model (weights dequantized to float32). With `stream` the blocks
 * are read and dequantized when used (core/model/lazy.ts); 'auto' streams models whose
 * block weights take more than STREAM_ABOVE_BYTES as float32, as HF checkpoints do.
 */
export function loadGgufModel(path: string, opts: { stream?: boolean | 'auto' } = {}): Model {
  const file = readGgufHeader(path);
  const cfg = ggufConfig(file);
  const { dim, vocabSize } = cfg;
  if (!(vocabSize > 0)) fail('bad-model', `${path}: token_embd.weight is not a matrix`);
  // Every tensor's presence and shape is checked before any data is read.
  const want = new Map<string, number[]>([['token_embd.weight', [dim, vocabSize]], ['output_norm.weight', [dim]]]);
  if (!cfg.sharedClassifier) want.set('output.weight', [dim, vocabSize]);
  const blockTensors = (l: number): [keyof Block, string, number[]][] => [
    ['attnNorm', `blk.${l}.attn_norm.weight`, [dim]],
    ['ffnNorm', `blk.${l}.ffn_norm.weight`, [dim]],
    ...blockLinears(cfg).map((name): [keyof Block, string, number[]] => {
      const [rows, cols] = linearShape(cfg, name);
      return [name, `blk.${l}.${GGML_LINEAR_NAMES[name]}.weight`, [cols, rows]];
    }),
  ];
  for (let l = 0; l < cfg.nLayers; l++) for (const [, name, dims] of blockTensors(l)) want.set(name, dims);
  for (const [name, dims] of want) {
    const t = file.tensors.find((x) => x.name === name);
    if (!t) fail('bad-model', `${path}: no tensor ${name}`);
    if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) {
      fail('bad-model', `${path}: tensor ${name} has dims [${t.dims.join(', ')}], the metadata implies [${dims.join(', ')}]`);
    }
  }
  const loadBlock = (l: number): Block => {
    const b: Partial<Record<keyof Block, Float32Array>> = {};
    for (const [key, name] of blockTensors(l)) b[key] = readGgufTensor(file, name);
    return b as Block;
  };
  const stream = opts.stream === 'auto' ? blockBytes(cfg) > STREAM_ABOVE_BYTES : !!opts.stream;
  const blocks = stream
    ? lazyBlocks(cfg.nLayers, blockTensors(0).map(([key]) => key), new BlockCache(loadBlock, 2))
    : Array.from({ length: cfg.nLayers }, (_, l) => loadBlock(l));
  const embedding = readGgufTensor(file, 'token_embd.weight');
  return {
    config: cfg,
    embedding,
    blocks,
    finalNorm: readGgufTensor(file, 'output_norm.weight'),
    classifier: cfg.sharedClassifier ? embedding : readGgufTensor(file, 'output.weight'),
  };
}
