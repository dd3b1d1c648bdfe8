/**
 * Run options: defaults, validation, and the fingerprint that goes into checkpoints.
 * Everything that changes a run's trajectory is in RunConfig (and nothing else is).
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { fail } from '../core/errors';
import { formatByName, type QuantFormat } from '../core/quant/formats';
import type { SearchSpec } from './blockQuant';
import type { Invariance, RunConfig } from './contract';

export const ALL_INVARIANCES: Invariance[] = [
  'ffn-perm', 'ffn-scale', 'ffn-rot',
  'attn-head-perm', 'attn-vo-rot', 'attn-vo-scale', 'attn-qk-rot', 'attn-qk-scale',
  'norm-scale',
];

/** `--invariances` accepts kinds and the shorthands `ffn`, `attn`, `all`. */
export function parseInvariances(spec: string): Invariance[] {
  const out = new Set<Invariance>();
  for (const raw of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    if (raw === 'all') ALL_INVARIANCES.forEach((k) => out.add(k));
    else if (raw === 'ffn' || raw === 'attn' || raw === 'norm') ALL_INVARIANCES.filter((k) => k.startsWith(raw)).forEach((k) => out.add(k));
    else if ((ALL_INVARIANCES as string[]).includes(raw)) out.add(raw as Invariance);
    else fail('bad-config', `unknown invariance "${raw}" (known: ffn, attn, all, ${ALL_INVARIANCES.join(', ')})`);
  }
  if (out.size === 0) fail('bad-config', '--invariances names no invariance');
  return ALL_INVARIANCES.filter((k) => out.has(k));
}

