import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../search/config';
import type { RunConfig } from '../../search/contract';
import { createSearchJob } from '../../search/run';
import { loadModel } from '../../core/model/load';
import { MODEL_PATH } from '../helpers';

const tuning = { calibSeqs: 4, validSeqs: 2, evalSeqs: 4, seqTokens: 64, blockSteps: 4 };

function config(over: Partial<RunConfig> = {}): RunConfig {
  return { ...DEFAULT_CONFIG, model: MODEL_PATH, bits: 3, group: 32, steps: 1000, patience: 0, ...over };
}

describe('the time budget bounds the whole run', () => {
  it('with no time left, the sets are cut to their minimum, scale initialisation, the search and the norm-gain and final-norm tuning stop at once and the report keeps only FP and searched, saying what it cut', async () => {
    const job = await createSearchJob(config({ timeBudget: 1e-6 }), { tuning: { ...tuning, normTune: true } });
    while (!job.done) await job.step();
    const p = job.progress();
    expect(p.stopReason).toBe('time');
    expect(p.step).toBeLessThanOrEqual(1);
    const r = await job.report();
    expect(r.cut).toEqual([
      'calibration set 2 of 4 sequences (time budget)', 'validation set 1 of 2 sequences (time budget)', 'evaluation set 2 of 4 sequences (time budget)',
      'scale-init from block 0', 'norm-gain tuning from block 0 (time budget)', 'final-norm tuning (time budget)', 'report row baseClip', 'report row rtn',
    ]);
    expect((job.snapshot() as unknown as { moves: { norms?: unknown; finalNorm?: unknown }[] }).moves.some((m) => m.norms || m.finalNorm)).toBe(false);
    expect(Number.isNaN(r.rtn.ppl) && Number.isNaN(r.baseClip.ppl) && Number.isNaN(r.closes)).toBe(true);
    expect(Number.isFinite(r.searched.ppl) && Number.isFinite(r.fp.ppl)).toBe(true);
    expect(Object.keys(r.phases!)).toEqual(['tokens', 'calibration', 'base', 'scale-init', 'search', 'norm-tune', 'report']);
    expect(Object.values(r.phases!).every((s) => s >= 0)).toBe(true);
    expect(r.candidates).toBe(p.candidates);
    await job.close();
  });

  it('without a budget nothing is cut, and progress names the phase and counts candidates', async () => {
    const job = await createSearchJob(config({ steps: 4 }), { tuning: { ...tuning, scaleInit: false } });
    expect(job.progress().phase).toBe('search');
    while (!job.done) await job.step();
    const r = await job.report();
    expect(r.cut).toBeUndefined();
    expect(Number.isFinite(r.rtn.ppl) && Number.isFinite(r.baseClip.ppl)).toBe(true);
    expect(r.candidates).toBe(4 * DEFAULT_CONFIG.candidates);
    expect(job.progress().phase).toBe('done');
    await job.close();
  });

  it('activations past the memory budget go to the scratch directory, which close removes; the result does not change', async () => {
    const scratch = join(mkdtempSync(join(tmpdir(), 'invarx-budget-')), 'scratch');
    const small = await createSearchJob(config({ steps: 8, memoryBudget: 1 }), { tuning: { ...tuning, scaleInit: false }, scratchDir: scratch });
    while (!small.done) await small.step();
    expect(readdirSync(scratch).sort()).toEqual(['fp', 'q']);
    const big = await createSearchJob(config({ steps: 8 }), { tuning: { ...tuning, scaleInit: false } });
    while (!big.done) await big.step();
    expect(small.snapshot()).toEqual(big.snapshot());
    expect((await small.report()).searched).toEqual((await big.report()).searched);
    await small.close();
    await big.close();
    expect(existsSync(scratch)).toBe(false);
  });

  it('the final evaluation first writes out the calibration rows when they hold over half their share of the budget; the table does not change', async () => {
    const cfg = loadModel(MODEL_PATH).config;
    const rowBytes = tuning.calibSeqs * tuning.seqTokens * cfg.dim * 4; // one block boundary's rows
    // an eighth of the budget for the rows, half of it each for the L+1 FP and the L quantized-input keys: all fit
    const fits = 12 * (2 * cfg.nLayers + 1) * rowBytes;
    const run = async (memoryBudget: number) => {
      const scratch = join(mkdtempSync(join(tmpdir(), 'invarx-spill-')), 'scratch');
      const job = await createSearchJob(config({ steps: 8, memoryBudget }), { tuning: { ...tuning, scaleInit: false }, scratchDir: scratch });
      while (!job.done) await job.step();
      const before = existsSync(join(scratch, 'fp'));
      const r = await job.report();
      const after = existsSync(join(scratch, 'fp')) ? readdirSync(join(scratch, 'fp')).length : 0;
      await job.close();
      return { before, after, r };
    };
    const tight = await run(fits);
    expect(tight.before).toBe(false);
    expect(tight.after).toBe(cfg.nLayers + 1);
    // with twice the budget the rows hold under half their share: they stay in memory
    const roomy = await run(2 * fits);
    expect(roomy.after).toBe(0);
    for (const k of ['fp', 'rtn', 'base', 'baseClip', 'searched'] as const) expect(tight.r[k]).toEqual(roomy.r[k]);
  });
});
