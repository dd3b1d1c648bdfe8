/**
 * A float64 reference forward pass, written from the math and independent of
 * core/forward.ts, and a random small-model builder. Tests compare the real forward
 * pass (and loaders) against it.
 */
import type { Block, Model, ModelConfig } from '../core/model/types';
import { Rng } from '../core/rng';

type V = number[];

function linear(w: ArrayLike<number>, x: V, out: number, bias?: ArrayLike<number>): V {
  const n = x.length;
  return Array.from({ length: out }, (_, o) => {
    let s = bias ? bias[o] : 0;
    for (let i = 0; i < n; i++) s += w[o * n + i] * x[i];
    return s;
  });
}

function normRef(cfg: ModelConfig, x: V, w: ArrayLike<number>, b?: ArrayLike<number>): V {
  const d = x.length;
  const mean = cfg.arch === 'opt' ? x.reduce((s, v) => s + v, 0) / d : 0;
  const varc = x.reduce((s, v) => s + (v - mean) ** 2, 0) / d;
  const inv = 1 / Math.sqrt(varc + cfg.normEps);
  return x.map((v, i) => (v - mean) * inv * w[i] + (b ? b[i] : 0));
}

function ropeRef(cfg: ModelConfig, v: V, nH: number, pos: number): V {
  const hd = cfg.headDim;
  const out = v.slice();
  for (let h = 0; h < nH; h++) {
    for (let i = 0; i < hd / 2; i++) {
      const [a, b] = cfg.ropeLayout === 'interleaved' ? [2 * i, 2 * i + 1] : [i, i + hd / 2];
      const ang = pos * Math.pow(cfg.ropeTheta, (-2 * i) / hd);
      const x0 = v[h * hd + a];
      const x1 = v[h * hd + b];
      out[h * hd + a] = x0 * Math.cos(ang) - x1 * Math.sin(ang);
      out[h * hd + b] = x0 * Math.sin(ang) + x1 * Math.cos(ang);
    }
  }
  return out;
}

function blockRef(cfg: ModelConfig, b: Block, xs: V[]): V[] {
  const { dim, nHeads, nKvHeads, headDim: hd, hiddenDim: H } = cfg;
  const G = nHeads / nKvHeads;
  const isLlama = cfg.arch === 'llama';
  const qs: V[] = [];
  const ks: V[] = [];
  const vs: V[] = [];
  xs.forEach((x, t) => {
    const xn = normRef(cfg, x, b.attnNorm, b.attnNormBias);
    let q = linear(b.wq, xn, nHeads * hd, b.bq);
    let k = linear(b.wk, xn, nKvHeads * hd, b.bk);
    if (isLlama) {
      q = ropeRef(cfg, q, nHeads, t);
      k = ropeRef(cfg, k, nKvHeads, t);
    }
    qs.push(q);
    ks.push(k);
    vs.push(linear(b.wv, xn, nKvHeads * hd, b.bv));
  });
  return xs.map((x, t) => {
    const ctx: V = new Array(nHeads * hd).fill(0);
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / G);
      const sc = Array.from({ length: t + 1 }, (_, s) => {
        let dot = 0;
        for (let i = 0; i < hd; i++) dot += qs[t][h * hd + i] * ks[s][g * hd + i];
        return dot / Math.sqrt(hd);
      });
      const mx = Math.max(...sc);
      const e = sc.map((v) => Math.exp(v - mx));
      const z = e.reduce((a, c) => a + c, 0);
      for (let s = 0; s <= t; s++) for (let i = 0; i < hd; i++) ctx[h * hd + i] += (e[s] / z) * vs[s][g * hd + i];
    }
    const attnOut = linear(b.wo, ctx, dim, b.bo);
    const h1 = x.map((v, i) => v + attnOut[i]);
    const xn = normRef(cfg, h1, b.ffnNorm, b.ffnNormBias);
    const a1 = linear(b.w1, xn, H, b.b1);
    let act: V;
    if (isLlama) {
      const a3 = linear(b.w3!, xn, H);
      act = a1.map((v, j) => (v / (1 + Math.exp(-v))) * a3[j]);
    } else {
      act = a1.map((v) => Math.max(0, v));
    }
    const f = linear(b.w2, act, dim, b.b2);
    return h1.map((v, i) => v + f[i]);
  });
}

