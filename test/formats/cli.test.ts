/**
 * `invarx eval --model EXPORT_DIR` reads a packed GPTQ export and reports exactly the
 * perplexity of the fake-quantized model it came from (here: that model written as an FP HF
 * checkpoint, so both runs take the same path through the CLI's backend).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeHfExport } from '../../core/export/fp';
import { writeGptqExport, type BlockQuantized } from '../../core/export/gptq';
import { blockLinears, cloneModel, linearShape } from '../../core/model/types';
import { dequantize, quantizeRtn } from '../../core/quant/rtn';
import { withF16Scales } from '../../core/export/gptq';
import { ensureBuilt, invarx } from '../cli/cli';
import { randomModel, type RandomModelOptions } from '../reference';

const tmp = mkdtempSync(join(tmpdir(), 'invarx-fmt-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => ensureBuilt());

const tokens = join(tmp, 'held.json');
writeFileSync(tokens, JSON.stringify([[1, 5, 9, 3, 17, 30, 2, 11, 7, 39, 40, 41, 4, 6], [2, 2, 8, 47, 0, 13, 19]]));

function evalPpl(dir: string): number {
  const r = invarx('eval', '--model', dir, '--method', 'fp', '--tokens', tokens, '--json');
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout).fp.ppl as number;
}

describe('invarx eval on a GPTQ export', () => {
  const cases: [string, RandomModelOptions][] = [
    ['llama', { arch: 'llama', ropeLayout: 'half', dim: 64, hiddenDim: 96, nHeads: 4, nKvHeads: 2, vocabSize: 48, seed: 3 }],
    ['opt', { arch: 'opt', dim: 64, hiddenDim: 128, nHeads: 4, nKvHeads: 4, vocabSize: 48, seed: 4 }],
  ];
  it.each(cases)('%s: same perplexity as the fake-quantized model', (kind, opts) => {
    const m = randomModel(opts);
    const fake = cloneModel(m);
    const quant: BlockQuantized[] = fake.blocks.map((b) => {
      const bq: BlockQuantized = {};
      for (const name of blockLinears(m.config)) {
        const [rows, cols] = linearShape(m.config, name);
        const qz = withF16Scales(quantizeRtn(b[name]!, rows, cols, { bits: 3, group: 32 }));
        bq[name] = qz;
        b[name] = dequantize(qz);
      }
      return bq;
    });
    const gptqDir = join(tmp, `${kind}-gptq`);
    const fakeDir = join(tmp, `${kind}-fake`);
    writeGptqExport(gptqDir, m, quant);
    writeHfExport(fakeDir, fake);
    const fp = join(tmp, `${kind}-fp`);
    writeHfExport(fp, m);
    const [pq, pf, p0] = [evalPpl(gptqDir), evalPpl(fakeDir), evalPpl(fp)];
    expect(pq).toBe(pf);
    expect(pq).not.toBe(p0); // it really is the quantized model
  });
});

describe('invarx eval --model EXPORT_DIR without held-out tokens', () => {
  it('points to --quantized, since its default held-out set would be sampled from the quantized model', () => {
    const m = randomModel({ arch: 'llama', ropeLayout: 'half', dim: 64, hiddenDim: 64, nHeads: 4, nKvHeads: 2, vocabSize: 48, seed: 5 });
    const quant: BlockQuantized[] = m.blocks.map((b) => {
      const bq: BlockQuantized = {};
      for (const name of blockLinears(m.config)) {
        const [rows, cols] = linearShape(m.config, name);
        bq[name] = withF16Scales(quantizeRtn(b[name]!, rows, cols, { bits: 4, group: 32 }));
      }
      return bq;
    });
    const dir = join(tmp, 'hint-gptq');
    writeGptqExport(dir, m, quant);
    const r = invarx('eval', '--model', dir, '--method', 'fp', '--json');
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`--quantized ${dir}`);
    expect(JSON.parse(r.stdout).fp.ppl).toBeGreaterThan(1);
  });
});
