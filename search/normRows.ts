/**
 * The row work of norm-gain tuning (normTune.ts) as tasks over ranges of rows, so that the
 * pass can spread a candidate over the search's worker threads: a task writes its rows of
 * the candidate's block output into shared output rows, and the pass sums the loss over
 * all rows, in order, on its own thread. How the rows are split, and over how many threads,
 * changes no bit: every row is computed as the whole computation computes it (the products
 * are row-separable for ranges of SEPARABLE_MIN_ROWS rows and more, attention is per
 * sequence, norms and the gate are per row).
 */
import { attnRows, ffnRows } from '../core/forwardRows';
import type { Block, F32, ModelConfig } from '../core/model/types';
import { SEPARABLE_MIN_ROWS, siluMul, type Ops } from '../core/ops';
import { ScratchBuffers } from '../core/scratchBuffers';
import { attnRowRows, type AttnRowTask } from './attnRowRows';
import type { Alloc } from './blockState';
import { temp32 } from './temps';

/**
 * The FFN side as FFN-norm candidates see it: the attention output h [N, dim], its normed
 * rows xn [N, dim] (tuned gains applied) and w1's and w3's outputs on them [N, H].
 */
export interface FfnNormState {
  h: F32;
  xn: F32;
  pre1: F32;
  pre3: F32;
}

/** One task: rows [r0, r1) of a candidate's output (`block`, `attnRow`: sequences [s0, s1)), or a kept FFN-norm factor applied to rows [r0, r1) of the state. */
export type NormTask =
  | { kind: 'block'; cfg: ModelConfig; w: Block; x: F32; seqStarts: number[]; s0: number; s1: number; out: F32 }
  | { kind: 'ffn'; cfg: ModelConfig; w: Block; h: F32; r0: number; r1: number; out: F32 }
  | { kind: 'ffnNorm'; cfg: ModelConfig; w: Block; st: FfnNormState; c: number; k: number; r0: number; r1: number; out: F32 }
  | { kind: 'ffnNormCommit'; cfg: ModelConfig; w: Block; st: FfnNormState; c: number; k: number; r0: number; r1: number }
  | ({ kind: 'attnRow' } & AttnRowTask);

/** Runs tasks, in this thread or spread over threads; `alloc` is the memory its tasks' arrays must live in. */
export interface NormRunner {
  readonly alloc: Alloc;
  /** Ranges a piece of work is cut into (1: no split). */
  readonly parts: number;
  run(tasks: NormTask[]): Promise<void>;
}

// every candidate redoes the same rows: into the same buffers
const scratch = new ScratchBuffers();

/** Runs one task with `ops` (the pass's thread, or a worker's). */
export function runNormTask(t: NormTask, ops: Ops): void {
  const d = t.cfg.dim;
  switch (t.kind) {
    case 'block': {
      const a = t.seqStarts[t.s0];
      const rows = { x: t.x.subarray(a * d, t.seqStarts[t.s1] * d), seqStarts: t.seqStarts.slice(t.s0, t.s1 + 1).map((s) => s - a) };
      t.out.set(ffnRows(t.cfg, t.w, attnRows(t.cfg, t.w, rows, ops, scratch).h, ops, scratch), a * d);
      return;
    }
    case 'ffn':
      t.out.set(ffnRows(t.cfg, t.w, t.h.subarray(t.r0 * d, t.r1 * d), ops, scratch), t.r0 * d);
      return;
    case 'ffnNorm':
      return ffnNormRows(t, ops);
    case 'ffnNormCommit':
      return ffnNormCommit(t);
    case 'attnRow':
      return attnRowRows(t, ops);
  }
}

/** Column c of w1 and of w3, [H] each. */
function columns(cfg: ModelConfig, w: Block, c: number): [F32, F32] {
  const { dim: d, hiddenDim: H } = cfg;
  const col1 = temp32('normRows.col1', H);
  const col3 = temp32('normRows.col3', H);
  for (let j = 0; j < H; j++) {
    col1[j] = w.w1[j * d + c];
    col3[j] = w.w3![j * d + c];
  }
  return [col1, col3];
}

