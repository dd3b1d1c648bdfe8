import { describe, expect, it } from 'vitest';
import { applyTransforms } from '../../core/invariance';
import { cloneBlock } from '../../core/model/types';
import { jsOps, type Ops } from '../../core/ops';
import { getBackend } from '../../kernels';
import type { BaseMethod, SearchSpec } from '../../search/blockQuant';
import { DEFAULT_TUNING, ALL_INVARIANCES } from '../../search/config';
import { candidateBlock, candidateLoss } from '../../search/evaluator';
import { BlockObjective } from '../../search/objective';
import { attnKindsOn, drawAttnMove, drawFfnMove } from '../../search/proposals';
import { shippedModel } from '../helpers';
import { randomBlockData } from './blockData';

/**
 * `refine`: GPTQ's codes refined by that many sweeps (core/quant/refine.ts), as a GPTQ job's
 * recommended tuning does, with `refit` their (fp16) scales too; `actOrder`: GPTQ in act order;
 * `asym`: asymmetric GPTQ's share (core/quant/asymmetric.ts), on FP inputs that differ from the block's.
 */
function setup(layer: number, bits: number, method: BaseMethod = 'rtn', ops: Ops = jsOps, refine = 0, actOrder = false, refit = false, asym = 0) {
  const m = shippedModel();
  const { rng, data } = randomBlockData(m, layer, 7, 48, ops);
  const spec: SearchSpec = {
    bits, group: 32,
    ...(refine > 0 ? { gptqRefine: refine } : {}), ...(actOrder ? { gptqActOrder: true } : {}), ...(refit ? { gptqRefitScales: true, f16Scales: true } : {}),
    ...(asym > 0 ? { gptqAsym: asym } : {}),
  };
  const obj = new BlockObjective(m.config, data, spec, ops, method);
  const cur = cloneBlock(m.blocks[layer]);
  obj.reset(cur);
  return { m, rng, obj, cur, spec };
}

