import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng';
import { rtnLinears } from '../../search/baseRtn';
import { SearchBlocks } from '../../search/blocks';
import { ALL_INVARIANCES, DEFAULT_CONFIG, DEFAULT_TUNING } from '../../search/config';
import type { RunConfig } from '../../search/contract';
import { drawMove } from '../../search/proposals';
import { createSearchJob } from '../../search/run';
import { MODEL_PATH, shippedModel } from '../helpers';

const bitsOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBlock = (a: object, b: object) =>
  Object.keys(a).length === Object.keys(b).length &&
  Object.entries(a).every(([k, v]) => (v === undefined ? (b as Record<string, unknown>)[k] === undefined : bitsOf(v).equals(bitsOf((b as Record<string, Float32Array>)[k]))));

describe('search blocks past the weight budget', () => {
  const model = shippedModel();
  const cfg = model.config;
  const spec = { bits: 3, group: 32, clip: true, f16Scales: true };

  it('rebuilds transformed blocks from FP + moves and packs quantized ones, bit for bit what float arrays hold', () => {
    const floats = new SearchBlocks(model, spec);
    const tight = new SearchBlocks(model, spec, 0);
    const rng = Rng.fromSeed(5);
    const on = new Set(ALL_INVARIANCES);
    for (let i = 0; i < 40; i++) {
      const l = i % cfg.nLayers;
      const t = drawMove(cfg, rng, on, DEFAULT_TUNING, spec.group).transforms;
      floats.apply(l, t);
      tight.apply(l, t);
      if (i === 20) tight.setTransformed(2, tight.transformed(2)); // pinned: kept while others come and go
    }
    for (let l = 0; l < cfg.nLayers; l++) {
      expect(sameBlock(tight.transformed(l), floats.transformed(l))).toBe(true);
      const q = { ...floats.transformed(l), ...rtnLinears(cfg, floats.transformed(l), spec) };
      floats.setQuantized(l, q);
      tight.setQuantized(l, { ...q });
    }
    for (let l = cfg.nLayers - 1; l >= 0; l--) expect(sameBlock({ ...tight.quantized(l) }, floats.quantized(l))).toBe(true);
    expect(tight.versions(cfg.nLayers)).toEqual(floats.versions(cfg.nLayers));
    // 3-bit codes in groups of 32: 1 + 4·8/32 = 2 bytes a linear weight instead of 4
    expect(tight.quantizedBytes()).toBeLessThan(0.6 * floats.quantizedBytes());
    // a new quantized block replaces the unpacked one
    const changed = { ...floats.quantized(1), wq: floats.quantized(1).wq.map((v) => -v) };
    tight.setQuantized(1, changed);
    expect(sameBlock({ ...tight.quantized(1) }, changed)).toBe(true);
  });

  describe('a whole run with no room for float weights', () => {
    const dirs: string[] = [];
    afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
    const tuning = { calibSeqs: 4, validSeqs: 2, evalSeqs: 4, seqTokens: 64, blockSteps: 4 };
    const config: RunConfig = { ...DEFAULT_CONFIG, model: MODEL_PATH, bits: 3, group: 32, base: 'gptq', steps: 12, patience: 0 };

    async function exported(over: Partial<RunConfig>) {
      const job = await createSearchJob({ ...config, ...over }, { tuning });
      while (!job.done) await job.step();
      const dir = mkdtempSync(join(tmpdir(), 'invarx-blocks-'));
      dirs.push(dir);
      await job.exportTo(dir);
      const report = await job.report();
      await job.close();
      const files = readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(dir.length));
      return { report, files: Object.fromEntries(files.sort().map((f) => [f, readFileSync(join(dir, f))])) };
    }

    it('(scale initialisation, GPTQ base) gives the same report and export bytes as one with room', async () => {
      const roomy = await exported({});
      const tight = await exported({ memoryBudget: 1 });
      expect(tight.report.searched).toEqual(roomy.report.searched);
      expect(tight.report.history).toEqual(roomy.report.history);
      expect(Object.keys(tight.files)).toEqual(Object.keys(roomy.files));
      for (const f of Object.keys(roomy.files)) expect(tight.files[f].equals(roomy.files[f]), f).toBe(true);
    });
  });
});