export interface SearchTuning {
  /** Share of FFN units one move touches (InvarExplore: ~0.1). */
  unitFraction: number;
  /** Units of one FFN move are drawn from this many quantization groups of w2 (locality makes evaluation cheap). */
  groupsPerMove: number;
  /** Std-dev of log-scale steps. */
  scaleStep: number;
  /** Std-dev of rotation angle steps (radians). */
  angleStep: number;
  /** Std-dev of log-scale and angle steps of attention moves (exact invariances tolerate larger steps). */
  attnScaleStep: number;
  attnAngleStep: number;
  /** Share of steps that propose attention moves (when attention invariances are on). */
  attnShare: number;
  /**
   * How a candidate's invariance-move kind is chosen: 'fixed' (attnShare, then the attention
   * kinds alike) or 'adaptive' (each kind in proportion to its gain per proposal on the
   * block so far, moveMix.ts).
   */
  mix: 'fixed' | 'adaptive';
  /**
   * Share of candidates that are clip moves (one group's clip ratio, clipMoves.ts); 0 = none.
   * RTN base on the int grid only: elsewhere no clip move is drawn.
   */
  clipShare: number;
  /** Share of clip moves that set every group of the drawn group's row (the others: that group alone). */
  clipRowShare: number;
  /** Clip initialisation (clipInit.ts) after each block's scale initialisation, when clip moves are on. */
  clipInit: boolean;
  /** Steps spent on one block before moving to the next. */
  blockSteps: number;
  /**
   * Keep a stint only if it improves validation: after a checked stint that does not, go
   * back to the best checked state and go on from there (off: only the run's end goes back).
   */
  gate: boolean;
  /** Calibration / validation / evaluation set sizes (sequences × tokens) when sampled. */
  calibSeqs: number;
  validSeqs: number;
  evalSeqs: number;
  seqTokens: number;
  /** Softmax temperature the calibration set is sampled at (the validation and evaluation sets: 1). */
  calibTemperature: number;
  /** Clip-ratio search in the base RTN quantizer. */
  clip: boolean;
  /** Activation-aware scale initialisation of each block before the discrete search. */
  scaleInit: boolean;
  /** Quantize with fp16 scales, so the searched model is exactly its packed GPTQ export. */
  f16Scales: boolean;
  /**
   * GPTQ base on the int grid: coordinate-descent sweeps over its codes after each GPTQ
   * (core/quant/refine.ts), in the search and in the table's base rows; 0 is GPTQ as published.
   */
  gptqRefine: number;
  /**
   * GPTQ base on the int grid, with gptqRefine: each refinement sweep also moves every
   * group's scale to its best value for the layer error given the codes (core/quant/refine.ts).
   */
  gptqRefitScales: boolean;
  /**
   * GPTQ base on the int grid: GPTQ takes the columns in decreasing order of their Hessian
   * diagonal (gptq.py act_order with static groups), in the search and in the table's base rows.
   */
  gptqActOrder: boolean;
  /**
   * GPTQ base on the int grid: the share α in [0, 1] of the asymmetric correction
   * (core/quant/asymmetric.ts: each linear's target moved toward reproducing the FP linear on
   * the FP model's inputs), in the search and in the table's base rows; 0 is plain GPTQ.
   */
  gptqAsym: number;
  /**
   * Acceptance: 'greedy' takes the best candidate only if it lowers the loss; 'anneal' also
   * takes a worse one with probability exp(−ΔL / (L0·T)), T falling linearly from
   * `temperature` to 0 over the step budget.
   */
  accept: 'greedy' | 'anneal';
  temperature: number;
  /**
   * Which block the next stint works on: 'round-robin', or 'gain' — after one visit each,
   * the block whose last stint lowered its (normalised) loss most, with any block left
   * unvisited for 2·nLayers stints taken first so none is starved.
   */
  schedule: 'round-robin' | 'gain';
  /**
   * Every `globalEvery`-th step (0 = never) scores candidates by L/L0 + globalWeight·KL/KL0,
   * KL being KL(FP ‖ quantized) of the whole model's next-token distributions on the first
   * `globalSeqs` calibration sequences with the candidate block in place (after
   * InvarExplore's CE/CE0 + α·MSE/MSE0), KL0 its value for the base quantization.
   */
  globalEvery: number;
  globalWeight: number;
  globalSeqs: number;
  /**
   * After the search, tune the quantized model's norm gains block by block (normTune.ts),
   * kept if validation improves; skipped where its predicted cost passes NORM_TUNE_MAX_FLOPS.
   */
  normTune: boolean;
  /**
   * With normTune on the RTN base on the int grid: the pass also tunes per-row gains of the
   * quantized wq, wk, wv, w1 and w3 (normTune.ts), carried in their rows' group scales.
   */
  rowGains: boolean;
}

export const DEFAULT_TUNING: SearchTuning = {
  unitFraction: 0.1,
  groupsPerMove: 2,
  scaleStep: 1e-2,
  angleStep: 1e-3,
  attnScaleStep: 5e-2,
  attnAngleStep: 5e-2,
  attnShare: 0.75,
  mix: 'fixed',
  clipShare: 0,
  clipRowShare: 0,
  clipInit: false,
  blockSteps: 25,
  gate: false,
  calibSeqs: 32,
  validSeqs: 8,
  evalSeqs: 32,
  seqTokens: 256,
  calibTemperature: 1,
  clip: true,
  scaleInit: true,
  f16Scales: true,
  gptqRefine: 0,
  gptqRefitScales: false,
  gptqActOrder: false,
  gptqAsym: 0,
  accept: 'greedy',
  temperature: 0.01,
  schedule: 'round-robin',
  globalEvery: 0,
  globalWeight: 1,
  globalSeqs: 8,
  normTune: false,
  rowGains: false,
};

const ENUMS: Partial<Record<keyof SearchTuning, readonly string[]>> = {
  accept: ['greedy', 'anneal'],
  mix: ['fixed', 'adaptive'],
  schedule: ['round-robin', 'gain'],
};

