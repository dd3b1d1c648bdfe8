/**
 * A run's time accounting under `--time-budget`: what it measured (the base pass, a
 * validation check, a step, a stint's set-up and re-quantization), and the decisions made
 * from it — whether the run must stop before more work, what the report and the export
 * (when the job writes one) are kept, and how long the next stint is (stintPlan.ts).
 * Without a budget nothing here stops anything and every stint is the tuning's `blockSteps`.
 */
import type { Model, ModelConfig } from '../core/model/types';
import type { Boundary } from './boundary';
import type { SearchTuning } from './config';
import type { RunConfig } from './contract';
import { exportSeconds } from './export';
import { outOfTime, reportSeconds, type ReportCosts, type ReportRow } from './phases';
import { CANDIDATE_FLOPS_PER_SECOND, tokenFlops } from './plan';
import { planStint, searchFloor, type StintCosts, type StintPlan } from './stintPlan';
import type { TokenSets } from './tokens';

/** Scale initialisation leaves the search this multiple of its predicted floor (one step on every block): the prediction is rough before the first stint. */
const SEARCH_FLOOR_MARGIN = 1.5;
/**
 * The share of the budget the final table may run past it (a budgeted run ends within 1.1
 * times its budget): a search that ends at the edge of its time, a step or a rollback
 * longer than predicted, then costs the table no reference rows.
 */
const REPORT_OVERRUN_SHARE = 0.05;

const tokenCount = (seqs: number[][]) => seqs.reduce((n, s) => n + s.length, 0);

export class RunBudget {
  /** Seconds of the last validation pass, of the initial base quantization, and per step (a running average). */
  validationSeconds = 0;
  baseSeconds = 0;
  /** Seconds of the calibration pass (the export's codes repeat it). */
  calibrationSeconds = 0;
  /** Predicted seconds of quantizing the table's plain-RTN row (0: not measured, the base pass's seconds stand in). */
  rtnSeconds = 0;
  stepSeconds = 0;
  /** Seconds a stint spends besides its steps (setting its block up, re-quantizing it): a running average, and so far in this stint. */
  private stintSeconds = 0;
  private stintOverhead = 0;

  constructor(
    private config: RunConfig,
    private tuning: SearchTuning,
    private cfg: ModelConfig,
    private tokens: TokenSets,
    /** The run's start (Date.now()): the budget bounds everything from there, token sampling included. */
    readonly startedAt: number,
    /** The model the job exports when it ends (`--out`, the daemon's export/), whose writing the budget keeps time for; absent: no export. */
    private exported?: Model,
  ) {}

  elapsed(): number {
    return (Date.now() - this.startedAt) / 1000;
  }

  /** Seconds left of the budget (null without one). */
  left(): number | null {
    return this.config.timeBudget > 0 ? this.config.timeBudget - this.elapsed() : null;
  }

  /** Seconds the report may take: what the export's reserve leaves of the budget and its allowed overrun (null without a budget). */
  leftForReport(): number | null {
    const left = this.left();
    return left === null ? null : left + REPORT_OVERRUN_SHARE * this.config.timeBudget - this.exportReserve();
  }

  /** Whether the run must stop before work predicted to take `next` seconds: the report's and the export's reserves have to fit after it. */
  mustStop(b: Boundary, next: number): boolean {
    return outOfTime(this.config.timeBudget, this.elapsed(), this.reserve(b), next);
  }

  /** Whether scale initialisation must stop before a block predicted to take `perBlock` seconds, leaving the search its floor. */
  initMustStop(b: Boundary, perBlock: number): boolean {
    return this.mustStop(b, perBlock + this.baseSeconds + SEARCH_FLOOR_MARGIN * searchFloor(this.stintCosts(b)));
  }

  /** Seconds kept for what follows the search: the report and the export. */
  private reserve(b: Boundary): number {
    return this.reportReserve(b) + this.exportReserve();
  }

  /** Seconds kept for the export (0 when the job writes none), predicted from this run's calibration pass and base quantization. */
  exportReserve(): number {
    return this.exported ? exportSeconds(this.exported, this) : 0;
  }

