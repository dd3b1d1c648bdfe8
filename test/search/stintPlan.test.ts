import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DEFAULT_CONFIG } from '../../search/config';
import type { SearchSnapshot } from '../../search/contract';
import { createSearchJob } from '../../search/run';
import { planStint, searchFloor, type StintCosts } from '../../search/stintPlan';
import { MODEL_PATH } from '../helpers';

// the 1B shape as measured: 22 blocks, a 4-candidate step ~4 s, a stint's set-up and re-quantization ~20 s, a check ~22 s
const big: StintCosts = { secondsLeft: 1100, unvisited: 22, nLayers: 22, stepSeconds: 4, stintSeconds: 20, validationSeconds: 22 };

describe('stint plan under a time budget', () => {
  it('without a budget: blockSteps, every stint checked', () => {
    expect(planStint(false, 25, big)).toEqual({ steps: 25, checkEvery: 1 });
    expect(planStint(true, 25)).toEqual({ steps: 25, checkEvery: 1 });
  });

  it('at 1B: every unvisited block gets a stint within the time left, checks at most a fifth of it', () => {
    const p = planStint(true, 25, big);
    expect(p.steps).toBeGreaterThanOrEqual(1);
    expect(p.steps).toBeLessThan(25);
    const stint = p.steps * big.stepSeconds + big.stintSeconds + big.validationSeconds / p.checkEvery;
    expect(big.unvisited * stint).toBeLessThanOrEqual(big.secondsLeft);
    expect(p.checkEvery).toBeGreaterThan(1);
    expect(big.validationSeconds / p.checkEvery).toBeLessThanOrEqual(0.2 * (big.secondsLeft / big.unvisited));
  });

  it('plenty of time: blockSteps, every stint checked', () => {
    expect(planStint(true, 25, { ...big, secondsLeft: 1e6 })).toEqual({ steps: 25, checkEvery: 1 });
  });

  it('for any costs: 1 ≤ steps ≤ blockSteps, 1 ≤ checkEvery ≤ the stints to share, and the steps fit when the floor does', () => {
    fc.assert(
      fc.property(
        fc.record({
          secondsLeft: fc.double({ min: -100, max: 1e5, noNaN: true }),
          unvisited: fc.integer({ min: 0, max: 40 }),
          nLayers: fc.integer({ min: 1, max: 40 }),
          stepSeconds: fc.double({ min: 0, max: 100, noNaN: true }),
          stintSeconds: fc.double({ min: 0, max: 100, noNaN: true }),
          validationSeconds: fc.double({ min: 0, max: 100, noNaN: true }),
        }),
        fc.integer({ min: 1, max: 50 }),
        (c, blockSteps) => {
          const p = planStint(true, blockSteps, c);
          expect(Number.isInteger(p.steps) && p.steps >= 1 && p.steps <= blockSteps).toBe(true);
          const stints = Math.max(1, c.unvisited > 0 ? c.unvisited : c.nLayers);
          expect(Number.isInteger(p.checkEvery) && p.checkEvery >= 1 && p.checkEvery <= stints).toBe(true);
          if (c.unvisited > 0 && c.secondsLeft >= searchFloor(c)) {
            const stint = p.steps * c.stepSeconds + c.stintSeconds + c.validationSeconds / p.checkEvery;
            expect(c.unvisited * stint).toBeLessThanOrEqual(c.secondsLeft * (1 + 1e-9) + 1e-9);
          }
        },
      ),
    );
  });
});

describe('a resumed run keeps the stint plan of its snapshot', () => {
  it('stints of the planned length, checks on the planned cadence', async () => {
    const tuning = { calibSeqs: 4, validSeqs: 2, evalSeqs: 4, seqTokens: 64, blockSteps: 4, scaleInit: false };
    const config = { ...DEFAULT_CONFIG, model: MODEL_PATH, bits: 3, group: 32, steps: 40, patience: 0 };
    const first = await createSearchJob(config, { tuning });
    const snap = first.snapshot() as unknown as { stintPlan: unknown; stint: number; history: unknown[] };
    expect(snap.stintPlan).toEqual({ steps: 4, checkEvery: 1 });
    await first.close();
    snap.stintPlan = { steps: 3, checkEvery: 2 };
    const job = await createSearchJob(config, { tuning, resumeFrom: snap as unknown as SearchSnapshot });
    for (let i = 0; i < 3; i++) await job.step();
    const after = job.snapshot() as unknown as { step: number; stint: number; block: number; history: { step: number }[] };
    // one stint of 3 steps, the first of the cadence of 2: not checked; the next plan is the tuning's again (no budget)
    expect([after.step, after.stint, after.block]).toEqual([3, 1, 1]);
    expect(after.history.map((h) => h.step)).toEqual([0]);
    await job.close();
  });
});
