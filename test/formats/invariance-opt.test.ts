/**
 * Every exact invariance (DESIGN.md §4) holds on an OPT model as it comes out of the
 * safetensors loader (LayerNorm with bias, every attention bias, ReLU FFN with biases,
 * learned positions): random transforms of each exact kind leave each block's output, and the
 * whole model's logits, unchanged up to float32 round-off; the inverse restores the weights.
 */
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { blockForward, forward } from '../../core/forward';
import {
  EXACT_KINDS, applyTransform, attnHeadPerm, attnQkRot, attnQkScale, attnVoRot, attnVoScale, ffnPerm, ffnScale,
  invertTransform, normScale, type Transform, type TransformKind,
} from '../../core/invariance';
import { loadModel } from '../../core/model/load';
import { cloneBlock, cloneModel, type F32, type ModelConfig } from '../../core/model/types';
import { Rng } from '../../core/rng';
import { randomHf, writeHf } from './hfFixtures';

const tmp = mkdtempSync(join(tmpdir(), 'invarx-inv-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const dir = join(tmp, 'opt');
writeHf(dir, randomHf('opt', { dim: 24, hidden: 20, layers: 2, heads: 3, kvHeads: 3, vocab: 30, maxPos: 10, tied: true }, 5), 'F16');
const model = loadModel(dir);
const cfg = model.config;

function scale(rng: Rng): number {
  return Math.exp((2 * rng.float() - 1) * Math.log(4));
}

function some(rng: Rng, n: number): number[] {
  return rng.sample(n, 1 + rng.int(n));
}

function randomTransform(c: ModelConfig, kind: TransformKind, rng: Rng): Transform {
  const hd = c.headDim;
  const kvDim = c.nKvHeads * hd;
  const angle = () => (2 * rng.float() - 1) * Math.PI;
  switch (kind) {
    case 'ffn-perm': {
      const units = some(rng, c.hiddenDim);
      return ffnPerm(c, rng.sample(units.length, units.length).map((i) => units[i]), units);
    }
    case 'ffn-scale': {
      const units = some(rng, c.hiddenDim);
      return ffnScale(c, units, units.map(() => scale(rng)));
    }
    case 'attn-head-perm': {
      const groups = some(rng, c.nKvHeads);
      return attnHeadPerm(c, rng.sample(groups.length, groups.length).map((i) => groups[i]), groups);
    }
    case 'attn-vo-rot': {
      const pairs: number[] = [];
      for (const g of some(rng, c.nKvHeads)) for (const d of rng.sample(hd, 2 * (1 + rng.int(hd / 2)))) pairs.push(g * hd + d);
      return attnVoRot(c, pairs, Array.from({ length: pairs.length / 2 }, angle));
    }
    case 'attn-vo-scale': {
      const ch = some(rng, kvDim);
      return attnVoScale(c, ch, ch.map(() => scale(rng)));
    }
    case 'attn-qk-rot': {
      const p = some(rng, kvDim / 2);
      return attnQkRot(c, p, p.map(angle));
    }
    case 'attn-qk-scale': {
      const p = some(rng, kvDim / 2);
      return attnQkScale(c, p, p.map(() => scale(rng)));
    }
    case 'norm-scale': {
      const ch = some(rng, c.dim);
      return normScale(c, rng.int(2) === 0 ? 'attn' : 'ffn', ch, ch.map(() => scale(rng)));
    }
    default:
      throw new Error(`no generator for ${kind}`);
  }
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

function close(a: F32, b: F32, tol: number): boolean {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d <= tol * Math.max(1, maxAbs(a));
}

describe('exact invariances on an OPT model loaded from safetensors', () => {
  it('the checkpoint really is the opt kind with every bias', () => {
    expect(cfg.arch).toBe('opt');
    const b = model.blocks[0];
    for (const k of ['attnNormBias', 'ffnNormBias', 'bq', 'bk', 'bv', 'bo', 'b1', 'b2'] as const) expect(b[k]).toBeDefined();
    expect(model.positions).toBeDefined();
  });

  it.each(EXACT_KINDS)('%s', (kind) => {
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: 0, max: cfg.nLayers - 1 }), fc.integer({ min: 1, max: 6 }), (seed, layer, T) => {
        const rng = Rng.fromSeed(seed);
        const x = Float32Array.from({ length: T * cfg.dim }, () => rng.normal());
        const t = randomTransform(cfg, kind, rng);
        const b0 = model.blocks[layer];
        const b = cloneBlock(b0);
        applyTransform(cfg, b, t);
        // Block output: the tolerance of test/core/invariance.test.ts (float32 round-off through ~10 chained ops).
        if (!close(blockForward(cfg, b0, x, T), blockForward(cfg, b, x, T), 5e-5)) return false;
        // The inverse restores the weights to float32 round-off of the scales/rotations.
        applyTransform(cfg, b, invertTransform(cfg, t));
        for (const [k, v] of Object.entries(b0) as [string, F32][]) {
          if (!close(v, (b as unknown as Record<string, F32>)[k], 1e-5)) return false;
        }
        return true;
      }),
      { numRuns: 100 },
    );
  });

  it('a transform in every block of every exact kind leaves the logits unchanged', () => {
    const rng = Rng.fromSeed(77);
    const m = cloneModel(model);
    for (const b of m.blocks) for (const kind of EXACT_KINDS) applyTransform(cfg, b, randomTransform(cfg, kind, rng));
    const tokens = [2, 7, 11, 29, 3, 0, 5, 8, 13, 21];
    expect(close(forward(model, tokens).logits, forward(m, tokens).logits, 2e-4)).toBe(true);
  });
});
