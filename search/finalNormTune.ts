/**
 * Final-norm tuning: after the blocks' norm gains (normTune.ts), each channel of the
 * quantized model's final norm gain is multiplied by the factor that lowers KL(FP ‖ model)
 * of the next-token distributions on calibration tokens most of the three it tries
 * (parabolaMin), or left alone. The gain is float in every export, so this costs no bit of
 * size; unlike the blocks' objective it scores what the model outputs.
 *
 * A channel's factor k changes every row's logits by a rank-one term, (k − 1)·g_c·x̂_c·W[:, c]
 * (x̂ the normalised final stream, W the classifier), so a candidate's loss is one
 * log-sum-exp per row: with p the FP distribution of a row, KL = Σ p·log p − Σ p·z + lse(z),
 * and Σ p·z moves by (k − 1)·g_c·x̂_c·(pW)_c. The sums run over each row's support
 * (klSupport.ts): the whole vocabulary up to FINAL_NORM_TOKENS tokens, past it the FP
 * model's FINAL_NORM_TOKENS most likely ones, both distributions renormalised on them.
 */
import { finalStreams } from '../core/blockPass';
import { head, norm } from '../core/forward';
import { logSumExp } from '../core/metrics';
import type { F32, Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import { topSupport, type KlSupport } from './klSupport';
import { scaledGain } from './normTune';
import { bestOfThree } from './parabola';
import { PASS_FLOPS_PER_SECOND, tokenFlops } from './plan';

/** Calibration sequences the tuning uses at most (measured: 8 of 32 gain as much on the shipped model). */
export const FINAL_NORM_SEQS = 8;
/** The most row × token × candidate products a run spends on it (the shipped model's 8 sequences take 2·10⁸, ~5 s; a 1B one's 2 sequences 1.6·10⁹); past it, fewer rows. */
export const FINAL_NORM_MAX_OPS = 2e9;
/** Tokens a row's KL is taken over at most: the whole of a small vocabulary, a large one's most likely under FP. */
export const FINAL_NORM_TOKENS = 512;
/** Fewer rows than this would fit the gain to too little: the run skips the tuning. */
export const FINAL_NORM_MIN_ROWS = 256;

/** Row × token products per second of the tuning (a log-sum-exp each; measured ~4·10⁷ on the dev machine). */
export const FINAL_NORM_OPS_PER_SECOND = 4e7;

/** Row × token products of tuning every channel on one row. */
function opsPerRow(m: Model): number {
  return 3 * m.config.dim * Math.min(m.config.vocabSize, FINAL_NORM_TOKENS);
}

/** Predicted seconds of tuning on the first `n` of `seqs`: the FP and the quantized model's passes over them, then the tries. */
export function finalNormSeconds(m: Model, seqs: ArrayLike<number>[], n: number): number {
  let rows = 0;
  let tokens = 0;
  let longest = 0;
  for (let i = 0; i < n; i++) {
    rows += Math.max(0, seqs[i].length - 1);
    tokens += seqs[i].length;
    longest = Math.max(longest, seqs[i].length);
  }
  const passes = (2 * tokens * tokenFlops(m.config, longest).model) / PASS_FLOPS_PER_SECOND;
  return passes + (rows * opsPerRow(m)) / FINAL_NORM_OPS_PER_SECOND;
}

/** How many of `seqs`' sequences the tuning uses (their positions within FINAL_NORM_MAX_OPS); 0 when fewer than FINAL_NORM_MIN_ROWS rows would fit. */
export function finalNormSeqs(m: Model, seqs: ArrayLike<number>[]): number {
  const fit = Math.floor(FINAL_NORM_MAX_OPS / opsPerRow(m));
  let rows = 0;
  let n = 0;
  for (const s of seqs) {
    const r = Math.max(0, s.length - 1);
    if (n === FINAL_NORM_SEQS || rows + r > fit) break;
    rows += r;
    n++;
  }
  return rows >= FINAL_NORM_MIN_ROWS ? n : 0;
}

/** `m` with its final norm gain multiplied by `f` per channel (float32 products; `m` itself unchanged). */
export function withFinalNorm(m: Model, f: Float64Array | undefined): Model {
  return f ? { ...m, finalNorm: scaledGain(m.finalNorm, f) } : m;
}

export interface FinalNormResult {
  factors: Float64Array;
  /** Mean KL(FP ‖ model) on the rows tuned on (over their supports), before and after (fresh passes). */
  before: number;
  after: number;
  scored: number;
  changed: number;
}

/** The final residual stream of `m` on `seqs`, every position but each sequence's last (they predict nothing here), [rows, dim]. */
function finalRows(models: Model[], seqs: number[][], ops: Ops): F32[] {
  const d = models[0].config.dim;
  const { streams, chunks } = finalStreams(models, seqs, { ops });
  return models.map((_, j) => {
    const parts: F32[] = [];
    chunks.forEach((c, ci) => c.forEach((_s, i) => {
      const st = streams[j][ci];
      parts.push(st.x.subarray(st.seqStarts[i] * d, (st.seqStarts[i + 1] - 1) * d));
    }));
    const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) (out.set(p, o), (o += p.length));
    return out;
  });
}

/** Logits computed at most this many at a time (a 32,000-token vocabulary: 131 rows). */
const LOGIT_CHUNK_FLOATS = 1 << 22;

