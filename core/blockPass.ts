/**
 * Token sets through models block-major: every sequence through block 0 of every model,
 * then block 1, and so on. Each block's weights are read once per pass (a lazy model,
 * core/model/lazy.ts, decodes each block once), every linear layer is one product over many
 * rows (core/forwardRows.ts), and memory is the residual streams plus one block's
 * intermediates for a chunk of rows — never a whole model's activations or logits.
 *
 * A sequence of ≥ 4 tokens gets the same bits as through core/forward.ts's `forward`.
 */
import { embed, head } from './forward';
import { collectAtBlockBoundary } from './memory';
import { blockForwardRows, packRows, type Rows } from './forwardRows';
import { jsOps, withResident, type Ops } from './ops';
import type { Block, F32, Model, ModelConfig } from './model/types';

/** Bytes of transient activations one chunk of rows may take inside a block (a soft cap). */
export const CHUNK_BYTES = 256 * 2 ** 20;

/** Rows per chunk so that one block's intermediates stay near CHUNK_BYTES. */
export function chunkRows(cfg: ModelConfig, budgetBytes = CHUNK_BYTES): number {
  // xa, q, k, v, ctx, h, xn, y at up to dim (or qDim) wide, act and gate at hiddenDim, float32
  const perRow = 4 * (8 * Math.max(cfg.dim, cfg.nHeads * cfg.headDim) + 2 * cfg.hiddenDim);
  return Math.max(1, Math.floor(budgetBytes / perRow));
}

/** Sequences grouped into consecutive chunks of about `maxRows` rows (a longer sequence is a chunk alone). */
export function chunkSeqs(seqs: ArrayLike<number>[], maxRows: number): number[][] {
  return chunkLengths(seqs.map((s) => s.length), maxRows);
}

/** chunkSeqs for sequences of these lengths. */
function chunkLengths(lengths: readonly number[], maxRows: number): number[][] {
  const chunks: number[][] = [];
  let cur: number[] = [];
  let rows = 0;
  for (let s = 0; s < lengths.length; s++) {
    const T = lengths[s];
    if (cur.length > 0 && rows + T > maxRows) {
      chunks.push(cur);
      cur = [];
      rows = 0;
    }
    cur.push(s);
    rows += T;
  }
  if (cur.length > 0) chunks.push(cur);
  return chunks;
}

/**
 * blockForwardRows over packed rows, whole sequences at a time in chunks of about `maxRows`
 * rows (default chunkRows), into one output: the same bits (for sequences of ≥ 4 tokens),
 * with one chunk's intermediates alive at a time instead of all the rows' (at 1B and 32 ×
 * 256 rows those are ~0.8 GB). Each weight is copied into the backend once for all chunks.
 */
export function blockForwardChunked(cfg: ModelConfig, b: Block, x: Rows, ops: Ops, maxRows = chunkRows(cfg)): Rows {
  const { seqStarts } = x;
  const S = seqStarts.length - 1;
  const d = cfg.dim;
  if (seqStarts[S] <= maxRows) return blockForwardRows(cfg, b, x, ops);
  const out = new Float32Array(seqStarts[S] * d);
  const lengths = seqStarts.slice(1).map((r, s) => r - seqStarts[s]);
  withResident(ops, blockWeights(b), () => {
    for (const chunk of chunkLengths(lengths, maxRows)) {
      const s0 = chunk[0], s1 = chunk[chunk.length - 1] + 1;
      const r0 = seqStarts[s0];
      const part = { x: x.x.subarray(r0 * d, seqStarts[s1] * d), seqStarts: seqStarts.slice(s0, s1 + 1).map((r) => r - r0) };
      out.set(blockForwardRows(cfg, b, part, ops).x, r0 * d);
    }
  });
  return { x: out, seqStarts };
}

/** The residual stream entering block 0 for sequences `seqs`, packed row-wise. */
export function embedRows(m: Model, seqs: ArrayLike<number>[]): Rows {
  return packRows(Array.from(seqs, (s) => embed(m, s)), m.config.dim);
}

