/**
 * The forward pass, one function per concept (after llama2.c's run.c). Activations are
 * row-major [T, width] Float32Arrays, one row per token of one sequence. Linear layers go
 * through an `Ops` so a fast backend can be plugged in.
 */
import { jsOps, siluMul, softmaxCausal, type Ops } from './ops';
import { eagerModel } from './model/lazy';
import type { Block, F32, Model, ModelConfig } from './model/types';
import { buffer, type ScratchBuffers } from './scratchBuffers';

/** Past keys/values of one block for incremental decoding: [capacity, kvDim] each. */
export interface KvCache {
  k: F32;
  v: F32;
  len: number;
}

/** out[T, dim] = norm(x) * weight (+ bias): RMSNorm for llama, LayerNorm for opt. */
export function norm(cfg: ModelConfig, out: F32, x: F32, weight: F32, bias: F32 | undefined, T: number): void {
  const d = cfg.dim;
  for (let t = 0; t < T; t++) {
    const o = t * d;
    let mean = 0;
    if (cfg.arch === 'opt') {
      for (let i = 0; i < d; i++) mean += x[o + i];
      mean /= d;
    }
    let ss = 0;
    for (let i = 0; i < d; i++) {
      const c = x[o + i] - mean;
      ss += c * c;
    }
    const inv = 1 / Math.sqrt(ss / d + cfg.normEps);
    for (let i = 0; i < d; i++) out[o + i] = (x[o + i] - mean) * inv * weight[i] + (bias ? bias[i] : 0);
  }
}

function addBias(y: F32, b: F32 | undefined, T: number, width: number): void {
  if (!b) return;
  for (let t = 0; t < T; t++) for (let i = 0; i < width; i++) y[t * width + i] += b[i];
}

/** cos and sin of pos · freq_i, row `pos` of `half` pairs each, for positions below `cap`. */
interface RopeTable {
  cos: Float64Array;
  sin: Float64Array;
  cap: number;
}
const ropeTables = new Map<string, RopeTable>();

/**
 * The angles' cos and sin for positions [0, positions) (and maybe more), computed once per
 * (theta, headDim) and grown by doubling: two transcendental calls per pair and position
 * cost more than the rotation itself. Cached values are the ones Math.cos and Math.sin
 * return for the same argument, so the bits are those of computing them in place.
 */
function ropeTable(theta: number, hd: number, positions: number): RopeTable {
  const key = `${theta}/${hd}`;
  const old = ropeTables.get(key);
  if (old && old.cap >= positions) return old;
  const half = hd / 2;
  const cap = Math.max(positions, 2 * (old?.cap ?? 0), 64);
  const cos = new Float64Array(cap * half);
  const sin = new Float64Array(cap * half);
  for (let i = 0; i < half; i++) {
    const freq = Math.pow(theta, -(2 * i) / hd);
    for (let pos = 0; pos < cap; pos++) {
      const a = pos * freq;
      cos[pos * half + i] = Math.cos(a);
      sin[pos * half + i] = Math.sin(a);
    }
  }
  const t = { cos, sin, cap };
  ropeTables.set(key, t);
  return t;
}

/** Rotate each RoPE pair of each head of v [T, nH*headDim] by angle pos*freq (positions pos0…). */
export function rope(cfg: ModelConfig, v: F32, T: number, nH: number, pos0: number): void {
  const hd = cfg.headDim;
  const half = hd / 2;
  const width = nH * hd;
  const j0s = new Int32Array(half);
  const j1s = new Int32Array(half);
  for (let i = 0; i < half; i++) [j0s[i], j1s[i]] = ropePair(cfg, i);
  const { cos, sin } = ropeTable(cfg.ropeTheta, hd, pos0 + T);
  for (let t = 0; t < T; t++) {
    const row = (pos0 + t) * half;
    for (let i = 0; i < half; i++) {
      const c = cos[row + i];
      const s = sin[row + i];
      for (let h = 0; h < nH; h++) {
        const p0 = t * width + h * hd + j0s[i];
        const p1 = t * width + h * hd + j1s[i];
        const x0 = v[p0];
        const x1 = v[p1];
        v[p0] = x0 * c - x1 * s;
        v[p1] = x0 * s + x1 * c;
      }
    }
  }
}

