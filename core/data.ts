/**
 * Token sets (DESIGN.md §9): sequences sampled from the FP model (data-free calibration and
 * held-out evaluation when the user gives no corpus), and users' own tokens or text.
 *
 * A token set is `number[][]`, one array of ids per sequence. Every loader validates ids
 * against the model's vocabulary and cuts sequences longer than the model's seqLen to
 * seqLen tokens (as `--text` must; the cut tail is dropped, not wrapped into a new sequence).
 */
import { fail } from './errors';
import { describeJsonError, readRegularFile } from './files';
import { BatchDecoder } from './decode';
import { SEPARABLE_MIN_ROWS, type Ops } from './ops';
import { categoricalAt, Rng } from './rng';
import type { Model, ModelConfig } from './model/types';
import type { Tokenizer } from './tokenizer';

export interface SampleOptions {
  /** Number of sequences. */
  count: number;
  /** Tokens per sequence, BOS included (≤ the model's seqLen). */
  length: number;
  seed: number;
  /** Softmax temperature; 0 = greedy (every sequence the same). Default 1. */
  temperature?: number;
  ops?: Ops;
  /** KV-cache bytes one batch may take (default SAMPLE_CACHE_BYTES); changes only speed and memory. */
  maxCacheBytes?: number;
}

/**
 * Bytes of KV cache one batch of sampled sequences may take; more sequences than fit are
 * sampled in batches. 1 GiB holds 32 × 256 tokens of a 110M-parameter llama (600 MiB).
 */
export const SAMPLE_CACHE_BYTES = 1 << 30;

/**
 * `count` sequences of `length` tokens drawn from the model: each starts at BOS and continues
 * by sampling softmax(logits / temperature) with one Rng seeded by `seed`, so the set depends
 * only on (model, options). A sampled BOS does not end a sequence: llama2.c's training data
 * packs stories, BOS-separated, into seqLen windows, so a mid-sequence BOS is in distribution.
 *
 * The sequences are decoded together (BatchDecoder: one matmul per layer and step over all of
 * them), in as few batches as SAMPLE_CACHE_BYTES allows. The uniforms are drawn sequence after
 * sequence (sequence s, token t takes draw s·(length−1) + t−1), as sequential decoding drew
 * them, so a smaller count gives a prefix of the set, and the set is the one a Decoder per
 * sequence samples whenever the logits are the same: always with jsOps. A backend whose
 * one-row matmul rounds differently from its batched one (wasm) may change some tokens.
 */
export function sampleTokens(model: Model, opts: SampleOptions): number[][] {
  return sampleSets(model, [opts], opts)[0];
}

/**
 * Several sets at once (e.g. a run's calibration, validation and evaluation sets), each
 * with its own seed (and temperature, if it sets one) and its uniforms in the order
 * sampleTokens draws them, decoded together: one matmul per layer and step over the
 * sequences of all sets, so small sets do not each pay a pass over every weight per token. A set is the one sampleTokens samples
 * alone whenever the logits are the same: always when both batchings have at least
 * SEPARABLE_MIN_ROWS rows (sampleBatches sees to that where the count allows).
 */
