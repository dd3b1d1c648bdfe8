/**
 * The one-dimensional step of the norm pass and its relatives (normTune.ts,
 * finalNormTune.ts, rowGains.ts): a factor is probed at 1 ± PROBE, then tried at the
 * minimum of the parabola through the three losses, within 1 ± MAX_STEP; the best of the
 * tries is kept only where it lowers the loss.
 */

export const PROBE = 0.02;
export const MAX_STEP = 0.1;

/**
 * The factor at the minimum of the parabola through (1 − PROBE, lo), (1, mid), (1 + PROBE, hi),
 * clamped to 1 ± MAX_STEP; null when it has none (not convex) or it is 1 or a probe, scored already.
 */
export function parabolaMin(lo: number, mid: number, hi: number): number | null {
  const curv = lo + hi - 2 * mid;
  if (!(curv > 0)) return null;
  const k = 1 + (PROBE * (lo - hi)) / (2 * curv);
  const clamped = Math.min(1 + MAX_STEP, Math.max(1 - MAX_STEP, k));
  return clamped === 1 - PROBE || clamped === 1 + PROBE || clamped === 1 ? null : clamped;
}

/** Of the probes' losses lo, hi and the loss lk at the parabola's minimum k (null: not tried), the best factor and its loss when it is below `mid` (the loss at 1); else null. */
export function bestTry(mid: number, lo: number, hi: number, k: number | null, lk: number): { pick: number; loss: number } | null {
  let [pick, loss] = lo < hi ? [1 - PROBE, lo] : [1 + PROBE, hi];
  if (k !== null && lk < loss) [pick, loss] = [k, lk];
  return loss < mid ? { pick, loss } : null;
}

/** bestTry of a factor whose loss is `loss(k)` (`mid` at 1). */
export function bestOfThree(loss: (k: number) => number, mid: number): { pick: number; loss: number } | null {
  const lo = loss(1 - PROBE);
  const hi = loss(1 + PROBE);
  const k = parabolaMin(lo, mid, hi);
  return bestTry(mid, lo, hi, k, k === null ? NaN : loss(k));
}