/** The two head-dim indices that form RoPE pair i (0 ≤ i < headDim/2). */
export function ropePair(cfg: ModelConfig, i: number): [number, number] {
  return cfg.ropeLayout === 'interleaved' ? [2 * i, 2 * i + 1] : [i, i + cfg.headDim / 2];
}

/** Everything one block computes, kept for calibration statistics (GPTQ) and search. */
export interface BlockTrace {
  /** norm(x): input of wq, wk, wv. [T, dim] */
  xnAttn: F32;
  /** attention context: input of wo. [T, nHeads*headDim] */
  ctx: F32;
  /** x + attention: the residual stream between the two sublayers. [T, dim] */
  h: F32;
  /** norm(h): input of w1 (and w3). [T, dim] */
  xnFfn: F32;
  /** FFN hidden activation: input of w2. [T, hiddenDim] */
  act: F32;
  /** h + FFN: the block output. [T, dim] */
  y: F32;
}

/**
 * Attention context of T new tokens at positions pos0… given the normed input xn [T, dim].
 * Keys/values of earlier positions come from (and new ones go into) `cache` when given.
 */
export function attentionContext(
  cfg: ModelConfig, b: Block, xn: F32, T: number, ops: Ops, pos0 = 0, cache?: KvCache,
): F32 {
  const { nHeads, nKvHeads, headDim: hd } = cfg;
  const qDim = nHeads * hd;
  const kvDim = nKvHeads * hd;
  const q = new Float32Array(T * qDim); // [T, qDim]
  let k: F32 = new Float32Array(T * kvDim); // [T, kvDim]
  let v: F32 = new Float32Array(T * kvDim);
  ops.matmulT(q, xn, b.wq, T, cfg.dim, qDim);
  ops.matmulT(k, xn, b.wk, T, cfg.dim, kvDim);
  ops.matmulT(v, xn, b.wv, T, cfg.dim, kvDim);
  addBias(q, b.bq, T, qDim);
  addBias(k, b.bk, T, kvDim);
  addBias(v, b.bv, T, kvDim);
  if (cfg.arch === 'llama') {
    rope(cfg, q, T, nHeads, pos0);
    rope(cfg, k, T, nKvHeads, pos0);
  }
  let past = 0;
  if (cache) {
    past = cache.len;
    cache.k.set(k, past * kvDim);
    cache.v.set(v, past * kvDim);
    cache.len += T;
    k = cache.k;
    v = cache.v;
  }
  const ctx = new Float32Array(T * qDim); // [T, qDim]
  contextHeads(cfg, q, k, v, T, past, null, ops, ctx);
  return ctx;
}

/**
 * ctx[T, qDim] columns of q heads `heads` (all when null): causal softmax attention of the
 * post-RoPE queries q [T, qDim] over the keys k and values v [past + T, kvDim] of their kv
 * head. One head at a time, so recomputing some heads gives the same bits as all of them.
 */
export function contextHeads(
  cfg: ModelConfig, q: F32, k: F32, v: F32, T: number, past: number, heads: ArrayLike<number> | null, ops: Ops, ctx: F32,
): void {
  const { nHeads, nKvHeads, headDim: hd } = cfg;
  const qDim = nHeads * hd;
  const kvDim = nKvHeads * hd;
  const S = past + T; // keys visible to the last query
  const group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(hd);
  const kg = new Float32Array(S * hd); // [S, hd]   keys of one kv head
  const vgT = new Float32Array(hd * S); // [hd, S]  its values, transposed
  const qh = new Float32Array(T * hd); // [T, hd]   one query head
  const att = new Float32Array(T * S); // [T, S]   scores, then probabilities
  const ch = new Float32Array(T * hd); // [T, hd]   context of one head
  let loaded = -1;
  const n = heads ? heads.length : nHeads;
  for (let x = 0; x < n; x++) {
    const h = heads ? heads[x] : x;
    const g = Math.floor(h / group);
    if (g !== loaded) {
      for (let s = 0; s < S; s++) {
        for (let i = 0; i < hd; i++) {
          kg[s * hd + i] = k[s * kvDim + g * hd + i];
          vgT[i * S + s] = v[s * kvDim + g * hd + i];
        }
      }
      loaded = g;
    }
    for (let t = 0; t < T; t++) for (let i = 0; i < hd; i++) qh[t * hd + i] = q[t * qDim + h * hd + i];
    ops.matmulT(att, qh, kg, T, hd, S);
    softmaxCausal(ops, att, T, S, past, scale);
    ops.matmulT(ch, att, vgT, T, S, hd);
    for (let t = 0; t < T; t++) for (let i = 0; i < hd; i++) ctx[t * qDim + h * hd + i] = ch[t * hd + i];
  }
}

