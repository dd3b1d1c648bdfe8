import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { sampleTokens } from '../../core/data';
import { writeLlamaGguf } from '../../core/gguf';
import { formatByName } from '../../core/quant/formats';
import { applyTransforms } from '../../core/invariance';
import { perplexity } from '../../core/metrics';
import { loadGgufModel } from '../../core/model/gguf';
import { cloneBlock } from '../../core/model/types';
import { formatView, quantizedView } from '../../core/quant/view';
import { loadTokenizer } from '../../core/tokenizer';
import { ensureBuilt, expectUserError, invarx } from '../cli/cli';
import { shippedModel, TOKENIZER_PATH } from '../helpers';

const model = 'models/stories260K.bin';
const dir = mkdtempSync(join(tmpdir(), 'invarx-gguf-cli-'));
const m = shippedModel();
const held = sampleTokens(m, { count: 3, length: 48, seed: 31 });
const heldPath = join(dir, 'held.json');
writeFileSync(heldPath, JSON.stringify(held));
beforeAll(() => ensureBuilt());
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('invarx export-gguf and eval on GGUF', () => {
  it('export-gguf writes the same file as the library, reports fallbacks, and eval scores the GGUF as the library does', () => {
    const out = join(dir, 'q4_1.gguf');
    const r = invarx('export-gguf', '--model', model, '--format', 'q4_1', '--out', out);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/wrote .*q4_1\.gguf/);
    expect(r.stdout).toMatch(/blk\.0\.ffn_down\.weight: rows of 172 .* written as f16/);
    const lib = join(dir, 'lib.gguf');
    writeLlamaGguf(m, loadTokenizer(TOKENIZER_PATH, 512), lib, { format: 'q4_1' });
    expect(readFileSync(out).equals(readFileSync(lib))).toBe(true);

    const e = invarx('eval', '--model', out, '--tokens', heldPath, '--method', 'fp', '--json');
    expect(e.code).toBe(0);
    const want = perplexity(loadGgufModel(out), held).ppl;
    expect(Math.abs(JSON.parse(e.stdout).fp.ppl - want) / want).toBeLessThan(1e-4);
    const again = invarx('export-gguf', '--model', model, '--format', 'q4_1', '--out', out);
    expectUserError(again, /exists; pass --force/);
  });

  it('--transforms applies the accepted moves first: an exact FFN permutation leaves the f32 GGUF computing the same function', () => {
    const perm = Int32Array.from({ length: 172 }, (_, i) => (i * 37) % 172);
    const transforms = [{ kind: 'ffn-perm', units: Int32Array.from({ length: 172 }, (_, i) => i), from: perm }];
    const tPath = join(dir, 'transforms.msgpack');
    writeFileSync(tPath, new Packr({ moreTypes: true }).pack({ config: {}, moves: [{ block: 1, step: 1, transforms }] }));
    const out = join(dir, 'perm.gguf');
    const r = invarx('export-gguf', '--model', model, '--transforms', tPath, '--format', 'f32', '--out', out);
    expect(r.code).toBe(0);
    const back = loadGgufModel(out);
    const b1 = cloneBlock(m.blocks[1]);
    applyTransforms(m.config, b1, transforms as never);
    expect(back.blocks[1].w2).toEqual(b1.w2);
    expect(back.blocks[1].w2).not.toEqual(m.blocks[1].w2);
    const a = perplexity(back, held).ppl;
    const b = perplexity(m, held).ppl;
    expect(Math.abs(a - b) / b).toBeLessThan(1e-5);

    writeFileSync(tPath, Buffer.from('not msgpack at all'));
    expectUserError(invarx('export-gguf', '--model', model, '--transforms', tPath, '--format', 'q4_0', '--out', join(dir, 'x.gguf')), /transforms/);
  });

  it('eval on a truncated or malformed GGUF: one clear error line, exit 1', () => {
    const good = readFileSync(join(dir, 'q4_1.gguf'));
    const cut = join(dir, 'cut.gguf');
    writeFileSync(cut, good.subarray(0, Math.floor(good.length / 2)));
    const r = invarx('eval', '--model', cut, '--tokens', heldPath, '--method', 'fp');
    expectUserError(r, /cut\.gguf: truncated GGUF/);
    const bad = join(dir, 'bad.gguf');
    const b = Buffer.from(good);
    b.writeUInt32LE(0xdeadbeef, 0);
    writeFileSync(bad, b);
    expectUserError(invarx('eval', '--model', bad, '--tokens', heldPath, '--method', 'fp'), /bad\.gguf: not a GGUF file/);
    expectUserError(invarx('export-gguf', '--model', model, '--format', 'q9_9', '--out', join(dir, 'y.gguf')), /unknown GGUF format "q9_9"/);
  });

  it('eval --format scores the rtn row in a ggml format (the linears of a GGUF in that format) and the gptq row (GPTQ on its grid), as the library computes', () => {
    const view = formatView(m, formatByName('q4_0'));
    const gguf = join(dir, 'q4_0-f32embed.gguf');
    writeLlamaGguf(m, loadTokenizer(TOKENIZER_PATH, 512), gguf, { format: 'q4_0', embed: 'f32' });
    const back = loadGgufModel(gguf);
    for (let l = 0; l < m.config.nLayers; l++) {
      for (const k of ['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as const) expect(view.blocks[l][k]).toEqual(back.blocks[l][k]);
    }
    const r = invarx('eval', '--model', model, '--tokens', heldPath, '--method', 'fp,rtn', '--format', 'q4_0', '--json');
    expect(r.code).toBe(0);
    const want = perplexity(view, held).ppl;
    expect(Math.abs(JSON.parse(r.stdout).rtn.ppl - want) / want).toBeLessThan(1e-4);
    // the gptq row: GPTQ on the format's grid, as the library's view computes it on the same calibration tokens
    const calib = sampleTokens(m, { count: 4, length: 48, seed: 32 });
    const calibPath = join(dir, 'calib.json');
    writeFileSync(calibPath, JSON.stringify(calib));
    const g = invarx('eval', '--model', model, '--tokens', heldPath, '--calib-tokens', calibPath, '--method', 'rtn,gptq', '--format', 'q4_0', '--json');
    expect(g.code).toBe(0);
    const gptqWant = perplexity(quantizedView(m, { bits: 4, group: 32, method: 'gptq', calib, format: formatByName('q4_0') }), held).ppl;
    const got = JSON.parse(g.stdout);
    expect(Math.abs(got.gptq.ppl - gptqWant) / gptqWant).toBeLessThan(1e-4);
    expect(got.gptq.ppl).not.toBe(got.rtn.ppl);
    expectUserError(invarx('eval', '--model', model, '--tokens', heldPath, '--method', 'fp,rtn', '--format', 'q7_1'), /unknown quantization format "q7_1"/);
  });
});
