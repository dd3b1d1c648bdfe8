/**
 * gen-model's tokenizer (core/model/syntheticTokenizer.ts): the llama2.c layout at any size
 * from 259, distinct pieces, every piece reachable by run.c's merges, and written beside a
 * checkpoint under a name export-gguf finds.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { writeSyntheticCheckpoint } from '../../core/model/synthetic';
import { syntheticTokenizer } from '../../core/model/syntheticTokenizer';
import { loadTokenizer, tokenizerPathFor } from '../../core/tokenizer';

const tmp = mkdtempSync(join(tmpdir(), 'invarx-synthtok-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('synthetic tokenizer', () => {
  const tok = syntheticTokenizer(32000);

  it('has the llama2.c layout: specials, 256 byte pieces, then distinct text pieces', () => {
    expect(tok.vocabSize).toBe(32000);
    expect(Buffer.from(tok.piece(0)).toString()).toBe('<unk>');
    for (let b = 0; b < 256; b++) {
      expect(tok.isBytePiece(3 + b)).toBe(true);
      expect(tok.decodePiece(5, 3 + b)).toEqual(Uint8Array.of(b));
    }
    expect(tok.isBytePiece(259)).toBe(false);
    const pieces = new Set(Array.from({ length: 32000 }, (_, id) => Buffer.from(tok.piece(id)).toString('latin1')));
    expect(pieces.size).toBe(32000);
  });

  it('encodes text to its pieces and back, merging up to the longest pieces, bytes for the rest', () => {
    const text = 'once upon a time, Tom saw 3 cats';
    const ids = tok.encode(text);
    expect(ids[0]).toBe(1);
    expect(tok.decode(ids)).toBe(text);
    // Letters and spaces merge into multi-character pieces; other characters fall back to bytes.
    expect(ids.filter((id) => id >= 259 && tok.piece(id).length >= 3).length).toBeGreaterThan(3);
    expect(ids).toContain(3 + 'T'.charCodeAt(0));
    expect(ids).toContain(3 + ','.charCodeAt(0));
    expect(ids.every((id) => id >= 0 && id < 32000)).toBe(true);
  });

  it('at the smallest size has only the fixed pieces; below it is an error naming the minimum', () => {
    expect(syntheticTokenizer(259).decode(syntheticTokenizer(259).encode('ab'))).toBe('ab');
    expect(() => syntheticTokenizer(258)).toThrow(InvarxError);
    expect(() => syntheticTokenizer(258)).toThrow(/at least 259/);
  });

  it('is written beside a checkpoint, where export commands look for it', () => {
    const dir = join(tmp, 'm');
    const res = writeSyntheticCheckpoint(dir, '260k', { seed: 3 });
    expect(res.files).toContain('tokenizer.bin');
    const path = tokenizerPathFor(dir);
    expect(path).toBe(join(dir, 'tokenizer.bin'));
    expect(loadTokenizer(path, 512).encode('hello')).toEqual(syntheticTokenizer(512).encode('hello'));
  });

  it('is not written for a vocabulary too small for its layout', () => {
    const dir = join(tmp, 'small');
    const res = writeSyntheticCheckpoint(dir, { dim: 8, hiddenDim: 16, nLayers: 1, nHeads: 2, nKvHeads: 2, vocabSize: 100, seqLen: 8, sharedClassifier: true });
    expect(res.files).not.toContain('tokenizer.bin');
  });
});