/** FFN hidden activation from the normed input: silu(w1 x) * (w3 x), or relu(w1 x + b1). [T, hiddenDim] */
export function ffnActivation(cfg: ModelConfig, b: Block, xn: F32, T: number, ops: Ops, scratch?: ScratchBuffers): F32 {
  const H = cfg.hiddenDim;
  const act = buffer(scratch, 'act', T * H);
  ops.matmulT(act, xn, b.w1, T, cfg.dim, H);
  if (cfg.arch === 'llama') {
    const gate = buffer(scratch, 'gate', T * H);
    ops.matmulT(gate, xn, b.w3!, T, cfg.dim, H);
    siluMul(ops, act, gate, act.length);
  } else {
    addBias(act, b.b1, T, H);
    for (let i = 0; i < act.length; i++) if (act[i] < 0) act[i] = 0;
  }
  return act;
}

/** y = x + sublayerOut where sublayerOut = inp · wᵀ + bias. */
function residualLinear(x: F32, inp: F32, w: F32, bias: F32 | undefined, T: number, inDim: number, outDim: number, ops: Ops): F32 {
  const y = x.slice();
  ops.matmulT(y, inp, w, T, inDim, outDim, true);
  addBias(y, bias, T, outDim);
  return y;
}

/** h = x + Attention(norm(x)). */
export function attnSublayer(cfg: ModelConfig, b: Block, x: F32, T: number, ops: Ops = jsOps, pos0 = 0, cache?: KvCache): F32 {
  return blockTraceAttn(cfg, b, x, T, ops, pos0, cache).h;
}

function blockTraceAttn(cfg: ModelConfig, b: Block, x: F32, T: number, ops: Ops, pos0: number, cache?: KvCache) {
  const xnAttn = new Float32Array(T * cfg.dim);
  norm(cfg, xnAttn, x, b.attnNorm, b.attnNormBias, T);
  const ctx = attentionContext(cfg, b, xnAttn, T, ops, pos0, cache);
  const h = residualLinear(x, ctx, b.wo, b.bo, T, cfg.nHeads * cfg.headDim, cfg.dim, ops);
  return { xnAttn, ctx, h };
}

/** y = h + FFN(norm(h)). */
export function ffnSublayer(cfg: ModelConfig, b: Block, h: F32, T: number, ops: Ops = jsOps): F32 {
  return blockTraceFfn(cfg, b, h, T, ops).y;
}

function blockTraceFfn(cfg: ModelConfig, b: Block, h: F32, T: number, ops: Ops) {
  const xnFfn = new Float32Array(T * cfg.dim);
  norm(cfg, xnFfn, h, b.ffnNorm, b.ffnNormBias, T);
  const act = ffnActivation(cfg, b, xnFfn, T, ops);
  const y = residualLinear(h, act, b.w2, b.b2, T, cfg.hiddenDim, cfg.dim, ops);
  return { xnFfn, act, y };
}

/** One block with all its intermediate activations. */
export function blockTrace(cfg: ModelConfig, b: Block, x: F32, T: number, ops: Ops = jsOps, pos0 = 0, cache?: KvCache): BlockTrace {
  const a = blockTraceAttn(cfg, b, x, T, ops, pos0, cache);
  return { ...a, ...blockTraceFfn(cfg, b, a.h, T, ops) };
}

