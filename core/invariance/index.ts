/**
 * Public surface of core/invariance: apply a transform to a block's FP weights in place,
 * invert it, and say which rows/columns it rewrote (so a search re-quantizes only those).
 */
import type { Block, ModelConfig } from '../model/types';
import { applyAttn, touchedAttn } from './attention';
import { applyFfn, touchedFfn } from './ffn';
import { applyNorm, touchedNorm } from './norm';
import type { Touched, Transform } from './types';
import { validateTransform } from './validate';

export * from './types';
export {
  validateTransform, ffnPerm, ffnScale, ffnRot, attnHeadPerm, attnVoRot, attnVoScale, attnQkRot, attnQkScale, normScale,
} from './validate';
export { normReaders } from './norm';

/** Rewrites `block`'s weights (and biases) in place; throws InvarxError('bad-transform') if t is malformed for cfg. */
export function applyTransform(cfg: ModelConfig, block: Block, t: Transform): void {
  validateTransform(cfg, t);
  switch (t.kind) {
    case 'ffn-perm':
    case 'ffn-scale':
    case 'ffn-rot':
      return applyFfn(cfg, block, t);
    case 'norm-scale':
      return applyNorm(cfg, block, t);
    default:
      return applyAttn(cfg, block, t);
  }
}

/** Applies ts[0], ts[1], … in order. */
export function applyTransforms(cfg: ModelConfig, block: Block, ts: readonly Transform[]): void {
  for (const t of ts) applyTransform(cfg, block, t);
}

/**
 * The transform that undoes t (fresh arrays, nothing shared with t). Exact for permutations;
 * for scales (1/s) and rotations (−θ) up to float32 round-off of the weights.
 */
export function invertTransform(cfg: ModelConfig, t: Transform): Transform {
  validateTransform(cfg, t);
  const recip = (s: Float64Array) => s.map((x) => 1 / x);
  const neg = (a: Float64Array) => a.map((x) => -x);
  // Fields may be plain arrays if t came from somewhere other than the constructors.
  const i32 = (a: ArrayLike<number>) => Int32Array.from(a);
  const f64 = (a: ArrayLike<number>) => Float64Array.from(a);
  switch (t.kind) {
    case 'ffn-perm':
      // new[units[k]] = old[from[k]]  ⇔  old[from[k]] = new[units[k]]
      return { kind: t.kind, units: i32(t.from), from: i32(t.units) };
    case 'attn-head-perm':
      return { kind: t.kind, groups: i32(t.from), from: i32(t.groups) };
    case 'ffn-scale':
      return { kind: t.kind, units: i32(t.units), scales: recip(f64(t.scales)) };
    case 'attn-vo-scale':
      return { kind: t.kind, channels: i32(t.channels), scales: recip(f64(t.scales)) };
    case 'attn-qk-scale':
      return { kind: t.kind, ropePairs: i32(t.ropePairs), scales: recip(f64(t.scales)) };
    case 'norm-scale':
      return { kind: t.kind, site: t.site, channels: i32(t.channels), scales: recip(f64(t.scales)) };
    // Pairs are disjoint, so the rotations commute and negating every angle inverts them.
    case 'ffn-rot':
    case 'attn-vo-rot':
      return { kind: t.kind, pairs: i32(t.pairs), angles: neg(f64(t.angles)) };
    case 'attn-qk-rot':
      return { kind: t.kind, ropePairs: i32(t.ropePairs), angles: neg(f64(t.angles)) };
  }
}

/** The inverse of applying ts in order: each inverse, last first. */
export function invertTransforms(cfg: ModelConfig, ts: readonly Transform[]): Transform[] {
  return ts.map((t) => invertTransform(cfg, t)).reverse();
}

/**
 * Which rows and columns of which linear weights applying t rewrites. Rows: re-quantize
 * those rows. Columns: re-quantize, in every row, the quantization groups (along the input
 * dimension) that hold them.
 */
export function touched(cfg: ModelConfig, t: Transform): Touched {
  validateTransform(cfg, t);
  switch (t.kind) {
    case 'ffn-perm':
    case 'ffn-scale':
    case 'ffn-rot':
      return touchedFfn(cfg, t);
    case 'norm-scale':
      return touchedNorm(cfg, t);
    default:
      return touchedAttn(cfg, t);
  }
}
