/**
 * Input-channel scaling through a norm (the invariance AWQ and SmoothQuant exploit): the
 * norm's output channel c is multiplied by s (its weight, and its bias for LayerNorm) and
 * the columns c of every linear that reads that norm are divided by s, so
 * W·(s ⊙ n) / s = W·n exactly. Site 'attn': attnNorm → wq, wk, wv; site 'ffn':
 * ffnNorm → w1 (and w3). Norm weights are never quantized, so this moves weight magnitude
 * out of (or into) quantized columns for free.
 */
import type { Block, LinearName, ModelConfig } from '../model/types';
import { scaleCol } from './primitives';
import type { LinearTouch, NormScale, Touched } from './types';

export function normReaders(cfg: ModelConfig, site: NormScale['site']): LinearName[] {
  if (site === 'attn') return ['wq', 'wk', 'wv'];
  return cfg.arch === 'llama' ? ['w1', 'w3'] : ['w1'];
}

function rowsOf(cfg: ModelConfig, name: LinearName): number {
  const kv = cfg.nKvHeads * cfg.headDim;
  return { wq: cfg.nHeads * cfg.headDim, wk: kv, wv: kv, wo: cfg.dim, w1: cfg.hiddenDim, w3: cfg.hiddenDim, w2: cfg.dim }[name];
}

export function applyNorm(cfg: ModelConfig, b: Block, t: NormScale): void {
  const weight = t.site === 'attn' ? b.attnNorm : b.ffnNorm;
  const bias = t.site === 'attn' ? b.attnNormBias : b.ffnNormBias;
  for (let k = 0; k < t.channels.length; k++) {
    const c = t.channels[k];
    const s = t.scales[k];
    weight[c] *= s;
    if (bias) bias[c] *= s;
    for (const name of normReaders(cfg, t.site)) scaleCol(b[name]!, rowsOf(cfg, name), cfg.dim, c, 1 / s);
  }
}

export function touchedNorm(cfg: ModelConfig, t: NormScale): Touched {
  const cols = Int32Array.from(t.channels).sort();
  const out: Touched = {};
  for (const name of normReaders(cfg, t.site)) out[name] = { rows: new Int32Array(0), cols: cols.slice() } as LinearTouch;
  return out;
}
