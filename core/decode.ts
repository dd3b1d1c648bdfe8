/**
 * Batched incremental decoding: up to B sequences advance one token each per step, so every
 * linear layer (q/k/v, wo, the FFN, the classifier) is one matmul over the step's rows
 * instead of one matrix–vector pass per sequence — the weights are read once per step, not
 * once per sequence. Each sequence keeps its own KV cache and position; a row attends only
 * over its own sequence's cache.
 *
 * Row r of a step computes what forward.ts's Decoder computes for that sequence alone, from
 * the same pieces (norm, rope, ffnActivation, embed, head) and, for attention, what
 * contextHeads computes for one query, except that the query heads sharing a KV head are the
 * rows of one matmul instead of one call each (fewer calls for grouped-query models). It is
 * equal bit for bit whenever ops.matmulT gives a row the same bits at the step's row count
 * (and a KV group's head count) as at one row: always for jsOps; for other backends only
 * from SEPARABLE_MIN_ROWS rows up, among themselves (their one-row path may round
 * differently), so a sequence's logits never depend on the other sequences of the step.
 *
 * The caches are head-major so that attention reads them in place: keys [kvHeads, capacity,
 * headDim] and values transposed, [kvHeads, headDim, capacity], per sequence. contextHeads
 * gathers each head's keys and values out of a [positions, kvDim] cache element by element on
 * every call; with one call per row and step, that gather took over a quarter of a batched
 * step at the 110M shape by position 128 (measured), growing with the position.
 */
import { embed, ffnActivation, head, norm, rope } from './forward';
import { jsOps, softmaxCausal, type Ops } from './ops';
import type { Block, F32, Model } from './model/types';
import { eagerModel } from './model/lazy';

/** Spans at most this long are copied element by element (a subarray view costs more). */
const SHORT_SPAN = 48;

export class BatchDecoder {
  readonly batch: number;
  /** Positions each sequence can hold (the caches are allocated for this many, not seqLen). */
  readonly capacity: number;
  /** Per block: keys [batch, kvHeads, capacity, headDim]. */
  private keys: F32[];
  /** Per block: values, transposed per head: [batch, kvHeads, headDim, capacity]. */
  private valuesT: F32[];
  /** Tokens fed to each sequence so far. */
  private lens: Int32Array;
  private readonly kvDim: number;
  /** Scratch of one KV group's attention: scores [group, S], values [headDim, S] (S ≤ capacity). */
  private att: F32;
  private vg: F32;

  /**
   * `batch` sequences of at most `capacity` positions each (≤ the model's seqLen). Memory:
   * 2 · nLayers · batch · capacity · kvDim floats.
   */
  private m: Model;

  /** A streamed model is read into memory for it (every step visits every block). */
  constructor(m: Model, batch: number, capacity: number, private ops: Ops = jsOps) {
    this.m = eagerModel(m);
    const cfg = m.config;
    if (!(Number.isInteger(batch) && batch >= 1)) throw new RangeError(`batch must be a positive integer, got ${batch}`);
    if (!(Number.isInteger(capacity) && capacity >= 1 && capacity <= cfg.seqLen)) {
      throw new RangeError(`capacity must be an integer from 1 to the model's seqLen ${cfg.seqLen}, got ${capacity}`);
    }
    this.batch = batch;
    this.capacity = capacity;
    this.kvDim = cfg.nKvHeads * cfg.headDim;
    this.lens = new Int32Array(batch);
    const size = batch * capacity * this.kvDim;
    this.keys = m.blocks.map(() => new Float32Array(size));
    this.valuesT = m.blocks.map(() => new Float32Array(size));
    this.att = new Float32Array((cfg.nHeads / cfg.nKvHeads) * capacity);
    this.vg = new Float32Array(cfg.headDim * capacity);
  }

  /** Tokens sequence `s` has been fed so far (its next token's position). */
  position(s: number): number {
    return this.lens[s];
  }

  /**
   * Feeds tokens[r] to sequence seqs[r] (default: sequence r, all `batch` of them) and
   * returns the next-token logits [rows, vocab], row r for seqs[r]. Sequences may be at
   * different positions; each given sequence advances by one.
   */
  step(tokens: ArrayLike<number>, seqs?: ArrayLike<number>): F32 {
    const n = tokens.length;
    const rows = seqs ?? Int32Array.from({ length: n }, (_, r) => r);
    if (!seqs && n !== this.batch) throw new RangeError(`step without seqs needs ${this.batch} tokens, got ${n}`);
    if (rows.length !== n) throw new RangeError(`${n} tokens for ${rows.length} sequences`);
    const pos = new Int32Array(n);
    const seen = new Uint8Array(this.batch);
    for (let r = 0; r < n; r++) {
      const s = rows[r];
      if (!(Number.isInteger(s) && s >= 0 && s < this.batch)) throw new RangeError(`sequence ${s} is outside the batch [0, ${this.batch})`);
      if (seen[s]) throw new RangeError(`sequence ${s} given twice in one step`);
      seen[s] = 1;
      pos[r] = this.lens[s];
      if (pos[r] >= this.capacity) throw new RangeError(`sequence ${s} is full (${this.capacity} positions)`);
    }
    const { dim } = this.m.config;
    const x = new Float32Array(n * dim);
    for (let r = 0; r < n; r++) x.set(embed(this.m, [tokens[r]], pos[r]), r * dim);
    for (let l = 0; l < this.m.blocks.length; l++) this.block(l, x, n, rows, pos);
    for (let r = 0; r < n; r++) this.lens[rows[r]]++;
    return head(this.m, x, n, this.ops);
  }

