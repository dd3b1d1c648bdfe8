/**
 * A llama-kind model as a GGUF file llama.cpp runs: llama architecture metadata, the
 * llama2.c / SentencePiece tokenizer, and the tensors under ggml's names, written one at a
 * time (./writer.ts), each linear quantized row by row when its turn comes.
 *
 * Layout: a linear [out, in] is ggml's ne = [in, out] with the same bytes; llama.cpp's
 * llama rotates interleaved RoPE pairs (llama2.c's layout), so a model in HF's half layout
 * has the rows of wq and wk permuted back inside each head, as llama.cpp's converter does.
 * A tied classifier is not written (llama.cpp then uses token_embd). A linear whose row
 * length is not a multiple of the format's block falls back as llama-quantize does
 * (q2_k, q3_k → q4_0; q4_k → q5_0; q5_k → q5_1; q6_k → q8_0; then f16), and the report
 * lists each fallback.
 */
import { fail } from '../errors';
import { encodeF16 } from '../model/halfFloat';
import { ropeRowOrder } from '../model/hf';
import { blockLinears, linearShape, type F32, type LinearName, type Model } from '../model/types';
import type { Tokenizer } from '../tokenizer';
import { formatForRow } from '../quant/formats';
import { F16_TYPE, F32_TYPE, GgufValueType, tensorType, tensorTypeByName, type GgufValue, type TensorType } from './types';
import { writeGguf, type GgufTensorToWrite } from './writer';

/** ggml names of our linears (w1 = gate, w3 = up, w2 = down). */
export const GGML_LINEAR_NAMES: Readonly<Record<LinearName, string>> = {
  wq: 'attn_q', wk: 'attn_k', wv: 'attn_v', wo: 'attn_output', w1: 'ffn_gate', w2: 'ffn_down', w3: 'ffn_up',
};

export type EmbedType = 'q8_0' | 'f16' | 'f32';

export interface LlamaGgufOptions {
  /** The linears' type: a ggml format name (q4_0 … q6_k) or f32 / f16. */
  format: string;
  /** Token embedding and classifier: q8_0 (default for quantized formats) or f16; f32 / f16 formats default to themselves. */
  embed?: EmbedType;
  /** general.name */
  name?: string;
  /**
   * Packed bytes of a linear in `type` (rows = out, each of `cols` weights, in GGUF's RoPE
   * layout); the default is the type's reference quantizer row by row. The search uses this
   * to write its own codes.
   */
  packLinear?: (layer: number, name: LinearName, w: F32, rows: number, cols: number, type: TensorType) => Uint8Array;
}

export interface TensorFallback {
  tensor: string;
  wanted: string;
  used: string;
  rowLength: number;
}

export interface LlamaGgufReport {
  bytes: number;
  tensors: { name: string; type: string; dims: number[] }[];
  fallbacks: TensorFallback[];
}

/** Type a tensor with rows of `n` gets when `wanted` is asked for, as llama-quantize decides. */
export function typeForRow(wanted: TensorType, n: number): TensorType {
  if (!wanted.format) return wanted;
  const fmt = formatForRow(wanted.format, n);
  return fmt ? tensorType(fmt.ggmlType!)! : F16_TYPE;
}

/** Rows × cols float32 → packed bytes of `type` (row by row for block formats). */
export function packTensorRows(w: F32, rows: number, cols: number, type: TensorType): Uint8Array {
  if (type.id === F32_TYPE.id) return new Uint8Array(w.buffer.slice(w.byteOffset, w.byteOffset + rows * cols * 4));
  if (type.id === F16_TYPE.id) return new Uint8Array(encodeF16(w.subarray(0, rows * cols)).buffer);
  const fmt = type.format!;
  const rb = fmt.rowBytes(cols);
  const out = new Uint8Array(rows * rb);
  for (let r = 0; r < rows; r++) fmt.quantizeRow(w.subarray(r * cols, (r + 1) * cols), out.subarray(r * rb, (r + 1) * rb));
  return out;
}

/** Rows of wq / wk (float32 rows of `cols`, or packed rows of `cols` bytes) permuted from HF's half RoPE layout to llama.cpp's interleaved one. */
export function toInterleaved<T extends F32 | Uint8Array>(w: T, heads: number, headDim: number, cols: number): T {
  const from = ropeRowOrder(headDim, 'interleaved');
  const out = (w instanceof Uint8Array ? new Uint8Array(w.length) : new Float32Array(w.length)) as T;
  for (let h = 0; h < heads; h++) {
    for (let r = 0; r < headDim; r++) {
      const src = (h * headDim + from[r]) * cols;
      out.set(w.subarray(src, src + cols), (h * headDim + r) * cols);
    }
  }
  return out;
}

const SPM_SPACE = '\u2581';
/** llama.cpp's token types. */
const TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_BYTE = 6;

/**
 * tokenizer.ggml.* of a llama2.c tokenizer, as llama.cpp's llama2.c converter writes it: ids
 * 0, 1, 2 are <unk>, <s>, </s>; `<0xXX>` pieces are byte tokens; spaces are SentencePiece's ▁.
 */
