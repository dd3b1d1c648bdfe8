/**
 * Hugging Face checkpoints: `config.json` + safetensors <-> Model, for
 *
 *   LlamaForCausalLM, MistralForCausalLM  llama kind, RoPE 'half' layout (HF rotates halves)
 *   Qwen2ForCausalLM                      llama kind with q/k/v biases
 *   OPTForCausalLM                        opt kind: LayerNorm, biases, ReLU FFN, learned positions
 *
 * Tensor names (prefix `model.` for llama-family, `model.decoder.` for OPT; checkpoints saved
 * from the bare base model lack the leading `model.` and are accepted too):
 *
 *   llama-family                               opt
 *   embed_tokens.weight       embedding        embed_tokens.weight
 *   —                                          embed_positions.weight  [seqLen + 2, dim]
 *   layers.L.input_layernorm.weight  attnNorm  layers.L.self_attn_layer_norm.{weight,bias}
 *   layers.L.self_attn.q_proj  wq (bq)         layers.L.self_attn.q_proj.{weight,bias}
 *   … k_proj wk (bk), v_proj wv (bv)           … k_proj, v_proj
 *   layers.L.self_attn.o_proj  wo (bo)         layers.L.self_attn.out_proj.{weight,bias}
 *   layers.L.post_attention_layernorm  ffnNorm layers.L.final_layer_norm.{weight,bias}
 *   layers.L.mlp.gate_proj  w1 (silu side)     layers.L.fc1.{weight,bias}  w1, b1
 *   layers.L.mlp.up_proj    w3                 —
 *   layers.L.mlp.down_proj  w2                 layers.L.fc2.{weight,bias}  w2, b2
 *   norm.weight             finalNorm          final_layer_norm.{weight,bias}
 *   lm_head.weight (no prefix; absent when tied)
 *
 * OPT's position table has HF's offset of 2: position p uses row p + 2, so Model.positions
 * is the table without its first two rows (which only padding ever reads; they are written
 * back as zeros).
 *
 * llama2.c rotates interleaved RoPE pairs (2i, 2i+1), HF LLaMA rotates (i, i + headDim/2).
 * `withRopeLayout` converts by permuting the rows of wq/wk (and bq/bk) inside each head, as
 * llama2.c's export.py and HF's convert_llama_weights_to_hf.py do; the two models compute
 * the same function (dot products only change their summation order).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../errors';
import { readJsonFile } from '../files';
import { BlockCache, lazyBlocks, mapBlocks, presentKeys } from './lazy';
import { SafetensorsReader } from './safetensors';
import { blockWeightBytes, type Block, type F32, type LinearName, type Model, type ModelConfig } from './types';

export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM', 'OPTForCausalLM'] as const;
export type HfArchitecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/** Where tensors come from: a SafetensorsReader, or a GPTQ reader that dequantizes on the fly. */
export interface TensorSource {
  has(name: string): boolean;
  /** The tensor as float32; must throw InvarxError('bad-model') if its shape is not `shape`. */
  readF32(name: string, shape: readonly number[]): Float32Array;
  /** Checks the tensor's shape without reading it (InvarxError('bad-model') if it differs): what streaming needs. */
  checkShape?(name: string, shape: readonly number[]): void;
}

export interface ModelReadOptions {
  /**
   * Read each block's weights only when the block is used, keeping the last two decoded
   * (core/model/lazy.ts); the embedding, norms and classifier are read at once. Needs a
   * source with checkShape (every block tensor is checked up front) that stays open.
   */
  stream?: boolean;
}

/** Above this many bytes of float32 block weights, loadHfModel streams when asked for 'auto'. */
export const STREAM_ABOVE_BYTES = 512 * 2 ** 20;

/** Float32 bytes of all block weights of a model of this config. */
export function blockBytes(cfg: ModelConfig): number {
  return cfg.nLayers * blockWeightBytes(cfg);
}

type BlockKey = keyof Block;

