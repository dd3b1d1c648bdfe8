/**
 * Property tests for core/invariance (DESIGN.md §4) on random small blocks of both kinds:
 * llama (RMSNorm, RoPE in both layouts, SwiGLU, with and without q/k/v biases) and opt
 * (LayerNorm, every bias, ReLU), nHeads a multiple of nKvHeads.
 */
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { blockForward, blockTrace, forward } from '../../core/forward';
import {
  EXACT_KINDS, TRANSFORM_KINDS, applyTransform, applyTransforms, attnHeadPerm, attnQkRot, attnQkScale, attnVoRot,
  attnVoScale, ffnPerm, ffnRot, ffnScale, normScale, invertTransform, invertTransforms, touched,
  type Transform, type TransformKind,
} from '../../core/invariance';
import { cloneBlock, cloneModel, type Block, type F32, type LinearName, type ModelConfig } from '../../core/model/types';
import { Rng } from '../../core/rng';
import { shippedModel } from '../helpers';

// ---------------------------------------------------------------------------------------
// Random blocks and transforms. fast-check draws the shape and a seed; the seed drives the
// project's own Rng for weights, inputs and transforms, so a counterexample is reproducible
// from what fast-check prints.

type Variant = 'llama-interleaved' | 'llama-half' | 'opt';

interface Case {
  cfg: ModelConfig;
  block: Block;
  /** block input [T, dim] */
  x: F32;
  T: number;
  /** A fresh Rng for drawing transforms, the same sequence on every call (so replays and shrinking see the same case). */
  rng: () => Rng;
}

function randn(rng: Rng, n: number, std: number, mean = 0): F32 {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = mean + std * rng.normal();
  return a;
}

function makeConfig(variant: Variant, dim: number, hiddenDim: number, nKvHeads: number, group: number, headDim: number): ModelConfig {
  return {
    arch: variant === 'opt' ? 'opt' : 'llama',
    dim, hiddenDim, nLayers: 1, nHeads: nKvHeads * group, nKvHeads, headDim,
    vocabSize: 8, seqLen: 16, normEps: 1e-5, ropeTheta: 10000,
    ropeLayout: variant === 'llama-half' ? 'half' : 'interleaved',
    sharedClassifier: true, bosId: 1, eosId: 2,
  };
}

/** Weights ~ N(0, 1/in) so activations stay O(1); biases and norm weights around their usual values. */
function randomBlock(cfg: ModelConfig, rng: Rng, qkvBias: boolean): Block {
  const { dim, hiddenDim: H } = cfg;
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  const lin = (out: number, inp: number) => randn(rng, out * inp, 1 / Math.sqrt(inp));
  const b: Block = {
    attnNorm: randn(rng, dim, 0.1, 1), wq: lin(qDim, dim), wk: lin(kvDim, dim), wv: lin(kvDim, dim), wo: lin(dim, qDim),
    ffnNorm: randn(rng, dim, 0.1, 1), w1: lin(H, dim), w2: lin(dim, H),
  };
  if (cfg.arch === 'llama') b.w3 = lin(H, dim);
  if (cfg.arch === 'opt' || qkvBias) {
    b.bq = randn(rng, qDim, 0.3);
    b.bk = randn(rng, kvDim, 0.3);
    b.bv = randn(rng, kvDim, 0.3);
  }
  if (cfg.arch === 'opt') {
    b.attnNormBias = randn(rng, dim, 0.1);
    b.ffnNormBias = randn(rng, dim, 0.1);
    b.bo = randn(rng, dim, 0.1);
    b.b1 = randn(rng, H, 0.3);
    b.b2 = randn(rng, dim, 0.1);
  }
  return b;
}

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    variant: fc.constantFrom<Variant>('llama-interleaved', 'llama-half', 'opt'),
    qkvBias: fc.boolean(),
    dim: fc.integer({ min: 2, max: 12 }),
    hiddenDim: fc.integer({ min: 2, max: 16 }),
    nKvHeads: fc.integer({ min: 1, max: 3 }),
    group: fc.integer({ min: 1, max: 3 }),
    halfHead: fc.integer({ min: 1, max: 3 }),
    T: fc.integer({ min: 1, max: 5 }),
    seed: fc.integer({ min: 0, max: 0x7fffffff }),
  })
  .map((p) => {
    const cfg = makeConfig(p.variant, p.dim, p.hiddenDim, p.nKvHeads, p.group, 2 * p.halfHead);
    const rng = Rng.fromSeed(p.seed);
    const block = randomBlock(cfg, rng, p.qkvBias);
    return { cfg, block, x: randn(rng, p.T * p.dim, 1), T: p.T, rng: () => Rng.fromSeed(p.seed ^ 0x5bd1e995) };
  });

