/**
 * Invariance transforms (DESIGN.md §4) as plain data.
 *
 * A transform maps a block's FP weights to FP weights that compute the same function
 * (exactly, or approximately for 'ffn-rot'). It is stored compactly — index arrays, scale
 * vectors, angle vectors, never a dense matrix — and every field is a string or a typed
 * array (Int32Array indices, Float64Array values), so a list of accepted moves goes into a
 * msgpackr checkpoint as is (with `moreTypes: true`, which keeps typed arrays typed).
 *
 * Index spaces (all 0-based):
 *  - FFN unit:        [0, hiddenDim)                  a row of w1/w3 (+b1), a column of w2
 *  - KV group:        [0, nKvHeads)                   kv head g and the q heads that read it,
 *                                                     h = g*G + r, G = nHeads/nKvHeads, 0 ≤ r < G
 *  - KV channel:      [0, nKvHeads*headDim)           a row of wv (+bv); channel c = g*headDim + d
 *  - RoPE pair (qk):  [0, nKvHeads*headDim/2)         p = g*(headDim/2) + i: RoPE pair i of kv head g,
 *                                                     whose two head dims are ropePair(cfg, i)
 *
 * Conventions:
 *  - Permutations: new unit units[k] holds what old unit from[k] held. `from` is a
 *    rearrangement of `units`; units not listed stay put. A full permutation perm of n
 *    units is units = 0…n-1, from = perm ("new unit j = old unit perm[j]").
 *  - Rotations: a pair (a, b) with angle θ maps the pair's rows (outputs of the first
 *    linear) by R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]]:
 *        row_a ← cos θ·row_a − sin θ·row_b,   row_b ← sin θ·row_a + cos θ·row_b,
 *    and the consuming linear's columns a, b by the same formula, which is W ← W·Rᵀ, so
 *    (W Rᵀ)(R y) = W y. Pairs within one transform are disjoint, so they commute and the
 *    inverse is the same pairs with −θ.
 *  - Scales: listed units' producing rows are divided by s and consuming columns
 *    multiplied by s (for qk: q rows × s, k rows ÷ s). The inverse uses 1/s.
 */
import type { LinearName } from '../model/types';

export interface FfnPerm {
  kind: 'ffn-perm';
  /** New unit units[k] = old unit from[k]. */
  units: Int32Array;
  from: Int32Array;
}

/**
 * Per-unit scale s > 0. SwiGLU: w3 row ÷ s, w2 column × s (silu(w1x)·(w3x) is linear in
 * w3x). ReLU (opt): w1 row and b1 ÷ s, w2 column × s (relu(z/s) = relu(z)/s for s > 0).
 */
export interface FfnScale {
  kind: 'ffn-scale';
  units: Int32Array;
  scales: Float64Array;
}

/**
 * Givens rotations on disjoint unit pairs [a0, b0, a1, b1, …]: rows of w1 and w3 (+b1) by
 * R, columns of w2 by R (W2 ← W2·Rᵀ). The identity on the linear part; approximate
 * through the nonlinearity, with an output change of O(θ).
 */
export interface FfnRot {
  kind: 'ffn-rot';
  pairs: Int32Array;
  angles: Float64Array;
}

/**
 * Permutation of KV groups together with their query heads: rows of wk/wv (+bk/bv) per kv
 * head, rows of wq (+bq) per q head, and the matching columns of wo.
 * New group groups[k] = old group from[k] (q head g*G + r follows group g).
 */
export interface AttnHeadPerm {
  kind: 'attn-head-perm';
  groups: Int32Array;
  from: Int32Array;
}

/**
 * Givens rotations on disjoint pairs of KV channels [a0, b0, …], both of a pair in the
 * same kv head: rows of wv (+bv) by R, and the same head dims of wo's columns by R for
 * every q head that reads that kv head (Wo ← Wo·Rᵀ). Exact: attention mixes v linearly,
 * so each q head's context is rotated by R and wo undoes it.
 */
export interface AttnVoRot {
  kind: 'attn-vo-rot';
  pairs: Int32Array;
  angles: Float64Array;
}

/** Per-KV-channel scale: wv row (+bv) ÷ s, wo columns of every q head reading it × s. */
export interface AttnVoScale {
  kind: 'attn-vo-scale';
  channels: Int32Array;
  scales: Float64Array;
}

/**
 * Rotation of RoPE pairs (distinct RoPE-pair indices, see above) by φ: the pair's rows of
 * wk (+bk) of the kv head and the same rows of wq (+bq) of every q head in its group.
 * Exact: 2D rotations commute with RoPE's, so every q·k score is unchanged; without
 * RoPE (opt) a common rotation of q and k is exact anyway.
 */
export interface AttnQkRot {
  kind: 'attn-qk-rot';
  ropePairs: Int32Array;
  angles: Float64Array;
}

/** Scale of RoPE pairs: q pair rows (+bq) of every q head in the group × s, k pair rows (+bk) ÷ s. */
export interface AttnQkScale {
  kind: 'attn-qk-scale';
  ropePairs: Int32Array;
  scales: Float64Array;
}

/**
 * Input-channel scale through a norm: norm weight (and bias) × s on the listed model
 * channels, the same columns of the linears reading that norm ÷ s (site 'attn': wq wk wv;
 * 'ffn': w1 w3). Exact.
 */
export interface NormScale {
  kind: 'norm-scale';
  site: 'attn' | 'ffn';
  channels: Int32Array;
  scales: Float64Array;
}

export type Transform = FfnPerm | FfnScale | FfnRot | AttnHeadPerm | AttnVoRot | AttnVoScale | AttnQkRot | AttnQkScale | NormScale;

export type TransformKind = Transform['kind'];

export const TRANSFORM_KINDS: readonly TransformKind[] = [
  'ffn-perm',
  'ffn-scale',
  'ffn-rot',
  'attn-head-perm',
  'attn-vo-rot',
  'attn-vo-scale',
  'attn-qk-rot',
  'attn-qk-scale',
  'norm-scale',
];

/** Kinds that leave the block function unchanged (up to float32 round-off). */
export const EXACT_KINDS: readonly TransformKind[] = TRANSFORM_KINDS.filter((k) => k !== 'ffn-rot');

export function isExact(t: Transform): boolean {
  return t.kind !== 'ffn-rot';
}

/** What a transform rewrites in one linear weight [out, in]. */
export interface LinearTouch {
  /** Rows rewritten in full (every column). Sorted ascending, distinct. */
  rows: Int32Array;
  /** Columns rewritten in every row. Sorted ascending, distinct. */
  cols: Int32Array;
}

/**
 * Per linear weight, what a transform rewrites; a linear that is absent is untouched.
 * Biases follow the rows of their linear (bq/bk/bv with wq/wk/wv, b1 with w1) and are
 * not listed: they are not quantized. Rows that a permutation merely moves are listed.
 */
export type Touched = Partial<Record<LinearName, LinearTouch>>;
