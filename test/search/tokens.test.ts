import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { jsOps } from '../../core/ops';
import { loadTokenizer } from '../../core/tokenizer';
import { resolveTuning } from '../../search/config';
import type { RunConfig } from '../../search/contract';
import { tuningSets } from '../../search/plan';
import { resolveTokenSets } from '../../search/tokens';
import { MODEL_PATH, shippedModel, TOKENIZER_PATH } from '../helpers';

describe('token sets from text', () => {
  const dir = mkdtempSync(join(tmpdir(), 'invarx-tokens-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const model = shippedModel();
  const text = join(dir, 'calib.txt');
  const docs = ['Once upon a time there was a little dog.', 'The sun was warm and the sky was blue.', 'Tom and Sue went to the park to play.'];
  writeFileSync(text, docs.join('\n') + '\n');
  const base: RunConfig = {
    model: MODEL_PATH, tokenizer: TOKENIZER_PATH, bits: 3, group: 32, base: 'rtn', steps: 1, timeBudget: 0, seed: 1,
    invariances: ['ffn-perm'], candidates: 1, workers: 1, patience: 0,
  };
  const tuning = resolveTuning({ seqTokens: 8, calibSeqs: 3, validSeqs: 1, evalSeqs: 1 });

  it('--calib-text: the documents tokenized from BOS, joined and cut into windows of seqTokens, at most calibSeqs', () => {
    const sets = resolveTokenSets(model, { ...base, calibText: text }, tuning, tuningSets(tuning), jsOps);
    const tok = loadTokenizer(TOKENIZER_PATH, model.config.vocabSize);
    const all = docs.flatMap((d) => tok.encode(d, { bos: true }));
    expect(all.length).toBeGreaterThan(24);
    expect(sets.calib).toEqual([all.slice(0, 8), all.slice(8, 16), all.slice(16, 24)]);
    expect(sets.eval.length).toBe(1); // still sampled
  });

  it('calibTemperature changes only the sampled calibration set; 0 is refused (every sequence would be the same)', () => {
    // long enough to get past the opening words, which the model is all but sure of
    const sizes = { seqTokens: 40, calibSeqs: 3, validSeqs: 1, evalSeqs: 1 };
    const warm = resolveTuning(sizes);
    const plain = resolveTokenSets(model, base, warm, tuningSets(warm), jsOps);
    const cool = resolveTuning({ ...sizes, calibTemperature: 0.5 });
    const sets = resolveTokenSets(model, base, cool, tuningSets(cool), jsOps);
    expect(sets.calib).not.toEqual(plain.calib);
    expect([sets.valid, sets.eval]).toEqual([plain.valid, plain.eval]);
    expect(() => resolveTuning({ calibTemperature: 0 })).toThrow(/calibTemperature/);
  });

  it('tokens and text for the same set, or a text with nothing in it, is one clear error', () => {
    expect(() => resolveTokenSets(model, { ...base, calibText: text, calibTokens: text }, tuning, tuningSets(tuning), jsOps)).toThrow(/not both/);
    const empty = join(dir, 'empty.txt');
    writeFileSync(empty, '');
    expect(() => resolveTokenSets(model, { ...base, evalText: empty }, tuning, tuningSets(tuning), jsOps)).toThrow(/no text/);
  });
});