interface Draw {
  /** Largest |angle| (rotations draw uniformly in [-maxAngle, maxAngle]). */
  maxAngle: number;
}

/** k distinct of [0, n) (1 ≤ k ≤ n), in random order. */
function some(rng: Rng, n: number, kMax = n): number[] {
  return rng.sample(n, 1 + rng.int(Math.min(n, kMax)));
}

function shuffled(rng: Rng, xs: number[]): number[] {
  return rng.sample(xs.length, xs.length).map((i) => xs[i]);
}

/** Scale in [1/4, 4], log-uniform. */
function scale(rng: Rng): number {
  return Math.exp((2 * rng.float() - 1) * Math.log(4));
}

function angle(rng: Rng, d: Draw): number {
  return (2 * rng.float() - 1) * d.maxAngle;
}

/** A random transform of the given kind, built through the validating constructors. */
function randomTransform(cfg: ModelConfig, kind: TransformKind, rng: Rng, d: Draw = { maxAngle: Math.PI }): Transform {
  const H = cfg.hiddenDim;
  const hd = cfg.headDim;
  const kvDim = cfg.nKvHeads * hd;
  switch (kind) {
    case 'ffn-perm': {
      if (rng.int(4) === 0) return ffnPerm(cfg, rng.sample(H, H)); // full permutation form
      const units = some(rng, H);
      return ffnPerm(cfg, shuffled(rng, units), units);
    }
    case 'ffn-scale': {
      const units = some(rng, H);
      return ffnScale(cfg, units, units.map(() => scale(rng)));
    }
    case 'ffn-rot': {
      const m = 1 + rng.int(Math.floor(H / 2));
      return ffnRot(cfg, rng.sample(H, 2 * m), Array.from({ length: m }, () => angle(rng, d)));
    }
    case 'attn-head-perm': {
      if (rng.int(4) === 0) return attnHeadPerm(cfg, rng.sample(cfg.nKvHeads, cfg.nKvHeads));
      const groups = some(rng, cfg.nKvHeads);
      return attnHeadPerm(cfg, shuffled(rng, groups), groups);
    }
    case 'attn-vo-rot': {
      // Pairs of dims inside each of a random subset of kv heads.
      const pairs: number[] = [];
      for (const g of some(rng, cfg.nKvHeads)) {
        const m = 1 + rng.int(hd / 2);
        for (const dd of rng.sample(hd, 2 * m)) pairs.push(g * hd + dd);
      }
      return attnVoRot(cfg, pairs, Array.from({ length: pairs.length / 2 }, () => angle(rng, d)));
    }
    case 'attn-vo-scale': {
      const ch = some(rng, kvDim);
      return attnVoScale(cfg, ch, ch.map(() => scale(rng)));
    }
    case 'attn-qk-rot': {
      const p = some(rng, kvDim / 2);
      return attnQkRot(cfg, p, p.map(() => angle(rng, d)));
    }
    case 'attn-qk-scale': {
      const p = some(rng, kvDim / 2);
      return attnQkScale(cfg, p, p.map(() => scale(rng)));
    }
    case 'norm-scale': {
      const ch = some(rng, cfg.dim);
      return normScale(cfg, rng.int(2) === 0 ? 'attn' : 'ffn', ch, ch.map(() => scale(rng)));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Comparisons.

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/**
 * Tolerance for "the same block output". An exact transform changes only how float32
 * rounds: scaling a weight by a non-power-of-two s, or rotating a pair, costs ≤ 1 ulp
 * (2^-24 ≈ 6e-8 relative) per weight, which then passes through a handful of chained
 * float32 dot products of length ≤ 36 (norm, q/k/v, scores, softmax, wo, norm, w1/w3,
 * w2), each adding ~K·2^-24 relative to the magnitudes summed; a permutation changes
 * summation order only. Over 3000 random cases per kind the worst change measured was
 * 1.2e-6 of max(1, max|y|) (attn-vo-scale); 5e-5 leaves a 40× margin, and the
 * "wrong transform" tests below show it still catches real mistakes.
 */
const REL_TOL = 5e-5;

function sameOutput(y0: F32, y1: F32): boolean {
  return maxAbsDiff(y0, y1) <= REL_TOL * Math.max(1, maxAbs(y0));
}

/** Each array of b equals the one in a up to `ulps` float32 steps of that array's largest entry. */
function weightsClose(a: Block, b: Block, ulps: number): boolean {
  for (const [k, va] of Object.entries(a) as [string, F32][]) {
    const vb = (b as unknown as Record<string, F32>)[k];
    if (maxAbsDiff(va, vb) > ulps * 2 ** -24 * Math.max(maxAbs(va), 1e-30)) return false;
  }
  return true;
}

function weightsIdentical(a: Block, b: Block): boolean {
  for (const [k, va] of Object.entries(a) as [string, F32][]) {
    const vb = (b as unknown as Record<string, F32>)[k];
    for (let i = 0; i < va.length; i++) if (!Object.is(va[i], vb[i])) return false;
  }
  return true;
}

const PERM_KINDS: TransformKind[] = ['ffn-perm', 'attn-head-perm'];
const ROT_KINDS: TransformKind[] = ['ffn-rot', 'attn-vo-rot', 'attn-qk-rot'];

/** The property "t leaves the block output unchanged", with `apply` swappable to prove it can fail. */
function exactnessProperty(kind: TransformKind, apply: (c: Case, t: Transform) => void) {
  return fc.property(caseArb, (c) => {
    const t = randomTransform(c.cfg, kind, c.rng());
    const y0 = blockForward(c.cfg, c.block, c.x, c.T);
    const b = cloneBlock(c.block);
    apply({ ...c, block: b }, t);
    return sameOutput(y0, blockForward(c.cfg, b, c.x, c.T));
  });
}

// ---------------------------------------------------------------------------------------

describe('exact transforms leave the block output unchanged', () => {
  it.each(EXACT_KINDS)('%s', (kind) => {
    fc.assert(exactnessProperty(kind, (c, t) => applyTransform(c.cfg, c.block, t)), { numRuns: 150 });
  });

  // The same property, fed deliberately wrong transforms, must find a counterexample:
  // evidence that the tolerance above is tight enough to catch a real mistake.
  const wrong: [string, TransformKind, (c: Case, t: Transform) => void][] = [
    ['wv scaled without wo', 'attn-vo-scale', (c, t) => {
      if (t.kind !== 'attn-vo-scale') return;
      for (let i = 0; i < t.channels.length; i++) {
        for (let j = 0; j < c.cfg.dim; j++) c.block.wv[t.channels[i] * c.cfg.dim + j] /= t.scales[i];
      }
    }],
    ['wo rotated the wrong way (W·R instead of W·Rᵀ)', 'attn-vo-rot', (c, t) => {
      if (t.kind !== 'attn-vo-rot') return;
      const { dim, headDim: hd } = c.cfg;
      const G = c.cfg.nHeads / c.cfg.nKvHeads;
      // The correct transform rotates wo's columns by +θ; a further −2θ leaves them at −θ.
      applyTransform(c.cfg, c.block, t);
      for (let k = 0; k < t.angles.length; k++) {
        const [a, b] = [t.pairs[2 * k], t.pairs[2 * k + 1]];
        const g = Math.floor(a / hd);
        const cs = Math.cos(-2 * t.angles[k]);
        const sn = Math.sin(-2 * t.angles[k]);
        for (let h = g * G; h < (g + 1) * G; h++) {
          for (let r = 0; r < dim; r++) {
            const o = r * c.cfg.nHeads * hd + h * hd;
            const xa = c.block.wo[o + (a % hd)];
            const xb = c.block.wo[o + (b % hd)];
            c.block.wo[o + (a % hd)] = cs * xa - sn * xb;
            c.block.wo[o + (b % hd)] = sn * xa + cs * xb;
          }
        }
      }
    }],
    ['q pair rotated without k', 'attn-qk-rot', (c, t) => {
      if (t.kind !== 'attn-qk-rot') return;
      const saved = { wk: c.block.wk.slice(), bk: c.block.bk?.slice() };
      applyTransform(c.cfg, c.block, t);
      c.block.wk.set(saved.wk);
      if (saved.bk) c.block.bk!.set(saved.bk);
    }],
    ['ffn rotation at large angles (approximate, not exact)', 'ffn-rot', (c, t) => applyTransform(c.cfg, c.block, t)],
  ];
  it.each(wrong)('a wrong transform is caught: %s', (_name, kind, apply) => {
    const r = fc.check(exactnessProperty(kind, apply), { numRuns: 100 });
    expect(r.failed).toBe(true);
    expect(r.counterexample).not.toBeNull();
  });
});

describe('inverse', () => {
  it.each(TRANSFORM_KINDS)('%s: apply then apply(inverse) restores the weights', (kind) => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const t = randomTransform(c.cfg, kind, c.rng());
        const b = cloneBlock(c.block);
        applyTransform(c.cfg, b, t);
        applyTransform(c.cfg, b, invertTransform(c.cfg, t));
        // Permutations only move float32 values. Scales and rotations round once per step:
        // measured worst ~2 ulps of the array's largest entry, so 8 leaves a 4× margin.
        return PERM_KINDS.includes(kind) ? weightsIdentical(c.block, b) : weightsClose(c.block, b, 8);
      }),
      { numRuns: 100 },
    );
  });

  it('two random transforms, then their inverses in reverse order, restore the weights', () => {
    const kindArb = fc.constantFrom(...TRANSFORM_KINDS);
    fc.assert(
      fc.property(caseArb, kindArb, kindArb, (c, k1, k2) => {
        const rng = c.rng();
        const ts = [randomTransform(c.cfg, k1, rng), randomTransform(c.cfg, k2, rng)];
        const b = cloneBlock(c.block);
        applyTransforms(c.cfg, b, ts);
        applyTransforms(c.cfg, b, invertTransforms(c.cfg, ts));
        return weightsClose(c.block, b, 16); // two round trips' worth
      }),
      { numRuns: 200 },
    );
  });

  it('the inverse shares no array with the transform', () => {
    const cfg = makeConfig('llama-interleaved', 4, 6, 1, 1, 2);
    const t = ffnPerm(cfg, [2, 0, 1], [0, 1, 2]);
    const inv = invertTransform(cfg, t);
    expect(inv).toEqual({ kind: 'ffn-perm', units: Int32Array.from([2, 0, 1]), from: Int32Array.from([0, 1, 2]) });
    expect(inv.kind === 'ffn-perm' && inv.units !== t.from).toBe(true);
  });
});