/** HF names of a block's tensors, relative to `<prefix>layers.L.`. */
const LLAMA_BLOCK: Partial<Record<BlockKey, string>> = {
  attnNorm: 'input_layernorm.weight',
  wq: 'self_attn.q_proj.weight', wk: 'self_attn.k_proj.weight', wv: 'self_attn.v_proj.weight', wo: 'self_attn.o_proj.weight',
  bq: 'self_attn.q_proj.bias', bk: 'self_attn.k_proj.bias', bv: 'self_attn.v_proj.bias', bo: 'self_attn.o_proj.bias',
  ffnNorm: 'post_attention_layernorm.weight',
  w1: 'mlp.gate_proj.weight', w3: 'mlp.up_proj.weight', w2: 'mlp.down_proj.weight',
};

const OPT_BLOCK: Partial<Record<BlockKey, string>> = {
  attnNorm: 'self_attn_layer_norm.weight', attnNormBias: 'self_attn_layer_norm.bias',
  wq: 'self_attn.q_proj.weight', wk: 'self_attn.k_proj.weight', wv: 'self_attn.v_proj.weight', wo: 'self_attn.out_proj.weight',
  bq: 'self_attn.q_proj.bias', bk: 'self_attn.k_proj.bias', bv: 'self_attn.v_proj.bias', bo: 'self_attn.out_proj.bias',
  ffnNorm: 'final_layer_norm.weight', ffnNormBias: 'final_layer_norm.bias',
  w1: 'fc1.weight', b1: 'fc1.bias', w2: 'fc2.weight', b2: 'fc2.bias',
};

const BIAS_OF: Partial<Record<LinearName, BlockKey>> = { wq: 'bq', wk: 'bk', wv: 'bv', wo: 'bo', w1: 'b1', w2: 'b2' };

/** The bias field of linear `name` in a Block (undefined if that linear never has one). */
export function biasKey(name: LinearName): BlockKey | undefined {
  return BIAS_OF[name];
}

/** Shape of a Block tensor under cfg. */
function blockShape(cfg: ModelConfig, key: BlockKey): number[] {
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  switch (key) {
    case 'wq': return [qDim, cfg.dim];
    case 'wk': case 'wv': return [kvDim, cfg.dim];
    case 'wo': return [cfg.dim, qDim];
    case 'w1': case 'w3': return [cfg.hiddenDim, cfg.dim];
    case 'w2': return [cfg.dim, cfg.hiddenDim];
    case 'bq': return [qDim];
    case 'bk': case 'bv': return [kvDim];
    case 'b1': return [cfg.hiddenDim];
    default: return [cfg.dim]; // norms, their biases, bo, b2
  }
}

/** Which optional tensors an HF model has, and where its names start. */
export interface HfLayout {
  architecture: HfArchitecture;
  /** 'model.' or 'model.decoder.' (or '' / 'decoder.' for base-model checkpoints). */
  prefix: string;
  /** Block keys present in every block. */
  blockKeys: BlockKey[];
}

/** The HF name of block tensor `key` of layer `l`. */
export function hfBlockTensorName(layout: HfLayout, l: number, key: BlockKey): string {
  const table = layout.architecture === 'OPTForCausalLM' ? OPT_BLOCK : LLAMA_BLOCK;
  const rel = table[key];
  if (!rel) return fail('bad-model', `${layout.architecture} has no tensor for ${String(key)}`);
  return `${layout.prefix}layers.${l}.${rel}`;
}

/** The module name of linear `name` of layer `l`, e.g. `model.layers.0.self_attn.q_proj` (GPTQ tensors hang off it). */
export function hfLinearModule(layout: HfLayout, l: number, name: LinearName): string {
  return hfBlockTensorName(layout, l, name).replace(/\.weight$/, '');
}

// ---------------------------------------------------------------------------------------
// config.json -> ModelConfig

type Json = Record<string, unknown>;

export interface HfModelSpec {
  config: ModelConfig;
  layout: HfLayout;
  /** For OPT: rows of embed_positions (seqLen + 2). */
  positionRows?: number;
}

/** Read `dir/config.json` as an object. */
export function readHfConfig(dir: string): Json {
  const path = join(dir, 'config.json');
  const json = readJsonFile(path, 'model config', 'bad-model');
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('bad-model', `${path}: not a JSON object`);
  return json as Json;
}

function intField(json: Json, key: string, where: string, dflt?: number): number {
  const v = json[key] ?? dflt;
  if (!(Number.isSafeInteger(v) && (v as number) > 0)) {
    fail('bad-model', `${where}: config "${key}" must be a positive integer, got ${JSON.stringify(json[key])}`);
  }
  return v as number;
}

