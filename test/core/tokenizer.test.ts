import fc from 'fast-check';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { loadTokenizer, parseTokenizer, tokenizerPathFor, type Tokenizer } from '../../core/tokenizer';
import { MODEL_PATH, TOKENIZER_PATH } from '../helpers';

const GREEDY = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];

/** Tokenizer file bytes from [score, piece] entries (piece as a latin1 byte string). */
function tokenizerBytes(entries: Array<[number, string]>, maxLen?: number): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4);
  head.writeInt32LE(maxLen ?? Math.max(1, ...entries.map(([, p]) => p.length)));
  parts.push(head);
  for (const [score, piece] of entries) {
    const h = Buffer.alloc(8);
    h.writeFloatLE(score, 0);
    h.writeInt32LE(piece.length, 4);
    parts.push(h, Buffer.from(piece, 'latin1'));
  }
  return Buffer.concat(parts);
}

/** A llama2.c-style vocabulary: <unk>, <s>, </s>, the 256 byte pieces, then `extra`. */
function smallTokenizer(extra: Array<[number, string]>): Tokenizer {
  const bytes: Array<[number, string]> = Array.from({ length: 256 }, (_, b) => [0, `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`]);
  return parseTokenizer(tokenizerBytes([[0, '<unk>'], [0, '\n<s>\n'], [0, '\n</s>\n'], ...bytes, ...extra]));
}

/**
 * run.c's encode translated literally (C strings as latin1 JS strings, the full O(n²)
 * re-lookup of every pair per merge), as the reference the optimized encoder must match.
 */
function runcEncode(t: Tokenizer, text: string, bos: boolean): number[] {
  const piece = (id: number) => Buffer.from(t.piece(id)).toString('latin1');
  const lookup = (s: string) => t.pieceId(Buffer.from(s, 'latin1'));
  const bytes = Buffer.from(text, 'utf8');
  const tokens: number[] = [];
  if (bos) tokens.push(1);
  if (bytes.length > 0) tokens.push(lookup(' '));
  let buf: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    if ((bytes[i] & 0xc0) !== 0x80) buf = [];
    buf.push(bytes[i]);
    const next = i + 1 < bytes.length ? bytes[i + 1] : 0;
    if ((next & 0xc0) === 0x80 && buf.length < 4) continue;
    const id = lookup(Buffer.from(buf).toString('latin1'));
    if (id !== -1) tokens.push(id);
    else for (const b of buf) tokens.push(b + 3);
    buf = [];
  }
  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i < tokens.length - 1; i++) {
      const id = lookup(piece(tokens[i]) + piece(tokens[i + 1]));
      if (id !== -1 && t.scores[id] > bestScore) {
        bestScore = t.scores[id];
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens[bestIdx] = bestId;
    tokens.splice(bestIdx + 1, 1);
  }
  return tokens;
}

