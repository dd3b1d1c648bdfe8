/**
 * What the daemon (and `invarx run`) need from a search job. search/run.ts implements it.
 *
 * A job is a pure function of (model file, token files, RunConfig): two runs with the same
 * inputs, or one run stopped and resumed from any checkpoint, take the same steps and end
 * with byte-identical exports. The wall-clock budget is the one exception by nature.
 */
import type { Model } from '../core/model/types';

export type Invariance =
  | 'ffn-perm' | 'ffn-scale' | 'ffn-rot'
  | 'attn-head-perm' | 'attn-vo-rot' | 'attn-vo-scale' | 'attn-qk-rot' | 'attn-qk-scale'
  | 'norm-scale';

export interface RunConfig {
  model: string;
  tokenizer?: string;
  bits: number;
  group: number;
  base: 'rtn' | 'gptq';
  /**
   * Quantization format: absent or 'int' for the int grid of `bits` and `group`; a ggml
   * format (q4_0, q4_1, q5_0, q5_1, q8_0, q2_k … q6_k) fixes both (config.ts formatGrid), the
   * search then scores its reference quantizer and `--out` writes model.gguf.
   */
  format?: string;
  /** Embedding and classifier type of the GGUF export (ggml formats only; default q8_0). */
  embed?: 'q8_0' | 'f16';
  /** Step budget. */
  steps: number;
  /** Wall-clock budget in seconds (0 = none). */
  timeBudget: number;
  seed: number;
  /** Token files (JSON array of arrays of ids, .txt, .npy); default: sampled from the FP model. */
  calibTokens?: string;
  evalTokens?: string;
  /**
   * UTF-8 text files (one document per line), tokenized with the model's tokenizer and cut
   * into windows of `seqTokens` tokens: real text instead of sampled tokens.
   */
  calibText?: string;
  evalText?: string;
  invariances: Invariance[];
  /** Candidates drawn per step. */
  candidates: number;
  /** Worker threads for candidate evaluation (does not change results). */
  workers: number;
  /** Stop after this many validation checks without improvement, once every block has had a stint (0 = never). */
  patience: number;
  /**
   * Bytes the run aims to stay within (0 or absent: a fifth of the machine's memory); block
   * activations past an eighth of it go to scratch files. Changes only memory and speed.
   */
  memoryBudget?: number;
}

export interface Progress {
  step: number;
  totalSteps: number;
  bestLoss: number;
  validationLoss: number | null;
  acceptRate: number;
  candidatesPerSec: number;
  etaSeconds: number | null;
  done: boolean;
  /** Why it stopped, once done: 'steps' | 'time' | 'patience'. */
  stopReason?: string;
  /** The phase running now (tokens, calibration, base, scale-init, search, norm-tune, report, export; done). */
  phase?: string;
  /** Seconds spent in each phase so far (search/phases.ts). */
  phases?: Record<string, number>;
  /** Seconds left in the running phase: predicted for the phases before and after the search (search/plan.ts), the search's own ETA during it. */
  phaseEtaSeconds?: number | null;
  /** Candidates scored so far. */
  candidates?: number;
}

export interface QualityRow {
  ppl: number;
  kl?: number;
}

/** Per move type ('ffn', an attention kind, 'clip-<linear>'): per-block counts, and gain in the block's normalised loss (L/L0, the global term included on its steps). */
export type MoveStats = Record<string, { proposed: number[]; accepted: number[]; gain: number[] }>;

export interface FinalReport {
  fp: QualityRow;
  /** Plain round-to-nearest: the headline reference ("closes" is measured against it). */
  rtn: QualityRow;
  /** The base quantizer as asked for (plain min–max grid): the reference. */
  base: QualityRow;
  /** The base quantizer with clip-ratio search, on the untransformed model. */
  baseClip: QualityRow;
  /** What the table calls the base quantizer: RTN, GPTQ, or GPTQ+cd when its codes are refined (core/quant/refine.ts). */
  baseName?: string;
  searched: QualityRow;
  /** Share of RTN's log-perplexity gap to FP that the searched model closes. */
  closes: number;
  /** The same share measured against the base quantizer (equal to `closes` on an RTN base). */
  closesBase: number;
  steps: number;
  accepted: number;
  candidatesPerSec: number;
  /** Per-block loss at start and end, for reports. */
  blocks: { block: number; startLoss: number; endLoss: number }[];
  /** Loss/validation history: one entry per validation check (`block`: the stint's block; absent before the search). */
  history: { step: number; loss: number; validation: number; block?: number }[];
  /** Seconds per phase and candidates scored, for the whole run. */
  phases?: Record<string, number>;
  candidates?: number;
  /** What the time budget left out (report rows left out have NaN figures). */
  cut?: string[];
  /**
   * Per move type ('ffn', an attention kind, 'clip-<linear>'), per block: candidates
   * proposed and accepted, and the accepted moves' summed decrease of the block's
   * normalised loss (moves a final rollback dropped included).
   */
  moveStats?: MoveStats;
  /** The three models compared (for samples); not serialized. */
  models?: { fp: Model; base: Model; searched: Model };
}

/**
 * The search state as plain data (numbers, strings, typed arrays, arrays, objects) that
 * msgpackr with `moreTypes: true` round-trips exactly. The daemon wraps it with format
 * version, config/model hashes and a checksum; it never looks inside.
 */
export type SearchSnapshot = Record<string, unknown>;

export interface SearchJob {
  readonly config: RunConfig;
  /** Run one step (draw candidates, evaluate, accept or not). */
  step(): Promise<void>;
  readonly done: boolean;
  progress(): Progress;
  snapshot(): SearchSnapshot;
  /** Quality table on the held-out tokens; call once done (or to stop early). */
  report(): Promise<FinalReport>;
  /** Write transforms + quantized model to `dir` (deterministic bytes). */
  exportTo(dir: string): Promise<void>;
  /** Release workers. */
  close(): Promise<void>;
}