function numField(json: Json, key: string, where: string, dflt: number): number {
  const v = json[key] ?? dflt;
  if (!(typeof v === 'number' && Number.isFinite(v) && v > 0)) {
    fail('bad-model', `${where}: config "${key}" must be a positive number, got ${JSON.stringify(json[key])}`);
  }
  return v as number;
}

/** A token id field (a number, or a list whose first entry is used), or the default. */
function tokenId(json: Json, key: string, dflt: number): number {
  const v = json[key];
  const id = Array.isArray(v) ? v[0] : v;
  return Number.isSafeInteger(id) && (id as number) >= 0 ? (id as number) : dflt;
}

/** The architecture named by config.json, or a clear error naming it and the supported ones. */
export function hfArchitecture(json: Json, where: string): HfArchitecture {
  const archs = json.architectures;
  const arch = Array.isArray(archs) && archs.length > 0 ? archs[0] : undefined;
  if (typeof arch !== 'string') {
    return fail('bad-model', `${where}: config.json has no "architectures" entry (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`);
  }
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    return fail('bad-model', `${where}: architecture ${arch} is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`);
  }
  return arch as HfArchitecture;
}

/** ModelConfig and tensor layout of an HF config.json; `has` tells which tensors exist (for the prefix). */
export function hfModelSpec(json: Json, has: (name: string) => boolean, where: string): HfModelSpec {
  const arch = hfArchitecture(json, where);
  return arch === 'OPTForCausalLM' ? optSpec(json, has, where) : llamaSpec(arch, json, has, where);
}

function llamaSpec(arch: HfArchitecture, json: Json, has: (name: string) => boolean, where: string): HfModelSpec {
  const dim = intField(json, 'hidden_size', where);
  const nHeads = intField(json, 'num_attention_heads', where);
  const nKvHeads = intField(json, 'num_key_value_heads', where, nHeads);
  const headDim = intField(json, 'head_dim', where, dim / nHeads);
  if (nHeads % nKvHeads !== 0) fail('bad-model', `${where}: num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`);
  if (headDim % 2 !== 0) fail('bad-model', `${where}: head dimension ${headDim} must be even for RoPE`);
  const act = json.hidden_act ?? 'silu';
  if (act !== 'silu' && act !== 'swish') fail('bad-model', `${where}: hidden_act ${JSON.stringify(act)} is not supported (only silu)`);
  const rs = json.rope_scaling as Json | null | undefined;
  const rsType = rs ? (rs.rope_type ?? rs.type) : undefined;
  if (rs && rsType !== 'default') {
    fail('bad-model', `${where}: rope_scaling ${JSON.stringify(rsType)} is not supported (only unscaled RoPE)`);
  }
  if (json.mlp_bias === true) fail('bad-model', `${where}: mlp_bias is not supported`);
  let seqLen = intField(json, 'max_position_embeddings', where, 2048);
  // Sliding-window attention equals full attention on sequences no longer than the window;
  // capping the sequence length keeps every sequence we accept exact.
  const slidingActive = arch === 'MistralForCausalLM' || (arch === 'Qwen2ForCausalLM' && json.use_sliding_window === true);
  if (slidingActive && Number.isSafeInteger(json.sliding_window) && (json.sliding_window as number) > 0) {
    seqLen = Math.min(seqLen, json.sliding_window as number);
  }
  const qkvBias = arch === 'Qwen2ForCausalLM' || json.attention_bias === true;
  const oBias = arch !== 'Qwen2ForCausalLM' && json.attention_bias === true;
  const config: ModelConfig = {
    arch: 'llama',
    dim,
    hiddenDim: intField(json, 'intermediate_size', where),
    nLayers: intField(json, 'num_hidden_layers', where),
    nHeads,
    nKvHeads,
    headDim,
    vocabSize: intField(json, 'vocab_size', where),
    seqLen,
    normEps: numField(json, 'rms_norm_eps', where, 1e-6),
    ropeTheta: numField(json, 'rope_theta', where, 10000),
    ropeLayout: 'half',
    sharedClassifier: json.tie_word_embeddings === true, // LlamaConfig, MistralConfig, Qwen2Config default to false
    bosId: tokenId(json, 'bos_token_id', 1),
    eosId: tokenId(json, 'eos_token_id', 2),
  };
  const blockKeys: BlockKey[] = ['attnNorm', 'wq', 'wk', 'wv', 'wo', 'ffnNorm', 'w1', 'w2', 'w3'];
  if (qkvBias) blockKeys.push('bq', 'bk', 'bv');
  if (oBias) blockKeys.push('bo');
  const prefix = !has('model.embed_tokens.weight') && has('embed_tokens.weight') ? '' : 'model.';
  return { config, layout: { architecture: arch, prefix, blockKeys } };
}