  /**
   * Seconds kept for the report: the whole table when it takes at most a quarter of the
   * budget, else the rows "closes" needs (FP, RTN, searched); while the search has blocks
   * left to visit, only FP and searched (a stint on every block comes before the reference
   * rows, which the report drops, saying so, when their time went to the search).
   */
  private reportReserve(b: Boundary): number {
    const costs = this.reportCosts();
    if (b.lastVisit.some((v) => v < 0)) return reportSeconds([], costs);
    const full = reportSeconds(this.reportRows(), costs);
    return full <= this.config.timeBudget / 4 ? full : reportSeconds(['rtn'], costs);
  }

  /** The report's reference rows (on an RTN base, plain RTN is the base). */
  reportRows(): ReportRow[] {
    return this.config.base === 'rtn' ? ['rtn', 'baseClip'] : ['rtn', 'base', 'baseClip'];
  }

  /** Predicted costs of the report's parts, from what this run measured. */
  reportCosts(): ReportCosts {
    const evalPass = this.validationSeconds * (tokenCount(this.tokens.eval) / Math.max(1, tokenCount(this.tokens.valid)));
    // each base row quantizes the whole model as the base pass did; plain RTN as timed on a block
    return { evalPass, quantize: { rtn: this.rtnSeconds > 0 ? this.rtnSeconds : this.baseSeconds, base: this.baseSeconds, baseClip: this.baseSeconds } };
  }

  /** Predicted seconds of a stint's end: re-quantizing its block and a validation check. */
  stintEndSeconds(): number {
    return this.stintSeconds / 2 + this.validationSeconds;
  }

  /** Predicted seconds of going back to the best checked state: re-quantizing from block `from` (null: nothing to undo), at the base pass's rate. */
  rollbackSeconds(from: number | null): number {
    return from === null ? 0 : (this.baseSeconds * (this.cfg.nLayers - from)) / this.cfg.nLayers;
  }

  /** Folds a step's seconds into the running average. */
  stepTook(seconds: number): void {
    this.stepSeconds = this.stepSeconds > 0 ? 0.8 * this.stepSeconds + 0.2 * seconds : seconds;
  }

  /** Runs `f`, counting its seconds as this stint's costs besides its steps. */
  overhead(f: () => void): void {
    const t0 = performance.now();
    f();
    this.stintOverhead += (performance.now() - t0) / 1000;
  }

  /** The stint's costs besides its steps are all counted: fold them into the running average. */
  stintDone(): void {
    this.stintSeconds = this.stintSeconds > 0 ? (this.stintSeconds + this.stintOverhead) / 2 : this.stintOverhead;
    this.stintOverhead = 0;
  }

  /**
   * What a stint costs, measured where the run has measured it, else predicted: a step
   * scores `candidates` moves, each a block pass over the calibration rows, over the
   * workers; setting a block up and re-quantizing it each cost about what the base pass
   * spent per block.
   */
  private stintCosts(b: Boundary): Omit<StintCosts, 'secondsLeft'> {
    const candidate = (tokenCount(this.tokens.calib) * tokenFlops(this.cfg, this.tuning.seqTokens).block) / CANDIDATE_FLOPS_PER_SECOND;
    const rounds = Math.ceil(this.config.candidates / Math.max(1, Math.min(this.config.workers, this.config.candidates)));
    return {
      unvisited: b.lastVisit.filter((v) => v < 0).length,
      nLayers: this.cfg.nLayers,
      stepSeconds: this.stepSeconds > 0 ? this.stepSeconds : rounds * candidate,
      stintSeconds: this.stintSeconds > 0 ? this.stintSeconds : (2 * this.baseSeconds) / this.cfg.nLayers,
      validationSeconds: this.validationSeconds,
    };
  }

  /**
   * The next stint's length and checks (the caller keeps it in the boundary record, so a
   * resumed run repeats them), from the time the stop check leaves: the report's and the
   * export's reserves and `rollback` seconds of going back to the best checked state.
   */
  nextStint(b: Boundary, rollback = 0): StintPlan {
    const left = this.left();
    if (left === null) return planStint(false, this.tuning.blockSteps);
    return planStint(true, this.tuning.blockSteps, { ...this.stintCosts(b), secondsLeft: left - this.reserve(b) - rollback });
  }
}