describe('block objective', () => {
  it('incremental FFN evaluation equals full re-evaluation, before and after commits', () => {
    const { m, rng, obj, cur, spec } = setup(1, 3);
    const on = new Set(ALL_INVARIANCES);
    const tuning = { ...DEFAULT_TUNING, scaleStep: 0.2, angleStep: 0.05 };
    for (let i = 0; i < 12; i++) {
      const move = drawFfnMove(m.config, rng, on, tuning, spec.group);
      const nb = candidateBlock(cur, move);
      applyTransforms(m.config, nb, move.transforms);
      const inc = obj.ffnMoveLoss(nb, move.units!);
      const full = obj.fullEval(nb).loss;
      expect(Math.abs(inc - full) / full).toBeLessThan(1e-6);
      // An FFN move leaves attention alone, so reusing the cached attention output is exact.
      expect(obj.fullEval(nb, 'ffn').loss).toBe(full);
      expect(inc).not.toBe(obj.loss); // the move really changed something
      if (i % 3 === 0) {
        applyTransforms(m.config, cur, move.transforms);
        obj.ffnMoveLoss(cur, move.units!, true);
        const fresh = obj.fullEval(cur);
        expect(Math.abs(obj.loss - fresh.loss) / fresh.loss).toBeLessThan(1e-6);
        expect(Array.from(obj.q.w2)).toEqual(Array.from(fresh.q.w2));
        expect(Array.from(obj.q.w3!)).toEqual(Array.from(fresh.q.w3!));
      }
    }
  });

  // GPTQ's rounding flips with the last bit of its Hessian, so "same loss" has to mean the
  // same bits: the incremental path redoes exactly the full evaluation's float operations.
  it.each([
    ['js', 0, false, false, 0, jsOps], ['wasm', 0, false, false, 0, getBackend('wasm')], ['js', 4, false, false, 0, jsOps], ['wasm', 4, false, false, 0, getBackend('wasm')],
    ['js', 2, true, false, 0, jsOps], ['wasm', 2, true, false, 0, getBackend('wasm')], ['js', 2, false, true, 0, jsOps], ['wasm', 2, false, true, 0, getBackend('wasm')],
    ['js', 0, false, false, 0.5, jsOps], ['wasm', 2, false, true, 0.5, getBackend('wasm')], ['wasm', 2, true, false, 1, getBackend('wasm')],
  ] as const)('on the GPTQ base (%s, %i refinement sweeps, act order %s, scales refitted %s, asymmetric %s) incremental FFN evaluation is bit for bit the full one, before and after commits', (_name, refine, actOrder, refit, asym, ops) => {
    const { m, rng, obj, cur, spec } = setup(3, 3, 'gptq', ops, refine, actOrder, refit, asym);
    const on = new Set(ALL_INVARIANCES);
    const tuning = { ...DEFAULT_TUNING, scaleStep: 0.2, angleStep: 0.05 };
    for (let i = 0; i < 8; i++) {
      const move = drawFfnMove(m.config, rng, on, { ...tuning, unitFraction: i % 4 === 3 ? 0.01 : tuning.unitFraction }, spec.group);
      const nb = candidateBlock(cur, move);
      applyTransforms(m.config, nb, move.transforms);
      const inc = obj.ffnMoveLoss(nb, move.units!);
      expect(inc).toBe(obj.fullEval(nb).loss);
      expect(inc).not.toBe(obj.loss);
      if (i % 2 === 0) {
        applyTransforms(m.config, cur, move.transforms);
        obj.ffnMoveLoss(cur, move.units!, true);
        const fresh = obj.fullEval(cur);
        expect(obj.loss).toBe(fresh.loss);
        for (const k of ['w1', 'w3', 'w2'] as const) expect(obj.q[k]).toEqual(fresh.q[k]);
        expect(obj.c.act).toEqual(fresh.c.act);
        expect(obj.c.err).toEqual(fresh.c.err);
        for (const k of ['Ha', 'actT', 'actF', 'Gact', 'xnF', 'asymX'] as const) expect(obj.c.gptq![k]).toEqual(fresh.c.gptq![k]);
        expect(obj.c.gptq!.Gact === undefined).toBe(asym === 0);
      }
    }
  });

  it.each([
    ['rtn', 'js', 0, false, false, 0, jsOps], ['rtn', 'wasm', 0, false, false, 0, getBackend('wasm')], ['gptq', 'js', 0, false, false, 0, jsOps], ['gptq', 'wasm', 0, false, false, 0, getBackend('wasm')],
    ['gptq', 'wasm', 4, false, false, 0, getBackend('wasm')], ['gptq', 'wasm', 2, true, false, 0, getBackend('wasm')], ['gptq', 'wasm', 2, false, true, 0, getBackend('wasm')],
    ['gptq', 'js', 0, false, false, 0.5, jsOps], ['gptq', 'wasm', 2, false, true, 0.5, getBackend('wasm')],
  ] as const)('attention moves on the %s base (%s, %i GPTQ refinement sweeps, act order %s, scales refitted %s, asymmetric %s) are scored head by head, bit for bit the full evaluation, before and after commits', (method, _name, refine, actOrder, refit, asym, ops) => {
    const { m, rng, obj, cur } = setup(2, 3, method, ops, refine, actOrder, refit, asym);
    const kinds = attnKindsOn(m.config, new Set(ALL_INVARIANCES));
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const move = drawAttnMove(m.config, rng, kinds, DEFAULT_TUNING);
      seen.add(move.transforms[0].kind);
      const nb = candidateBlock(cur, move);
      applyTransforms(m.config, nb, move.transforms);
      const inc = candidateLoss(m.config, obj, cur, move);
      expect(inc).toBe(obj.fullEval(nb).loss);
      if (i % 3 === 0) {
        applyTransforms(m.config, cur, move.transforms);
        obj.attnMoveLoss(cur, move.transforms, true);
        const fresh = obj.fullEval(cur);
        expect(obj.loss).toBe(fresh.loss);
        for (const k of ['wq', 'wk', 'wv', 'wo', 'w1', 'w2'] as const) expect(obj.q[k]).toEqual(fresh.q[k]);
        for (const k of ['q', 'k', 'v', 'ctx', 'h', 'act'] as const) expect(obj.c[k]).toEqual(fresh.c[k]);
        if (method === 'gptq') for (const k of ['Hctx', 'ctxF', 'Gctx', 'asymA', 'Gact'] as const) expect(obj.c.gptq![k]).toEqual(fresh.c.gptq![k]);
      }
    }
    expect(seen.size).toBe(kinds.length); // every attention kind was tried
  });

  it('exact moves leave the FP block function unchanged but change the quantized loss', () => {
    const { m, rng, obj, cur } = setup(0, 2);
    const on = new Set(['ffn-perm', 'ffn-scale'] as const);
    const move = drawFfnMove(m.config, rng, on as never, { ...DEFAULT_TUNING, scaleStep: 0.3 }, 32);
    const nb = candidateBlock(cur, move);
    applyTransforms(m.config, nb, move.transforms);
    expect(obj.ffnMoveLoss(nb, move.units!)).not.toBeCloseTo(obj.loss, 12);
  });
});