function optSpec(json: Json, has: (name: string) => boolean, where: string): HfModelSpec {
  if (json.do_layer_norm_before === false) {
    fail('bad-model', `${where}: OPT with do_layer_norm_before=false (post-LayerNorm, e.g. opt-350m) is not supported`);
  }
  if (json._remove_final_layer_norm === true) fail('bad-model', `${where}: OPT without a final layer norm is not supported`);
  if (json.layer_norm_elementwise_affine === false) fail('bad-model', `${where}: OPT LayerNorm without weights is not supported`);
  const dim = intField(json, 'hidden_size', where);
  const proj = json.word_embed_proj_dim ?? dim;
  if (proj !== dim) {
    fail('bad-model', `${where}: OPT word_embed_proj_dim ${JSON.stringify(proj)} differs from hidden_size ${dim} (project_in/out layers are not supported)`);
  }
  const act = json.activation_function ?? 'relu';
  if (act !== 'relu') fail('bad-model', `${where}: OPT activation_function ${JSON.stringify(act)} is not supported (only relu)`);
  const nHeads = intField(json, 'num_attention_heads', where);
  if (dim % nHeads !== 0) fail('bad-model', `${where}: hidden_size ${dim} is not a multiple of num_attention_heads ${nHeads}`);
  const seqLen = intField(json, 'max_position_embeddings', where, 2048);
  const config: ModelConfig = {
    arch: 'opt',
    dim,
    hiddenDim: intField(json, 'ffn_dim', where),
    nLayers: intField(json, 'num_hidden_layers', where),
    nHeads,
    nKvHeads: nHeads,
    headDim: dim / nHeads,
    vocabSize: intField(json, 'vocab_size', where),
    seqLen,
    normEps: 1e-5, // nn.LayerNorm's default; OPTConfig has no field for it
    ropeTheta: 10000, // unused (no RoPE)
    ropeLayout: 'half',
    sharedClassifier: json.tie_word_embeddings !== false, // PretrainedConfig defaults to tying
    bosId: tokenId(json, 'bos_token_id', 2),
    eosId: tokenId(json, 'eos_token_id', 2),
  };
  const blockKeys: BlockKey[] = ['attnNorm', 'attnNormBias', 'wq', 'wk', 'wv', 'wo', 'ffnNorm', 'ffnNormBias', 'w1', 'w2'];
  if (json.enable_bias !== false) blockKeys.push('bq', 'bk', 'bv', 'bo', 'b1', 'b2');
  const prefix = !has('model.decoder.embed_tokens.weight') && has('decoder.embed_tokens.weight') ? 'decoder.' : 'model.decoder.';
  return { config, layout: { architecture: 'OPTForCausalLM', prefix, blockKeys }, positionRows: seqLen + 2 };
}

// ---------------------------------------------------------------------------------------
// tensors -> Model

