import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { syntheticConfig } from '../../core/model/synthetic';
import type { ModelConfig } from '../../core/model/types';
import { snapshotSets } from '../../search/boundary';
import { DEFAULT_CONFIG, DEFAULT_TUNING, resolveTuning } from '../../search/config';
import type { RunConfig } from '../../search/contract';
import { describeCuts, phaseSeconds, planSets, plannedSeconds, tuningSets, type SetPlan } from '../../search/plan';
import { createSearchJob } from '../../search/run';
import { MODEL_PATH, shippedModel } from '../helpers';

const run = (over: Partial<RunConfig> = {}): RunConfig => ({ ...DEFAULT_CONFIG, model: 'm', bits: 4, group: 128, ...over });
const shape = (name: string): ModelConfig => syntheticConfig(name);

/** Predicted seconds of the calibration-sized and held-out-sized work of a plan. */
function predicted(cfg: ModelConfig, config: RunConfig, p: SetPlan) {
  const T = Math.min(DEFAULT_TUNING.seqTokens, cfg.seqLen);
  const s = plannedSeconds(cfg, config, T);
  return { calib: p.calibSeqs * T * s.calib, heldOut: T * (p.validSeqs * s.valid + p.evalSeqs * s.eval) };
}

describe('token sets planned for the time budget', () => {
  it('without a budget the tuning decides; the shipped model keeps its sets under a 2-minute budget', () => {
    expect(planSets(shape('110m'), run(), DEFAULT_TUNING)).toEqual(tuningSets(DEFAULT_TUNING));
    expect(planSets(shippedModel().config, run({ timeBudget: 120 }), DEFAULT_TUNING)).toEqual(tuningSets(DEFAULT_TUNING));
  });

  it('a big model under a budget gets cut sets whose predicted work fits its shares; never below the minimum', () => {
    const cfg = shape('110m');
    const p = planSets(cfg, run({ timeBudget: 900 }), DEFAULT_TUNING);
    expect(p.calibSeqs).toBeLessThan(DEFAULT_TUNING.calibSeqs);
    expect(p.evalSeqs).toBeLessThan(DEFAULT_TUNING.evalSeqs);
    const t = predicted(cfg, run({ timeBudget: 900 }), p);
    expect(t.calib).toBeLessThanOrEqual(0.55 * 900);
    expect(t.heldOut).toBeLessThanOrEqual(0.3 * 900);
    expect(planSets(shape('1b'), run({ timeBudget: 1 }), DEFAULT_TUNING)).toEqual({ calibSeqs: 2, validSeqs: 1, evalSeqs: 2 });
  });

  it('more budget never plans smaller sets, and no set exceeds what the tuning asks', () => {
    const shapes = ['260k', '15m', '110m', '1b'].map(shape);
    fc.assert(
      fc.property(fc.constantFrom(...shapes), fc.double({ min: 1, max: 1e5, noNaN: true }), fc.double({ min: 1, max: 4 }), fc.constantFrom<'rtn' | 'gptq'>('rtn', 'gptq'), (cfg, b, k, base) => {
        const small = planSets(cfg, run({ timeBudget: b, base }), DEFAULT_TUNING);
        const big = planSets(cfg, run({ timeBudget: b * k, base }), DEFAULT_TUNING);
        for (const key of ['calibSeqs', 'validSeqs', 'evalSeqs'] as const) {
          expect(big[key]).toBeGreaterThanOrEqual(small[key]);
          expect(big[key]).toBeLessThanOrEqual(DEFAULT_TUNING[key]);
        }
      }),
    );
  });

  it('phase predictions follow the sets: sampling counts only sampled sets, the base doubles for GPTQ', () => {
    const cfg = shape('110m');
    const sets = { calibSeqs: 8, validSeqs: 2, evalSeqs: 4 };
    const p = phaseSeconds(cfg, run(), DEFAULT_TUNING, sets);
    const twice = phaseSeconds(cfg, run(), DEFAULT_TUNING, { calibSeqs: 16, validSeqs: 4, evalSeqs: 8 });
    for (const k of ['tokens', 'calibration', 'base', 'scale-init', 'report'] as const) {
      expect(p[k]).toBeGreaterThan(0);
      expect(twice[k]! / p[k]!).toBeCloseTo(2, 9);
    }
    const given = phaseSeconds(cfg, run({ calibTokens: 'c.json', evalTokens: 'e.json' }), DEFAULT_TUNING, sets);
    expect(given.tokens! / p.tokens!).toBeCloseTo(2 / 14, 9);
    expect(phaseSeconds(cfg, run({ base: 'gptq' }), DEFAULT_TUNING, sets).base! / p.base!).toBeCloseTo(2, 9);
  });

  it('the report names the sampled sets a plan cut, and only those', () => {
    const t = resolveTuning({ calibSeqs: 8, validSeqs: 4, evalSeqs: 8 });
    const p = { calibSeqs: 2, validSeqs: 4, evalSeqs: 3 };
    expect(describeCuts(p, t, run())).toEqual(['calibration set 2 of 8 sequences (time budget)', 'evaluation set 3 of 8 sequences (time budget)']);
    expect(describeCuts(p, t, run({ evalTokens: 'e.json' }))).toEqual(['calibration set 2 of 8 sequences (time budget)']);
  });

  it('a run records its plan in the snapshot and a resumed run keeps it, whatever its budget now', async () => {
    const tuning = { calibSeqs: 4, validSeqs: 2, evalSeqs: 4, seqTokens: 64, scaleInit: false };
    const cfg = { ...DEFAULT_CONFIG, model: MODEL_PATH, bits: 3, group: 32, steps: 4, patience: 0 };
    const job = await createSearchJob({ ...cfg, timeBudget: 0.2 }, { tuning });
    const snap = job.snapshot();
    const sets = snapshotSets(snap, resolveTuning(tuning));
    expect(sets.calibSeqs).toBe(2);
    await job.close();
    const resumed = await createSearchJob({ ...cfg, timeBudget: 0 }, { tuning, resumeFrom: snap });
    expect(snapshotSets(resumed.snapshot(), resolveTuning(tuning))).toEqual(sets);
    await resumed.close();
    // a snapshot from before plans resumes with the tuning's sizes
    const { sets: _, ...old } = snap;
    expect(snapshotSets(old, resolveTuning(tuning))).toEqual(tuningSets(resolveTuning(tuning)));
  });
});
