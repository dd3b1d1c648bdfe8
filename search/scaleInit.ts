/**
 * Activation-aware scale initialisation (after AWQ, Lin et al. 2023, §3.2–3.3), run once
 * per block before the discrete search. For each exact scaling invariance — attention
 * norm → wq/wk/wv columns, V → O channels, FFN norm → w1/w3 columns, FFN gate w3 → w2 —
 * the per-channel scale is s = m^α (m = mean |activation| of the channel the quantized
 * weights read, normalised so that max·min = 1), with α chosen on a grid by the
 * block-local objective. α = 0 is the identity, so a site whose best α still does not
 * lower the loss is left alone. Each accepted scale is one recorded move, so replay on
 * resume reproduces it.
 */
import { blockTrace } from '../core/forward';
import type { Transform } from '../core/invariance';
import type { Block, F32, ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { Invariance } from './contract';
import type { BlockObjective } from './objective';
import type { Move } from './proposals';

export type ScaleSite = 'norm-attn' | 'attn-vo' | 'norm-ffn' | 'ffn-gate';

export const ALPHA_GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/** Mean |a| of each of `width` channels over the rows of a [·, width] activation. */
function channelMeanAbs(acts: F32[], width: number): Float64Array {
  const m = new Float64Array(width);
  let n = 0;
  for (const a of acts) {
    for (let i = 0; i < a.length; i++) m[i % width] += Math.abs(a[i]);
    n += a.length / width;
  }
  for (let c = 0; c < width; c++) m[c] = Math.max(m[c] / n, 1e-8);
  return m;
}

/** s = m^α normalised to max·min = 1 (so the overall magnitude of the weights is kept). */
function awqScales(m: Float64Array, alpha: number): Float64Array {
  const s = m.map((v) => Math.pow(v, alpha));
  let lo = Infinity;
  let hi = 0;
  for (const v of s) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
  const norm = Math.sqrt(lo * hi);
  return s.map((v) => v / norm);
}

const all = (n: number) => Int32Array.from({ length: n }, (_, i) => i);

/** The transform that scales the quantized side of `site` up by s (and its producer down). */
function siteTransform(cfg: ModelConfig, site: ScaleSite, s: Float64Array): Transform {
  switch (site) {
    case 'norm-attn':
      return { kind: 'norm-scale', site: 'attn', channels: all(cfg.dim), scales: s.map((v) => 1 / v) };
    case 'norm-ffn':
      return { kind: 'norm-scale', site: 'ffn', channels: all(cfg.dim), scales: s.map((v) => 1 / v) };
    case 'attn-vo':
      return { kind: 'attn-vo-scale', channels: all(cfg.nKvHeads * cfg.headDim), scales: s };
    case 'ffn-gate':
      return { kind: 'ffn-scale', units: all(cfg.hiddenDim), scales: s };
  }
}

/** Channel statistics each site's α search uses, from the FP-weight block on its real inputs. */
function siteStats(cfg: ModelConfig, b: Block, xs: F32[], ops: Ops, site: ScaleSite): Float64Array {
  const traces = xs.map((x) => blockTrace(cfg, b, x, x.length / cfg.dim, ops));
  switch (site) {
    case 'norm-attn':
      return channelMeanAbs(traces.map((t) => t.xnAttn), cfg.dim);
    case 'norm-ffn':
      return channelMeanAbs(traces.map((t) => t.xnFfn), cfg.dim);
    case 'ffn-gate':
      return channelMeanAbs(traces.map((t) => t.act), cfg.hiddenDim);
    case 'attn-vo': {
      // wo reads the attention context; KV channel c feeds context channels h*hd + d of the
      // q heads in its group, so its statistic is their mean.
      const ctx = channelMeanAbs(traces.map((t) => t.ctx), cfg.nHeads * cfg.headDim);
      const G = cfg.nHeads / cfg.nKvHeads;
      const hd = cfg.headDim;
      return Float64Array.from({ length: cfg.nKvHeads * hd }, (_, c) => {
        const g = Math.floor(c / hd);
        let s = 0;
        for (let r = 0; r < G; r++) s += ctx[(g * G + r) * hd + (c % hd)];
        return s / G;
      });
    }
  }
}

/** The sites whose invariance is switched on, in the order they are initialised. */
export function scaleSitesOn(on: Set<Invariance>): ScaleSite[] {
  const sites: [ScaleSite, Invariance][] = [['norm-attn', 'norm-scale'], ['attn-vo', 'attn-vo-scale'], ['norm-ffn', 'norm-scale'], ['ffn-gate', 'ffn-scale']];
  return sites.filter(([, inv]) => on.has(inv)).map(([site]) => site);
}

/** Which side of the block a site's scale changes. */
function change(site: ScaleSite): 'attn' | 'ffn' {
  return site === 'norm-ffn' || site === 'ffn-gate' ? 'ffn' : 'attn';
}

/** Scores moves on the objective's current state (in order; possibly on worker threads). */
export type ScoreMoves = (moves: Move[]) => Promise<number[]>;

/**
 * Runs the α search for every site in order; the grid of one site is scored as one batch
 * (in parallel when `score` uses workers). `accept` applies an accepted transform to `cur`
 * (and records it); the objective is then reset to the new weights.
 */
export async function scaleInit(
  cfg: ModelConfig, obj: BlockObjective, cur: Block, xs: F32[], ops: Ops, sites: ScaleSite[],
  accept: (t: Transform) => void, score: ScoreMoves,
): Promise<void> {
  for (const site of sites) {
    const m = siteStats(cfg, cur, xs, ops, site);
    const full = change(site);
    const moves: Move[] = ALPHA_GRID.map((alpha) => ({ kind: full, full, transforms: [siteTransform(cfg, site, awqScales(m, alpha))] }));
    const losses = await score(moves);
    let best = -1;
    for (let i = 0; i < losses.length; i++) if (losses[i] < (best < 0 ? obj.loss : losses[best])) best = i;
    if (best >= 0) {
      accept(moves[best].transforms[0]);
      obj.reset(cur, full);
    }
  }
}