/** A Model from an HF config and a tensor source; every tensor's shape is checked. */
export function modelFromHf(json: Json, src: TensorSource, where: string, opts: ModelReadOptions = {}): Model {
  const { config: cfg, layout, positionRows } = hfModelSpec(json, (n) => src.has(n), where);
  const p = layout.prefix;
  const embedding = src.readF32(`${p}embed_tokens.weight`, [cfg.vocabSize, cfg.dim]);
  const readBlock = (l: number): Block => {
    const b: Record<string, F32> = {};
    for (const key of layout.blockKeys) b[key] = src.readF32(hfBlockTensorName(layout, l, key), blockShape(cfg, key));
    return b as unknown as Block;
  };
  let blocks: Block[];
  if (opts.stream) {
    if (!src.checkShape) throw new Error('modelFromHf: streaming needs a source that checks shapes');
    for (let l = 0; l < cfg.nLayers; l++) for (const key of layout.blockKeys) src.checkShape(hfBlockTensorName(layout, l, key), blockShape(cfg, key));
    blocks = lazyBlocks(cfg.nLayers, layout.blockKeys, new BlockCache(readBlock, 2));
  } else {
    blocks = Array.from({ length: cfg.nLayers }, (_, l) => readBlock(l));
  }
  const model: Model = { config: cfg, embedding, blocks, finalNorm: undefined as unknown as F32, classifier: embedding };
  if (cfg.arch === 'opt') {
    model.finalNorm = src.readF32(`${p}final_layer_norm.weight`, [cfg.dim]);
    model.finalNormBias = src.readF32(`${p}final_layer_norm.bias`, [cfg.dim]);
    const table = src.readF32(`${p}embed_positions.weight`, [positionRows!, cfg.dim]);
    model.positions = table.slice(2 * cfg.dim); // drop HF's offset rows
  } else {
    model.finalNorm = src.readF32(`${p}norm.weight`, [cfg.dim]);
  }
  if (!cfg.sharedClassifier) {
    if (!src.has('lm_head.weight')) fail('bad-model', `${where}: tensor "lm_head.weight" is missing (tie_word_embeddings is false)`);
    model.classifier = src.readF32('lm_head.weight', [cfg.vocabSize, cfg.dim]);
  }
  return model;
}

/** Streamed models keep their checkpoint open; it is closed when the model is collected. */
const openReaders = new FinalizationRegistry<SafetensorsReader>((r) => r.close());

/**
 * Load an HF checkpoint directory (config.json + model.safetensors or a sharded index);
 * with `stream`, blocks are read when used (see ModelReadOptions); 'auto' streams models
 * whose block weights take more than STREAM_ABOVE_BYTES as float32.
 */
export function loadHfModel(dir: string, opts: { stream?: boolean | 'auto' } = {}): Model {
  const json = readHfConfig(dir);
  hfArchitecture(json, dir); // the clearest error first
  const r = SafetensorsReader.open(dir);
  try {
    const stream = opts.stream === 'auto' ? blockBytes(hfModelSpec(json, (n) => r.has(n), dir).config) > STREAM_ABOVE_BYTES : !!opts.stream;
    const m = modelFromHf(json, r, dir, { stream });
    if (!stream) {
      r.close();
      return m;
    }
    openReaders.register(m, r);
    return m;
  } catch (e) {
    r.close();
    throw e;
  }
}

export function isHfDir(dir: string): boolean {
  return existsSync(join(dir, 'config.json'));
}

// ---------------------------------------------------------------------------------------
// RoPE layouts

/**
 * Row order inside one head when converting to `layout` from the other layout: new row r =
 * old row from[r]. Interleaved row 2i + j (j = 0, 1) is half-layout row j·headDim/2 + i.
 */
export function ropeRowOrder(headDim: number, layout: ModelConfig['ropeLayout']): Int32Array {
  const half = headDim / 2;
  const from = new Int32Array(headDim);
  for (let i = 0; i < half; i++) {
    for (let j = 0; j < 2; j++) {
      if (layout === 'half') from[j * half + i] = 2 * i + j;
      else from[2 * i + j] = j * half + i;
    }
  }
  return from;
}

/**
 * The same model with RoPE pairs in `layout`: rows of wq, wk (and bq, bk) permuted inside
 * each head. Interleaved row 2i + j (j = 0, 1) is half-layout row j·headDim/2 + i. Other
 * tensors are shared with `m`. A no-op (returns m) for opt or when already in `layout`.
 * A lazy block stays lazy: it is permuted when read (mapBlocks), so converting a streamed
 * model loads nothing.
 */
