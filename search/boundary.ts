/**
 * The run's record at a stint boundary, and the rules that read and update it. A stint
 * starts by recomputing every cache from the FP weights, so the state at a boundary is a
 * pure function of (model, config, seed, accepted moves): this record (PRNG state, moves,
 * counters, losses, validation history) is all a snapshot holds, and resuming replays the
 * moves (blocks.ts) and repeats the same float operations in the same order. A snapshot
 * inside a stint adds where the stint began and what its accepted moves were (`inStint`):
 * a resume rebuilds the stint's start as at a boundary and commits those moves again, in
 * order, so the objective's incrementally updated caches are bit for bit the interrupted
 * run's (an objective rebuilt from the weights they leave differs in round-off). Validation
 * checks are recorded here, with the best state (for patience and the final rollback) and
 * the stop rule; progress reports read it.
 */
import { fail } from '../core/errors';
import type { RngState } from '../core/rng';
import type { AcceptedMove } from './blocks';
import type { SearchTuning } from './config';
import type { FinalReport, MoveStats, Progress, RunConfig, SearchSnapshot } from './contract';
import { tuningSets, type SetPlan } from './plan';
import type { StintPlan } from './stintPlan';

/** Version 3 may carry `inStint`; version 2 snapshots (boundaries only) read the same. */
export const SNAPSHOT_VERSION = 3;
const READABLE_VERSIONS = [2, 3];

/** What the objective's commit of an accepted move needs beyond its transforms and clip codes. */
export interface StintCommit {
  kind: 'ffn' | 'attn' | 'clip';
  /** FFN moves: the units whose rows/columns changed. */
  units?: Int32Array;
}

/** Where the current stint began and what it accepted, in a snapshot taken inside it. */
export interface InStint {
  /** Steps of the stint already taken. */
  steps: number;
  /** Accepted moves at the stint's start (the moves after them are the stint's, one commit each). */
  moves: number;
  commits: StintCommit[];
}

/** Everything a stint boundary needs to continue; plain data for msgpackr. */
export interface Boundary {
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
  /** The sampled sets' sizes the run planned (absent in snapshots from before plans: the tuning's sizes). */
  sets?: SetPlan;
  /** The current (next) stint's length and validation cadence (search/stintPlan.ts; absent in older snapshots: the tuning's blockSteps, every stint checked). */
  stintPlan?: StintPlan;
  /** Per move type, per block: candidates proposed, accepted, and the accepted moves' summed gain (absent in older snapshots). */
  moveStats?: MoveStats;
  /** Present in a snapshot taken inside a stint. */
  inStint?: InStint;
}


/** The per-block counts of move type `kind` (made at zero when it has none). */
export function moveStat(b: Boundary, kind: string, nLayers: number): MoveStats[string] {
  const zeros = () => new Array(nLayers).fill(0);
  return ((b.moveStats ??= {})[kind] ??= { proposed: zeros(), accepted: zeros(), gain: zeros() });
}

/** Count a scored candidate of type `kind` on block l (accepted with gain `gain`, or not when gain is null). */
export function recordMove(b: Boundary, kind: string, l: number, nLayers: number, gain: number | null): void {
  const k = moveStat(b, kind, nLayers);
  k.proposed[l]++;
  if (gain !== null) {
    k.accepted[l]++;
    k.gain[l] += gain;
  }
}

/** The record of a run that has not started. */
export function freshBoundary(configHash: string, rng: RngState, nLayers: number, sets: SetPlan): Boundary {
  return {
    sets,
    version: SNAPSHOT_VERSION, configHash, step: 0, stint: 0, rng, moves: [],
    block: 0, lastGain: [], lastVisit: new Array(nLayers).fill(-1), globalKl0: 0,
    evaluated: 0, accepted: 0, startLoss: [], blockLoss: [], best: { validation: Infinity, moves: 0, step: 0 },
    checksSinceBest: 0, history: [], done: false, initDone: false,
  };
}

/** The set sizes a snapshot's run planned. */
export function snapshotSets(snap: SearchSnapshot, t: SearchTuning): SetPlan {
  const s = (snap as unknown as Boundary).sets;
  return s ? { ...s } : tuningSets(t);
}

/** The record in a snapshot, checked to belong to this format and configuration. */
export function boundaryOf(snap: SearchSnapshot, configHash: string): Boundary {
  const s = snap as unknown as Boundary;
  if (!READABLE_VERSIONS.includes(s.version)) fail('bad-checkpoint', `snapshot version ${s.version} is not one of ${READABLE_VERSIONS.join(', ')}`);
  if (s.configHash !== configHash) fail('bad-checkpoint', 'snapshot was taken with a different configuration');
  return structuredClone(s);
}

/** Mean over blocks of the block loss over its start (1 before any block has a loss). */
export function meanLoss(b: Boundary): number {
  const bl = b.blockLoss;
  return bl.length ? bl.reduce((s, x, i) => s + x / b.startLoss[i], 0) / bl.length : 1;
}

/** Record validation loss `v` (of the stint on `block`, if any): history, and the best state so far. */
export function recordValidation(b: Boundary, v: number, nLayers: number, block?: number): void {
  const mean = b.blockLoss.reduce((s, x, i) => s + x / b.startLoss[i], 0) / nLayers;
  b.history.push({ step: b.step, loss: mean, validation: v, ...(block === undefined ? {} : { block }) });
  if (v < b.best.validation) {
    b.best = { validation: v, moves: b.moves.length, step: b.step };
    b.checksSinceBest = 0;
  } else {
    b.checksSinceBest++;
  }
}

/**
 * Why the run stops after this stint: its step budget, its time budget, or patience on
 * validation; undefined to go on. Patience waits until every block has had a stint: on a
 * model with more blocks than `patience`, checks that did not improve on the first blocks
 * say nothing about the blocks not yet searched.
 */
export function stopReason(b: Boundary, config: RunConfig, outOfTime: boolean): string | undefined {
  if (b.step >= config.steps) return 'steps';
  if (outOfTime) return 'time';
  if (config.patience > 0 && b.checksSinceBest >= config.patience && b.lastVisit.every((v) => v >= 0)) return 'patience';
  return undefined;
}

/** Progress of the run with record `b`, `elapsed` seconds in; `lastValidation`: the latest check, if any this session. */
export function progressOf(b: Boundary, config: RunConfig, elapsed: number, candidatesPerSec: number, lastValidation: number | null): Progress {
  const stepsLeft = config.steps - b.step;
  const perStep = b.step > 0 ? elapsed / b.step : null;
  let eta = perStep !== null ? stepsLeft * perStep : null;
  if (config.timeBudget > 0) eta = Math.min(eta ?? Infinity, Math.max(0, config.timeBudget - elapsed));
  return {
    step: b.step,
    totalSteps: config.steps,
    bestLoss: meanLoss(b),
    validationLoss: lastValidation ?? (Number.isFinite(b.best.validation) ? b.best.validation : null),
    acceptRate: b.step > 0 ? b.accepted / b.step : 0,
    candidatesPerSec,
    etaSeconds: b.done ? 0 : eta,
    done: b.done,
    stopReason: b.stopReason,
  };
}
