import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { sampleTokens } from '../../core/data';
import { evaluateModels } from '../../core/metrics';
import { quantizeModel } from '../../core/quant/model';
import { encodeLlama2c } from '../../core/model/llama2c';
import { randomHf, SMALL, writeHf } from '../formats/hfFixtures';
import { shippedModel, TOKENIZER_PATH } from '../helpers';
import { loadTokenizer } from '../../core/tokenizer';
import { ensureBuilt, expectUserError, invarx } from './cli';

const model = 'models/stories260K.bin';
const dir = mkdtempSync(join(tmpdir(), 'invarx-eval-'));
const m = shippedModel();
// Small sets keep each run well under a second; sampled in-process with other seeds than the defaults.
const held = sampleTokens(m, { count: 4, length: 64, seed: 21 });
const calib = sampleTokens(m, { count: 4, length: 64, seed: 22 });
const heldPath = join(dir, 'held.json');
const calibPath = join(dir, 'calib.txt');
writeFileSync(heldPath, JSON.stringify(held));
writeFileSync(calibPath, calib.map((s) => s.join(' ')).join('\n') + '\n');

beforeAll(() => ensureBuilt());

describe('invarx eval', () => {
  it('--json prints one object with the requested methods, matching the library', () => {
    const r = invarx('eval', '--model', model, '--tokens', heldPath, '--calib-tokens', calibPath, '--bits', '3', '--group', '32', '--json');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(Object.keys(out)).toEqual(['fp', 'rtn', 'gptq']);
    expect(Object.keys(out.fp)).toEqual(['ppl']);
    expect(Object.keys(out.rtn).sort()).toEqual(['kl', 'ppl']);
    expect(Object.keys(out.gptq).sort()).toEqual(['kl', 'ppl']);
    // The same numbers in-process (plain JS; the CLI's wasm backend differs by float32 round-off).
    const rtn = quantizeModel(m, { bits: 3, group: 32, method: 'rtn', f16Scales: true });
    const gptq = quantizeModel(m, { bits: 3, group: 32, method: 'gptq', calib, f16Scales: true });
    const ref = evaluateModels(m, { rtn, gptq }, held);
    expect(out.fp.ppl).toBeCloseTo(ref.fp.ppl, 3);
    expect(out.rtn.ppl).toBeCloseTo(ref.models.rtn.ppl, 2);
    expect(out.rtn.kl).toBeCloseTo(ref.models.rtn.kl, 3);
    expect(out.gptq.ppl).toBeCloseTo(ref.models.gptq.ppl, 2);
    expect(out.gptq.kl).toBeCloseTo(ref.models.gptq.kl, 3);
    expect(out.rtn.ppl).toBeGreaterThan(out.fp.ppl);
  });

  it('prints a table with the share of the RTN gap GPTQ closes', () => {
    const r = invarx('eval', '--model', model, '--tokens', heldPath, '--calib-tokens', calibPath, '--bits', '4');
    expect(r.code).toBe(0);
    const rows = Object.fromEntries(r.stdout.split('\n').map((l) => l.trim().split(/\s+/)).filter((w) => ['fp', 'rtn', 'gptq'].includes(w[0])).map((w) => [w[0], w]));
    expect(r.stdout).toMatch(/4-bit, group 32/);
    expect(r.stdout).toMatch(/held\.json, 252 predicted tokens/);
    expect(rows.fp).toHaveLength(3); // fp, ppl, "-"
    expect(rows.rtn).toHaveLength(3);
    expect(rows.gptq).toHaveLength(4);
    const [fp, rtn, gptq] = [rows.fp[1], rows.rtn[1], rows.gptq[1]].map(Number);
    const closes = (Math.log(rtn) - Math.log(gptq)) / (Math.log(rtn) - Math.log(fp));
    expect(Number(rows.gptq[3].replace('%', ''))).toBeCloseTo(100 * closes, 0);
  });

  it('evaluates only the requested methods, on --text too', () => {
    const text = join(dir, 'stories.txt');
    writeFileSync(text, 'Once upon a time, there was a little girl named Lily.\nTom had a dog named Max. He loved to play.\n');
    const r = invarx('eval', '--model', model, '--text', text, '--method', 'rtn', '--bits', '2', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(Object.keys(out)).toEqual(['rtn']);
    expect(out.rtn.kl).toBeGreaterThan(0);
  });

  it('defaults to the sampled held-out set', () => {
    const r = invarx('eval', '--model', model, '--method', 'fp', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.fp.ppl).toBeGreaterThan(1);
    expect(out.fp.ppl).toBeLessThan(10);
  });

  it('--quantized compares models quantized elsewhere with the FP model, on the same held-out tokens', () => {
    const rtn = quantizeModel(m, { bits: 3, group: 32, method: 'rtn', f16Scales: true });
    const q = join(dir, 'rtn3.bin');
    writeFileSync(q, encodeLlama2c(rtn));
    const r = invarx('eval', '--model', model, '--tokens', heldPath, '--method', 'fp,rtn', '--bits', '3', '--quantized', q, '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(Object.keys(out)).toEqual(['fp', 'rtn', q]);
    // the same weights as the rtn row, so the same figures
    expect(out[q]).toEqual(out.rtn);
    const table = invarx('eval', '--model', model, '--tokens', heldPath, '--method', 'fp,rtn', '--bits', '3', '--quantized', q);
    expect(table.stdout).toMatch(new RegExp(`${q.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s+[\\d.]+\\s+[\\d.]+\\s+0\\.0%`));
  });

  it('--calib-text calibrates GPTQ on the text cut into 256-token windows, as --calib-tokens with those windows does', () => {
    const tok = loadTokenizer(TOKENIZER_PATH, m.config.vocabSize);
    const docs = Array.from({ length: 40 }, (_, i) => `Story ${i}: Once upon a time a little bird named Pip flew over the big green hill.`);
    const textPath = join(dir, 'calib-text.txt');
    writeFileSync(textPath, docs.join('\n') + '\n');
    const ids = docs.flatMap((d) => tok.encode(d, { bos: true }));
    const windows: number[][] = [];
    for (let i = 0; i < ids.length && windows.length < 32; i += 256) windows.push(ids.slice(i, i + 256));
    const windowsPath = join(dir, 'calib-windows.json');
    writeFileSync(windowsPath, JSON.stringify(windows));
    const common = ['--model', model, '--tokens', heldPath, '--method', 'fp,gptq', '--json'];
    const a = invarx('eval', ...common, '--calib-text', textPath);
    const b = invarx('eval', ...common, '--calib-tokens', windowsPath);
    expect(a.code).toBe(0);
    expect(windows.length).toBeGreaterThan(1);
    expect(JSON.parse(a.stdout)).toEqual(JSON.parse(b.stdout));
    expectUserError(invarx('eval', ...common, '--calib-text', textPath, '--calib-tokens', windowsPath), /not both/);
  });

  it('reports user mistakes in one line', () => {
    const other = join(dir, 'other-model');
    writeHf(other, randomHf('llama', { ...SMALL, vocab: 512, dim: 16 }), 'F32');
    const oov = join(dir, 'oov.json');
    writeFileSync(oov, '[[1, 2, 3], [1, 700]]');
    const cases: Array<[string[], RegExp]> = [
      [['--model', join(dir, 'missing.bin')], /cannot read model file/],
      [['--model', 'models/tok512.bin'], /not a llama2\.c model/],
      [['--model', model, '--tokens', oov], /oov\.json: sequence 1, position 1: token id 700 is outside the vocabulary \[0, 512\)/],
      [['--model', model, '--tokens', join(dir, 'none.json')], /cannot read token file .*none\.json/],
      [['--model', model, '--tokens', heldPath, '--text', heldPath], /--tokens or --text, not both/],
      [['--model', model, '--bits', '1'], /--bits must be an integer from 2 to 8, got 1/],
      [['--model', model, '--bits', 'many'], /--bits must be a number, got "many"/],
      [['--model', model, '--group', '0'], /--group must be an integer ≥ 1, got 0/],
      [['--model', model, '--group', '-32'], /--group must be an integer ≥ 1/],
      [['--model', model, '--method', 'fp,awq'], /unknown method "awq"/],
      [['--model', model, '--method', ','], /--method needs at least one/],
      [['--model', model, '--method', 'rtn', '--calib-tokens', calibPath], /--calib-tokens and --calib-text only apply to --method gptq/],
      [['--model', model, '--text', heldPath, '--tokenizer', model], /not a llama2\.c tokenizer/],
      [['--model', model, '--quantized', join(dir, 'missing.bin')], /cannot read model file/],
      [['--model', model, '--quantized', 'rtn'], /clashes with a method name/],
      [['--model', model, '--quantized', ','], /--quantized names no model/],
      [['--model', model, '--quantized', other], /--quantized .*: dim is 16, the FP model's is 64; not a quantization of it/],
    ];
    for (const [args, re] of cases) expectUserError(invarx('eval', ...args), re);
  });
});