export function withRopeLayout(m: Model, layout: ModelConfig['ropeLayout']): Model {
  const cfg = m.config;
  if (cfg.arch !== 'llama' || cfg.ropeLayout === layout) return m;
  const hd = cfg.headDim;
  const from = ropeRowOrder(hd, layout);
  const permute = (w: F32 | undefined, heads: number, cols: number): F32 | undefined => {
    if (!w) return w;
    const out = new Float32Array(w.length);
    for (let h = 0; h < heads; h++) {
      for (let r = 0; r < hd; r++) {
        const src = (h * hd + from[r]) * cols;
        out.set(w.subarray(src, src + cols), (h * hd + r) * cols);
      }
    }
    return out;
  };
  const blocks = mapBlocks(m.blocks, (b) => {
    const nb: Block = { ...b, wq: permute(b.wq, cfg.nHeads, cfg.dim)!, wk: permute(b.wk, cfg.nKvHeads, cfg.dim)! };
    if (b.bq) nb.bq = permute(b.bq, cfg.nHeads, 1);
    if (b.bk) nb.bk = permute(b.bk, cfg.nKvHeads, 1);
    return nb;
  });
  return { ...m, config: { ...cfg, ropeLayout: layout }, blocks };
}

// ---------------------------------------------------------------------------------------
// Model -> HF

export interface HfTensor {
  name: string;
  shape: number[];
  /** The values, made when called: a block's tensor reads its block then (a lazy one loads). */
  read: () => F32;
  /** Set for the weight of a block linear (the GPTQ export replaces these). */
  linear?: { layer: number; name: LinearName };
}

/**
 * The HF layout a Model is written in: the architecture follows from the kind and the biases
 * it has (read from the blocks' keys: no lazy block is loaded).
 */
export function hfLayoutOf(m: Model, base?: Json): HfLayout {
  const cfg = m.config;
  const keys = (b: Block) => presentKeys(b).sort().join(',');
  const first = m.blocks[0] ? keys(m.blocks[0]) : '';
  if (m.blocks.some((b) => keys(b) !== first)) fail('bad-model', 'blocks have different sets of biases; cannot name them as one HF architecture');
  const present = new Set(m.blocks[0] ? presentKeys(m.blocks[0]) : []);
  const has = (k: BlockKey) => present.has(k);
  if (cfg.arch === 'opt') {
    const blockKeys = (Object.keys(OPT_BLOCK) as BlockKey[]).filter(has);
    const missing = (['attnNormBias', 'ffnNormBias'] as BlockKey[]).filter((k) => !has(k));
    if (missing.length) fail('bad-model', `an OPT model needs LayerNorm biases (${missing.join(', ')} missing)`);
    return { architecture: 'OPTForCausalLM', prefix: 'model.decoder.', blockKeys };
  }
  if (has('b1') || has('b2') || has('attnNormBias') || has('ffnNormBias')) fail('bad-model', 'a llama-kind model with FFN or norm biases has no HF architecture here');
  const qkv = has('bq') && has('bk') && has('bv');
  if ((has('bq') || has('bk') || has('bv')) && !qkv) fail('bad-model', 'q/k/v biases must come together to be written as an HF model');
  let architecture: HfArchitecture;
  if (has('bo')) {
    if (!qkv) fail('bad-model', 'an o_proj bias without q/k/v biases has no HF architecture here');
    architecture = 'LlamaForCausalLM'; // attention_bias: true
  } else if (qkv) {
    architecture = 'Qwen2ForCausalLM';
  } else {
    architecture = base?.architectures && (base.architectures as unknown[])[0] === 'MistralForCausalLM' ? 'MistralForCausalLM' : 'LlamaForCausalLM';
  }
  const blockKeys = (Object.keys(LLAMA_BLOCK) as BlockKey[]).filter(has);
  return { architecture, prefix: 'model.', blockKeys };
}

/**
 * The tensors of `m` under HF names (llama2.c's interleaved RoPE converted to the half
 * layout). A tied classifier is not written (HF re-ties it on load). Arrays may be shared
 * with `m`. Names and shapes are known up front; a tensor's values are read when asked
 * for, so a writer that takes them one at a time holds one block of a lazy model at a time.
 */