describe('tok512.bin', () => {
  const tok = loadTokenizer(TOKENIZER_PATH, 512);

  it('reads the file as run.c does', () => {
    expect(tok.vocabSize).toBe(512);
    expect(tok.maxTokenLength).toBe(7);
    expect(Buffer.from(tok.piece(403)).toString()).toBe(' Once');
    expect(Buffer.from(tok.piece(1)).toString()).toBe('\n<s>\n');
    expect(tok.scores[403]).toBe(-144);
  });

  it('decodes the greedy ids of stories260K', () => {
    expect(tok.decode(GREEDY)).toBe(' Once upon a time, there was a little girl named Lily.');
    expect(tok.decode([...GREEDY, 338])).toBe(' Once upon a time, there was a little girl named Lily. She');
    // After BOS the leading space goes (run.c: `if (prev_token == 1 && piece[0] == ' ') piece++`).
    expect(tok.decode([1, ...GREEDY])).toBe('Once upon a time, there was a little girl named Lily.');
    expect(Buffer.from(tok.decodePiece(1, 403)).toString()).toBe('Once');
    expect(Buffer.from(tok.decodePiece(5, 403)).toString()).toBe(' Once');
  });

  it('encodes known text exactly as run.c', () => {
    expect(tok.encode('Once upon a time, there was a little girl named Lily. She')).toEqual([1, ...GREEDY, 338]);
    expect(tok.encode('Once', { bos: false, eos: true })).toEqual([403, 2]);
    expect(tok.encode('')).toEqual([1]);
    expect(tok.encode('', { bos: false })).toEqual([]);
    // No piece for "☃": its three UTF-8 bytes fall back to ids byte+3.
    expect(tok.encode('☃', { bos: false })).toEqual([410, 0xe2 + 3, 0x98 + 3, 0x83 + 3]);
  });

  it('gives the ids llama2.c run.c encode gives (run.c compiled from source, bos=1)', () => {
    const cases: Array<[string, number[]]> = [
      ["Once upon a time, there was a little girl named Lily. She", [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338]],
      ["Hello world!  Two  spaces and\ttab", [1, 346, 306, 414, 263, 304, 341, 443, 410, 274, 424, 414, 410, 262, 427, 412, 331, 419, 269, 12, 413, 412, 430]],
      ["héllo wörld ☃ 😀 日本語", [1, 270, 485, 306, 414, 263, 198, 185, 420, 341, 410, 229, 155, 134, 410, 243, 162, 155, 131, 410, 233, 154, 168, 233, 159, 175, 235, 173, 161]],
      ["\"Mom!\" said Tom. 'Look at the big, red ball.' He was 3 years old; 100% happy?", [1, 313, 446, 287, 443, 436, 336, 274, 287, 426, 410, 439, 438, 347, 433, 261, 413, 265, 370, 432, 352, 266, 268, 388, 426, 439, 346, 286, 410, 472, 348, 411, 295, 419, 334, 341, 474, 410, 475, 477, 477, 501, 393, 450]],
      ["   leading spaces", [1, 410, 410, 410, 278, 411, 380, 299, 262, 427, 412, 331, 419]],
      ["trailing spaces   ", [1, 259, 420, 412, 290, 299, 262, 427, 412, 331, 419, 410, 410, 410]],
      ["<0x41> literal byte piece text", [1, 410, 504, 477, 444, 484, 475, 505, 278, 275, 285, 412, 421, 268, 422, 413, 411, 282, 417, 411, 331, 259, 411, 444, 413]],
      ["Ünïcödé ÄÖÜ ß ñ ç €", [1, 410, 198, 159, 416, 198, 178, 429, 198, 185, 418, 485, 410, 198, 135, 198, 153, 198, 159, 410, 198, 162, 410, 493, 410, 198, 170, 410, 503]],
    ];
    for (const [text, ids] of cases) expect(tok.encode(text)).toEqual(ids);
  });

  it('turns byte pieces into raw bytes and joins a character spread over several', () => {
    expect(Array.from(tok.decodePiece(0, 0x41 + 3))).toEqual([0x41]);
    expect(tok.decode([0xe2 + 3, 0x98 + 3, 0x83 + 3])).toBe('☃');
    expect(tok.decode([0xf0 + 3, 0x9f + 3, 0x98 + 3, 0x80 + 3])).toBe('😀');
    expect(tok.decode([0xe2 + 3, 0x98 + 3])).toBe('\ufffd'); // incomplete character
  });

  it('matches a literal translation of run.c encode and round-trips any text', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), fc.boolean(), (s, bos) => {
        const ids = tok.encode(s, { bos });
        expect(ids).toEqual(runcEncode(tok, s, bos));
        for (const id of ids) expect(id >= 0 && id < 512).toBe(true);
        if (bos) expect(tok.decode(ids)).toBe(s);
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.stringMatching(/^[a-zA-Z ,.!?'"\n]{0,60}$/), (s) => {
        expect(tok.encode(s)).toEqual(runcEncode(tok, s, true));
        expect(tok.decode(tok.encode(s))).toBe(s);
      }),
      { numRuns: 300 },
    );
  });
});