/** Frobenius norm (float64) of the rows and columns `touched` lists, per linear. */
function touchedNorms(cfg: ModelConfig, b: Block, t: Transform): number[] {
  const out: number[] = [];
  for (const [name, tt] of Object.entries(touched(cfg, t)) as [LinearName, { rows: Int32Array; cols: Int32Array }][]) {
    const w = b[name]!;
    const nIn = name === 'wo' ? cfg.nHeads * cfg.headDim : name === 'w2' ? cfg.hiddenDim : cfg.dim;
    const nOut = w.length / nIn;
    let ss = 0;
    for (const r of tt.rows) for (let j = 0; j < nIn; j++) ss += w[r * nIn + j] ** 2;
    for (const col of tt.cols) for (let r = 0; r < nOut; r++) ss += w[r * nIn + col] ** 2;
    out.push(Math.sqrt(ss));
  }
  return out;
}

describe('rotations', () => {
  it.each(ROT_KINDS)('%s preserves the Frobenius norm of the rows and columns it touches', (kind) => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const t = randomTransform(c.cfg, kind, c.rng());
        const before = touchedNorms(c.cfg, c.block, t);
        const b = cloneBlock(c.block);
        applyTransform(c.cfg, b, t);
        const after = touchedNorms(c.cfg, b, t);
        return before.length > 0 && before.every((n, i) => Math.abs(after[i] - n) <= 1e-6 * n);
      }),
      { numRuns: 100 },
    );
  });

  /**
   * ffn-rot is approximate only through the nonlinearity, and the error is O(θ). With the
   * FFN input unchanged (attention is untouched), Δy_t = Σ_pairs W_P Rᵀ (act' − R act) for the
   * pair's w2 columns W_P, and 2|sin(θ/2)| ≤ |θ| gives, per token and pair of
   * pre-activations,
   *   ReLU:   ‖relu(R p) − R relu(p)‖ ≤ ‖(R−I)p‖ + ‖(I−R)relu(p)‖ ≤ 2|θ|‖p‖,  p = w1 x + b1
   *   SwiGLU: ‖silu(Ru)⊙Rg − R(silu(u)⊙g)‖ ≤ (1.1 + 1 + 1)|θ|‖u‖‖g‖,    u = w1 x, g = w3 x
   *           (|silu'| ≤ 1.1, |silu(u)| ≤ |u|),
   * so ‖Δy_t‖ ≤ Σ_P ‖W_P‖_F · |θ_P| · C_{P,t}: linear in the angle.
   */
  it('ffn-rot changes the block output by at most O(angle)', () => {
    fc.assert(
      fc.property(caseArb, fc.double({ min: 1e-6, max: 0.1, noNaN: true }), (c, maxAngle) => {
        const { cfg } = c;
        const t = randomTransform(cfg, 'ffn-rot', c.rng(), { maxAngle });
        if (t.kind !== 'ffn-rot') return false;
        const tr = blockTrace(cfg, c.block, c.x, c.T);
        const b = cloneBlock(c.block);
        applyTransform(cfg, b, t);
        const y1 = blockForward(cfg, b, c.x, c.T);
        const { dim, hiddenDim: H } = cfg;
        const floor = REL_TOL * Math.max(1, maxAbs(tr.y));
        const pre = (w: F32, bias: F32 | undefined, tt: number, j: number) => {
          let s = bias ? bias[j] : 0;
          for (let i = 0; i < dim; i++) s += w[j * dim + i] * tr.xnFfn[tt * dim + i];
          return s;
        };
        for (let tt = 0; tt < c.T; tt++) {
          let bound = 0;
          for (let k = 0; k < t.angles.length; k++) {
            const [a, bb] = [t.pairs[2 * k], t.pairs[2 * k + 1]];
            let wNorm = 0;
            for (let r = 0; r < dim; r++) wNorm += c.block.w2[r * H + a] ** 2 + c.block.w2[r * H + bb] ** 2;
            let C: number;
            if (cfg.arch === 'opt') {
              C = 2 * Math.hypot(pre(c.block.w1, c.block.b1, tt, a), pre(c.block.w1, c.block.b1, tt, bb));
            } else {
              const u = Math.hypot(pre(c.block.w1, undefined, tt, a), pre(c.block.w1, undefined, tt, bb));
              const g = Math.hypot(pre(c.block.w3!, undefined, tt, a), pre(c.block.w3!, undefined, tt, bb));
              C = 3.1 * u * g;
            }
            bound += Math.sqrt(wNorm) * Math.abs(t.angles[k]) * C;
          }
          let dy = 0;
          for (let i = 0; i < dim; i++) dy += (y1[tt * dim + i] - tr.y[tt * dim + i]) ** 2;
          if (Math.sqrt(dy) > bound + floor * Math.sqrt(dim)) return false;
        }
        return true;
      }),
      { numRuns: 200 },
    );
  });
});