  /** Block l on the step's residual stream x [n, dim], in place: x ← x + attn, then + FFN. */
  private block(l: number, x: F32, n: number, rows: ArrayLike<number>, pos: Int32Array): void {
    const cfg = this.m.config;
    const b: Block = this.m.blocks[l];
    const ops = this.ops;
    const { dim, nHeads, nKvHeads, headDim: hd } = cfg;
    const qDim = nHeads * hd;
    const kvDim = this.kvDim;
    const xn = new Float32Array(n * dim);
    norm(cfg, xn, x, b.attnNorm, b.attnNormBias, n);
    const q = new Float32Array(n * qDim);
    const k = new Float32Array(n * kvDim);
    const v = new Float32Array(n * kvDim);
    ops.matmulT(q, xn, b.wq, n, dim, qDim);
    ops.matmulT(k, xn, b.wk, n, dim, kvDim);
    ops.matmulT(v, xn, b.wv, n, dim, kvDim);
    addBias(q, b.bq, n, qDim);
    addBias(k, b.bk, n, kvDim);
    addBias(v, b.bv, n, kvDim);
    const ctx = new Float32Array(n * qDim);
    for (let r = 0; r < n; r++) {
      const qr = q.subarray(r * qDim, (r + 1) * qDim);
      const kr = k.subarray(r * kvDim, (r + 1) * kvDim);
      if (cfg.arch === 'llama') {
        rope(cfg, qr, 1, nHeads, pos[r]);
        rope(cfg, kr, 1, nKvHeads, pos[r]);
      }
      this.attend(l, rows[r], pos[r], qr, kr, v.subarray(r * kvDim, (r + 1) * kvDim), ctx.subarray(r * qDim, (r + 1) * qDim));
    }
    // residual adds as forward.ts's residualLinear does them: accumulate into x, then the bias
    ops.matmulT(x, ctx, b.wo, n, qDim, dim, true);
    addBias(x, b.bo, n, dim);
    norm(cfg, xn, x, b.ffnNorm, b.ffnNormBias, n);
    const act = ffnActivation(cfg, b, xn, n, ops);
    ops.matmulT(x, act, b.w2, n, cfg.hiddenDim, dim, true);
    addBias(x, b.b2, n, dim);
  }

  /**
   * Stores the post-RoPE key kr and value vr [kvDim] of sequence s at position p in block l's
   * cache, then ctx [qDim] ← each query head of qr attending over positions 0…p of s:
   * scores, softmax and values as contextHeads computes them, one KV group at a time.
   */
  private attend(l: number, s: number, p: number, qr: F32, kr: F32, vr: F32, ctx: F32): void {
    const { nHeads, nKvHeads, headDim: hd } = this.m.config;
    const cap = this.capacity;
    const K = this.keys[l];
    const VT = this.valuesT[l];
    for (let g = 0; g < nKvHeads; g++) {
      const kb = ((s * nKvHeads + g) * cap + p) * hd;
      const vb = (s * nKvHeads + g) * hd * cap + p;
      for (let i = 0; i < hd; i++) {
        K[kb + i] = kr[g * hd + i];
        VT[vb + i * cap] = vr[g * hd + i];
      }
    }
    const S = p + 1;
    const group = nHeads / nKvHeads;
    const scale = 1 / Math.sqrt(hd);
    const { att, vg } = this;
    for (let g = 0; g < nKvHeads; g++) {
      const base = (s * nKvHeads + g) * cap * hd; // this KV head's keys, and its transposed values
      // the values' first S columns, packed [hd, S] as matmulT's weight
      for (let i = 0; i < hd; i++) {
        const src = base + i * cap;
        if (S > SHORT_SPAN) vg.set(VT.subarray(src, src + S), i * S);
        else for (let j = 0; j < S; j++) vg[i * S + j] = VT[src + j];
      }
      const h0 = g * group * hd; // the group's query heads are consecutive in q and ctx
      this.ops.matmulT(att, qr.subarray(h0, h0 + group * hd), K.subarray(base, base + S * hd), group, hd, S);
      // every head of the group sees all S keys: softmax row by row (one query each)
      for (let j = 0; j < group; j++) softmaxCausal(this.ops, att.subarray(j * S, (j + 1) * S), 1, S, p, scale);
      this.ops.matmulT(ctx.subarray(h0, h0 + group * hd), att, vg, group, S, hd);
    }
  }
}

function addBias(y: F32, b: F32 | undefined, n: number, width: number): void {
  if (!b) return;
  for (let r = 0; r < n; r++) for (let i = 0; i < width; i++) y[r * width + i] += b[i];
}