/** [min, max] and whether it must be an integer, for every numeric setting. */
const RANGES: Partial<Record<keyof SearchTuning, [number, number, boolean]>> = {
  unitFraction: [0, 1, false],
  groupsPerMove: [1, 1 << 20, true],
  scaleStep: [0, 10, false],
  angleStep: [0, Math.PI, false],
  attnScaleStep: [0, 10, false],
  attnAngleStep: [0, Math.PI, false],
  attnShare: [0, 1, false],
  clipShare: [0, 1, false],
  clipRowShare: [0, 1, false],
  blockSteps: [1, 1e9, true],
  calibSeqs: [1, 1e6, true],
  validSeqs: [1, 1e6, true],
  evalSeqs: [1, 1e6, true],
  seqTokens: [2, 1 << 20, true],
  // (0 would be greedy decoding: every calibration sequence the same)
  calibTemperature: [0.05, 100, false],
  temperature: [0, 1e6, false],
  globalEvery: [0, 1e9, true],
  globalWeight: [0, 1e6, false],
  globalSeqs: [1, 1e6, true],
  gptqRefine: [0, 1000, true],
  gptqAsym: [0, 1, false],
};

/** Tuning overrides merged onto the defaults; one clear InvarxError for an unknown key or impossible value. */
export function resolveTuning(over: Partial<SearchTuning> = {}): SearchTuning {
  const t = { ...DEFAULT_TUNING } as Record<string, unknown>;
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    const key = k as keyof SearchTuning;
    if (!Object.hasOwn(DEFAULT_TUNING, k)) fail('bad-config', `unknown tuning key "${k}" (known: ${Object.keys(DEFAULT_TUNING).join(', ')})`);
    const want = typeof DEFAULT_TUNING[key];
    if (typeof v !== want) fail('bad-config', `tuning ${k} must be a ${want}, got ${JSON.stringify(v)}`);
    const allowed = ENUMS[key];
    if (allowed && !allowed.includes(v as string)) fail('bad-config', `tuning ${k} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
    const range = RANGES[key];
    if (range) {
      const [lo, hi, integer] = range;
      const n = v as number;
      if (!(Number.isFinite(n) && n >= lo && n <= hi) || (integer && !Number.isInteger(n))) {
        fail('bad-config', `tuning ${k} must be ${integer ? 'an integer' : 'a number'} in [${lo}, ${hi}], got ${n}`);
      }
    }
    t[k] = v;
  }
  return t as unknown as SearchTuning;
}

/** The calibration temperature recommendedTuning gives where a cooler set measured better. */
export const COOL_CALIB_TEMPERATURE = 0.7;

/** Where it did, over seeds 1–3 on the int grid: the RTN base at 3 and 4 bits, the GPTQ base at 2. */
const COOL_CALIB: Record<RunConfig['base'], readonly number[]> = { rtn: [3, 4], gptq: [2] };

/** GPTQ refinement sweeps recommendedTuning gives the GPTQ base on the int grid. */
export const GPTQ_REFINE_SWEEPS = 2;

/** Where scale refitting measured better on the GPTQ base (int grid), over seeds 1–3: 2 and 3 bits. */
const REFIT_SCALES_BITS: readonly number[] = [2, 3];

/** The share of the asymmetric correction recommendedTuning gives the GPTQ base on the int grid. */
export const GPTQ_ASYM_SHARE = 0.5;

/**
 * A new job's tuning: `over` with the settings the measurements recommend for its config
 * where they differ from DEFAULT_TUNING and `over` does not set them. The calibration set
 * sampled at COOL_CALIB_TEMPERATURE where COOL_CALIB says (README "Results": RTN W4 closes
 * 30.7% against 21.3%, W3 43.6% against 42.9%, GPTQ W2 59.5% against 58.8%; RTN W2 and
 * GPTQ W3, W4 did worse), GPTQ's codes refined (gptqRefine, README "Results") on the
 * GPTQ base on the int grid, with their scales refitted at 2 and 3 bits (gptqRefitScales,
 * README "Results": W4 did worse), GPTQ made asymmetric there at GPTQ_ASYM_SHARE (gptqAsym,
 * README "Results"), and the norm gains tuned at the end (normTune, README
 * "Results"), with row gains on the RTN base on the int grid (rowGains, README
 * "Results"). The job entry points (`invarx run`, a daemon's submit) record
 * them in the job, and a job recorded without them (by an older version) still resumes at
 * the defaults it started with.
 */
export function recommendedTuning(config: Pick<RunConfig, 'base' | 'bits' | 'format'>, over?: Partial<SearchTuning>): Partial<SearchTuning> {
  const intGrid = config.format === undefined || config.format.toLowerCase() === 'int';
  let t = over;
  if (t?.calibTemperature === undefined && intGrid && COOL_CALIB[config.base].includes(config.bits)) t = { ...t, calibTemperature: COOL_CALIB_TEMPERATURE };
  if (t?.gptqRefine === undefined && intGrid && config.base === 'gptq') t = { ...t, gptqRefine: GPTQ_REFINE_SWEEPS };
  if (t?.gptqAsym === undefined && intGrid && config.base === 'gptq') t = { ...t, gptqAsym: GPTQ_ASYM_SHARE };
  const refined = (t?.gptqRefine ?? 0) > 0;
  if (t?.gptqRefitScales === undefined && refined && REFIT_SCALES_BITS.includes(config.bits)) t = { ...t, gptqRefitScales: true };
  if (t?.rowGains === undefined && intGrid && config.base === 'rtn') t = { ...t, rowGains: true };
  return t?.normTune === undefined ? { ...t, normTune: true } : t;
}

export const DEFAULT_CONFIG: Omit<RunConfig, 'model' | 'bits' | 'group'> = {
  base: 'rtn',
  steps: 500,
  timeBudget: 0,
  seed: 1,
  invariances: [...ALL_INVARIANCES],
  candidates: 4,
  workers: 1,
  patience: 8,
};

/** Worker threads worth starting for `candidates` candidates a step: one per core, at most one per candidate. */
export function autoWorkers(candidates: number): number {
  return Math.max(1, Math.min(availableParallelism(), Math.floor(candidates) || 1));
}

function int(name: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi) fail('bad-config', `${name} must be an integer in [${lo}, ${hi}], got ${v}`);
}

/** A ggml format's grid as bits and group: its nominal bits (q4_0 → 4, q3_k → 3) and its block (32, or 256 for k-quants). */
export function formatGrid(fmt: QuantFormat): { bits: number; group: number } {
  return { bits: Number(fmt.name.charAt(1)), group: fmt.blockSize };
}

/**
 * The run's ggml format (null for the int grid). A format fixes the grid, so bits and group
 * must be its own (`formatGrid`); both bases run on it (GPTQ: core/quant/gptqFormat.ts).
 */
export function runFormat(c: Pick<RunConfig, 'format' | 'bits' | 'group'>): QuantFormat | null {
  if (c.format === undefined || c.format === 'int') return null;
  if (typeof c.format !== 'string') fail('bad-config', `format must be a format name, got ${JSON.stringify(c.format)}`);
  const fmt = formatByName(c.format);
  const grid = formatGrid(fmt);
  if (c.bits !== grid.bits || c.group !== grid.group) {
    fail('bad-config', `format ${fmt.name} fixes ${grid.bits} bits in blocks of ${grid.group}; bits ${c.bits} group ${c.group} contradict it (leave --bits/--group out)`);
  }
  return fmt;
}

/** The quantization setting the search's blocks use: the int grid's spec, with the ggml format's name when there is one. */
export function searchSpec(c: RunConfig, tuning: SearchTuning): SearchSpec {
  const spec: SearchSpec = { bits: c.bits, group: c.group, clip: tuning.clip, f16Scales: tuning.f16Scales };
  const fmt = runFormat(c);
  if (fmt) spec.format = fmt.name;
  else if (c.base === 'gptq') {
    if (tuning.gptqRefine > 0) spec.gptqRefine = tuning.gptqRefine;
    if (tuning.gptqRefitScales) {
      if (!(tuning.gptqRefine > 0)) fail('bad-config', 'tuning gptqRefitScales refits the scales in the refinement sweeps: it needs gptqRefine > 0');
      spec.gptqRefitScales = true;
    }
    if (tuning.gptqActOrder) spec.gptqActOrder = true;
    if (tuning.gptqAsym > 0) spec.gptqAsym = tuning.gptqAsym;
  }
  if (tuning.gptqAsym > 0 && (fmt || c.base !== 'gptq')) fail('bad-config', 'tuning gptqAsym (asymmetric GPTQ) applies to the GPTQ base on the int grid only');
  return spec;
}

/** Throws one clear InvarxError for the first impossible setting. */
export function validateRunConfig(c: RunConfig): RunConfig {
  if (typeof c.model !== 'string' || c.model === '') fail('bad-config', 'a model path is required (--model)');
  int('bits', c.bits, 2, 8);
  int('group', c.group, 1, 1 << 20);
  if (c.base !== 'rtn' && c.base !== 'gptq') fail('bad-config', `base must be rtn or gptq, got ${c.base}`);
  runFormat(c);
  if (c.embed !== undefined && c.embed !== 'q8_0' && c.embed !== 'f16') fail('bad-config', `embed must be q8_0 or f16, got ${JSON.stringify(c.embed)}`);
  if (c.embed !== undefined && runFormat(c) === null) fail('bad-config', 'embed applies to a ggml format\'s GGUF export only (give --format)');
  int('steps', c.steps, 0, 1e9);
  if (!(c.timeBudget >= 0)) fail('bad-config', `time budget must be >= 0 seconds, got ${c.timeBudget}`);
  int('seed', c.seed, 0, 2 ** 32 - 1);
  int('candidates', c.candidates, 1, 4096);
  int('workers', c.workers, 1, 256);
  int('patience', c.patience, 0, 1e9);
  if (c.memoryBudget !== undefined && !(Number.isFinite(c.memoryBudget) && c.memoryBudget >= 0)) {
    fail('bad-config', `memory budget must be a number of bytes >= 0, got ${c.memoryBudget}`);
  }
  if (!Array.isArray(c.invariances) || c.invariances.length === 0) fail('bad-config', 'at least one invariance must be on');
  for (const k of c.invariances) if (!ALL_INVARIANCES.includes(k)) fail('bad-config', `unknown invariance ${k}`);
  return c;
}

/** Later settings at the values that run as before they existed. */
const AS_BEFORE = { calibTemperature: 1, mix: 'fixed', gptqRefine: 0, gptqRefitScales: false, gptqActOrder: false, gptqAsym: 0, gate: false, normTune: false, rowGains: false } as const;
/** The clip search's settings, left out of the hash together when it is off. */
const CLIP_KEYS = ['clipShare', 'clipRowShare', 'clipInit'];

/** Hash of everything that determines the trajectory (workers, time and memory budgets excluded). */
export function configHash(c: RunConfig, tuning: SearchTuning = DEFAULT_TUNING): string {
  const { workers: _w, timeBudget: _t, memoryBudget: _m, ...rest } = c;
  // Settings added later are left out at the value that runs as before, so the hash is the
  // one older versions wrote and their checkpoints still resume.
  const clipOff = tuning.clipShare === 0 && tuning.clipRowShare === 0 && !tuning.clipInit;
  const asBefore = (k: string, v: unknown) => (k in AS_BEFORE ? AS_BEFORE[k as keyof typeof AS_BEFORE] === v : clipOff && CLIP_KEYS.includes(k));
  const t = Object.fromEntries(Object.entries(tuning).filter(([k, v]) => !asBefore(k, v)));
  return createHash('sha256').update(JSON.stringify({ rest, tuning: t })).digest('hex');
}
