import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { DEFAULT_TUNING, resolveTuning } from '../../search/config';
import { nextBlock } from '../../search/schedule';

describe('block schedule', () => {
  it('round robin cycles through the blocks', () => {
    const r = { lastGain: [], lastVisit: [-1, -1, -1], stint: 0 };
    expect([0, 1, 2].map((b) => nextBlock('round-robin', b, r, 3))).toEqual([1, 2, 0]);
  });

  it('by gain: every block once in order, then the largest last gain, ties to the least recent', () => {
    const L = 4;
    const r = { lastGain: [] as number[], lastVisit: [-1, -1, -1, -1], stint: 0 };
    const gains = [0.01, 0.05, 0.0, 0.02];
    let b = 0;
    const order = [b];
    for (let stint = 0; stint < 6; stint++) {
      r.lastGain[b] = gains[b];
      r.lastVisit[b] = stint;
      r.stint = stint + 1;
      b = nextBlock('gain', b, r, L);
      order.push(b);
      gains[b] /= 2; // a block's gain shrinks as it is worked on
    }
    // Recorded gains 0.01, 0.025, 0, 0.01 on the first visits (each halved as it is picked);
    // then 1 (0.025), 1 again (0.0125 > 0.01), then 0 and 3 tie at 0.01: 0 is less recent.
    expect(order).toEqual([0, 1, 2, 3, 1, 1, 0]);
    // Equal gains: the least recently visited wins.
    expect(nextBlock('gain', 0, { lastGain: [0, 0, 0], lastVisit: [5, 3, 4], stint: 6 }, 3)).toBe(1);
  });

  it('by gain: a block left alone for 2·nLayers stints is taken first; the result is always a block', () => {
    const r = { lastGain: [0.9, 0.0, 0.5], lastVisit: [12, 5, 11] };
    expect(nextBlock('gain', 0, { ...r, stint: 10 }, 3)).toBe(0); // block 1 idle 5 stints < 6: largest gain
    expect(nextBlock('gain', 0, { ...r, stint: 11 }, 3)).toBe(1); // idle 6 = 2·nLayers: starved
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.double({ noNaN: true }), fc.integer({ min: -1, max: 50 })), { minLength: 1, maxLength: 12 }), fc.nat(60), (rows, stint) => {
        const b = nextBlock('gain', 0, { lastGain: rows.map((r) => r[0]), lastVisit: rows.map((r) => r[1]), stint }, rows.length);
        expect(Number.isInteger(b) && b >= 0 && b < rows.length).toBe(true);
      }),
    );
  });
});

describe('tuning', () => {
  const err = (over: Record<string, unknown>) => {
    try {
      resolveTuning(over as never);
    } catch (e) {
      expect(e).toBeInstanceOf(InvarxError);
      return (e as Error).message;
    }
    return null;
  };

  it('merges overrides onto the defaults', () => {
    expect(resolveTuning({ accept: 'anneal', blockSteps: 5 })).toEqual({ ...DEFAULT_TUNING, accept: 'anneal', blockSteps: 5 });
  });

  it('refuses unknown keys, wrong types, unknown choices and impossible numbers in one sentence each', () => {
    expect(err({ blokSteps: 5 })).toMatch(/unknown tuning key "blokSteps"/);
    expect(err({ blockSteps: '5' })).toMatch(/tuning blockSteps must be a number/);
    expect(err({ accept: 'metropolis' })).toMatch(/tuning accept must be one of greedy, anneal/);
    expect(err({ blockSteps: 0 })).toMatch(/tuning blockSteps must be an integer in \[1, /);
    expect(err({ blockSteps: 2.5 })).toMatch(/must be an integer/);
    expect(err({ unitFraction: 1.5 })).toMatch(/tuning unitFraction must be a number in \[0, 1\]/);
    expect(err({ temperature: Number.NaN })).toMatch(/tuning temperature must be a number/);
    expect(err({ clip: 1 })).toMatch(/tuning clip must be a boolean/);
  });
});