describe('encode on a hand-made vocabulary', () => {
  it('merges the highest-scoring pair first, the leftmost on ties, and never at or below -1e10', () => {
    const t = smallTokenizer([[0, ' '], [0, 'a'], [0, 'b'], [-1, 'ab'], [5, 'ba'], [2, ' a'], [9, 'aa'], [-1e10, 'bb']]);
    const id = (p: string) => t.pieceId(p);
    // " abab": pairs " a"(2) "ab"(-1) "ba"(5) → "ba" first, then " a" + "ba"? not a piece; " a" stays.
    expect(t.encode('abab', { bos: false })).toEqual([id(' a'), id('ba'), id('b')]);
    // "aaa": "aa"(9) twice possible, the leftmost wins → " " … with " a"(2) lower.
    expect(t.encode('aaa', { bos: false })).toEqual([id(' '), id('aa'), id('a')]);
    // "bb" has score -1e10: run.c's strict `> -1e10` never takes it.
    expect(t.encode('bb', { bos: false })).toEqual([id(' '), id('b'), id('b')]);
    for (const s of ['abab', 'aaa', 'bb', 'ab ba aab', 'bbaabb']) expect(t.encode(s)).toEqual(runcEncode(t, s, true));
  });

  it('groups UTF-8 bytes into characters of at most 4 bytes, as run.c', () => {
    const t = smallTokenizer([[0, ' '], [0, '\xc3\xa9']]); // "é"
    expect(t.encode('é', { bos: false })).toEqual([t.pieceId(' '), t.pieceId('é')]);
    // Invalid UTF-8: a lead byte followed by 5 continuation bytes → a 4-byte chunk, then 1 byte.
    const bytes = Uint8Array.of(0xf0, 0x80, 0x80, 0x80, 0x80, 0x80);
    expect(t.encode(bytes, { bos: false })).toEqual([t.pieceId(' '), ...Array.from(bytes, (b) => b + 3)]);
  });

  it('skips the dummy prefix when the vocabulary has no " " piece', () => {
    const t = smallTokenizer([[0, 'a']]);
    expect(t.encode('a')).toEqual([1, t.pieceId('a')]);
  });
});

describe('tokenizer file errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'invarx-tok-'));
  const good = readFileSync(TOKENIZER_PATH);
  const expectError = (f: () => unknown, re: RegExp) => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(InvarxError);
      expect((e as Error).message).toMatch(re);
      return;
    }
    throw new Error('expected an InvarxError');
  };

  it('names a missing file', () => {
    expectError(() => loadTokenizer(join(dir, 'nope.bin')), /cannot read tokenizer file .*nope\.bin: ENOENT/);
  });

  it('rejects truncated files', () => {
    const p = join(dir, 'cut.bin');
    writeFileSync(p, good.subarray(0, good.length - 3));
    expectError(() => loadTokenizer(p, 512), /cut\.bin: truncated in piece 511/);
    writeFileSync(p, good.subarray(0, 2));
    expectError(() => loadTokenizer(p), /too short/);
  });

  it('rejects a file that is not a tokenizer and one of another vocabulary', () => {
    expectError(() => loadTokenizer(MODEL_PATH, 512), /stories260K\.bin: not a llama2\.c tokenizer/);
    expectError(() => parseTokenizer(good, 32000, 'tok512.bin'), /has 512 pieces but the model's vocabulary has 32000/);
  });

  it('finds the tokenizer beside the model', () => {
    expect(tokenizerPathFor(MODEL_PATH)).toBe(TOKENIZER_PATH);
    expect(tokenizerPathFor(MODEL_PATH, '/x/t.bin')).toBe('/x/t.bin');
    writeFileSync(join(dir, 'tokenizer.bin'), good);
    expect(tokenizerPathFor(join(dir, 'model.bin'))).toBe(join(dir, 'tokenizer.bin'));
    expect(tokenizerPathFor(dir)).toBe(join(dir, 'tokenizer.bin'));
    const empty = mkdtempSync(join(tmpdir(), 'invarx-tok-'));
    expectError(() => tokenizerPathFor(join(empty, 'model.bin')), /no tokenizer beside .*model\.bin .*--tokenizer/);
  });
});