/** [r0, r1) row ranges of near-equal size holding at most LOGIT_CHUNK_FLOATS logits, none under 4 rows (matmulT's bits do not depend on the split). */
function logitChunks(N: number, V: number): [number, number][] {
  const n = Math.max(1, Math.min(Math.ceil((N * V) / LOGIT_CHUNK_FLOATS), Math.floor(N / 4)));
  return Array.from({ length: n }, (_, i) => [Math.floor((i * N) / n), Math.floor(((i + 1) * N) / n)]);
}

/** m's logits of the N rows x at each row's support tokens, [N, K]. */
function supportLogits(m: Model, x: F32, N: number, sup: KlSupport, ops: Ops): Float32Array {
  const { dim: d, vocabSize: V } = m.config;
  const out = new Float32Array(N * sup.K);
  for (const [r0, r1] of logitChunks(N, V)) {
    const z = head(m, x.subarray(r0 * d, r1 * d), r1 - r0, ops);
    for (let t = r0; t < r1; t++) for (let j = 0; j < sup.K; j++) out[t * sup.K + j] = z[(t - r0) * V + sup.tokens[sup.pos[t * sup.K + j]]];
  }
  return out;
}

/** Σ p·z of each of the N rows of z [N, K] (float64). */
function rowDots(z: ArrayLike<number>, p: Float64Array, N: number, K: number): Float64Array {
  const out = new Float64Array(N);
  for (let t = 0; t < N; t++) for (let i = 0; i < K; i++) out[t] += p[t * K + i] * z[t * K + i];
  return out;
}

/** Mean KL(p ‖ softmax(z)) over rows, float64, given each row's Σ p·log p and Σ p·z. */
function meanKl(z: ArrayLike<number>, plogp: Float64Array, pz: Float64Array, K: number): number {
  let s = 0;
  for (let t = 0; t < plogp.length; t++) s += plogp[t] - pz[t] + logSumExp(z, t * K, K);
  return s / plogp.length;
}

/**
 * Tunes the final norm gain of `q` (the quantized model) against `fp` on `seqs`, channel by
 * channel in order, each row's KL over at most `tokens` tokens. `q` is not changed.
 */
export function tuneFinalNorm(fp: Model, q: Model, seqs: number[][], ops: Ops, tokens = FINAL_NORM_TOKENS): FinalNormResult {
  const { dim: d, vocabSize: V } = q.config;
  const [xF, xQ] = finalRows([fp, q], seqs, ops);
  const N = xQ.length / d;
  // each row's support, with the FP logits there
  const { support: sup, logits: zF } = topSupport(N, V, tokens, logitChunks(N, V), (r0, r1) => head(fp, xF.subarray(r0 * d, r1 * d), r1 - r0, ops));
  const K = sup.K;
  // the FP distributions on the supports, and Σ p·log p per row
  const p = new Float64Array(N * K);
  const plogp = new Float64Array(N);
  for (let t = 0; t < N; t++) {
    const l = logSumExp(zF, t * K, K);
    for (let i = 0; i < K; i++) {
      const lp = zF[t * K + i] - l;
      p[t * K + i] = Math.exp(lp);
      plogp[t] += p[t * K + i] * lp;
    }
  }
  const zq = supportLogits(q, xQ, N, sup, ops);
  const pz = rowDots(zq, p, N, K);
  const before = meanKl(zq, plogp, pz, K);
  // x̂: the final stream normalised without the gain (and bias); pW = p · W per row
  const xh = new Float32Array(N * d);
  norm(q.config, xh, xQ, new Float32Array(d).fill(1), undefined, N);
  const W = q.classifier;
  const pW = new Float64Array(N * d);
  for (let t = 0; t < N; t++) {
    for (let i = 0; i < K; i++) {
      const pi = p[t * K + i];
      if (pi === 0) continue;
      const o = sup.tokens[sup.pos[t * K + i]] * d;
      for (let c = 0; c < d; c++) pW[t * d + c] += pi * W[o + c];
    }
  }
  const z = Float64Array.from(zq);
  const g = Float64Array.from(q.finalNorm);
  const U = sup.tokens.length;
  const w = new Float64Array(U); // column c of W at the support's tokens
  const row = new Float64Array(K);
  let scored = 0;
  // the mean KL with channel c's gain multiplied by k
  const loss = (c: number, k: number): number => {
    scored++;
    let s = 0;
    for (let t = 0; t < N; t++) {
      const a = (k - 1) * g[c] * xh[t * d + c];
      for (let i = 0; i < K; i++) row[i] = z[t * K + i] + a * w[sup.pos[t * K + i]];
      s += plogp[t] - (pz[t] + a * pW[t * d + c]) + logSumExp(row, 0, K);
    }
    return s / N;
  };
  const factors = new Float64Array(d).fill(1);
  let best = before;
  for (let c = 0; c < d; c++) {
    for (let u = 0; u < U; u++) w[u] = W[sup.tokens[u] * d + c];
    const tried = bestOfThree((k) => loss(c, k), best);
    if (!tried) continue;
    const pick = tried.pick;
    best = tried.loss;
    factors[c] = pick;
    for (let t = 0; t < N; t++) {
      const a = (pick - 1) * g[c] * xh[t * d + c];
      for (let i = 0; i < K; i++) z[t * K + i] += a * w[sup.pos[t * K + i]];
      pz[t] += a * pW[t * d + c];
    }
    g[c] *= pick;
  }
  const zAfter = supportLogits(withFinalNorm(q, factors), xQ, N, sup, ops);
  const after = meanKl(zAfter, plogp, rowDots(zAfter, p, N, K), K);
  return { factors, before, after, scored, changed: factors.filter((k) => k !== 1).length };
}