/** Logits [T][vocab] of a token sequence, all in float64. */
export function referenceLogits(m: Model, tokens: number[]): V[] {
  const { dim, vocabSize } = m.config;
  let xs: V[] = tokens.map((tok, t) =>
    Array.from({ length: dim }, (_, i) => m.embedding[tok * dim + i] + (m.positions ? m.positions[t * dim + i] : 0)),
  );
  for (const b of m.blocks) xs = blockRef(m.config, b, xs);
  return xs.map((x) => linear(m.classifier, normRef(m.config, x, m.finalNorm, m.finalNormBias), vocabSize));
}

/** Block outputs of one block on the given inputs, float64. */
export function referenceBlock(cfg: ModelConfig, b: Block, x: Float32Array, T: number): V[] {
  const xs = Array.from({ length: T }, (_, t) => Array.from(x.subarray(t * cfg.dim, (t + 1) * cfg.dim)));
  return blockRef(cfg, b, xs);
}

export interface RandomModelOptions {
  arch?: 'llama' | 'opt';
  dim?: number;
  hiddenDim?: number;
  nLayers?: number;
  nHeads?: number;
  nKvHeads?: number;
  vocabSize?: number;
  seqLen?: number;
  ropeLayout?: 'interleaved' | 'half';
  /** q/k/v biases on a llama model (qwen2). */
  qkvBias?: boolean;
  sharedClassifier?: boolean;
  seed?: number;
}

/** A small model with random weights (scaled so activations stay O(1)). */
export function randomModel(o: RandomModelOptions = {}): Model {
  const rng = Rng.fromSeed(o.seed ?? 1);
  const arch = o.arch ?? 'llama';
  const dim = o.dim ?? 16;
  const nHeads = o.nHeads ?? 4;
  const cfg: ModelConfig = {
    arch, dim, hiddenDim: o.hiddenDim ?? 24, nLayers: o.nLayers ?? 2, nHeads, nKvHeads: o.nKvHeads ?? 2,
    headDim: dim / nHeads, vocabSize: o.vocabSize ?? 32, seqLen: o.seqLen ?? 16, normEps: 1e-5, ropeTheta: 10000,
    ropeLayout: o.ropeLayout ?? 'interleaved', sharedClassifier: o.sharedClassifier ?? true, bosId: 1, eosId: 2,
  };
  const t = (n: number, s: number) => Float32Array.from({ length: n }, () => s * rng.normal());
  const near1 = (n: number) => Float32Array.from({ length: n }, () => 1 + 0.1 * rng.normal());
  const qd = nHeads * cfg.headDim;
  const kvd = cfg.nKvHeads * cfg.headDim;
  const H = cfg.hiddenDim;
  const blocks: Block[] = Array.from({ length: cfg.nLayers }, () => {
    const b: Block = {
      attnNorm: near1(dim), wq: t(qd * dim, dim ** -0.5), wk: t(kvd * dim, dim ** -0.5), wv: t(kvd * dim, dim ** -0.5),
      wo: t(dim * qd, qd ** -0.5), ffnNorm: near1(dim), w1: t(H * dim, dim ** -0.5), w2: t(dim * H, H ** -0.5),
    };
    if (arch === 'llama') b.w3 = t(H * dim, dim ** -0.5);
    if (arch === 'opt') {
      Object.assign(b, { attnNormBias: t(dim, 0.1), ffnNormBias: t(dim, 0.1), bq: t(qd, 0.1), bk: t(kvd, 0.1), bv: t(kvd, 0.1), bo: t(dim, 0.1), b1: t(H, 0.1), b2: t(dim, 0.1) });
    } else if (o.qkvBias) {
      Object.assign(b, { bq: t(qd, 0.1), bk: t(kvd, 0.1), bv: t(kvd, 0.1) });
    }
    return b;
  });
  const embedding = t(cfg.vocabSize * dim, 1);
  return {
    config: cfg, embedding, blocks, finalNorm: near1(dim),
    finalNormBias: arch === 'opt' ? t(dim, 0.1) : undefined,
    positions: arch === 'opt' ? t(cfg.seqLen * dim, 0.3) : undefined,
    classifier: cfg.sharedClassifier ? embedding : t(cfg.vocabSize * dim, dim ** -0.5),
  };
}
