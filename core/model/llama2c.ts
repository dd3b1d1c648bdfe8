/**
 * llama2.c checkpoint format (legacy "version 0", as written by export.py --version 0 and
 * read by run.c): a header of 7 int32
 *   dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative = separate
 *   classifier), seq_len
 * then float32 tensors, each one stacked over all layers:
 *   embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final,
 *   freq_cis_real, freq_cis_imag, [wcls]
 */
import { closeSync, fsyncSync, openSync, rmSync, writeSync } from 'node:fs';
import { fail } from '../errors';
import { readRegularFile } from '../files';
import { presentKeys } from './lazy';
import { linearShape, type Block, type F32, type Model, type ModelConfig } from './types';

const HEADER_BYTES = 7 * 4;
/** Newer llama2.c exports start with this magic ("ak42"); they are a different layout. */
const AK42_MAGIC = 0x616b3432;

export function readLlama2c(path: string): Model {
  return parseLlama2c(readRegularFile(path, 'model file', 'bad-model'), path);
}

export function parseLlama2c(buf: Uint8Array, name = 'model'): Model {
  if (buf.byteLength < HEADER_BYTES) {
    fail('bad-model', `${name}: ${buf.byteLength} bytes is too short for a llama2.c header (28 bytes)`);
  }
  const header = new DataView(buf.buffer, buf.byteOffset, HEADER_BYTES);
  const h = Array.from({ length: 7 }, (_, i) => header.getInt32(i * 4, true));
  if (h[0] === AK42_MAGIC) {
    fail('bad-model', `${name}: llama2.c version-1/2 export ("ak42" magic) is not supported; export with --version 0`);
  }
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabRaw, seqLen] = h;
  const vocabSize = Math.abs(vocabRaw);
  const sane =
    dim > 0 && dim <= 65536 && hiddenDim > 0 && hiddenDim <= 1 << 20 && nLayers > 0 && nLayers <= 1024 &&
    nHeads > 0 && dim % nHeads === 0 && nKvHeads > 0 && nHeads % nKvHeads === 0 &&
    vocabSize > 0 && vocabSize <= 1 << 22 && seqLen > 0 && seqLen <= 1 << 22 && (dim / nHeads) % 2 === 0;
  if (!sane) {
    fail('bad-model', `${name}: not a llama2.c model (implausible header ${h.join(', ')})`);
  }
  const cfg: ModelConfig = {
    arch: 'llama',
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    headDim: dim / nHeads,
    vocabSize,
    seqLen,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeLayout: 'interleaved',
    sharedClassifier: vocabRaw > 0,
    bosId: 1,
    eosId: 2,
  };
  const floats = llama2cFloatCount(cfg);
  const expected = HEADER_BYTES + floats * 4;
  if (buf.byteLength !== expected) {
    const what = buf.byteLength < expected ? 'truncated' : 'has trailing bytes';
    fail('bad-model', `${name}: ${what}: ${buf.byteLength} bytes, header implies ${expected}`);
  }
  // Copy so the model owns aligned memory independent of the file buffer.
  const all = new Float32Array(floats);
  new Uint8Array(all.buffer).set(buf.subarray(HEADER_BYTES, expected));
  for (let i = 0; i < all.length; i++) {
    if (!Number.isFinite(all[i])) fail('bad-model', `${name}: non-finite weight at float index ${i}`);
  }
  let off = 0;
  const take = (n: number): F32 => {
    const t = all.subarray(off, off + n);
    off += n;
    return t;
  };
  const L = nLayers;
  const qDim = dim;
  const kvDim = nKvHeads * cfg.headDim;
  const embedding = take(vocabSize * dim);
  const rmsAtt = take(L * dim);
  const wq = take(L * qDim * dim);
  const wk = take(L * kvDim * dim);
  const wv = take(L * kvDim * dim);
  const wo = take(L * dim * qDim);
  const rmsFfn = take(L * dim);
  const w1 = take(L * hiddenDim * dim);
  const w2 = take(L * dim * hiddenDim);
  const w3 = take(L * hiddenDim * dim);
  const finalNorm = take(dim);
  take(seqLen * (cfg.headDim / 2) * 2); // freq_cis_real, freq_cis_imag: recomputed instead
  const classifier = cfg.sharedClassifier ? embedding : take(vocabSize * dim);
  const layer = (t: F32, i: number, n: number): F32 => t.slice(i * n, (i + 1) * n);
  const blocks: Block[] = [];
  for (let l = 0; l < L; l++) {
    blocks.push({
      attnNorm: layer(rmsAtt, l, dim),
      wq: layer(wq, l, qDim * dim),
      wk: layer(wk, l, kvDim * dim),
      wv: layer(wv, l, kvDim * dim),
      wo: layer(wo, l, dim * qDim),
      ffnNorm: layer(rmsFfn, l, dim),
      w1: layer(w1, l, hiddenDim * dim),
      w2: layer(w2, l, dim * hiddenDim),
      w3: layer(w3, l, hiddenDim * dim),
    });
  }
  const emb = embedding.slice();
  return { config: cfg, embedding: emb, blocks, finalNorm: finalNorm.slice(), classifier: cfg.sharedClassifier ? emb : classifier.slice() };
}

function llama2cFloatCount(cfg: ModelConfig): number {
  const { dim, hiddenDim, nLayers: L, vocabSize, seqLen, headDim } = cfg;
  const kvDim = cfg.nKvHeads * headDim;
  return (
    vocabSize * dim +
    L * dim * 2 +
    L * dim * dim * 2 +
    L * kvDim * dim * 2 +
    L * hiddenDim * dim * 3 +
    dim +
    seqLen * headDim +
    (cfg.sharedClassifier ? 0 : vocabSize * dim)
  );
}

