/**
 * The phases of a run and the time budget over all of them. `--time-budget S` bounds the
 * whole run, not only the search loop: each phase's seconds are measured as it runs, the
 * search stops early enough to leave the final report the time it is predicted to need
 * (from what the run measured so far), and when even that does not fit, the report drops
 * rows (base+clip, then the base, then plain RTN) and says which.
 */

export const PHASES = ['tokens', 'calibration', 'base', 'scale-init', 'search', 'norm-tune', 'report', 'export'] as const;
export type Phase = (typeof PHASES)[number];

/** Seconds spent in each phase so far, and the one running now. */
export class PhaseClock {
  private spent = new Map<Phase, number>();
  private current: { phase: Phase; since: number } | null = null;
  /** The phase onEnter was last told of: the search re-enters its phase every step, and is told once. */
  private told: Phase | null = null;
  /** Predicted seconds of the phases that have a prediction (search/plan.ts). */
  planned: Partial<Record<Phase, number>> = {};

  constructor(
    private now: () => number = () => performance.now() / 1000,
    /** Told each phase as it begins (not again when the same phase is entered again), with its predicted seconds if any (progress displays before the search's first step). */
    private onEnter?: (phase: Phase, plannedSeconds: number | null) => void,
  ) {}

  /** Enter `phase` (ending the one before). */
  enter(phase: Phase): void {
    this.stop();
    this.current = { phase, since: this.now() };
    if (phase === this.told) return;
    this.told = phase;
    this.onEnter?.(phase, this.planned[phase] ?? null);
  }

  /** End the running phase. */
  stop(): void {
    if (!this.current) return;
    const { phase, since } = this.current;
    this.spent.set(phase, (this.spent.get(phase) ?? 0) + (this.now() - since));
    this.current = null;
  }

  get phase(): Phase | null {
    return this.current?.phase ?? null;
  }

  /** Seconds in the running phase so far. */
  get inPhase(): number {
    return this.current ? this.now() - this.current.since : 0;
  }

  /** Predicted seconds left in the running phase (null: no prediction; 0 once it runs over). */
  get etaSeconds(): number | null {
    const p = this.current && this.planned[this.current.phase];
    return p === undefined || p === null ? null : Math.max(0, p - this.inPhase);
  }

  /** Seconds per phase that has run (the running one up to now), in PHASES order. */
  seconds(): Partial<Record<Phase, number>> {
    const out: Partial<Record<Phase, number>> = {};
    for (const p of PHASES) {
      const s = (this.spent.get(p) ?? 0) + (this.current?.phase === p ? this.inPhase : 0);
      if (s > 0 || this.spent.has(p)) out[p] = s;
    }
    return out;
  }
}

/** The final report's rows beyond FP and the searched model, most expendable first. */
export type ReportRow = 'baseClip' | 'base' | 'rtn';
const DROP_ORDER: readonly ReportRow[] = ['baseClip', 'base', 'rtn'];

export interface ReportCosts {
  /** Seconds to run one model over the evaluation set (from the measured validation passes). */
  evalPass: number;
  /** Seconds to quantize the untransformed model for each row (RTN with clip search costs more than plain). */
  quantize: Record<ReportRow, number>;
}

/** Predicted seconds of a report with these rows: FP and searched passes, plus each row's quantization and pass. */
export function reportSeconds(rows: readonly ReportRow[], c: ReportCosts): number {
  return 2 * c.evalPass + rows.reduce((s, r) => s + c.quantize[r] + c.evalPass, 0);
}

/**
 * The rows a report can afford in `seconds`: every row when they fit, else the most
 * expendable dropped one by one (FP and searched are always there). With no budget, all.
 */
export function reportPlan(seconds: number | null, c: ReportCosts, want: readonly ReportRow[] = ['rtn', 'base', 'baseClip']): { rows: ReportRow[]; cut: ReportRow[] } {
  let rows = [...want];
  const cut: ReportRow[] = [];
  if (seconds === null) return { rows, cut };
  for (const r of DROP_ORDER) {
    if (reportSeconds(rows, c) <= seconds) break;
    if (!rows.includes(r)) continue;
    rows = rows.filter((x) => x !== r);
    cut.push(r);
  }
  return { rows, cut };
}

/**
 * Whether the search must stop now: with a budget of `budget` seconds (0 = none), `elapsed`
 * spent, and `reserve` seconds predicted for what must follow (the report), one more stint
 * step of `perStep` seconds would not leave the reserve.
 */
export function outOfTime(budget: number, elapsed: number, reserve: number, perStep: number): boolean {
  return budget > 0 && elapsed + perStep + reserve > budget;
}