describe('touched', () => {
  const shapes = (cfg: ModelConfig): Record<LinearName, number> => ({
    wq: cfg.dim, wk: cfg.dim, wv: cfg.dim, wo: cfg.nHeads * cfg.headDim, w1: cfg.dim, w2: cfg.hiddenDim, w3: cfg.dim,
  });

  it.each(TRANSFORM_KINDS)('%s: lists every changed weight, and every listed row/column changes', (kind) => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const t = randomTransform(c.cfg, kind, c.rng());
        const b = cloneBlock(c.block);
        applyTransform(c.cfg, b, t);
        const tt = touched(c.cfg, t);
        const nIn = shapes(c.cfg);
        for (const name of ['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as LinearName[]) {
          const w0 = c.block[name];
          const w1 = b[name];
          if (!w0 || !w1) continue;
          const rows = new Set(tt[name]?.rows ?? []);
          const cols = new Set(tt[name]?.cols ?? []);
          const changedRows = new Set<number>();
          const changedCols = new Set<number>();
          for (let i = 0; i < w0.length; i++) {
            if (w0[i] === w1[i]) continue;
            const r = Math.floor(i / nIn[name]);
            const col = i % nIn[name];
            if (!rows.has(r) && !cols.has(col)) return false; // a change nobody was told about
            changedRows.add(r);
            changedCols.add(col);
          }
          // Listed but untouched would make the search re-quantize for nothing (random
          // weights and non-trivial scales/angles/moves always change a listed row).
          for (const r of rows) if (!changedRows.has(r)) return false;
          for (const col of cols) if (!changedCols.has(col)) return false;
        }
        return true;
      }),
      { numRuns: 100 },
    );
  });

  it('says what each kind touches, on a fixed shape', () => {
    // dim 4, hidden 6, 2 kv heads × 2 q heads each, headDim 4 (half layout: pairs (0,2), (1,3)).
    const cfg = makeConfig('llama-half', 4, 6, 2, 2, 4);
    const ints = (xs: number[]) => Int32Array.from(xs);
    const none = ints([]);
    expect(touched(cfg, ffnScale(cfg, [4, 1], [2, 3]))).toEqual({ w3: { rows: ints([1, 4]), cols: none }, w2: { rows: none, cols: ints([1, 4]) } });
    expect(touched({ ...cfg, arch: 'opt' }, ffnScale(cfg, [4, 1], [2, 3]))).toEqual({
      w1: { rows: ints([1, 4]), cols: none }, w2: { rows: none, cols: ints([1, 4]) },
    });
    // ffn-perm lists only units that move.
    expect(touched(cfg, ffnPerm(cfg, [0, 3, 2], [0, 2, 3])).w1).toEqual({ rows: ints([2, 3]), cols: none });
    // kv channel 5 = kv head 1, dim 1 → q heads 2, 3 → columns 9 and 13 of wo.
    expect(touched(cfg, attnVoScale(cfg, [5], [2]))).toEqual({ wv: { rows: ints([5]), cols: none }, wo: { rows: none, cols: ints([9, 13]) } });
    // RoPE pair 3 = kv head 1, pair 1 = dims (1, 3) in the half layout.
    expect(touched(cfg, attnQkRot(cfg, [3], [0.1]))).toEqual({
      wq: { rows: ints([9, 11, 13, 15]), cols: none }, wk: { rows: ints([5, 7]), cols: none },
    });
    expect(touched(cfg, attnHeadPerm(cfg, [1, 0])).wk).toEqual({ rows: ints([0, 1, 2, 3, 4, 5, 6, 7]), cols: none });
    expect(touched(cfg, attnHeadPerm(cfg, [0, 1]))).toEqual({});
  });
});

