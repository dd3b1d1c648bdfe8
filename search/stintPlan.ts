/**
 * How long the next stint is, and whether it ends in a validation check, under a time
 * budget. Without one a stint is `blockSteps` steps and every stint is checked (the
 * shipped model's runs). With one, a run on a big model affords a few dozen steps in all,
 * so `blockSteps` would spend them on the first block; the steps are shared out instead so
 * that every block the search has not visited yet gets a stint before the time is up, and
 * the validation pass (a whole-model forward, as long as many steps at 1B parameters) is
 * run only every few stints, so it takes at most a fixed share of the search's time.
 *
 * The decision is made at a stint boundary from measured seconds and kept in the boundary
 * record, so a resumed run repeats the stint it was in, step for step.
 */

export interface StintCosts {
  /** Seconds left for the search (the budget less the time spent and the report's reserve). */
  secondsLeft: number;
  /** Blocks the search has not had a stint on. */
  unvisited: number;
  nLayers: number;
  /** Seconds per search step (measured, or predicted before the first). */
  stepSeconds: number;
  /** Seconds a stint costs besides its steps: setting its block up, re-quantizing it after. */
  stintSeconds: number;
  /** Seconds of one validation check. */
  validationSeconds: number;
}

export interface StintPlan {
  steps: number;
  /** A check after every `checkEvery`-th stint (and after the last one). */
  checkEvery: number;
}

/** Share of the search's time validation may take. */
const VALIDATION_SHARE = 0.2;

/** The plan for the next stints: `blockSteps` and every stint checked without a budget. */
export function planStint(budgeted: boolean, blockSteps: number, c?: StintCosts): StintPlan {
  if (!budgeted || !c) return { steps: blockSteps, checkEvery: 1 };
  // the blocks still to visit share what is left; once all are visited, one round of them
  const stints = Math.max(1, c.unvisited > 0 ? c.unvisited : c.nLayers);
  const perStint = c.secondsLeft / stints;
  const stepsFor = (checkEvery: number) => (perStint - c.stintSeconds - c.validationSeconds / checkEvery) / Math.max(c.stepSeconds, 1e-9);
  // validation at most its share of a stint's time, averaged over the stints between checks
  const stintWork = Math.max(perStint, c.stepSeconds + c.stintSeconds);
  const checkEvery = Math.max(1, Math.min(stints, Math.ceil(c.validationSeconds / (VALIDATION_SHARE * stintWork))));
  const steps = Math.floor(stepsFor(checkEvery));
  return { steps: Math.max(1, Math.min(blockSteps, Number.isFinite(steps) ? steps : 1)), checkEvery };
}

/** Seconds the search must keep for itself: one step of every unvisited block, with its stint's costs and its share of checks. */
export function searchFloor(c: Omit<StintCosts, 'secondsLeft'>): number {
  const plan = planStint(true, 1, { ...c, secondsLeft: 0 });
  return Math.max(1, c.unvisited) * (c.stepSeconds + c.stintSeconds + c.validationSeconds / plan.checkEvery);
}
