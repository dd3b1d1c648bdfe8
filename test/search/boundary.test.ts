import { describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng';
import { freshBoundary, recordValidation, stopReason } from '../../search/boundary';
import { DEFAULT_CONFIG } from '../../search/config';
import type { RunConfig } from '../../search/contract';

const config: RunConfig = { ...DEFAULT_CONFIG, model: 'm.bin', bits: 3, group: 32, steps: 100, patience: 2 };

/** A 12-block run's record after `checks` validation checks without improvement, with stints on blocks `visited`. */
function record(checks: number, visited: number[]) {
  const b = freshBoundary('h', Rng.fromSeed(1).state(), 12, { calibSeqs: 1, validSeqs: 1, evalSeqs: 1 });
  b.startLoss = new Array(12).fill(1);
  b.blockLoss = new Array(12).fill(1);
  recordValidation(b, 1, 12);
  for (let c = 0; c < checks; c++) recordValidation(b, 2, 12, c % 12);
  for (const l of visited) b.lastVisit[l] = l;
  return b;
}

describe('stopReason', () => {
  it('stops on patience only once every block has had a stint', () => {
    const first = Array.from({ length: 8 }, (_, l) => l);
    const all = Array.from({ length: 12 }, (_, l) => l);
    expect(record(5, first).checksSinceBest).toBe(5);
    expect(stopReason(record(5, first), config, false)).toBeUndefined();
    expect(stopReason(record(5, all), config, false)).toBe('patience');
    expect(stopReason(record(1, all), config, false)).toBeUndefined();
    expect(stopReason(record(5, all), { ...config, patience: 0 }, false)).toBeUndefined();
  });

  it('stops on the step and time budgets whatever the blocks visited', () => {
    const b = record(0, []);
    expect(stopReason(b, config, true)).toBe('time');
    b.step = config.steps;
    expect(stopReason(b, config, false)).toBe('steps');
  });
});