describe('constructors and validation', () => {
  const cfg = makeConfig('llama-interleaved', 8, 10, 2, 2, 4);
  const bad = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(InvarxError);
      expect((e as InvarxError).code).toBe('bad-transform');
      return;
    }
    throw new Error('expected a bad-transform error');
  };

  it('rejects out-of-range indices, duplicates, bad scales and angles', () => {
    bad(() => ffnPerm(cfg, [1, 0], [0, 10]));
    bad(() => ffnPerm(cfg, [1, 1], [0, 1])); // from not a rearrangement of units
    bad(() => ffnPerm(cfg, [2, 0], [0, 1]));
    bad(() => ffnPerm(cfg, [0, 1], [0, 1, 2])); // lengths differ
    bad(() => ffnScale(cfg, [3, 3], [1, 2])); // duplicate unit
    bad(() => ffnScale(cfg, [3], [0]));
    bad(() => ffnScale(cfg, [3], [-1]));
    bad(() => ffnScale(cfg, [3], [Infinity]));
    bad(() => ffnScale(cfg, [3], [NaN]));
    bad(() => ffnScale(cfg, [-1], [1]));
    bad(() => ffnScale(cfg, [1.5], [1]));
    bad(() => ffnScale(cfg, [2 ** 32 + 1], [1])); // would wrap to 1 in an Int32Array
    bad(() => ffnRot(cfg, [0, 1, 1, 2], [0.1, 0.2])); // pairs share a unit
    bad(() => ffnRot(cfg, [0, 1, 2], [0.1]));
    bad(() => ffnRot(cfg, [0, 1], [NaN]));
    bad(() => ffnRot(cfg, [0, 1], [0.1, 0.2]));
    bad(() => attnHeadPerm(cfg, [0, 2]));
    bad(() => attnVoRot(cfg, [3, 4], [0.1])); // channel 3 is kv head 0, channel 4 kv head 1
    bad(() => attnVoRot(cfg, [0, 8], [0.1]));
    bad(() => attnVoScale(cfg, [8], [1]));
    bad(() => attnQkRot(cfg, [4], [0.1])); // 2 kv heads × 2 RoPE pairs
    bad(() => attnQkRot(cfg, [0], [-Infinity]));
    bad(() => attnQkScale(cfg, [1, 1], [1, 2]));
    bad(() => attnQkScale({ ...cfg, headDim: 3 }, [0], [2]));
    bad(() => attnHeadPerm({ ...cfg, nHeads: 3 }, [1, 0]));
  });

  it('applyTransform re-checks data that did not come from a constructor', () => {
    const b = randomBlock(cfg, Rng.fromSeed(1), false);
    const before = cloneBlock(b);
    bad(() => applyTransform(cfg, b, { kind: 'ffn-scale', units: Int32Array.from([99]), scales: Float64Array.from([2]) }));
    bad(() => applyTransform(cfg, b, { kind: 'nope' } as unknown as Transform));
    bad(() => applyTransform(cfg, b, { kind: 'toString' } as unknown as Transform));
    bad(() => applyTransform(cfg, b, { kind: 'ffn-rot', pairs: Int32Array.from([0, 1]) } as unknown as Transform));
    // What msgpackr without moreTypes hands back for an Int32Array: its bytes.
    const bytes = new Uint8Array(Int32Array.from([1, 0]).buffer);
    bad(() => applyTransform(cfg, b, { kind: 'ffn-perm', units: bytes, from: bytes.slice() } as unknown as Transform));
    expect(weightsIdentical(before, b)).toBe(true);
  });

  it('accepts empty transforms as the identity', () => {
    const b = randomBlock(cfg, Rng.fromSeed(2), true);
    const before = cloneBlock(b);
    applyTransforms(cfg, b, [ffnScale(cfg, [], []), ffnRot(cfg, [], []), attnHeadPerm(cfg, [], []), attnQkRot(cfg, [], [])]);
    expect(weightsIdentical(before, b)).toBe(true);
  });

  it('round-trips through msgpackr and still applies the same way', () => {
    const packr = new Packr({ moreTypes: true });
    fc.assert(
      fc.property(caseArb, fc.constantFrom(...TRANSFORM_KINDS), (c, kind) => {
        const t = randomTransform(c.cfg, kind, c.rng());
        // moreTypes keeps typed arrays typed (search/contract.ts uses the same option).
        const back = packr.unpack(packr.pack(t)) as Transform;
        const b1 = cloneBlock(c.block);
        const b2 = cloneBlock(c.block);
        applyTransform(c.cfg, b1, t);
        applyTransform(c.cfg, b2, back);
        return weightsIdentical(b1, b2);
      }),
      { numRuns: 50 },
    );
  });
});

