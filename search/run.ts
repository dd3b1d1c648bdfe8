/**
 * The search loop (DESIGN §5): stints of `blockSteps` steps on one block at a time, the
 * block chosen round robin or by recent gain. A step draws K candidate moves from the
 * seeded Rng, evaluates them (the block-local objective, search/objective.ts, with the
 * whole model's calibration KL added every `globalEvery` steps, globalTerm.ts), and accepts
 * the best if it strictly lowers the loss (or by annealing). After each stint the quantized
 * model is checked on held-out validation tokens; the run stops on its step budget, its
 * time budget, or when validation has not improved for `patience` checks, and ends in the
 * state with the best validation loss.
 *
 * The parts: blocks.ts (where each block's FP, transformed and quantized weights are),
 * calibration.ts (each block's rows in the quantized model), boundary.ts (the record a
 * snapshot holds, replayed on resume; validation bookkeeping and the stop rule),
 * runBudget.ts (the time budget: what the run measured, when it must stop, stint lengths),
 * runBlocks.ts (re-quantizing blocks, going back to the best state, a stint's objective),
 * initPass.ts (the scale and clip initialisation), report.ts (the quality table and the export).
 */
import type { Logger } from 'pino';
import { fail, InvarxError } from '../core/errors';
import { loadModel } from '../core/model/load';
import type { Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import { Rng } from '../core/rng';
import type { Backend } from '../kernels/backend';
import { bestBackend, freshBackend } from '../kernels/registry';
import { SearchBlocks, type AcceptedMove } from './blocks';
import { boundaryOf, freshBoundary, snapshotSets, meanLoss, progressOf, recordMove, recordValidation, stopReason, SNAPSHOT_VERSION, type Boundary, type InStint, type StintCommit } from './boundary';
import { specFormat, type SearchSpec } from './blockQuant';
import { CalibrationRows } from './calibration';
import { configHash, resolveTuning, searchSpec, validateRunConfig, type SearchTuning } from './config';
import type { FinalReport, Invariance, Progress, RunConfig, SearchJob, SearchSnapshot } from './contract';
import { Evaluator, candidateQuantBlock } from './evaluator';
import { exportSeconds, writeSearchExport } from './export';
import { GlobalTerm } from './globalTerm';
import { BlockObjective } from './objective';
import { drawMove, moveKind, type Move } from './proposals';
import { finalReport, rtnRowSeconds, searchExport, type RunResult } from './report';
import { nextBlock } from './schedule';
import { resolveTokenSets, type TokenSets } from './tokens';
import { QualityProbe } from './validation';
import { activationBytes, memoryBudget, Scratch, weightBytes } from './scratch';
import { describeCuts, phaseSeconds, planSets, type SetPlan } from './plan';
import { RunBudget } from './runBudget';
import { RunBlocks } from './runBlocks';
import { hasInitPass, initPass } from './initPass';
import { PhaseClock, reportPlan, type Phase } from './phases';
import { finalNormPass, normPass } from './normPass';

export interface SearchOptions {
  log?: Logger;
  resumeFrom?: SearchSnapshot;
  tuning?: Partial<SearchTuning>;
  ops?: Ops;
  /** Told each phase of the run as it begins, with its predicted seconds if any (the search's own progress starts with its first step). */
  onPhase?: (phase: Phase, plannedSeconds: number | null) => void;
  /** Directory for activations past the memory budget (default: a fresh one under the system's tmpdir); removed on close. */
  scratchDir?: string;
  /** Whether the job will be exported when it ends (`--out`, the daemon's export/): a time budget then keeps time for writing it. */
  exports?: boolean;
}

export async function createSearchJob(config: RunConfig, opts: SearchOptions = {}): Promise<SearchJob> {
  validateRunConfig(config);
  const clock = new PhaseClock(undefined, opts.onPhase);
  const tuning = resolveTuning(opts.tuning);
  const model = loadModel(config.model);
  const ops = opts.ops ?? bestBackend();
  // `workers` is the cores the job computes on: its sampling, calibration and evaluation too
  ops.useThreads?.(config.workers);
  // a resumed run keeps the sets it started with, whatever its time budget now
  const sets = opts.resumeFrom ? snapshotSets(opts.resumeFrom, tuning) : planSets(model.config, config, tuning);
  clock.planned = phaseSeconds(model.config, config, tuning, sets);
  clock.enter('tokens');
  // sampling on a backend of its own: its memory (weights and KV caches copied in) goes with it
  const sampler = opts.ops ? ops : freshBackend();
  sampler.useThreads?.(config.workers);
  let tokens: TokenSets;
  try {
    tokens = resolveTokenSets(model, config, tuning, sets, sampler);
  } finally {
    if (sampler !== ops) (sampler as Backend).dispose?.();
  }
  const search = new Search(config, tuning, model, tokens, sets, ops, new Scratch(opts.scratchDir), clock, opts.log, opts.exports);
  await search.init(opts.resumeFrom);
  return search;
}

class Search implements SearchJob {
  private rng: Rng;
  private blocks: SearchBlocks;
  private calib!: CalibrationRows;
  private states!: RunBlocks;
  private spec: SearchSpec;
  private on: Set<Invariance>;
  /** Clip codes are searched (clip moves or clip initialisation on an RTN base on the int grid). */
  private clipOn: boolean;
  private obj?: BlockObjective;
  private evaluator: Evaluator;
  private probe: QualityProbe;
  private global?: GlobalTerm;
  /** Block loss when the current stint began. */
  private stintStartLoss = 0;
  /** The commits of the moves the current stint accepted (the last entries of b.moves). */
  private stintCommits: StintCommit[] = [];
  private b: Boundary;
  private stepInStint = 0;
  private budget: RunBudget;
  /** Things the time budget made the run leave out (said in the report). */
  private cut: string[];
  private evalTimeMs = 0;
  private evalCount = 0;
  private lastValidation: number | null = null;
  private readonly hash: string;

  constructor(
    readonly config: RunConfig,
    private tuning: SearchTuning,
    private model: Model,
    private tokens: TokenSets,
    sets: SetPlan,
    private ops: Ops,
    private scratch: Scratch,
    private clock: PhaseClock,
    private log?: Logger,
    exports = false,
  ) {
    this.budget = new RunBudget(config, tuning, model.config, tokens, Date.now() - clock.inPhase * 1000, exports ? model : undefined);
    this.hash = configHash(config, tuning);
    this.spec = searchSpec(config, tuning);
    this.on = new Set(config.invariances);
    this.clipOn = (tuning.clipShare > 0 || tuning.clipInit) && config.base === 'rtn' && specFormat(this.spec) === null;
    this.rng = Rng.fromSeed(config.seed);
    this.blocks = new SearchBlocks(model, this.spec, weightBytes(config));
    this.evaluator = new Evaluator(model.config, this.spec, ops.name, config.workers);
    this.probe = new QualityProbe(model, tokens.valid, ops);
    if (tuning.globalEvery > 0) this.global = new GlobalTerm(model, tokens.calib, tuning, ops);
    this.b = freshBoundary(this.hash, this.rng.state(), model.config.nLayers, sets);
    this.cut = describeCuts(sets, tuning, config);
  }

  async init(resumeFrom?: SearchSnapshot): Promise<void> {
    this.clock.enter('calibration');
    this.calib = new CalibrationRows(this.model, this.tokens.calib, this.ops, { memoryBytes: activationBytes(this.config), dir: this.scratch.dir });
    this.states = new RunBlocks(this.model, this.config, this.spec, this.ops, this.blocks, this.calib, this.evaluator, this.clipOn);
    this.clock.enter('base');
    this.budget.calibrationSeconds = this.clock.seconds().calibration ?? 0;
    const t0 = performance.now();
    let inStint: InStint | undefined;
    if (resumeFrom) {
      this.b = boundaryOf(resumeFrom, this.hash);
      this.rng = Rng.fromState(this.b.rng);
      inStint = this.b.inStint;
      delete this.b.inStint;
      this.b.version = SNAPSHOT_VERSION;
      // inside a stint: the stint's start, as at a boundary (its moves come below)
      this.blocks.replay(inStint ? this.b.moves.slice(0, inStint.moves) : this.b.moves);
    }
    const startLoss = this.states.quantizeFrom(0);
    this.budget.baseSeconds = (performance.now() - t0) / 1000;
    if (this.config.timeBudget > 0) this.budget.rtnSeconds = rtnRowSeconds(this.result());
    if (!resumeFrom) {
      // Starting loss of every block (base quantization, identity transform) normalizes the objective.
      this.b.startLoss = startLoss;
      this.b.blockLoss = startLoss.slice();
      if (this.global) this.b.globalKl0 = this.global.kl(this.blocks.quantizedModel());
      const v = this.validate();
      this.b.best = { validation: v, moves: 0, step: 0 };
      this.b.history.push({ step: 0, loss: 1, validation: v });
      this.b.stintPlan = this.budget.nextStint(this.b);
    }
    if (resumeFrom) this.budget.validationSeconds = this.budget.baseSeconds / 2; // a guess until one is measured
    if (inStint) this.resumeStint(inStint);
    this.clock.stop();
    this.log?.info({ startLoss: this.b.startLoss, validation: this.b.best.validation, phases: this.clock.seconds() }, 'search ready');
  }

  get done(): boolean {
    return this.b.done;
  }

  private beginStint(): void {
    const l = this.b.block;
    // the last block's objective goes first: at 1B parameters it is a gigabyte
    this.obj = undefined;
    const obj = this.states.sharedObjective(l, this.calib.inputsOf(l, this.blocks));
    this.obj = obj;
    this.stintStartLoss = obj.loss;
    this.stintCommits = [];
    this.global?.changed();
  }

  /** Continue a stint a snapshot was taken inside: begin it again and commit its accepted moves in order, as the interrupted run did. */
  private resumeStint(s: InStint): void {
    const l = this.b.block;
    const moves = this.b.moves.slice(s.moves);
    if (moves.length !== s.commits.length || moves.some((m) => m.block !== l)) {
      fail('bad-checkpoint', `snapshot's stint on block ${l} does not match its accepted moves`);
    }
    this.b.moves.length = s.moves;
    this.beginStint();
    moves.forEach((m, i) => this.acceptMove({ ...s.commits[i], transforms: m.transforms, ...(m.clips ? { clips: m.clips } : {}) }, m));
    this.stepInStint = s.steps;
  }

  /**
   * Apply accepted move `move` on the current stint's block: its transforms, the objective's
   * commit, its `record` in the run's moves and what a snapshot inside the stint needs of it.
   */
  private acceptMove(move: Move, record: AcceptedMove): void {
    const l = this.b.block;
    // a clip move changes no FP weight: the objective's codes are the block's (shared), and committing sets them
    if (move.kind !== 'clip') this.blocks.apply(l, move.transforms);
    this.evaluator.commit(move, this.blocks.transformed(l));
    this.b.moves.push(record);
    this.stintCommits.push({ kind: move.kind, ...(move.units ? { units: move.units } : {}) });
    this.global?.changed();
  }

  /**
   * Activation-aware scale initialisation of every block in order (each on its inputs in
   * the quantized model as initialised so far), then one validation check, so the stop
   * rule can keep this state even if no discrete move generalises. Counts as no step.
   */
  private async initPass(): Promise<void> {
    this.clock.enter('scale-init');
    this.obj = undefined;
    const { model, tuning, spec, ops, on, clipOn, blocks, calib, states, evaluator, b, budget, cut, log } = this;
    await initPass({ model, tuning, spec, ops, on, clipOn, blocks, calib, states, evaluator, b, budget, cut, log });
    this.b.initDone = true;
    this.checkValidation();
    this.b.stintPlan = this.budget.nextStint(this.b);
    this.log?.info({ moves: this.b.moves.length, validation: this.lastValidation }, 'scale initialisation done');
    this.clock.stop();
  }

  async step(): Promise<void> {
    if (this.b.done) return;
    if (!this.b.initDone) {
      if (hasInitPass(this.tuning, this.on, this.clipOn)) return this.initPass();
      this.b.initDone = true;
    }
    this.clock.enter('search');
    if (this.stepInStint === 0) this.budget.overhead(() => this.beginStint());
    const stepStart = performance.now();
    const l = this.b.block;
    const obj = this.obj!;
    const cur = this.blocks.transformed(l);
    const clipCtx = this.clipOn ? { spec: this.spec, cur, clips: this.blocks.clips(l) } : undefined;
    const mix = { stats: this.b.moveStats, block: l };
    const moves = Array.from({ length: this.config.candidates }, () => drawMove(this.model.config, this.rng, this.on, this.tuning, this.config.group, clipCtx, mix));
    const t0 = performance.now();
    const results = await this.evaluator.evaluate(moves);
    // The score that decides: the block loss over its start, plus the global term on its steps.
    const L0 = this.b.startLoss[l];
    let scores = results.map((r) => r.loss / L0);
    let current = obj.loss / L0;
    const g = this.global;
    if (g && g.on(this.b.step)) {
      const kl0 = this.b.globalKl0;
      scores = scores.map((s, i) => s + g.term(this.blocks, l, candidateQuantBlock(this.model.config, obj, cur, moves[i]), obj.data, kl0));
      current += g.currentTerm(this.blocks, l, obj.q, obj.data, kl0);
    }
    this.evalTimeMs += performance.now() - t0;
    this.evalCount += moves.length;
    this.b.evaluated += moves.length;
    let best = 0;
    for (let i = 1; i < scores.length; i++) if (scores[i] < scores[best]) best = i;
    const accepted = this.accepts(scores[best], current);
    const nL = this.model.config.nLayers;
    moves.forEach((m, i) => recordMove(this.b, moveKind(m), l, nL, accepted && i === best ? current - scores[best] : null));
    if (accepted) {
      const move = moves[best];
      this.acceptMove(move, { block: l, step: this.b.step, transforms: move.transforms, ...(move.clips ? { clips: move.clips } : {}) });
      this.b.accepted++;
    }
    this.b.step++;
    this.stepInStint++;
    const took = (performance.now() - stepStart) / 1000;
    this.budget.stepTook(took);
    // the next step, its stint's end and check, and going back to the best checked state must leave the report its time
    const outOfTime = this.budget.mustStop(this.b, this.budget.stepSeconds + this.budget.stintEndSeconds() + this.rollbackReserve());
    if (this.stepInStint >= (this.b.stintPlan?.steps ?? this.tuning.blockSteps) || this.b.step >= this.config.steps || outOfTime) {
      await this.endStint(outOfTime);
    }
  }

  /** Greedy: strictly better. Annealing: a worse score with probability exp(−Δ/T), T falling linearly to 0. */
  private accepts(score: number, current: number): boolean {
    if (score < current) return true;
    if (this.tuning.accept !== 'anneal') return false;
    const T = this.tuning.temperature * (1 - this.b.step / this.config.steps);
    return T > 0 && Number.isFinite(score) && this.rng.float() < Math.exp(-(score - current) / T);
  }

  private async endStint(outOfTime: boolean): Promise<void> {
    const l = this.b.block;
    const cfg = this.model.config;
    this.b.blockLoss[l] = this.obj!.loss;
    const L0 = this.b.startLoss[l];
    this.b.lastGain[l] = L0 > 0 ? (this.stintStartLoss - this.obj!.loss) / L0 : 0;
    this.b.lastVisit[l] = this.b.stint;
    this.budget.overhead(() => this.states.stintDone(l));
    this.budget.stintDone();
    this.b.stint++;
    this.b.block = nextBlock(this.tuning.schedule, this.b.block, this.b, cfg.nLayers);
    this.stepInStint = 0;
    // the last stint is always checked: the run ends in its best checked state
    const last = outOfTime || this.b.step >= this.config.steps;
    const v = last || this.b.stint % (this.b.stintPlan?.checkEvery ?? 1) === 0 ? this.checkValidation(l) : null;
    this.log?.info({ step: this.b.step, block: l, loss: meanLoss(this.b), validation: v }, 'stint done');
    const reason = stopReason(this.b, this.config, outOfTime);
    if (!reason && v !== null && this.tuning.gate) this.budget.overhead(() => this.states.backToBest(this.b));
    if (reason) await this.finish(reason);
    else this.b.stintPlan = this.budget.nextStint(this.b, this.rollbackReserve());
    this.clock.stop();
  }

  /** Validate, record history, and track the best state (for patience and the final rollback). */
  private checkValidation(block?: number): number {
    const v = this.validate();
    recordValidation(this.b, v, this.model.config.nLayers, block);
    return v;
  }

  /** Validation objective: KL(FP ‖ quantized) on the held-out validation tokens. */
  private validate(): number {
    const t0 = performance.now();
    const v = this.probe.measure(this.blocks.quantizedModel()).kl;
    this.budget.validationSeconds = (performance.now() - t0) / 1000;
    this.lastValidation = v;
    return v;
  }

  /** Stop, go back to the accepted-move prefix with the best validation loss, and tune the norm gains. */
  private async finish(reason: string): Promise<void> {
    this.b.done = true;
    this.b.stopReason = reason;
    this.states.backToBest(this.b);
    if (this.tuning.normTune) {
      const { blocks, calib, b, budget, cut, ops } = this;
      // row gains live in the group scales of RTN's codes (a GPTQ block is quantized again on tuned inputs; a ggml format's scales are its own)
      const rowGains = this.tuning.rowGains && this.config.base === 'rtn' && !specFormat(this.spec);
      const state = { blocks, calib, b, budget, cut, ops, seqTokens: this.tuning.seqTokens, runner: this.evaluator.normRunner(ops), rowGains };
      const validate = () => this.validate();
      const enter = () => this.clock.enter('norm-tune');
      await normPass(state, { enter, validate, quantizeFrom: (from) => this.states.quantizeFrom(from), log: this.log });
      finalNormPass(state, this.tokens.calib, { enter, validate, log: this.log });
    }
    this.log?.info({ reason, step: this.b.step, kept: this.b.moves.length, bestStep: this.b.best.step }, 'search stopped');
  }

  /** Predicted seconds of going back to the best checked state now (the stop check and the stint plan keep the same reserve). */
  private rollbackReserve(): number {
    return this.budget.rollbackSeconds(this.states.rollbackFrom(this.b));
  }

  progress(): Progress {
    const p = progressOf(this.b, this.config, this.budget.elapsed(), this.candidatesPerSec(), this.lastValidation);
    const phase = this.clock.phase ?? (this.b.done ? 'done' : 'search');
    const phaseEta = phase === 'search' || phase === 'done' ? p.etaSeconds : this.clock.etaSeconds;
    return { ...p, phase, phaseEtaSeconds: phaseEta, phases: this.clock.seconds(), candidates: this.b.evaluated };
  }

  private candidatesPerSec(): number {
    return this.evalTimeMs > 0 ? (this.evalCount * 1000) / this.evalTimeMs : 0;
  }

  /** The state after the last step (taken between steps); inside a stint it says where the stint began. */
  snapshot(): SearchSnapshot {
    const s: Boundary = { ...structuredClone(this.b), rng: this.rng.state() };
    if (this.stepInStint > 0) {
      const commits = structuredClone(this.stintCommits);
      s.inStint = { steps: this.stepInStint, moves: this.b.moves.length - commits.length, commits };
    }
    return s as unknown as SearchSnapshot;
  }

  private result(): RunResult {
    const { config, spec, tokens, ops, blocks, calib, b } = this;
    return { config, spec, tokens, ops, blocks, calib, b, candidatesPerSec: this.candidatesPerSec() };
  }

  async report(): Promise<FinalReport> {
    this.clock.enter('report');
    const plan = reportPlan(this.budget.leftForReport(), this.budget.reportCosts(), this.budget.reportRows());
    this.spillCalibration();
    const report = finalReport(this.result(), plan.rows);
    this.clock.stop();
    const cut = [...this.cut, ...plan.cut.map((r) => `report row ${r}`)];
    return { ...report, phases: this.clock.seconds(), candidates: this.b.evaluated, moveStats: this.b.moveStats ?? {}, ...(cut.length ? { cut } : {}) };
  }

  /**
   * The final evaluation runs every reported model block by block: the calibration rows it
   * does not read give it their memory (a big model's are gigabytes). A disk that cannot
   * take them leaves them in memory, as the search had them.
   */
  private spillCalibration(): void {
    // a sixteenth of the budget or less is not worth the writes
    if (this.calib.bytesInMemory <= memoryBudget(this.config) / 16) return;
    try {
      this.calib.spill();
    } catch (e) {
      if (!(e instanceof InvarxError && e.code === 'disk-full')) throw e;
      this.log?.warn({ err: e.message }, 'calibration rows stay in memory for the final evaluation');
    }
  }

  async exportTo(dir: string): Promise<void> {
    this.clock.planned.export = exportSeconds(this.model, this.budget);
    this.clock.enter('export');
    writeSearchExport(dir, searchExport(this.result()));
    this.clock.stop();
  }

  async close(): Promise<void> {
    await this.evaluator.close();
    this.calib?.close();
    this.scratch.remove();
  }
}