export function hfTensors(model: Model, layout: HfLayout = hfLayoutOf(model)): HfTensor[] {
  const m = withRopeLayout(model, 'half');
  const cfg = m.config;
  const p = layout.prefix;
  const out: HfTensor[] = [{ name: `${p}embed_tokens.weight`, shape: [cfg.vocabSize, cfg.dim], read: () => m.embedding }];
  m.blocks.forEach((b, l) => {
    for (const key of layout.blockKeys) {
      const isLinear = (['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as BlockKey[]).includes(key);
      const name = hfBlockTensorName(layout, l, key);
      const read = (): F32 => b[key] ?? fail('bad-model', `block ${l} has no ${String(key)} (tensor "${name}")`);
      out.push({ name, shape: blockShape(cfg, key), read, linear: isLinear ? { layer: l, name: key as LinearName } : undefined });
    }
  });
  if (cfg.arch === 'opt') {
    const { positions, finalNormBias } = m;
    if (!positions || !finalNormBias) return fail('bad-model', 'an OPT model needs learned positions and a final LayerNorm bias');
    const table = (): F32 => {
      const t = new Float32Array((cfg.seqLen + 2) * cfg.dim);
      t.set(positions.subarray(0, cfg.seqLen * cfg.dim), 2 * cfg.dim);
      return t;
    };
    out.push({ name: `${p}embed_positions.weight`, shape: [cfg.seqLen + 2, cfg.dim], read: table });
    out.push({ name: `${p}final_layer_norm.weight`, shape: [cfg.dim], read: () => m.finalNorm });
    out.push({ name: `${p}final_layer_norm.bias`, shape: [cfg.dim], read: () => finalNormBias });
  } else {
    out.push({ name: `${p}norm.weight`, shape: [cfg.dim], read: () => m.finalNorm });
  }
  if (!cfg.sharedClassifier) out.push({ name: 'lm_head.weight', shape: [cfg.vocabSize, cfg.dim], read: () => m.classifier });
  return out;
}

const MODEL_TYPE: Record<HfArchitecture, string> = {
  LlamaForCausalLM: 'llama', MistralForCausalLM: 'mistral', Qwen2ForCausalLM: 'qwen2', OPTForCausalLM: 'opt',
};

/**
 * config.json for `m`. Fields of `base` (the source checkpoint's config.json, if any) are
 * kept unless they describe the structure, which always comes from `m`.
 */
export function hfConfigOf(m: Model, layout: HfLayout, torchDtype: string, base: Json = {}): Json {
  const cfg = m.config;
  const out: Json = { ...base };
  delete out.quantization_config;
  delete out.dtype;
  const common = {
    architectures: [layout.architecture],
    model_type: MODEL_TYPE[layout.architecture],
    hidden_size: cfg.dim,
    num_hidden_layers: cfg.nLayers,
    num_attention_heads: cfg.nHeads,
    vocab_size: cfg.vocabSize,
    tie_word_embeddings: cfg.sharedClassifier,
    bos_token_id: base.bos_token_id ?? cfg.bosId,
    eos_token_id: base.eos_token_id ?? cfg.eosId,
    torch_dtype: torchDtype,
  };
  if (cfg.arch === 'opt') {
    if (cfg.normEps !== 1e-5) fail('bad-model', `OPT LayerNorm epsilon is fixed at 1e-5 in HF, the model has ${cfg.normEps}`);
    const hasBias = layout.blockKeys.includes('b1');
    return Object.assign(out, common, {
      ffn_dim: cfg.hiddenDim,
      max_position_embeddings: cfg.seqLen,
      word_embed_proj_dim: cfg.dim,
      do_layer_norm_before: true,
      activation_function: 'relu',
      enable_bias: hasBias,
      layer_norm_elementwise_affine: true,
    });
  }
  // A capped sliding-window model keeps its real max_position_embeddings.
  const maxPos = typeof base.max_position_embeddings === 'number' && base.max_position_embeddings >= cfg.seqLen ? base.max_position_embeddings : cfg.seqLen;
  Object.assign(out, common, {
    intermediate_size: cfg.hiddenDim,
    num_key_value_heads: cfg.nKvHeads,
    head_dim: cfg.headDim,
    max_position_embeddings: maxPos,
    rms_norm_eps: cfg.normEps,
    rope_theta: cfg.ropeTheta,
    hidden_act: 'silu',
  });
  if (layout.architecture === 'LlamaForCausalLM') out.attention_bias = layout.blockKeys.includes('bo');
  if (layout.architecture === 'Qwen2ForCausalLM' && out.use_sliding_window === undefined) out.use_sliding_window = false;
  return out;
}