describe('shipped stories260K', () => {
  it('random exact transforms of every kind in every block leave the logits of 64 tokens unchanged', () => {
    const m0 = shippedModel();
    const m = cloneModel(m0);
    const cfg = m.config;
    const rng = Rng.fromSeed(20250502);
    const tokens = [cfg.bosId, ...Array.from({ length: 63 }, () => rng.int(cfg.vocabSize))];
    const ref = forward(m0, tokens).logits;

    const applied: Transform[][] = [];
    for (const b of m.blocks) {
      // Three rounds of every exact kind, in a random order per round, so kinds interleave.
      const ts: Transform[] = [];
      for (let round = 0; round < 3; round++) {
        for (const kind of shuffled(rng, EXACT_KINDS.map((_, i) => i)).map((i) => EXACT_KINDS[i])) {
          ts.push(randomTransform(cfg, kind, rng));
        }
      }
      applyTransforms(cfg, b, ts);
      applied.push(ts);
    }
    // The weights really moved (mostly by O(1) relative amounts), so agreement is not vacuous.
    expect(maxAbsDiff(m.blocks[0].wv, m0.blocks[0].wv)).toBeGreaterThan(0.1);
    expect(maxAbsDiff(m.blocks[4].w2, m0.blocks[4].w2)).toBeGreaterThan(0.1);

    const logits = forward(m, tokens).logits;
    // Only float32 round-off through 5 blocks remains: measured 6e-6 on logits up to 17.
    expect(maxAbsDiff(ref, logits)).toBeLessThan(1e-4);

    // And undoing every block's sequence gives the shipped weights back.
    m.blocks.forEach((b, l) => applyTransforms(cfg, b, invertTransforms(cfg, applied[l])));
    m.blocks.forEach((b, l) => expect(weightsClose(m0.blocks[l], b, 64)).toBe(true));
  });
});