export interface PassOptions {
  ops?: Ops;
  /** Transient activation budget per chunk (bytes); see chunkRows. */
  chunkBytes?: number;
  /** Called with every model's streams entering the first block, then after each block l (e.g. to capture calibration activations). */
  onStart?: (streams: Rows[][]) => void;
  onBlock?: (l: number, streams: Rows[][]) => void;
  /** Start at this block (default 0) from `inputs`, the residual stream entering it per sequence ([T, dim] each). */
  from?: number;
  inputs?: F32[];
}

/** The residual streams entering block `from` for the sequences `idx` of a chunk: embedded, or packed from given inputs. */
function startRows(m: Model, seqs: ArrayLike<number>[], idx: number[], inputs: F32[] | undefined): Rows {
  return inputs ? packRows(idx.map((s) => inputs[s]), m.config.dim) : embedRows(m, idx.map((s) => seqs[s]));
}

/**
 * The residual streams of each model after its last block on `seqs`: result[j][c] is model
 * j's stream for chunk c (chunks as chunkSeqs makes them; `chunks` says which sequences).
 * Blocks are read in order 0…L-1, each model's block l once.
 */
export function finalStreams(models: Model[], seqs: ArrayLike<number>[], opts: PassOptions = {}): { streams: Rows[][]; chunks: number[][] } {
  const ops = opts.ops ?? jsOps;
  const cfg = models[0].config;
  for (const m of models) {
    if (m.config.dim !== cfg.dim || m.config.nLayers !== cfg.nLayers) throw new RangeError('block-major pass over models of different shapes');
  }
  const chunks = chunkSeqs(seqs, chunkRows(cfg, opts.chunkBytes));
  const streams = models.map((m) => chunks.map((c) => startRows(m, seqs, c, opts.inputs)));
  opts.onStart?.(streams);
  for (let l = opts.from ?? 0; l < cfg.nLayers; l++) {
    models.forEach((m, j) => {
      const b = m.blocks[l];
      // each weight copied (and packed) into the backend once for all the chunks
      withResident(ops, blockWeights(b), () => {
        for (let c = 0; c < chunks.length; c++) streams[j][c] = blockForwardRows(m.config, b, streams[j][c], ops);
      });
    });
    opts.onBlock?.(l, streams);
    // the block's weights (and a quantized view's copies) are garbage now
    collectAtBlockBoundary(cfg);
  }
  return { streams, chunks };
}

/** The weight matrices of a block (what a pass over it multiplies by). */
function blockWeights(b: Block): F32[] {
  return [b.wq, b.wk, b.wv, b.wo, b.w1, b.w2, b.w3].filter((w): w is F32 => w !== undefined);
}

/** Logits [T, vocab] of sequence i (rows seqStarts[i]…) of a final stream. */
export function seqLogits(m: Model, final: Rows, i: number, ops: Ops = jsOps): F32 {
  const d = m.config.dim;
  const r0 = final.seqStarts[i];
  const r1 = final.seqStarts[i + 1];
  return head(m, final.x.subarray(r0 * d, r1 * d), r1 - r0, ops);
}

/**
 * Calls `visit(s, logits)` for every sequence s of `seqs` in order, with one logits array
 * per model ([T, vocab] each), computed block-major. Memory: the streams and one sequence's
 * logits per model.
 */
export function forEachSeqLogits(
  models: Model[], seqs: ArrayLike<number>[], visit: (s: number, logits: F32[]) => void, opts: PassOptions = {},
): void {
  const { streams, chunks } = finalStreams(models, seqs, opts);
  const ops = opts.ops ?? jsOps;
  // the classifiers are multiplied once per sequence: copied into the backend once
  withResident(ops, models.map((m) => m.classifier), () => {
    chunks.forEach((c, ci) => {
      c.forEach((s, i) => visit(s, models.map((m, j) => seqLogits(m, streams[j][ci], i, ops))));
      // this chunk's streams are no longer needed
      for (const st of streams) st[ci] = { x: new Float32Array(0), seqStarts: [0] };
    });
  });
}