function checkWritable(m: Model): void {
  const cfg = m.config;
  if (cfg.arch !== 'llama') fail('bad-model', `llama2.c format holds llama models only, not ${cfg.arch}`);
  if (cfg.ropeLayout !== 'interleaved') fail('bad-model', 'llama2.c format needs interleaved RoPE; convert the model first');
  if (cfg.headDim * cfg.nHeads !== cfg.dim) fail('bad-model', `llama2.c format derives the head size as dim / n_heads; this model has head_dim ${cfg.headDim}`);
  const biases = new Set<string>(['bq', 'bk', 'bv', 'bo']);
  if (m.blocks.some((b) => presentKeys(b).some((k) => biases.has(k)))) fail('bad-model', 'llama2.c format has no attention biases');
}

function f32Bytes(t: ArrayLike<number>): Uint8Array {
  const f = t instanceof Float32Array ? t : Float32Array.from(t);
  return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
}

const BLOCK_KINDS = ['attnNorm', 'wq', 'wk', 'wv', 'wo', 'ffnNorm', 'w1', 'w2', 'w3'] as const;

/** A piece of a llama2.c file and its byte offset. */
interface Part {
  at: number;
  bytes: Uint8Array;
}

/**
 * The pieces of a llama2.c version-0 file with their offsets, covering it exactly. The file
 * is kind-major (every layer's wq, then every layer's wk, …); the pieces come block-major
 * (block l's nine tensors, each at its place in its kind's run), so a lazy model is read
 * once, a block at a time, and a writer holds one tensor.
 */
function* llama2cParts(m: Model): Generator<Part> {
  const cfg = m.config;
  const header = new DataView(new ArrayBuffer(HEADER_BYTES));
  const vocab = cfg.sharedClassifier ? cfg.vocabSize : -cfg.vocabSize;
  [cfg.dim, cfg.hiddenDim, cfg.nLayers, cfg.nHeads, cfg.nKvHeads, vocab, cfg.seqLen].forEach((v, i) => header.setInt32(i * 4, v, true));
  yield { at: 0, bytes: new Uint8Array(header.buffer) };
  let at = HEADER_BYTES;
  const next = (t: ArrayLike<number>, floats: number, what: string): Part => {
    const bytes = f32Bytes(t);
    if (bytes.byteLength !== floats * 4) fail('bad-model', `llama2.c export: ${what} has ${bytes.byteLength / 4} values, expected ${floats}`);
    const part = { at, bytes };
    at += bytes.byteLength;
    return part;
  };
  yield next(m.embedding, cfg.vocabSize * cfg.dim, 'the embedding');
  const layerFloats = (key: (typeof BLOCK_KINDS)[number]) => (key === 'attnNorm' || key === 'ffnNorm' ? cfg.dim : linearShape(cfg, key).reduce((a, b) => a * b));
  const kindStart: Record<string, number> = {};
  for (const key of BLOCK_KINDS) {
    kindStart[key] = at;
    at += cfg.nLayers * layerFloats(key) * 4;
  }
  const rest = at;
  for (let l = 0; l < cfg.nLayers; l++) {
    const b = m.blocks[l];
    for (const key of BLOCK_KINDS) {
      at = kindStart[key] + l * layerFloats(key) * 4;
      yield next(b[key]!, layerFloats(key), `block ${l} ${key}`);
    }
  }
  at = rest;
  yield next(m.finalNorm, cfg.dim, 'the final norm');
  // freq_cis tables exactly as llama2.c's export writes them (unused by our reader).
  const half = cfg.headDim / 2;
  const re = new Float32Array(cfg.seqLen * half);
  const im = new Float32Array(cfg.seqLen * half);
  for (let p = 0; p < cfg.seqLen; p++) {
    for (let i = 0; i < half; i++) {
      const a = p * Math.pow(cfg.ropeTheta, -(2 * i) / cfg.headDim);
      re[p * half + i] = Math.cos(a);
      im[p * half + i] = Math.sin(a);
    }
  }
  yield next(re, re.length, 'freq_cis_real');
  yield next(im, im.length, 'freq_cis_imag');
  if (!cfg.sharedClassifier) yield next(m.classifier, cfg.vocabSize * cfg.dim, 'the classifier');
}

/** Serialize a llama-kind model with interleaved RoPE to llama2.c version 0 bytes (all in memory: small models). */
export function encodeLlama2c(m: Model): Uint8Array {
  checkWritable(m);
  const out = new Uint8Array(HEADER_BYTES + llama2cFloatCount(m.config) * 4);
  for (const { at, bytes } of llama2cParts(m)) out.set(bytes, at);
  return out;
}

/**
 * Write a llama-kind model with interleaved RoPE as a llama2.c version-0 file at `path`,
 * tensor by tensor at their offsets (never the whole file in memory; a lazy model's blocks
 * read once each), synced before it is closed. A failed write removes the file.
 */
export function writeLlama2c(path: string, m: Model): void {
  checkWritable(m);
  const fd = openSync(path, 'w');
  try {
    for (const { at, bytes } of llama2cParts(m)) {
      for (let done = 0; done < bytes.byteLength; ) done += writeSync(fd, bytes, done, Math.min(1 << 30, bytes.byteLength - done), at + done);
    }
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(path, { force: true });
    throw e;
  }
  closeSync(fd);
}
