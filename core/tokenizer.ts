/**
 * The llama2.c tokenizer (`tokenizer.bin`, `tok512.bin`), read, decoded and encoded exactly
 * as llama2.c's run.c does (build_tokenizer, decode, encode).
 *
 * File format (little-endian):
 *   int32 max_token_length
 *   per token, vocab_size times:  float32 score, int32 len, len bytes (the piece, no NUL)
 * The file does not store vocab_size; run.c takes it from the model. We read to the end of
 * the file and, given the model's vocabulary size, insist that the counts agree, so a
 * tokenizer of another model is an error instead of silently wrong text.
 *
 * Pieces are byte strings (SentencePiece's "▁" is already a space). Internally a piece is
 * kept both as bytes and as a latin1 string (one char per byte) so lookups of byte strings,
 * as run.c's strcmp/bsearch does them, are plain Map lookups.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fail } from './errors';
import { readRegularFile } from './files';

const BOS = 1;
const EOS = 2;
/** run.c starts the best-merge search at this score; a merge must beat it to happen. */
const MERGE_FLOOR = -1e10;
/** Byte-fallback pieces look like `<0x0A>`; run.c parses them with sscanf("<0x%02hhX>"). */
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>/;

export interface EncodeOptions {
  /** Prepend BOS (id 1). Default true. */
  bos?: boolean;
  /** Append EOS (id 2). Default false. */
  eos?: boolean;
}

export class Tokenizer {
  /** Piece bytes of each id as a latin1 string (one char per byte). */
  private readonly keys: string[];
  private readonly pieceBytes: Uint8Array[];
  /** Byte string → id, for run.c's str_lookup. */
  private readonly lookup = new Map<string, number>();

  constructor(
    pieces: Uint8Array[],
    readonly scores: Float32Array,
    readonly maxTokenLength: number,
  ) {
    this.pieceBytes = pieces;
    this.keys = pieces.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString('latin1'));
    // run.c bsearches a sorted copy; with duplicate pieces which id it finds is unspecified.
    // We take the lowest id (tok512.bin and the Llama 2 tokenizer have no duplicates).
    this.keys.forEach((k, id) => {
      if (!this.lookup.has(k)) this.lookup.set(k, id);
    });
  }

  get vocabSize(): number {
    return this.pieceBytes.length;
  }

  /** The raw piece of `id` as stored in the file (byte pieces still read `<0xXX>`). */
  piece(id: number): Uint8Array {
    this.checkId(id);
    return this.pieceBytes[id];
  }

  /** Id of the piece with exactly these bytes, or -1 (run.c's str_lookup). */
  pieceId(piece: string | Uint8Array): number {
    const key = typeof piece === 'string' ? Buffer.from(piece, 'utf8').toString('latin1') : latin1(piece);
    return this.lookup.get(key) ?? -1;
  }

  /**
   * The bytes run.c's `decode(prev, id)` yields: a piece that follows BOS loses its leading
   * space (SentencePiece strips the dummy prefix), and a byte-fallback piece `<0xXX>` is the
   * single raw byte XX.
   */
  decodePiece(prev: number, id: number): Uint8Array {
    let piece = this.piece(id);
    if (prev === BOS && piece[0] === 0x20) piece = piece.subarray(1);
    // Cheap pre-check before the regex: byte pieces start with "<0x".
    if (piece[0] === 0x3c && piece[1] === 0x30 && piece[2] === 0x78) {
      const m = BYTE_PIECE.exec(latin1(piece));
      if (m) return Uint8Array.of(parseInt(m[1], 16));
    }
    return piece;
  }

  /** True when `id` is a byte-fallback piece (`<0xXX>`). */
  isBytePiece(id: number): boolean {
    return BYTE_PIECE.test(this.keys[id] ?? '');
  }

  /**
   * A whole id sequence as text, as run.c would print it: each piece decoded with its
   * predecessor (the first with `prev`), BOS itself printing nothing (run.c starts from BOS
   * and stops at one, so never prints it); the bytes are joined and then read as UTF-8, so a
   * character spelled by several byte pieces comes out whole. Invalid UTF-8 becomes U+FFFD.
   * decode(encode(text)) === text: the dummy-prefix space is stripped after BOS.
   */
  decode(ids: ArrayLike<number>, prev = -1): string {
    const parts: Uint8Array[] = [];
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] === BOS) continue;
      parts.push(this.decodePiece(i === 0 ? prev : ids[i - 1], ids[i]));
    }
    return new TextDecoder('utf-8').decode(Buffer.concat(parts));
  }

  /**
   * run.c's `encode`: optional BOS; the dummy-prefix piece " " when the text is not empty;
   * each UTF-8 character looked up as a piece, else its bytes as ids byte+3; then, while some
   * adjacent pair concatenates to a piece, merge the pair whose piece has the highest score
   * (the leftmost such pair on ties); optional EOS.
   *
   * A string is encoded as UTF-8; bytes are taken as they are (invalid UTF-8 included, as
   * run.c would). Unlike C strings, a NUL byte does not end the text: it falls back to id 3.
   */
  encode(text: string | Uint8Array, opts: EncodeOptions = {}): number[] {
    const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
    const tokens: number[] = [];
    if (opts.bos ?? true) tokens.push(BOS);
    if (bytes.length > 0) {
      // run.c pushes str_lookup(" ") unconditionally (-1 if absent, a bug); we skip it then.
      const dummy = this.lookup.get(' ');
      if (dummy !== undefined) tokens.push(dummy);
    }
    // Split into UTF-8 characters exactly as run.c does: a character is a non-continuation
    // byte plus up to 3 following continuation bytes (10xxxxxx).
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      if ((bytes[i] & 0xc0) !== 0x80) start = i;
      const next = i + 1 < bytes.length ? bytes[i + 1] : 0;
      if ((next & 0xc0) === 0x80 && i - start + 1 < 4) continue;
      const ch = bytes.subarray(start, i + 1);
      const id = this.lookup.get(latin1(ch));
      if (id !== undefined) tokens.push(id);
      else for (const b of ch) tokens.push(b + 3);
      start = i + 1;
    }
    this.mergePairs(tokens);
    if (opts.eos) tokens.push(EOS);
    return tokens;
  }

  /**
   * run.c's merge loop, in place. run.c re-looks-up every adjacent pair on each iteration;
   * a merge only changes the two pairs next to it, so we keep each pair's (id, score) and
   * redo just those two — the same choices in the same order, in O(n) per merge.
   */
  private mergePairs(tokens: number[]): void {
    const pairId: number[] = [];
    const pairScore: number[] = [];
    const setPair = (i: number) => {
      const id = this.lookup.get(this.keys[tokens[i]] + this.keys[tokens[i + 1]]);
      pairId[i] = id ?? -1;
      pairScore[i] = id === undefined ? -Infinity : this.scores[id];
    };
    for (let i = 0; i + 1 < tokens.length; i++) setPair(i);
    for (;;) {
      let best = MERGE_FLOOR;
      let bestIdx = -1;
      for (let i = 0; i < pairId.length; i++) {
        if (pairId[i] !== -1 && pairScore[i] > best) {
          best = pairScore[i];
          bestIdx = i;
        }
      }
      if (bestIdx === -1) return;
      tokens[bestIdx] = pairId[bestIdx];
      tokens.splice(bestIdx + 1, 1);
      pairId.splice(bestIdx, 1);
      pairScore.splice(bestIdx, 1);
      if (bestIdx > 0) setPair(bestIdx - 1);
      if (bestIdx + 1 < tokens.length) setPair(bestIdx);
    }
  }

  private checkId(id: number): void {
    if (!(Number.isInteger(id) && id >= 0 && id < this.pieceBytes.length)) {
      throw new RangeError(`token id ${id} is outside the tokenizer's vocabulary [0, ${this.pieceBytes.length})`);
    }
  }
}

