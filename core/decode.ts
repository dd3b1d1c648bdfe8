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
 * headDim] and values transposed, [kvHeads, headDim, capacity], per sequence (or, for a
 * backend whose attendCached reads them so, Ops.valuesByPosition, laid out as the keys). contextHeads
 * gathers each head's keys and values out of a [positions, kvDim] cache element by element on
 * every call; with one call per row and step, that gather took over a quarter of a batched
 * step at the 110M shape by position 128 (measured), growing with the position.
 *
 * On a backend that can (Ops.pin, residentArray, attendCached: the wasm one), the caches live
 * in the backend's memory and its attention reads them there, and the model's weights are
 * pinned, so each is copied and packed for the kernel once, not on every step. The model's
 * weights must therefore not change while the decoder is open; it closes (releasing both)
 * when `close` is called or when every sequence is full.
 */
import { embed, ffnActivation, head, norm, rope } from './forward';
import { attendCachedRef, jsOps, type CacheShape, type Ops, type Pinned, type ResidentArray } from './ops';
import type { Block, F32, Model } from './model/types';
import { eagerModel } from './model/lazy';

export class BatchDecoder {
  readonly batch: number;
  /** Positions each sequence can hold (the caches are allocated for this many, not seqLen). */
  readonly capacity: number;
  /** Per block: keys [batch, kvHeads, capacity, headDim]. */
  private keys: F32[];
  /** Per block: values, transposed per head: [batch, kvHeads, headDim, capacity] (or as the keys where shape.valuesByPosition). */
  private values: F32[];
  /** Tokens fed to each sequence so far. */
  private lens: Int32Array;
  private readonly kvDim: number;
  private readonly shape: CacheShape;
  /** Scratch of one KV group's attention on the reference path: scores [group, S], values [headDim, S] (S ≤ capacity). */
  private att: F32 | null = null;
  private vg: F32 | null = null;
  /** The caches when they live in the backend's memory (then its attendCached reads them). */
  private resident: ResidentArray[] = [];
  private pinned: Pinned | undefined;
  private closed = false;

  private m: Model;

  /**
   * `batch` sequences of at most `capacity` positions each (≤ the model's seqLen). Memory:
   * 2 · nLayers · batch · capacity · kvDim floats. A streamed model is read into memory for
   * it (every step visits every block).
   */
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
    if (ops.attendCached && ops.residentArray) {
      for (let i = 0; i < 2 * cfg.nLayers; i++) {
        const a = ops.residentArray(size);
        if (!a) break;
        this.resident.push(a);
      }
      if (this.resident.length < 2 * cfg.nLayers) this.releaseCaches(); // no room: the reference path
    }
    const valuesByPosition = this.resident.length > 0 && ops.valuesByPosition === true;
    this.shape = { nHeads: cfg.nHeads, nKvHeads: cfg.nKvHeads, headDim: cfg.headDim, capacity, valuesByPosition };
    if (this.resident.length > 0) {
      this.keys = this.resident.slice(0, cfg.nLayers).map((a) => a.data);
      this.values = this.resident.slice(cfg.nLayers).map((a) => a.data);
    } else {
      this.keys = m.blocks.map(() => new Float32Array(size));
      this.values = m.blocks.map(() => new Float32Array(size));
    }
    // A streamed model's in-memory copy is already the largest thing a run holds; pinned
    // copies of it (up to the kernel's cap) would come on top, so it is not pinned.
    if (this.m === m) this.pinned = ops.pin?.(modelWeights(this.m));
  }

  /** Releases the caches and pinned weights; step() is refused afterwards. Called by itself once every sequence is full. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pinned?.release();
    this.pinned = undefined;
    this.releaseCaches();
    this.keys = [];
    this.values = [];
  }

  private releaseCaches(): void {
    for (const a of this.resident) a.release();
    this.resident = [];
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
    if (this.closed) throw new RangeError('the decoder is closed');
    const { dim } = this.m.config;
    const x = new Float32Array(n * dim);
    for (let r = 0; r < n; r++) x.set(embed(this.m, [tokens[r]], pos[r]), r * dim);
    for (let l = 0; l < this.m.blocks.length; l++) this.block(l, x, n, rows, pos);
    for (let r = 0; r < n; r++) this.lens[rows[r]]++;
    const logits = head(this.m, x, n, this.ops);
    if (this.lens.every((len) => len === this.capacity)) this.close();
    return logits;
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
      this.store(l, rows[r], pos[r], kr, v.subarray(r * kvDim, (r + 1) * kvDim));
    }
    this.attend(l, q, rows, pos, ctx);
    // residual adds as forward.ts's residualLinear does them: accumulate into x, then the bias
    ops.matmulT(x, ctx, b.wo, n, qDim, dim, true);
    addBias(x, b.bo, n, dim);
    norm(cfg, xn, x, b.ffnNorm, b.ffnNormBias, n);
    const act = ffnActivation(cfg, b, xn, n, ops);
    ops.matmulT(x, act, b.w2, n, cfg.hiddenDim, dim, true);
    addBias(x, b.b2, n, dim);
  }

  /** Stores the post-RoPE key kr and value vr [kvDim] of sequence s at position p in block l's cache. */
  private store(l: number, s: number, p: number, kr: F32, vr: F32): void {
    const { nKvHeads, headDim: hd } = this.m.config;
    const cap = this.capacity;
    const K = this.keys[l];
    const V = this.values[l];
    for (let g = 0; g < nKvHeads; g++) {
      const kb = ((s * nKvHeads + g) * cap + p) * hd;
      for (let i = 0; i < hd; i++) K[kb + i] = kr[g * hd + i];
      if (this.shape.valuesByPosition) {
        for (let i = 0; i < hd; i++) V[kb + i] = vr[g * hd + i];
        continue;
      }
      const vb = (s * nKvHeads + g) * hd * cap + p;
      for (let i = 0; i < hd; i++) V[vb + i * cap] = vr[g * hd + i];
    }
  }

  /**
   * ctx [n, qDim] ← each query head of row r attending over positions 0…pos[r] of sequence
   * rows[r] in block l's cache: scores, softmax and values as contextHeads computes them,
   * one KV group at a time (core/ops.ts's attendCachedRef, or the backend's own over its
   * resident caches, the same bits).
   */
  private attend(l: number, q: F32, rows: ArrayLike<number>, pos: Int32Array, ctx: F32): void {
    if (this.resident.length > 0) {
      this.ops.attendCached!(ctx, q, this.keys[l], this.values[l], rows, pos, this.shape);
      return;
    }
    const { nHeads, nKvHeads, headDim } = this.shape;
    this.att ??= new Float32Array((nHeads / nKvHeads) * this.capacity);
    this.vg ??= new Float32Array(headDim * this.capacity);
    attendCachedRef(this.ops, ctx, q, this.keys[l], this.values[l], rows, pos, this.shape, this.att, this.vg);
  }
}

/** Every weight matrix of a model that a decode step multiplies by, in the order a step uses them. */
export function modelWeights(m: Model): F32[] {
  const out: F32[] = [];
  for (const b of m.blocks) for (const w of [b.wq, b.wk, b.wv, b.wo, b.w1, b.w3, b.w2]) if (w) out.push(w);
  out.push(m.classifier);
  return out;
}

function addBias(y: F32, b: F32 | undefined, n: number, width: number): void {
  if (!b) return;
  for (let r = 0; r < n; r++) for (let i = 0; i < width; i++) y[r * width + i] += b[i];
}