export function sampleSets(model: Model, sets: readonly Pick<SampleOptions, 'count' | 'length' | 'seed' | 'temperature'>[], opts: Omit<SampleOptions, 'count' | 'length' | 'seed'> = {}): number[][][] {
  const { vocabSize: V, seqLen, bosId } = model.config;
  const temperatureOf = (s: { temperature?: number }) => s.temperature ?? opts.temperature ?? 1;
  for (const { count, length, ...s } of sets) {
    const temperature = temperatureOf(s);
    if (!(Number.isFinite(temperature) && temperature >= 0)) fail('bad-config', `temperature must be a number ≥ 0, got ${temperature}`);
    if (!(Number.isInteger(count) && count >= 1)) fail('bad-config', `sample count must be a positive integer, got ${count}`);
    if (!(Number.isInteger(length) && length >= 1 && length <= seqLen)) {
      fail('bad-config', `sample length must be an integer from 1 to the model's seqLen ${seqLen}, got ${length}`);
    }
  }
  const out: number[][][] = sets.map(() => []);
  // sets of one length decode together; each sequence keeps its set's uniforms, drawn in order
  for (const length of new Set(sets.map((s) => s.length))) {
    const steps = length - 1;
    const members = sets.map((s, i) => [s, i] as const).filter(([s]) => s.length === length);
    const seqs: { set: number; temperature: number; u: Float64Array }[] = [];
    for (const [s, i] of members) {
      const rng = Rng.fromSeed(s.seed);
      const temperature = temperatureOf(s);
      for (let k = 0; k < s.count; k++) {
        const u = new Float64Array(temperature === 0 ? 0 : steps);
        for (let t = 0; t < u.length; t++) u[t] = rng.float();
        seqs.push({ set: i, temperature, u });
      }
    }
    const weights = new Float64Array(V);
    for (const [s0, s1] of sampleBatches(model.config, seqs.length, length, opts.maxCacheBytes ?? SAMPLE_CACHE_BYTES)) {
      const B = s1 - s0;
      const batch = Array.from({ length: B }, () => [bosId]);
      const dec = new BatchDecoder(model, B, Math.max(1, steps), opts.ops);
      const last = new Int32Array(B).fill(bosId);
      const temps = Float64Array.from(seqs.slice(s0, s1), (q) => q.temperature);
      // the backend's draws (the same bits), when it has them and no sequence is greedy
      const draw = temps.every((T) => T > 0) ? opts.ops?.drawTokens?.bind(opts.ops) : undefined;
      const us = new Float64Array(B);
      const drawn = new Int32Array(B);
      for (let t = 0; t < steps; t++) {
        const logits = dec.step(last);
        if (draw) {
          for (let b = 0; b < B; b++) us[b] = seqs[s0 + b].u[t];
          draw(drawn, logits, B, V, temps, us);
        }
        for (let b = 0; b < B; b++) {
          const row = logits.subarray(b * V, (b + 1) * V);
          const { temperature, u } = seqs[s0 + b];
          const tok = draw ? drawn[b] : temperature === 0 ? argmax(row) : drawToken(row, temperature, u[t], weights);
          batch[b].push(tok);
          last[b] = tok;
        }
      }
      batch.forEach((seq, b) => out[seqs[s0 + b].set].push(seq));
    }
  }
  return out;
}

/**
 * [start, end) sequence ranges of the batches sampleTokens decodes: as few as the cache
 * budget allows, of near-equal size, and none under SEPARABLE_MIN_ROWS rows when the count
 * has that many (the budget yields to that), so each row's logits are the same bits
 * whatever the batching.
 */
function sampleBatches(cfg: ModelConfig, count: number, length: number, maxBytes: number): [number, number][] {
  const perSeq = 2 * cfg.nLayers * Math.max(1, length - 1) * cfg.nKvHeads * cfg.headDim * 4;
  const fit = Math.max(SEPARABLE_MIN_ROWS, Math.floor(maxBytes / perSeq));
  const n = Math.max(1, Math.min(Math.ceil(count / fit), Math.floor(count / SEPARABLE_MIN_ROWS)));
  const out: [number, number][] = [];
  for (let i = 0; i < n; i++) out.push([Math.floor((i * count) / n), Math.floor(((i + 1) * count) / n)]);
  return out;
}

/** Index of the largest logit (the first on ties, as run.c's argmax). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** One draw from softmax(logits / temperature); `w` (length = vocabulary) receives the float64 weights. */
export function sampleSoftmax(logits: ArrayLike<number>, temperature: number, w: Float64Array, rng: Rng): number {
  return rng.categorical(softmaxWeights(logits, temperature, w));
}

/** The draw sampleSoftmax makes when its uniform is `u` (what Ops.drawTokens computes per row). */
export function drawToken(logits: ArrayLike<number>, temperature: number, u: number, w: Float64Array): number {
  return categoricalAt(softmaxWeights(logits, temperature, w), u);
}

/** w ← the unnormalized float64 weights exp((logits − max) / temperature); returns w. */
export function softmaxWeights(logits: ArrayLike<number>, temperature: number, w: Float64Array): Float64Array {
  const V = w.length;
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] > max) max = logits[i];
  for (let i = 0; i < V; i++) w[i] = Math.exp((logits[i] - max) / temperature);
  return w;
}

/** A default sampled set: how many sequences, how long, from which seed. */
export interface SampledSet {
  count: number;
  length: number;
  seed: number;
  /** This set's softmax temperature (default: the call's, else 1). */
  temperature?: number;
}

/**
 * Default data-free sets, 32 × 256 tokens each (8,160 predicted positions). Sampling is a
 * large part of a default `invarx eval`, so the size is set by its cost: on stories260K both
 * sets together (2 × 32 × 255 tokens) take 2.4 s batched on the wasm backend the CLI uses
 * (4.9 s one sequence at a time; 7.2 s and 8.1 s in plain JS) on the 2-core dev machine; on a
 * 110M-parameter llama, batching is ~4× faster (bench/sample.ts). Sequence length barely
 * changes the cost per step at the small size; fewer sequences would make the GPTQ Hessians
 * and the held-out perplexity noisier. The same counts and seeds are what search/tokens.ts
 * samples by default, so `invarx eval` and `invarx run` report on the same held-out set.
 */
