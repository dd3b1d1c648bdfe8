/**
 * Candidate moves (DESIGN §5). A move is a short list of invariance transforms on one
 * block, drawn entirely from the seeded Rng, so a run's candidates depend only on the
 * seed and the order of draws.
 *
 * FFN moves follow InvarExplore: on one small set of units, a permutation cycle, a
 * multiplicative scale walk and small 2×2 rotations. Unlike InvarExplore the units are
 * drawn from a few quantization groups of w2 only, so a move re-quantizes (and
 * re-evaluates) a few groups instead of the whole of w2.
 */
import type { Rng } from '../core/rng';
import type { ModelConfig } from '../core/model/types';
import type { Transform } from '../core/invariance';
import type { Invariance } from './contract';
import type { SearchTuning } from './config';
import type { QuantSpec } from '../core/quant/rtn';
import type { Block } from '../core/model/types';
import { drawClipMove, type BlockClips, type ClipSet } from './clipMoves';
import { pickKind, type MixContext } from './moveMix';

export interface Move {
  kind: 'ffn' | 'attn' | 'clip';
  /** The invariance transforms (none for a clip move). */
  transforms: Transform[];
  /** Clip moves: the groups' new clip codes, of one row of one linear (clipMoves.ts). */
  clips?: ClipSet[];
  /** FFN moves: the units whose rows/columns change. */
  units?: Int32Array;
  /** Score by a full evaluation redoing this side (scale initialisation's whole-layer scales). */
  full?: 'attn' | 'ffn';
}

export function drawFfnMove(cfg: ModelConfig, rng: Rng, on: Set<Invariance>, t: SearchTuning, group: number): Move {
  const H = cfg.hiddenDim;
  const nGroups = Math.ceil(H / group);
  const pickGroups = rng.sample(nGroups, Math.min(t.groupsPerMove, nGroups));
  const pool: number[] = [];
  for (const g of pickGroups) for (let j = g * group; j < Math.min(H, (g + 1) * group); j++) pool.push(j);
  const k = Math.min(pool.length, Math.max(2, Math.round(t.unitFraction * H)));
  const units = Int32Array.from(rng.sample(pool.length, k).map((i) => pool[i]));
  const transforms: Transform[] = [];
  if (on.has('ffn-perm')) {
    // A single cycle through all k units: every unit moves.
    const from = Int32Array.from(units, (_, i) => units[(i + 1) % k]);
    transforms.push({ kind: 'ffn-perm', units: units.slice(), from });
  }
  if (on.has('ffn-scale')) {
    const scales = Float64Array.from(units, () => Math.exp(t.scaleStep * rng.normal()));
    transforms.push({ kind: 'ffn-scale', units: units.slice(), scales });
  }
  if (on.has('ffn-rot') && k >= 2) {
    const nPairs = Math.floor(k / 2);
    const pairs = units.slice(0, 2 * nPairs);
    const angles = Float64Array.from({ length: nPairs }, () => t.angleStep * rng.normal());
    transforms.push({ kind: 'ffn-rot', pairs, angles });
  }
  return { kind: 'ffn', transforms, units: Int32Array.from(units).sort() };
}

const ATTN_KINDS: Invariance[] = ['attn-head-perm', 'attn-vo-rot', 'attn-vo-scale', 'attn-qk-rot', 'attn-qk-scale'];

export function attnKindsOn(cfg: ModelConfig, on: Set<Invariance>): Invariance[] {
  return ATTN_KINDS.filter((k) => on.has(k) && (k !== 'attn-head-perm' || cfg.nKvHeads > 1));
}

/** One attention transform of a kind drawn from `kinds` on one KV group (a kv head and the q heads reading it). */
export function drawAttnMove(cfg: ModelConfig, rng: Rng, kinds: Invariance[], t: SearchTuning): Move {
  return drawAttnKind(cfg, rng, kinds[rng.int(kinds.length)], t);
}