export function blockForward(cfg: ModelConfig, b: Block, x: F32, T: number, ops: Ops = jsOps, pos0 = 0, cache?: KvCache): F32 {
  return ffnSublayer(cfg, b, attnSublayer(cfg, b, x, T, ops, pos0, cache), T, ops);
}

/** Residual stream entering block 0 for tokens at positions pos0…: [T, dim]. */
export function embed(m: Model, tokens: ArrayLike<number>, pos0 = 0): F32 {
  const { dim, vocabSize } = m.config;
  const T = tokens.length;
  const x = new Float32Array(T * dim);
  for (let t = 0; t < T; t++) {
    const tok = tokens[t];
    if (!(Number.isInteger(tok) && tok >= 0 && tok < vocabSize)) {
      throw new RangeError(`token id ${tok} at position ${t} is outside the vocabulary [0, ${vocabSize})`);
    }
    x.set(m.embedding.subarray(tok * dim, (tok + 1) * dim), t * dim);
    if (m.positions) {
      const p = pos0 + t;
      for (let i = 0; i < dim; i++) x[t * dim + i] += m.positions[p * dim + i];
    }
  }
  return x;
}

/** Logits [T, vocab] from the last residual stream [T, dim]. */
export function head(m: Model, x: F32, T: number, ops: Ops = jsOps): F32 {
  const { dim, vocabSize } = m.config;
  const xn = new Float32Array(T * dim);
  norm(m.config, xn, x, m.finalNorm, m.finalNormBias, T);
  const logits = new Float32Array(T * vocabSize);
  ops.matmulT(logits, xn, m.classifier, T, dim, vocabSize);
  return logits;
}

/** Run blocks [from, to) on the residual stream x [T, dim]. */
export function runBlocks(m: Model, x: F32, T: number, from: number, to: number, ops: Ops = jsOps): F32 {
  for (let l = from; l < to; l++) x = blockForward(m.config, m.blocks[l], x, T, ops);
  return x;
}

export interface ForwardResult {
  /** [T, vocab] */
  logits: F32;
  /** With `capture`: residual stream entering each block, then the final one (nLayers + 1 entries). */
  hidden?: F32[];
}

/** The whole model on one token sequence (teacher forcing, positions 0…T-1). */
export function forward(m: Model, tokens: ArrayLike<number>, opts: { ops?: Ops; capture?: boolean } = {}): ForwardResult {
  const ops = opts.ops ?? jsOps;
  const T = tokens.length;
  if (T > m.config.seqLen) throw new RangeError(`sequence of ${T} tokens exceeds the model's ${m.config.seqLen}`);
  let x = embed(m, tokens);
  const hidden: F32[] | undefined = opts.capture ? [x] : undefined;
  for (let l = 0; l < m.config.nLayers; l++) {
    x = blockForward(m.config, m.blocks[l], x, T, ops);
    hidden?.push(x);
  }
  return { logits: head(m, x, T, ops), hidden };
}

/** Token-by-token decoding with a KV cache, for generation and sampling. */
export class Decoder {
  private caches: KvCache[];
  private pos = 0;

  private m: Model;

  /** A streamed model is read into memory for it (every step visits every block). */
  constructor(m: Model, private ops: Ops = jsOps) {
    this.m = eagerModel(m);
    const kvDim = m.config.nKvHeads * m.config.headDim;
    const cap = m.config.seqLen;
    this.caches = m.blocks.map(() => ({ k: new Float32Array(cap * kvDim), v: new Float32Array(cap * kvDim), len: 0 }));
  }

  get position(): number {
    return this.pos;
  }

  /** Feed one token; returns the next-token logits [vocab]. */
  step(token: number): F32 {
    if (this.pos >= this.m.config.seqLen) throw new RangeError(`decoder is full (${this.m.config.seqLen} positions)`);
    let x = embed(this.m, [token], this.pos);
    for (let l = 0; l < this.m.config.nLayers; l++) {
      x = blockForward(this.m.config, this.m.blocks[l], x, 1, this.ops, this.pos, this.caches[l]);
    }
    this.pos++;
    return head(this.m, x, 1, this.ops);
  }
}
