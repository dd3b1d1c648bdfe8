/**
 * The in-memory model. Every weight is a row-major Float32Array; linear weights have
 * shape [out, in] (llama2.c and HF layout). Shapes follow from the config; see
 * `linearShape`.
 *
 * Two block kinds share one record so that quantizers and invariances are written once:
 *  - llama: RMSNorm, attention with RoPE and grouped KV heads, SwiGLU FFN
 *           out = w2( silu(w1 x) * (w3 x) )
 *  - opt:   LayerNorm (weight + bias), attention with biases, ReLU FFN
 *           out = w2( relu(w1 x + b1) ) + b2          (HF fc1 = w1, fc2 = w2)
 */
export type F32 = Float32Array;

export type Arch = 'llama' | 'opt';

export interface ModelConfig {
  arch: Arch;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
  /** Longest sequence the model was trained on (and, for opt, the learned position table size). */
  seqLen: number;
  normEps: number;
  ropeTheta: number;
  /** llama2.c rotates interleaved pairs (2i, 2i+1); HF LLaMA rotates halves (i, i + headDim/2). */
  ropeLayout: 'interleaved' | 'half';
  /** The classifier is the embedding matrix. */
  sharedClassifier: boolean;
  bosId: number;
  eosId: number;
}

export const LINEAR_NAMES = ['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as const;
export type LinearName = (typeof LINEAR_NAMES)[number];

export interface Block {
  attnNorm: F32; // [dim]
  attnNormBias?: F32; // [dim] (opt)
  wq: F32; // [nHeads*headDim, dim]
  wk: F32; // [nKvHeads*headDim, dim]
  wv: F32; // [nKvHeads*headDim, dim]
  wo: F32; // [dim, nHeads*headDim]
  bq?: F32; // [nHeads*headDim] (opt, qwen2)
  bk?: F32; // [nKvHeads*headDim]
  bv?: F32; // [nKvHeads*headDim]
  bo?: F32; // [dim] (opt)
  ffnNorm: F32; // [dim]
  ffnNormBias?: F32; // [dim] (opt)
  w1: F32; // [hiddenDim, dim]
  b1?: F32; // [hiddenDim] (opt)
  w2: F32; // [dim, hiddenDim]
  b2?: F32; // [dim] (opt)
  w3?: F32; // [hiddenDim, dim] (llama only)
}

export interface Model {
  config: ModelConfig;
  embedding: F32; // [vocabSize, dim]
  /** Learned absolute positions (opt), [seqLen, dim]; HF's offset of 2 is already removed. */
  positions?: F32;
  blocks: Block[];
  finalNorm: F32; // [dim]
  finalNormBias?: F32; // [dim] (opt)
  /** [vocabSize, dim]; the same array as `embedding` when `config.sharedClassifier`. */
  classifier: F32;
}

/** [out, in] of a linear weight. */
export function linearShape(cfg: ModelConfig, name: LinearName): [number, number] {
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  switch (name) {
    case 'wq':
      return [qDim, cfg.dim];
    case 'wk':
    case 'wv':
      return [kvDim, cfg.dim];
    case 'wo':
      return [cfg.dim, qDim];
    case 'w1':
    case 'w3':
      return [cfg.hiddenDim, cfg.dim];
    case 'w2':
      return [cfg.dim, cfg.hiddenDim];
  }
}

/** The linear weights a block of this arch has (opt has no w3). */
export function blockLinears(cfg: ModelConfig): LinearName[] {
  return cfg.arch === 'llama' ? [...LINEAR_NAMES] : LINEAR_NAMES.filter((n) => n !== 'w3');
}

/** Float32 bytes of one block's linear weights. */
export function blockWeightBytes(cfg: ModelConfig): number {
  return blockLinears(cfg).reduce((n, name) => {
    const [rows, cols] = linearShape(cfg, name);
    return n + 4 * rows * cols;
  }, 0);
}

/** A copy of block b whose arrays are fresh, except those named in `shared`, which the copy references. */
export function cloneBlock(b: Block, shared: readonly string[] = []): Block {
  const out: Record<string, F32> = {};
  for (const [k, v] of Object.entries(b)) if (v) out[k] = shared.includes(k) ? (v as F32) : (v as F32).slice();
  return out as unknown as Block;
}

/** A copy whose blocks can be changed without touching `m` (embedding/head are shared). */
export function cloneModel(m: Model): Model {
  return { ...m, blocks: m.blocks.map((b) => cloneBlock(b)) };
}