/** One attention transform of kind `kind` on one KV group. */
function drawAttnKind(cfg: ModelConfig, rng: Rng, kind: Invariance, t: SearchTuning): Move {
  const hd = cfg.headDim;
  const g = rng.int(cfg.nKvHeads);
  const walk = (n: number) => Float64Array.from({ length: n }, () => Math.exp(t.attnScaleStep * rng.normal()));
  const angles = (n: number) => Float64Array.from({ length: n }, () => t.attnAngleStep * rng.normal());
  let tr: Transform;
  switch (kind) {
    case 'attn-head-perm': {
      let h = rng.int(cfg.nKvHeads - 1);
      if (h >= g) h++;
      tr = { kind, groups: Int32Array.of(g, h), from: Int32Array.of(h, g) };
      break;
    }
    case 'attn-vo-rot': {
      // A random perfect matching of the head's channels, each pair rotated.
      const order = rng.sample(hd, hd).map((d) => g * hd + d);
      tr = { kind, pairs: Int32Array.from(order), angles: angles(hd / 2) };
      break;
    }
    case 'attn-vo-scale':
      tr = { kind, channels: Int32Array.from({ length: hd }, (_, d) => g * hd + d), scales: walk(hd) };
      break;
    case 'attn-qk-rot':
      tr = { kind, ropePairs: Int32Array.from({ length: hd / 2 }, (_, i) => (g * hd) / 2 + i), angles: angles(hd / 2) };
      break;
    case 'attn-qk-scale':
      tr = { kind, ropePairs: Int32Array.from({ length: hd / 2 }, (_, i) => (g * hd) / 2 + i), scales: walk(hd / 2) };
      break;
    default:
      throw new Error(`not an attention invariance: ${kind}`);
  }
  return { kind: 'attn', transforms: [tr] };
}

/** What drawing clip moves reads: the quantization spec, the block's current FP weights and clip codes. */
export interface ClipContext {
  spec: QuantSpec;
  cur: Block;
  clips: BlockClips | undefined;
}

/**
 * One candidate: with `clip` given, a clip move with probability clipShare; otherwise an
 * invariance move. With the fixed mix, an attention move with probability attnShare (when
 * both sides have invariances on), else an FFN move; with the adaptive mix (and `mix`
 * given), the kind moveMix.ts picks from the block's record. Without `clip` (or with
 * clipShare 0) no draw is spent on the choice, so the invariance moves' draws are what they
 * were before clip moves existed.
 */
export function drawMove(cfg: ModelConfig, rng: Rng, on: Set<Invariance>, t: SearchTuning, group: number, clip?: ClipContext, mix?: MixContext): Move {
  if (clip && t.clipShare > 0 && rng.float() < t.clipShare) {
    return { kind: 'clip', transforms: [], clips: drawClipMove(cfg, clip.spec, rng, clip.cur, clip.clips, t.clipRowShare) };
  }
  const attnKinds = attnKindsOn(cfg, on);
  const ffnOn = (['ffn-perm', 'ffn-scale', 'ffn-rot'] as const).some((k) => on.has(k));
  if (t.mix === 'adaptive' && mix) {
    const kinds: string[] = [...attnKinds, ...(ffnOn ? ['ffn'] : [])];
    const kind = pickKind(kinds, mix.stats, mix.block, rng.float());
    return kind === 'ffn' ? drawFfnMove(cfg, rng, on, t, group) : drawAttnKind(cfg, rng, kind as Invariance, t);
  }
  const attn = attnKinds.length > 0 && (!ffnOn || rng.float() < t.attnShare);
  return attn ? drawAttnMove(cfg, rng, attnKinds, t) : drawFfnMove(cfg, rng, on, t, group);
}

/** A move's type in the run's statistics: 'ffn', the attention invariance, 'clip-<linear>' (one group) or 'clip-row-<linear>' (a row's groups). */
export function moveKind(m: Move): string {
  if (m.kind === 'clip') return `clip-${m.clips!.length > 1 ? 'row-' : ''}${m.clips![0].linear}`;
  return m.kind === 'ffn' ? 'ffn' : m.transforms[0].kind;
}