export const DEFAULT_CALIB: Readonly<SampledSet> = Object.freeze({ count: 32, length: 256, seed: 1001 });
export const DEFAULT_HELD_OUT: Readonly<SampledSet> = Object.freeze({ count: 32, length: 256, seed: 3003 });

/** A sampled set, its length capped at the model's seqLen (for models shorter than 256). */
export function sampleSet(model: Model, set: SampledSet, ops?: Ops): number[][] {
  return sampleSetsCapped(model, [set], ops)[0];
}

/** Several sampled sets decoded together (sampleSets), lengths capped as sampleSet does. */
export function sampleSetsCapped(model: Model, sets: readonly SampledSet[], ops?: Ops): number[][][] {
  return sampleSets(model, sets.map((s) => ({ ...s, length: Math.min(s.length, model.config.seqLen) })), { ops });
}

export function defaultCalibTokens(model: Model, ops?: Ops): number[][] {
  return sampleSet(model, DEFAULT_CALIB, ops);
}

export function defaultHeldOutTokens(model: Model, ops?: Ops): number[][] {
  return sampleSet(model, DEFAULT_HELD_OUT, ops);
}

/** How many sequences of `b` also occur (identically) in `a`. */
export function overlapCount(a: number[][], b: number[][]): number {
  const seen = new Set(a.map((s) => s.join(',')));
  return b.filter((s) => seen.has(s.join(','))).length;
}

// ---------------------------------------------------------------------------------------
// Users' token files

type VocabLimits = Pick<ModelConfig, 'vocabSize' | 'seqLen'>;

/**
 * Check ids against the vocabulary and cut sequences to seqLen. `name` (the file) starts
 * every error message. Empty sequences are an error (they would be silently meaningless).
 */
export function validateTokens(seqs: number[][], cfg: VocabLimits, name: string): number[][] {
  if (seqs.length === 0) fail('bad-tokens', `${name}: no token sequences`);
  return seqs.map((seq, i) => {
    if (seq.length === 0) fail('bad-tokens', `${name}: sequence ${i} is empty`);
    for (let t = 0; t < seq.length; t++) {
      const id = seq[t];
      if (!(Number.isInteger(id) && id >= 0 && id < cfg.vocabSize)) {
        fail('bad-tokens', `${name}: sequence ${i}, position ${t}: token id ${id} is outside the vocabulary [0, ${cfg.vocabSize})`);
      }
    }
    return seq.length > cfg.seqLen ? seq.slice(0, cfg.seqLen) : seq;
  });
}

/**
 * Read a token file: a JSON array of arrays of ids (a flat array is one sequence), a `.npy`
 * int32/int64 (also int8/16, uint8/16/32) array — 1-D is one sequence, 2-D is one sequence
 * per row — or text with whitespace-separated ids, one sequence per line (blank lines
 * skipped). The format is recognised by content (npy magic, leading "["), so the extension
 * does not matter.
 */
export function loadTokenFile(path: string, cfg: VocabLimits): number[][] {
  const buf = readRegularFile(path, 'token file', 'bad-tokens');
  return validateTokens(parseTokenFile(buf, path), cfg, path);
}

/** The sequences in a token file's bytes, not yet validated against a vocabulary. Errors name the place, never quote the file. */
export function parseTokenFile(buf: Uint8Array, name: string): number[][] {
  if (isNpy(buf)) return parseNpy(buf, name);
  const text = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('utf8');
  if (text.trimStart().startsWith('[')) return parseJsonTokens(text, name);
  return parseTxtTokens(text, name);
}

function parseJsonTokens(text: string, name: string): number[][] {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    fail('bad-tokens', `${name}: ${describeJsonError(text)}`);
  }
  if (!Array.isArray(v)) fail('bad-tokens', `${name}: expected a JSON array of arrays of token ids`);
  const rows = v.length > 0 && v.every((x) => typeof x === 'number') ? [v] : v;
  return rows.map((row: unknown, i: number) => {
    if (!Array.isArray(row)) fail('bad-tokens', `${name}: element ${i} is not an array of token ids`);
    return row.map((id: unknown, t: number) => {
      if (typeof id !== 'number') fail('bad-tokens', `${name}: sequence ${i}, position ${t}: expected a token id (a number), found ${jsonKind(id)}`);
      return id;
    });
  });
}

function jsonKind(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : typeof v === 'string' ? 'a string' : `a ${typeof v}`;
}

function parseTxtTokens(text: string, name: string): number[][] {
  const seqs: number[][] = [];
  text.split('\n').forEach((line, ln) => {
    const words = line.trim().split(/\s+/).filter((w) => w !== '');
    if (words.length === 0) return;
    seqs.push(words.map((w, k) => {
      if (!/^[+-]?\d+$/.test(w)) fail('bad-tokens', `${name}: line ${ln + 1}, word ${k + 1}: expected an integer token id (text files hold whitespace-separated ids, one sequence per line)`);
      return Number(w);
    }));
  });
  return seqs;
}