/**
 * Rows [r0, r1) of the llama FFN's output with the FFN norm's channel c scaled by k: that
 * scales one column of xn, so w1's and w3's outputs change by a rank-one term, and only the
 * gate and w2's product are redone.
 */
function ffnNormRows(t: Extract<NormTask, { kind: 'ffnNorm' }>, ops: Ops): void {
  const { cfg, w, st, c, k, r0, r1 } = t;
  const { dim: d, hiddenDim: H } = cfg;
  const n = r1 - r0;
  const [col1, col3] = columns(cfg, w, c);
  const act = temp32('normRows.act', n * H);
  const gate = temp32('normRows.gate', n * H);
  for (let r = 0; r < n; r++) {
    const s = (k - 1) * st.xn[(r0 + r) * d + c];
    const o = r * H;
    const p = (r0 + r) * H;
    for (let j = 0; j < H; j++) {
      act[o + j] = st.pre1[p + j] + s * col1[j];
      gate[o + j] = st.pre3[p + j] + s * col3[j];
    }
  }
  siluMul(ops, act, gate, n * H);
  const out = t.out.subarray(r0 * d, r1 * d);
  out.set(st.h.subarray(r0 * d, r1 * d));
  ops.matmulT(out, act, w.w2, n, H, d, true);
}

/** Keep channel c's factor k in rows [r0, r1) of the state. */
function ffnNormCommit(t: Extract<NormTask, { kind: 'ffnNormCommit' }>): void {
  const { cfg, w, st, c, k, r0, r1 } = t;
  const { dim: d, hiddenDim: H } = cfg;
  const [col1, col3] = columns(cfg, w, c);
  for (let r = r0; r < r1; r++) {
    const s = (k - 1) * st.xn[r * d + c];
    for (let j = 0; j < H; j++) {
      st.pre1[r * H + j] += s * col1[j];
      st.pre3[r * H + j] += s * col3[j];
    }
    st.xn[r * d + c] *= k;
  }
}

/** The tasks' work in this thread, unsplit. */
export function inThread(ops: Ops, alloc: Alloc): NormRunner {
  return {
    alloc,
    parts: 1,
    run: async (tasks) => {
      for (const t of tasks) runNormTask(t, ops);
    },
  };
}

/**
 * [0, n) cut into at most `parts` consecutive ranges of about equal weight (`at(i)`: the
 * cumulative weight before item i, at(n) the total): each cut at the item boundary nearest
 * its share, and left out where a range would weigh less than `least`.
 */
function cut(n: number, parts: number, at: (i: number) => number, least: number): [number, number][] {
  const total = at(n);
  const k = Math.max(1, Math.min(parts, n, Math.floor(total / least)));
  const out: [number, number][] = [];
  let a = 0;
  for (let p = 1; p < k; p++) {
    const target = (total * p) / k;
    let b = a + 1;
    while (b < n && at(b) < target) b++;
    if (b - 1 > a && target - at(b - 1) < at(b) - target) b--;
    if (b >= n || at(b) - at(a) < least || total - at(b) < least) continue;
    out.push([a, b]);
    a = b;
  }
  out.push([a, n]);
  return out;
}

/** Sequence ranges [s0, s1) of `seqStarts` (the first `seqs` sequences) for `parts` tasks. */
export function seqRanges(seqStarts: readonly number[], seqs: number, parts: number): [number, number][] {
  return cut(seqs, parts, (i) => seqStarts[i] - seqStarts[0], SEPARABLE_MIN_ROWS);
}

/** Row ranges [r0, r1) of n rows for `parts` tasks. */
export function rowRanges(n: number, parts: number): [number, number][] {
  return cut(n, parts, (i) => i, SEPARABLE_MIN_ROWS);
}