export function tokenizerMetadata(tok: Tokenizer, bosId: number, eosId: number): [string, GgufValue][] {
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < tok.vocabSize; id++) {
    const piece = Buffer.from(tok.piece(id)).toString('utf8');
    if (id === 0) { tokens.push('<unk>'); types.push(TOKEN_UNKNOWN); }
    else if (id === bosId) { tokens.push('<s>'); types.push(TOKEN_CONTROL); }
    else if (id === eosId) { tokens.push('</s>'); types.push(TOKEN_CONTROL); }
    else if (piece.length === 0) { tokens.push(piece); types.push(TOKEN_CONTROL); }
    else if (tok.isBytePiece(id)) { tokens.push(piece); types.push(TOKEN_BYTE); }
    else { tokens.push(piece.replaceAll(' ', SPM_SPACE)); types.push(TOKEN_NORMAL); }
  }
  return [
    ['tokenizer.ggml.model', { type: GgufValueType.STRING, value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value: tokens }],
    ['tokenizer.ggml.scores', { type: GgufValueType.ARRAY, itemType: GgufValueType.FLOAT32, value: Array.from(tok.scores) }],
    ['tokenizer.ggml.token_type', { type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, value: types }],
    ['tokenizer.ggml.unknown_token_id', { type: GgufValueType.UINT32, value: 0 }],
    ['tokenizer.ggml.bos_token_id', { type: GgufValueType.UINT32, value: bosId }],
    ['tokenizer.ggml.eos_token_id', { type: GgufValueType.UINT32, value: eosId }],
  ];
}

const u32 = (value: number): GgufValue => ({ type: GgufValueType.UINT32, value });
const f32 = (value: number): GgufValue => ({ type: GgufValueType.FLOAT32, value });

/** Write `model` with `tokenizer` as a llama GGUF at `path`. */
export function writeLlamaGguf(model: Model, tokenizer: Tokenizer, path: string, opts: LlamaGgufOptions): LlamaGgufReport {
  const cfg = model.config;
  if (cfg.arch !== 'llama') fail('bad-model', `GGUF export writes llama models; this one is ${cfg.arch}`);
  if (tokenizer.vocabSize !== cfg.vocabSize) {
    fail('bad-tokenizer', `the tokenizer has ${tokenizer.vocabSize} pieces but the model's vocabulary has ${cfg.vocabSize}`);
  }
  const linearType = tensorTypeByName(opts.format.toLowerCase());
  if (!linearType) fail('bad-config', `unknown GGUF format "${opts.format}" (use f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k or q6_k)`);
  const plain = linearType.id === F32_TYPE.id || linearType.id === F16_TYPE.id;
  const embedType = tensorTypeByName(opts.embed ?? (plain ? linearType.name : 'q8_0'));
  if (!embedType || !['q8_0', 'f16', 'f32'].includes(embedType.name)) fail('bad-config', `--embed must be q8_0, f16 or f32, got "${opts.embed}"`);
  const fallbacks: TensorFallback[] = [];
  const tensors: GgufTensorToWrite[] = [];
  const add = (name: string, dims: number[], wanted: TensorType, data: (t: TensorType) => Uint8Array) => {
    const t = typeForRow(wanted, dims[0]);
    if (t !== wanted) fallbacks.push({ tensor: name, wanted: wanted.name, used: t.name, rowLength: dims[0] });
    tensors.push({ name, dims, type: t, data: () => data(t) });
  };
  const { dim, vocabSize } = cfg;
  add('token_embd.weight', [dim, vocabSize], embedType, (t) => packTensorRows(model.embedding, vocabSize, dim, t));
  add('output_norm.weight', [dim], F32_TYPE, (t) => packTensorRows(model.finalNorm, 1, dim, t));
  if (!cfg.sharedClassifier) add('output.weight', [dim, vocabSize], embedType, (t) => packTensorRows(model.classifier, vocabSize, dim, t));
  for (let l = 0; l < cfg.nLayers; l++) {
    const block = () => model.blocks[l];
    add(`blk.${l}.attn_norm.weight`, [dim], F32_TYPE, (t) => packTensorRows(block().attnNorm, 1, dim, t));
    for (const name of blockLinears(cfg)) {
      const [rows, cols] = linearShape(cfg, name);
      add(`blk.${l}.${GGML_LINEAR_NAMES[name]}.weight`, [cols, rows], linearType, (t) => {
        const b = block();
        if (b.bq || b.bk || b.bv || b.bo) fail('bad-model', 'GGUF export of llama models with attention biases is not supported');
        let w = b[name]!;
        if (cfg.ropeLayout === 'half' && (name === 'wq' || name === 'wk')) {
          w = toInterleaved(w, name === 'wq' ? cfg.nHeads : cfg.nKvHeads, cfg.headDim, cols);
        }
        return opts.packLinear && t.format ? opts.packLinear(l, name, w, rows, cols, t) : packTensorRows(w, rows, cols, t);
      });
      if (name === 'wo') add(`blk.${l}.ffn_norm.weight`, [dim], F32_TYPE, (t) => packTensorRows(block().ffnNorm, 1, dim, t));
    }
  }
  const metadata: [string, GgufValue][] = [
    ['general.architecture', { type: GgufValueType.STRING, value: 'llama' }],
    ['general.name', { type: GgufValueType.STRING, value: opts.name ?? 'invarx' }],
    ['llama.context_length', u32(cfg.seqLen)],
    ['llama.embedding_length', u32(dim)],
    ['llama.block_count', u32(cfg.nLayers)],
    ['llama.feed_forward_length', u32(cfg.hiddenDim)],
    ['llama.attention.head_count', u32(cfg.nHeads)],
    ['llama.attention.head_count_kv', u32(cfg.nKvHeads)],
    ['llama.attention.layer_norm_rms_epsilon', f32(cfg.normEps)],
    ['llama.rope.dimension_count', u32(cfg.headDim)],
    ['llama.rope.freq_base', f32(cfg.ropeTheta)],
    ['llama.vocab_size', u32(vocabSize)],
    ...tokenizerMetadata(tokenizer, cfg.bosId, cfg.eosId),
  ];
  const bytes = writeGguf(path, metadata, tensors);
  return { bytes, tensors: tensors.map((t) => ({ name: t.name, type: t.type.name, dims: t.dims })), fallbacks };
}
