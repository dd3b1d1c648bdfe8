/**
 * A llama2.c tokenizer of any vocabulary size from 259 up, for the random checkpoints of
 * gen-model (./synthetic.ts), so they can be exported to GGUF and run by llama.cpp without
 * a real model's tokenizer. Laid out as the Llama 2 / llama2.c tokenizers are:
 *   0, 1, 2        <unk>, <s>, </s> (llama2.c's export spells BOS / EOS "\n<s>\n", "\n</s>\n")
 *   3 … 258        byte-fallback pieces <0x00> … <0xFF>
 *   259 …          every string over " " and a–z, shortest first, then in alphabet order,
 *                  until the vocabulary is full, scored -0, -1, -2, … in that order
 * Every piece past the first character's is a piece plus one character, so run.c's greedy
 * pair merging can build each of them, and the pieces are all distinct (llama.cpp maps text
 * to ids). Its text quality is as meaningless as the weights'.
 */
import { fail } from '../errors';
import { parseTokenizer, type Tokenizer } from '../tokenizer';

const ALPHABET = ' abcdefghijklmnopqrstuvwxyz';
const SPECIALS = ['<unk>', '\n<s>\n', '\n</s>\n'];
const BYTE_PIECES = 256;
/** The fewest pieces the layout needs (specials and byte fallback: any text encodes). */
export const SYNTHETIC_TOKENIZER_MIN_VOCAB = SPECIALS.length + BYTE_PIECES;

/** The pieces of a synthetic tokenizer of `vocabSize`, in id order, with their scores. */
function syntheticPieces(vocabSize: number): { pieces: string[]; scores: number[] } {
  if (!(Number.isSafeInteger(vocabSize) && vocabSize >= SYNTHETIC_TOKENIZER_MIN_VOCAB)) {
    fail('bad-config', `a synthetic tokenizer needs a vocabulary of at least ${SYNTHETIC_TOKENIZER_MIN_VOCAB} (3 special and 256 byte pieces), got ${vocabSize}`);
  }
  const pieces = [...SPECIALS];
  for (let b = 0; b < BYTE_PIECES; b++) pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const scores = pieces.map(() => 0);
  // Breadth-first over strings: `level` holds all strings of the current length.
  let level = [''];
  let rank = 0;
  while (pieces.length < vocabSize) {
    const next: string[] = [];
    for (const s of level) {
      for (const c of ALPHABET) {
        next.push(s + c);
        if (pieces.length < vocabSize) {
          pieces.push(s + c);
          scores.push(-rank++);
        }
      }
      if (pieces.length >= vocabSize) break;
    }
    level = next;
  }
  return { pieces, scores };
}

/** tokenizer.bin bytes (llama2.c's format, core/tokenizer.ts) of the synthetic tokenizer of `vocabSize`. */
export function syntheticTokenizerBytes(vocabSize: number): Uint8Array {
  const { pieces, scores } = syntheticPieces(vocabSize);
  const encoded = pieces.map((p) => Buffer.from(p, 'utf8'));
  const maxLen = encoded.reduce((m, p) => Math.max(m, p.length), 0);
  const out = Buffer.alloc(4 + encoded.reduce((n, p) => n + 8 + p.length, 0));
  out.writeInt32LE(maxLen, 0);
  let off = 4;
  encoded.forEach((p, i) => {
    out.writeFloatLE(scores[i], off);
    out.writeInt32LE(p.length, off + 4);
    p.copy(out, off + 8);
    off += 8 + p.length;
  });
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** The synthetic tokenizer of `vocabSize`, parsed. */
export function syntheticTokenizer(vocabSize: number): Tokenizer {
  return parseTokenizer(syntheticTokenizerBytes(vocabSize), vocabSize, 'synthetic tokenizer');
}
