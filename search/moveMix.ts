/**
 * The adaptive move mix: which kind of invariance move (an attention invariance, or 'ffn')
 * a candidate is, in proportion to the gain per proposal that kind has had on this block
 * so far. Measured per kind, the gains differ by more than ten times (on the shipped model
 * at W4 a head permutation gains about 1e-5 of the block loss per proposal, a q/k rotation
 * 4e-4) and they change with the bit width and the block, so fixed shares spend steps where
 * they do not pay. Each kind's rate starts from a prior (the block's mean rate over every
 * kind, worth PRIOR_PROPOSALS proposals) and a share FLOOR of the draws stays uniform, so
 * no kind is ever starved. The record read (the run's moveStats) is part of every
 * snapshot, so the choice is a function of the seed, as the draws are.
 */
import type { MoveStats } from './contract';

export interface MixContext {
  stats: MoveStats | undefined;
  block: number;
}

/** Proposals' worth of weight of the prior rate. */
const PRIOR_PROPOSALS = 8;
/** Share of draws spread evenly over the kinds. */
const FLOOR = 0.25;

/** The probability of each of `kinds` on block l. */
export function mixShares(kinds: readonly string[], stats: MoveStats | undefined, l: number): number[] {
  const n = kinds.length;
  const seen = kinds.map((k) => ({ p: stats?.[k]?.proposed[l] ?? 0, g: Math.max(0, stats?.[k]?.gain[l] ?? 0) }));
  const P = seen.reduce((s, x) => s + x.p, 0);
  const G = seen.reduce((s, x) => s + x.g, 0);
  if (!(P > 0 && G > 0)) return kinds.map(() => 1 / n);
  const prior = G / P;
  const rate = seen.map((x) => (x.g + PRIOR_PROPOSALS * prior) / (x.p + PRIOR_PROPOSALS));
  const total = rate.reduce((s, r) => s + r, 0);
  // (gains so small that the rates underflow: as if there were none)
  if (!(total > 0)) return kinds.map(() => 1 / n);
  return rate.map((r) => (1 - FLOOR) * (r / total) + FLOOR / n);
}

/** The kind the uniform number u ∈ [0, 1) picks on block l. */
export function pickKind(kinds: readonly string[], stats: MoveStats | undefined, l: number, u: number): string {
  const shares = mixShares(kinds, stats, l);
  let acc = 0;
  for (let i = 0; i < kinds.length; i++) {
    acc += shares[i];
    if (u < acc) return kinds[i];
  }
  return kinds[kinds.length - 1];
}