const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"

function isNpy(buf: Uint8Array): boolean {
  return buf.length >= 6 && NPY_MAGIC.every((b, i) => buf[i] === b);
}

/** Integer dtypes a token array may have: npy type char + size → reader. */
const NPY_READERS: Record<string, (dv: DataView, off: number, le: boolean) => number> = {
  i1: (dv, o) => dv.getInt8(o),
  u1: (dv, o) => dv.getUint8(o),
  i2: (dv, o, le) => dv.getInt16(o, le),
  u2: (dv, o, le) => dv.getUint16(o, le),
  i4: (dv, o, le) => dv.getInt32(o, le),
  u4: (dv, o, le) => dv.getUint32(o, le),
  // Beyond 2^53 the id is out of any vocabulary anyway; Number() keeps it visibly huge.
  i8: (dv, o, le) => Number(dv.getBigInt64(o, le)),
  u8: (dv, o, le) => Number(dv.getBigUint64(o, le)),
};

/**
 * NumPy .npy (format versions 1–3): magic, version, header length (uint16, or uint32 from
 * version 2), then a Python dict literal {'descr': '<i4', 'fortran_order': False,
 * 'shape': (N, T), } padded with spaces, then the raw array.
 */
function parseNpy(buf: Uint8Array, name: string): number[][] {
  const bad = (why: string): never => fail('bad-tokens', `${name}: bad .npy file: ${why}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 10) bad('truncated header');
  const major = buf[6];
  if (major < 1 || major > 3) bad(`unknown format version ${major}`);
  const lenBytes = major === 1 ? 2 : 4;
  if (buf.length < 8 + lenBytes) bad('truncated header');
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const dataStart = 8 + lenBytes + hlen;
  if (dataStart > buf.length) bad('truncated header');
  const header = Buffer.from(buf.subarray(8 + lenBytes, dataStart)).toString(major === 3 ? 'utf8' : 'latin1');
  const descr = /'descr'\s*:\s*'([<>|=])([a-z])(\d+)'/.exec(header);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shapeM = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeM) bad(`header lacks ${[descr ? '' : "'descr'", fortran ? '' : "'fortran_order'", shapeM ? '' : "'shape'"].filter((x) => x).join(' and ')}`);
  const [, order, kind, sizeStr] = descr!;
  const reader = NPY_READERS[kind + sizeStr];
  if (!reader) bad(`dtype '${order}${kind}${sizeStr}' is not an integer type (use int32 or int64)`);
  const size = Number(sizeStr);
  const le = order !== '>'; // '<' little, '|' not applicable (1 byte), '=' native: little on every platform Node runs on
  const shape = shapeM![1].split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) bad("'shape' is not a tuple of non-negative integers");
  if (shape.length !== 1 && shape.length !== 2) bad(`expected a 1-D or 2-D array, got shape (${shape.join(', ')})`);
  const [rows, cols] = shape.length === 1 ? [1, shape[0]] : shape;
  const need = dataStart + rows * cols * size;
  if (buf.length < need) bad(`truncated: shape (${shape.join(', ')}) needs ${need} bytes, file has ${buf.length}`);
  const colMajor = fortran![1] === 'True';
  const seqs: number[][] = [];
  for (let r = 0; r < rows; r++) {
    const seq = new Array<number>(cols);
    for (let c = 0; c < cols; c++) {
      const idx = colMajor ? c * rows + r : r * cols + c;
      seq[c] = reader!(dv, dataStart + idx * size, le);
    }
    seqs.push(seq);
  }
  return seqs;
}

/**
 * `--text FILE`: UTF-8, one document per line (blank lines skipped, a trailing "\r"
 * dropped), each encoded with BOS and cut to the model's seqLen.
 */
export function loadTextFile(path: string, tokenizer: Tokenizer, cfg: VocabLimits): number[][] {
  const buf = readRegularFile(path, 'text file', 'bad-tokens');
  const seqs: number[][] = [];
  let start = 0;
  // Split the bytes, not a decoded string, so the text reaches the encoder byte for byte.
  while (start <= buf.length) {
    let end = buf.indexOf(0x0a, start);
    if (end === -1) end = buf.length;
    let stop = end;
    if (stop > start && buf[stop - 1] === 0x0d) stop--;
    const line = buf.subarray(start, stop);
    if (line.some((b) => b !== 0x20 && b !== 0x09)) seqs.push(tokenizer.encode(line, { bos: true }));
    start = end + 1;
  }
  if (seqs.length === 0) fail('bad-tokens', `${path}: no text (every line is blank)`);
  return validateTokens(seqs, cfg, path);
}
