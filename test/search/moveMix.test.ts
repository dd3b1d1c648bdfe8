import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { MoveStats } from '../../search/contract';
import { mixShares, pickKind } from '../../search/moveMix';

const KINDS = ['attn-qk-rot', 'attn-head-perm', 'ffn'];

/** A record with `proposed` and summed `gain` per kind on block 1 of 3 (block 0 and 2 empty). */
function stats(rows: Record<string, [number, number]>): MoveStats {
  const out: MoveStats = {};
  for (const [k, [p, g]] of Object.entries(rows)) out[k] = { proposed: [0, p, 0], accepted: [0, p > 0 ? 1 : 0, 0], gain: [0, g, 0] };
  return out;
}

describe('adaptive move mix', () => {
  it('is uniform before the block has a gain', () => {
    expect(mixShares(KINDS, undefined, 0)).toEqual([1 / 3, 1 / 3, 1 / 3]);
    expect(mixShares(KINDS, stats({ ffn: [10, 0] }), 1)).toEqual([1 / 3, 1 / 3, 1 / 3]);
    // another block's record does not count
    expect(mixShares(KINDS, stats({ ffn: [10, 0.5] }), 0)).toEqual([1 / 3, 1 / 3, 1 / 3]);
  });

  it('gives more draws to the kinds that gained more per proposal, never less than the floor', () => {
    const s = stats({ 'attn-qk-rot': [100, 0.04], 'attn-head-perm': [100, 0.001], ffn: [100, 0.016] });
    const [rot, perm, ffn] = mixShares(KINDS, s, 1);
    expect(rot).toBeGreaterThan(ffn);
    expect(ffn).toBeGreaterThan(perm);
    expect(perm).toBeGreaterThanOrEqual(0.25 / 3);
    expect(rot + perm + ffn).toBeCloseTo(1, 12);
  });

  it('shares are a distribution for any record, and pickKind partitions [0, 1) by them', () => {
    const row = fc.tuple(fc.integer({ min: 0, max: 1000 }), fc.double({ min: -1, max: 1, noNaN: true }));
    fc.assert(
      fc.property(row, row, row, fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (a, b, c, u) => {
        const s = stats({ [KINDS[0]]: a, [KINDS[1]]: b, [KINDS[2]]: c });
        const shares = mixShares(KINDS, s, 1);
        for (const x of shares) expect(x).toBeGreaterThanOrEqual(0.25 / 3 - 1e-15);
        expect(shares.reduce((t, x) => t + x, 0)).toBeCloseTo(1, 12);
        // the kind u picks is the one whose interval of the cumulative shares holds u
        const k = KINDS.indexOf(pickKind(KINDS, s, 1, u));
        const below = shares.slice(0, k).reduce((t, x) => t + x, 0);
        expect(u).toBeGreaterThanOrEqual(below);
        if (k < KINDS.length - 1) expect(u).toBeLessThan(below + shares[k]);
      }),
      { numRuns: 300 },
    );
  });
});
