/**
 * The search loop (DESIGN §5): stints of `blockSteps` steps on one block at a time, the
 * block chosen round robin or by recent gain. A step draws K candidate moves from the
 * seeded Rng, evaluates them (the block-local objective, search/objective.ts, with the
 * whole model's calibration KL added every `globalEvery` steps), and accepts the best if it
 * strictly lowers the loss (or by annealing). After each stint the quantized model is checked on held-out validation
 * tokens; the run stops on its step budget, its time budget, or when validation has not
 * improved for `patience` checks, and ends in the state with the best validation loss.
 *
 * Exact resume: a stint starts by recomputing every cache from the FP weights, so the
 * state at a stint boundary is a pure function of (model, config, seed, accepted moves).
 * Snapshots are taken at stint boundaries; a resumed run replays the accepted moves onto
 * the original weights and repeats the same float operations in the same order.
 */
import { Packr } from 'msgpackr';
import type { Logger } from 'pino';
import { fail } from '../core/errors';
import { blockForward, forward } from '../core/forward';
import { applyTransforms, type Transform } from '../core/invariance';
import { loadModel } from '../core/model/load';
import { blockLinears, cloneBlock, type Block, type F32, type Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import { bestBackend } from '../kernels/registry';
import { evaluateModels, gapClosed } from '../core/metrics';
import { quantizeModel } from '../core/quant/model';
import type { QuantSpec } from '../core/quant/rtn';
import { Rng, type RngState } from '../core/rng';
import { configHash, resolveTuning, validateRunConfig, type SearchTuning } from './config';
import type { FinalReport, Progress, RunConfig, SearchJob, SearchSnapshot } from './contract';
import { BlockObjective } from './objective';
import { copyInto, type BlockData } from './blockState';
import { rtnLinears } from './baseRtn';
import { attnKindsOn, drawAttnMove, drawFfnMove, type Move } from './proposals';
import { resolveTokenSets, type TokenSets } from './tokens';
import { scaleInit, type ScaleSite } from './scaleInit';
import { QualityProbe } from './validation';
import { nextBlock } from './schedule';
import { Evaluator, blockIn, candidateQuantBlock, type CandidateResult } from './evaluator';
import { writeSearchExport } from './export';
import type { BlockQuantized } from '../core/export';

export const SNAPSHOT_VERSION = 2;

export interface AcceptedMove {
  block: number;
  step: number;
  transforms: Transform[];
}

/** Everything a stint boundary needs to continue; plain data for msgpackr. */
interface Boundary {
  version: number;
  configHash: string;
  step: number;
  stint: number;
  /** The block of the current (next) stint. */
  block: number;
  /** Per block: normalised loss decrease of its last stint, and the stint it was visited (−1: never). */
  lastGain: number[];
  lastVisit: number[];
  /** KL of the base quantization on the global-term sequences (when the global term is on). */
  globalKl0: number;
  rng: RngState;
  moves: AcceptedMove[];
  evaluated: number;
  accepted: number;
  startLoss: number[];
  blockLoss: number[];
  best: { validation: number; moves: number; step: number };
  /** The scale-initialisation pass has run. */
  initDone: boolean;
  checksSinceBest: number;
  history: FinalReport['history'];
  done: boolean;
  stopReason?: string;
}

export interface SearchOptions {
  log?: Logger;
  resumeFrom?: SearchSnapshot;
  tuning?: Partial<SearchTuning>;
  ops?: Ops;
}

export async function createSearchJob(config: RunConfig, opts: SearchOptions = {}): Promise<SearchJob> {
  validateRunConfig(config);
  const tuning = resolveTuning(opts.tuning);
  const model = loadModel(config.model);
  const ops = opts.ops ?? bestBackend();
  const tokens = resolveTokenSets(model, config, tuning, ops);
  const search = new Search(config, tuning, model, tokens, ops, opts.log);
  await search.init(opts.resumeFrom);
  return search;
}

class Search implements SearchJob {
  private rng: Rng;
  private cur: Block[];
  private qBlocks: Block[];
  private spec: QuantSpec;
  private on: Set<string>;
  private calibFp: F32[][]; // [layer][seq] FP residual stream entering each block, plus the final
  private obj?: BlockObjective;
  private evaluator: Evaluator;
  private probe: QualityProbe;
  /** FP reference of the global term (its calibration sequences), when it is on. */
  private globalProbe?: QualityProbe;
  /** Global-term score of the current state, or null once a move has changed it. */
  private curGlobal: number | null = null;
  /** Block loss when the current stint began. */
  private stintStartLoss = 0;
  private b: Boundary;
  /** Copy of `b` taken at the last stint boundary. */
  private boundary!: Boundary;
  private stepInStint = 0;
  private startedAt = Date.now();
  private evalTimeMs = 0;
  private evalCount = 0;
  private lastValidation: number | null = null;
  private readonly hash: string;

  constructor(
    readonly config: RunConfig,
    private tuning: SearchTuning,
    private model: Model,
    private tokens: TokenSets,
    private ops: Ops,
    private log?: Logger,
  ) {
    this.hash = configHash(config, tuning);
    this.spec = { bits: config.bits, group: config.group, clip: tuning.clip, f16Scales: tuning.f16Scales };
    this.on = new Set(config.invariances);
    this.rng = Rng.fromSeed(config.seed);
    this.cur = model.blocks.map(cloneBlock);
    this.qBlocks = [];
    this.calibFp = [];
    this.evaluator = new Evaluator(model.config, this.spec, ops.name, config.workers);
    this.probe = new QualityProbe(model, tokens.valid, ops);
    if (tuning.globalEvery > 0) this.globalProbe = new QualityProbe(model, tokens.calib.slice(0, tuning.globalSeqs), ops);
    this.b = this.freshBoundary();
  }

  private freshBoundary(): Boundary {
    return {
      version: SNAPSHOT_VERSION, configHash: this.hash, step: 0, stint: 0, rng: this.rng.state(), moves: [],
      block: 0, lastGain: [], lastVisit: new Array(this.model.config.nLayers).fill(-1), globalKl0: 0,
      evaluated: 0, accepted: 0, startLoss: [], blockLoss: [], best: { validation: Infinity, moves: 0, step: 0 },
      checksSinceBest: 0, history: [], done: false, initDone: false,
    };
  }

  async init(resumeFrom?: SearchSnapshot): Promise<void> {
    const cfg = this.model.config;
    // FP residual stream at every block boundary on the calibration set.
    const perSeq = this.tokens.calib.map((seq) => forward(this.model, seq, { ops: this.ops, capture: true }).hidden!);
    this.calibFp = Array.from({ length: cfg.nLayers + 1 }, (_, l) => perSeq.map((h) => h[l]));
    if (resumeFrom) this.restore(resumeFrom);
    const startLoss = this.quantizeFrom(0);
    if (!resumeFrom) {
      // Starting loss of every block (base quantization, identity transform) normalizes the objective.
      this.b.startLoss = startLoss;
      this.b.blockLoss = startLoss.slice();
      if (this.globalProbe) this.b.globalKl0 = this.globalProbe.measure(this.searchedModel()).kl;
      const v = this.validate();
      this.b.best = { validation: v, moves: 0, step: 0 };
      this.b.history.push({ step: 0, loss: 1, validation: v });
    }
    this.markBoundary();
    this.log?.info({ startLoss: this.b.startLoss, validation: this.b.best.validation }, 'search ready');
  }

  private restore(snap: SearchSnapshot): void {
    const s = snap as unknown as Boundary;
    if (s.version !== SNAPSHOT_VERSION) fail('bad-checkpoint', `snapshot version ${s.version} is not ${SNAPSHOT_VERSION}`);
    if (s.configHash !== this.hash) fail('bad-checkpoint', 'snapshot was taken with a different configuration');
    this.b = structuredClone(s);
    this.rng = Rng.fromState(s.rng);
    for (const m of s.moves) applyTransforms(this.model.config, this.cur[m.block], m.transforms);
    this.stepInStint = 0;
  }

  private blockData(l: number, xs: F32[]): BlockData {
    const d = this.model.config.dim;
    const seqStarts = [0];
    for (const x of xs) seqStarts.push(seqStarts[seqStarts.length - 1] + x.length / d);
    return { x: concat(xs), y: concat(this.calibFp[l + 1]), seqStarts };
  }

  /**
   * Re-quantizes blocks from..L-1 of the transformed model with the base quantizer, each on
   * its inputs in the quantized model (RTN ignores them; GPTQ's rounding depends on them),
   * and returns their losses. The quantized model is so a pure function of the FP weights.
   */
  private quantizeFrom(from: number): number[] {
    const cfg = this.model.config;
    let xs = this.calibFp[0];
    for (let l = 0; l < from; l++) xs = this.runQuantBlock(l, xs);
    const losses: number[] = [];
    for (let l = from; l < cfg.nLayers; l++) {
      const obj = new BlockObjective(cfg, this.blockData(l, xs), this.spec, this.ops, this.config.base);
      losses[l] = obj.reset(this.cur[l]);
      this.qBlocks[l] = obj.q;
      if (l + 1 < cfg.nLayers) xs = this.runQuantBlock(l, xs);
    }
    return losses;
  }

  private runQuantBlock(l: number, xs: F32[]): F32[] {
    const d = this.model.config.dim;
    return xs.map((x) => blockForward(this.model.config, this.qBlocks[l], x, x.length / d, this.ops));
  }

  get done(): boolean {
    return this.b.done;
  }

  private get block(): number {
    return this.b.block;
  }

  private beginStint(): void {
    const l = this.block;
    let xs = this.calibFp[0];
    for (let i = 0; i < l; i++) xs = this.runQuantBlock(i, xs);
    this.obj = this.sharedObjective(l, xs);
    this.stintStartLoss = this.obj.loss;
    this.curGlobal = null;
  }

  /**
   * The objective of block l on its inputs xs, its state (and the block's FP weights) in
   * memory the evaluator's workers share, and installed in the evaluator.
   */
  private sharedObjective(l: number, xs: F32[]): BlockObjective {
    const alloc = this.evaluator.alloc;
    const plain = this.blockData(l, xs);
    const data = { ...plain, x: copyInto(alloc.f32(plain.x.length), plain.x), y: copyInto(alloc.f32(plain.y.length), plain.y) };
    this.cur[l] = blockIn(alloc, this.cur[l]);
    const obj = new BlockObjective(this.model.config, data, this.spec, this.ops, this.config.base, undefined, alloc);
    obj.reset(this.cur[l]);
    this.evaluator.setBlock(obj, this.cur[l], data);
    return obj;
  }

  /** Scale-init sites whose invariance is switched on. */
  private initSites(): ScaleSite[] {
    const sites: [ScaleSite, string][] = [['norm-attn', 'norm-scale'], ['attn-vo', 'attn-vo-scale'], ['norm-ffn', 'norm-scale'], ['ffn-gate', 'ffn-scale']];
    return sites.filter(([, inv]) => this.on.has(inv)).map(([site]) => site);
  }

  private drawMove(): Move {
    const cfg = this.model.config;
    const attnKinds = attnKindsOn(cfg, this.on as Set<never>);
    const ffnOn = ['ffn-perm', 'ffn-scale', 'ffn-rot'].some((k) => this.on.has(k));
    const attn = attnKinds.length > 0 && (!ffnOn || this.rng.float() < this.tuning.attnShare);
    return attn ? drawAttnMove(cfg, this.rng, attnKinds, this.tuning) : drawFfnMove(cfg, this.rng, this.on as Set<never>, this.tuning, this.config.group);
  }

  /**
   * Activation-aware scale initialisation of every block in order (each on its inputs in
   * the quantized model as initialised so far), then one validation check, so the stop
   * rule can keep this state even if no discrete move generalises. Counts as no step.
   */
  private async initPass(): Promise<void> {
    const cfg = this.model.config;
    const sites = this.initSites();
    const score = async (moves: Move[]) => (await this.evaluator.evaluate(moves)).map((r) => r.loss);
    let xs = this.calibFp[0];
    for (let l = 0; l < cfg.nLayers; l++) {
      const obj = this.sharedObjective(l, xs);
      await scaleInit(cfg, obj, this.cur[l], xs, this.ops, sites, (t) => this.b.moves.push({ block: l, step: 0, transforms: [t] }), score);
      this.qBlocks[l] = obj.q;
      if (l + 1 < cfg.nLayers) xs = this.runQuantBlock(l, xs);
    }
    // The canonical quantized model of the new weights (what a resumed run rebuilds).
    this.b.blockLoss = this.quantizeFrom(0);
    this.b.initDone = true;
    this.checkValidation();
    this.log?.info({ moves: this.b.moves.length, validation: this.lastValidation }, 'scale initialisation done');
    this.markBoundary();
  }

  async step(): Promise<void> {
    if (this.b.done) return;
    if (!this.b.initDone) {
      if (this.tuning.scaleInit && this.initSites().length > 0) return this.initPass();
      this.b.initDone = true;
    }
    if (this.stepInStint === 0) this.beginStint();
    const l = this.block;
    const obj = this.obj!;
    const moves = Array.from({ length: this.config.candidates }, () => this.drawMove());
    const t0 = performance.now();
    const results: CandidateResult[] = await this.evaluator.evaluate(moves);
    // The score that decides: the block loss over its start, plus the global term on its steps.
    const L0 = this.b.startLoss[l];
    let scores = results.map((r) => r.loss / L0);
    let current = obj.loss / L0;
    if (this.globalProbe && this.b.step % this.tuning.globalEvery === 0) {
      scores = scores.map((s, i) => s + this.globalTerm(l, candidateQuantBlock(this.model.config, obj, this.cur[l], moves[i])));
      current += this.curGlobal ??= this.globalTerm(l, obj.q);
    }
    this.evalTimeMs += performance.now() - t0;
    this.evalCount += moves.length;
    this.b.evaluated += moves.length;
    let best = 0;
    for (let i = 1; i < scores.length; i++) if (scores[i] < scores[best]) best = i;
    if (this.accepts(scores[best], current)) {
      const move = moves[best];
      applyTransforms(this.model.config, this.cur[l], move.transforms);
      this.evaluator.commit(move, this.cur[l]);
      this.b.moves.push({ block: l, step: this.b.step, transforms: move.transforms });
      this.b.accepted++;
      this.curGlobal = null;
    }
    this.b.step++;
    this.stepInStint++;
    const outOfTime = this.config.timeBudget > 0 && Date.now() - this.startedAt > this.config.timeBudget * 1000;
    if (this.stepInStint >= this.tuning.blockSteps || this.b.step >= this.config.steps || outOfTime) {
      this.endStint(outOfTime);
    }
  }

  /** Greedy: strictly better. Annealing: a worse score with probability exp(−Δ/T), T falling linearly to 0. */
  private accepts(score: number, current: number): boolean {
    if (score < current) return true;
    if (this.tuning.accept !== 'anneal') return false;
    const T = this.tuning.temperature * (1 - this.b.step / this.config.steps);
    return T > 0 && Number.isFinite(score) && this.rng.float() < Math.exp(-(score - current) / T);
  }

  /** globalWeight · KL/KL0 of the quantized model with `qBlock` as block l, on the global-term sequences. */
  private globalTerm(l: number, qBlock: Block): number {
    const obj = this.obj!;
    const d = this.model.config.dim;
    const starts = obj.data.seqStarts;
    // The probe holds the first calibration sequences, in the order of the block's rows.
    const xs = Array.from({ length: this.globalProbe!.count }, (_, s) => obj.data.x.subarray(starts[s] * d, starts[s + 1] * d));
    const blocks = this.qBlocks.slice();
    blocks[l] = qBlock;
    const kl = this.globalProbe!.measureFrom({ ...this.model, blocks }, l, xs).kl;
    return (this.tuning.globalWeight * kl) / Math.max(this.b.globalKl0, 1e-12);
  }

  private endStint(outOfTime: boolean): void {
    const l = this.block;
    const cfg = this.model.config;
    this.b.blockLoss[l] = this.obj!.loss;
    const L0 = this.b.startLoss[l];
    this.b.lastGain[l] = L0 > 0 ? (this.stintStartLoss - this.obj!.loss) / L0 : 0;
    this.b.lastVisit[l] = this.b.stint;
    // RTN re-quantizes only this block; GPTQ also every later one, whose inputs changed.
    if (this.config.base === 'gptq') this.quantizeFrom(l);
    else this.qBlocks[l] = cloneBlock({ ...this.cur[l], ...rtnLinears(cfg, this.cur[l], this.spec) });
    this.b.stint++;
    this.b.block = nextBlock(this.tuning.schedule, this.b.block, this.b, this.model.config.nLayers);
    this.stepInStint = 0;
    const v = this.checkValidation(l);
    this.log?.info({ step: this.b.step, block: l, loss: this.progress().bestLoss, validation: v }, 'stint done');
    let reason: string | undefined;
    if (this.b.step >= this.config.steps) reason = 'steps';
    else if (outOfTime) reason = 'time';
    else if (this.config.patience > 0 && this.b.checksSinceBest >= this.config.patience) reason = 'patience';
    if (reason) this.finish(reason);
    this.markBoundary();
  }

  private markBoundary(): void {
    this.b.rng = this.rng.state();
    this.boundary = structuredClone(this.b);
  }

  /** Validate, record history, and track the best state (for patience and the final rollback). */
  private checkValidation(block?: number): number {
    const cfg = this.model.config;
    const v = this.validate();
    const meanLoss = this.b.blockLoss.reduce((s, x, i) => s + x / this.b.startLoss[i], 0) / cfg.nLayers;
    this.b.history.push({ step: this.b.step, loss: meanLoss, validation: v, ...(block === undefined ? {} : { block }) });
    if (v < this.b.best.validation) {
      this.b.best = { validation: v, moves: this.b.moves.length, step: this.b.step };
      this.b.checksSinceBest = 0;
    } else {
      this.b.checksSinceBest++;
    }
    return v;
  }

  /** Validation objective: KL(FP ‖ quantized) on the held-out validation tokens. */
  private validate(): number {
    const q = { ...this.model, blocks: this.qBlocks };
    const v = this.probe.measure(q).kl;
    this.lastValidation = v;
    return v;
  }

  /** Stop, and go back to the accepted-move prefix with the best validation loss. */
  private finish(reason: string): void {
    this.b.done = true;
    this.b.stopReason = reason;
    if (this.b.best.moves < this.b.moves.length) {
      this.b.moves = this.b.moves.slice(0, this.b.best.moves);
      this.cur = this.model.blocks.map(cloneBlock);
      for (const m of this.b.moves) applyTransforms(this.model.config, this.cur[m.block], m.transforms);
      this.quantizeFrom(0);
    }
    this.log?.info({ reason, step: this.b.step, kept: this.b.moves.length, bestStep: this.b.best.step }, 'search stopped');
  }

  progress(): Progress {
    const elapsed = (Date.now() - this.startedAt) / 1000;
    const cps = this.evalTimeMs > 0 ? (this.evalCount * 1000) / this.evalTimeMs : 0;
    const stepsLeft = this.config.steps - this.b.step;
    const perStep = this.b.step > 0 ? elapsed / this.b.step : null;
    let eta = perStep !== null ? stepsLeft * perStep : null;
    if (this.config.timeBudget > 0) eta = Math.min(eta ?? Infinity, Math.max(0, this.config.timeBudget - elapsed));
    const bl = this.b.blockLoss;
    return {
      step: this.b.step,
      totalSteps: this.config.steps,
      bestLoss: bl.length ? bl.reduce((s, x, i) => s + x / this.b.startLoss[i], 0) / bl.length : 1,
      validationLoss: this.lastValidation ?? (Number.isFinite(this.b.best.validation) ? this.b.best.validation : null),
      acceptRate: this.b.step > 0 ? this.b.accepted / this.b.step : 0,
      candidatesPerSec: cps,
      etaSeconds: this.b.done ? 0 : eta,
      done: this.b.done,
      stopReason: this.b.stopReason,
    };
  }

  /** State at the last stint boundary (steps since then are replayed identically on resume). */
  snapshot(): SearchSnapshot {
    return structuredClone(this.boundary) as unknown as SearchSnapshot;
  }

  /** The quantized transformed model the objective scored. */
  private searchedModel(): Model {
    return { ...this.model, blocks: this.qBlocks };
  }

  /** A quantizer on the untransformed model: the base (plain, or with clip search) or plain RTN. */
  private referenceModel(method: 'rtn' | 'gptq', clip: boolean): Model {
    const c = this.config;
    return quantizeModel(this.model, { bits: c.bits, group: c.group, method, clip, f16Scales: this.spec.f16Scales, calib: this.tokens.calib, ops: this.ops });
  }

  async report(): Promise<FinalReport> {
    const searched = this.searchedModel();
    const base = this.referenceModel(this.config.base, false);
    const models = {
      rtn: this.config.base === 'rtn' ? base : this.referenceModel('rtn', false),
      base,
      baseClip: this.referenceModel(this.config.base, true),
      searched,
    };
    const q = evaluateModels(this.model, models, this.tokens.eval, { ops: this.ops });
    const row = (k: keyof typeof models) => ({ ppl: q.models[k].ppl, kl: q.models[k].kl });
    return {
      fp: { ppl: q.fp.ppl },
      rtn: row('rtn'),
      base: row('base'),
      baseClip: row('baseClip'),
      searched: row('searched'),
      closes: gapClosed(q.models.rtn.ppl, q.models.searched.ppl, q.fp.ppl),
      closesBase: gapClosed(q.models.base.ppl, q.models.searched.ppl, q.fp.ppl),
      steps: this.b.step,
      accepted: this.b.accepted,
      candidatesPerSec: this.progress().candidatesPerSec,
      blocks: this.b.startLoss.map((s, i) => ({ block: i, startLoss: s, endLoss: this.b.blockLoss[i] })),
      history: this.b.history,
      models: { fp: this.model, base, searched },
    };
  }

  async exportTo(dir: string): Promise<void> {
    const packr = new Packr({ moreTypes: true });
    writeSearchExport(dir, {
      // Without the worker count, which changes only speed: the export is the same for any.
      transforms: packr.pack({ config: { ...this.config, workers: undefined }, moves: this.b.moves }),
      transformed: { ...this.model, blocks: this.cur },
      quantized: this.searchedModel(),
      codes: this.searchedCodes(),
    });
  }

  /**
   * Integer codes of the searched model: each block quantized again, as quantizeFrom does,
   * with the quantizers' codes kept; checked to dequantize to the searched weights exactly.
   */
  private searchedCodes(): BlockQuantized[] {
    const cfg = this.model.config;
    let xs = this.calibFp[0];
    return this.cur.map((b, l) => {
      const codes: BlockQuantized = {};
      const obj = new BlockObjective(cfg, this.blockData(l, xs), this.spec, this.ops, this.config.base);
      const { q } = obj.fullEval(b, 'all', codes);
      for (const name of blockLinears(cfg)) {
        const want = this.qBlocks[l][name]!;
        if (!q[name]!.every((v, i) => Object.is(v, want[i]))) throw new Error(`export: block ${l} ${name} re-quantizes differently from the searched model`);
      }
      if (l + 1 < cfg.nLayers) xs = this.runQuantBlock(l, xs);
      return codes;
    });
  }

  async close(): Promise<void> {
    await this.evaluator.close();
  }
}

function concat(xs: F32[]): F32 {
  const n = xs.reduce((s, x) => s + x.length, 0);
  const out = new Float32Array(n);
  let o = 0;
  for (const x of xs) {
    out.set(x, o);
    o += x.length;
  }
  return out;
}