function latin1(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}

/**
 * Parse tokenizer bytes. With `vocabSize` (the model's), the file must hold exactly that many
 * pieces. Every failure is an InvarxError('bad-tokenizer') naming `name`.
 */
export function parseTokenizer(buf: Uint8Array, vocabSize?: number, name = 'tokenizer'): Tokenizer {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.byteLength < 4) fail('bad-tokenizer', `${name}: ${buf.byteLength} bytes is too short for a llama2.c tokenizer`);
  const maxTokenLength = dv.getInt32(0, true);
  if (!(maxTokenLength >= 1 && maxTokenLength <= 4096)) {
    fail('bad-tokenizer', `${name}: not a llama2.c tokenizer (max_token_length ${maxTokenLength})`);
  }
  const pieces: Uint8Array[] = [];
  const scores: number[] = [];
  let off = 4;
  while (off < buf.byteLength) {
    const i = pieces.length;
    if (off + 8 > buf.byteLength) fail('bad-tokenizer', `${name}: truncated in the header of piece ${i}`);
    const score = dv.getFloat32(off, true);
    const len = dv.getInt32(off + 4, true);
    if (!Number.isFinite(score) || len < 0 || len > maxTokenLength) {
      fail('bad-tokenizer', `${name}: not a llama2.c tokenizer (piece ${i}: score ${score}, length ${len}, max_token_length ${maxTokenLength})`);
    }
    off += 8;
    if (off + len > buf.byteLength) fail('bad-tokenizer', `${name}: truncated in piece ${i} (needs ${len} bytes, ${buf.byteLength - off} left)`);
    pieces.push(buf.slice(off, off + len));
    scores.push(score);
    off += len;
  }
  if (pieces.length < 3) fail('bad-tokenizer', `${name}: only ${pieces.length} pieces; not a llama2.c tokenizer`);
  if (vocabSize !== undefined && pieces.length !== vocabSize) {
    fail('bad-tokenizer', `${name}: has ${pieces.length} pieces but the model's vocabulary has ${vocabSize}; wrong tokenizer for this model`);
  }
  return new Tokenizer(pieces, Float32Array.from(scores), maxTokenLength);
}

export function loadTokenizer(path: string, vocabSize?: number): Tokenizer {
  return parseTokenizer(readRegularFile(path, 'tokenizer file', 'bad-tokenizer'), vocabSize, path);
}

/** Names looked for beside a model when no tokenizer is given, in order. */
export const TOKENIZER_NAMES = ['tok512.bin', 'tokenizer.bin'] as const;

/**
 * The tokenizer file for a model: `explicit` when given; otherwise the first of
 * TOKENIZER_NAMES beside the model file (inside it, for a model directory).
 */
export function tokenizerPathFor(modelPath: string, explicit?: string): string {
  if (explicit) return explicit;
  let dir = dirname(modelPath);
  try {
    if (statSync(modelPath).isDirectory()) dir = modelPath;
  } catch {
    // A missing model is reported by the model loader; look beside the path anyway.
  }
  for (const n of TOKENIZER_NAMES) {
    const p = join(dir, n);
    if (existsSync(p)) return p;
  }
  fail('bad-tokenizer', `no tokenizer beside ${modelPath} (looked for ${TOKENIZER_NAMES.join(' and ')} in ${dir}); pass --tokenizer PATH`);
}
